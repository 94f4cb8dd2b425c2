//! What the frontend sees: a user's access, derived at read time from the stored pass
//! expiry and subscription states, never stored as a flag that could go stale.

use serde::Serialize;

use crate::plan::Catalog;
use crate::store::{Account, SubscriptionRecord};
use crate::subscription::SubscriptionStatus;
use crate::time::Timestamp;

/// The body of `GET /payment/status`; also the fields `POST /payment/success` returns.
/// The original router's fields and values, plus `status`, `plan`,
/// `cancel_at_period_end`, `subscription_id` and `dodo_payment_id`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AccessView {
    pub has_paid: bool,
    pub payment_date: Option<Timestamp>,
    /// `none` -> `pending_monthly` (checkout opened) -> `monthly` (paid): the plan's name.
    pub subscription_plan: String,
    pub plan_expires_at: Option<Timestamp>,
    /// `none`, `pending`, `active`, `trialing`, `past_due`, `on_hold`, `cancelled`,
    /// `expired` or `refunded`.
    pub status: &'static str,
    pub plan: Option<String>,
    /// The subscription ends at `plan_expires_at` instead of renewing.
    pub cancel_at_period_end: bool,
    pub subscription_id: Option<String>,
    pub dodo_payment_id: Option<String>,
    /// While on a trial (`status: trialing`): when it ends.
    pub trial_ends_at: Option<Timestamp>,
    /// A plan change Dodo will apply at the next billing date (a downgrade, by default).
    pub scheduled_change: Option<ScheduledChangeView>,
}

/// `scheduled_change` of the status: the plan the subscription moves to, and when.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ScheduledChangeView {
    /// The catalogue's name of the product it moves to (`null` if not one we sell).
    pub plan: Option<String>,
    pub at: Timestamp,
}

/// The subscription that speaks for the user: one that gives access now (the longest),
/// else the one changed most recently. One that was never on a plan we sell (a payment
/// recorded before its subscription was heard of, or another product's) is not shown.
fn current_subscription(
    subscriptions: &[SubscriptionRecord],
    now: Timestamp,
) -> Option<&SubscriptionRecord> {
    let ours = || subscriptions.iter().filter(|s| !s.plan.is_empty());
    ours()
        .filter(|s| s.grants_access(now))
        .max_by_key(|s| s.access_until())
        .or_else(|| ours().max_by_key(|s| s.event_at))
}

impl AccessView {
    pub fn of(account: &Account, catalog: &Catalog, now: Timestamp) -> Self {
        let profile = account.profile.as_ref();
        // The best plan whose pass runs now, with its own end; else the pass that ended
        // last.
        let running = profile.and_then(|p| catalog.best_pass(p.passes_running(now)));
        let (pass_plan, pass_until) = match running {
            Some((plan, until)) => (Some(plan.to_owned()), Some(until)),
            None => (
                profile.and_then(|p| p.plan.clone()),
                profile.and_then(|p| p.paid_until),
            ),
        };
        let pass_active = running.is_some();
        let subscription = current_subscription(&account.subscriptions, now);
        let subscription_active = subscription.is_some_and(|s| s.grants_access(now));
        let pending = profile.and_then(|p| p.pending_checkout.as_ref());
        let refunded = profile.is_some_and(|p| p.refunded);

        let (status, plan, expires) = match (subscription, subscription_active, pass_active) {
            (Some(sub), true, _) => {
                let status = match sub.status {
                    SubscriptionStatus::PastDue => "past_due",
                    SubscriptionStatus::Cancelled => "cancelled",
                    _ => "active",
                };
                let expires = sub
                    .access_until()
                    .max(if pass_active { pass_until } else { None });
                (status, Some(sub.plan.clone()), expires)
            }
            (_, false, true) => ("active", pass_plan.clone(), pass_until),
            (Some(sub), false, false) if pending.is_none() => {
                let status = match sub.status {
                    _ if sub.revoked() => "refunded",
                    SubscriptionStatus::OnHold | SubscriptionStatus::Paused => "on_hold",
                    SubscriptionStatus::Cancelled => "cancelled",
                    SubscriptionStatus::Pending => "pending",
                    _ => "expired",
                };
                (
                    status,
                    Some(sub.plan.clone()),
                    sub.access_until().or(pass_until),
                )
            }
            _ => {
                let status = if pending.is_some() {
                    "pending"
                } else if refunded {
                    "refunded"
                } else if pass_plan.is_some() {
                    "expired"
                } else {
                    "none"
                };
                (status, pass_plan.clone(), pass_until)
            }
        };
        // A card-less trial counts when nothing paid speaks; then the founder's grant.
        let trial = account.trial.as_ref().filter(|t| {
            t.grants_access(now)
                && catalog.get(&t.plan).is_some()
                && !pass_active
                && !subscription_active
        });
        let grant = account.grant.as_ref().filter(|g| {
            g.grants_access(now) && !pass_active && !subscription_active && trial.is_none()
        });
        let (status, plan, expires) = match (trial, grant) {
            (Some(trial), _) => ("trialing", Some(trial.plan.clone()), Some(trial.until)),
            (None, Some(grant)) => ("active", Some(grant.plan.clone()), Some(grant.until)),
            (None, None) => (status, plan, expires),
        };
        // Dodo's trial: the subscription that speaks has not been charged past it yet.
        let subscription_trial = subscription
            .filter(|_| subscription_active)
            .and_then(|s| s.trialing_until(now));
        let status = if subscription_trial.is_some() && status == "active" {
            "trialing"
        } else {
            status
        };
        let trial_ends_at = trial.map(|t| t.until).or(subscription_trial);
        let has_paid = pass_active || subscription_active || trial.is_some() || grant.is_some();
        let subscription_plan = match (&plan, pending) {
            (Some(plan), _) if has_paid => plan.clone(),
            (_, Some(checkout)) => format!("pending_{}", checkout.plan),
            (Some(plan), None) => plan.clone(),
            (None, None) => "none".to_owned(),
        };
        // The last successful payment, of a pass or of the subscription that speaks (W3:
        // a subscriber's `payment_date` and `dodo_payment_id` name their last renewal).
        let pass_payment = profile.and_then(|p| Some((p.payment_date?, p.last_payment_id.clone())));
        let subscription_payment = subscription.and_then(|s| {
            let id = s.last_payment_id.clone()?;
            (s.last_payment_at > 0).then(|| {
                (
                    Timestamp::from_unix_seconds(s.last_payment_at.div_euclid(1000)),
                    Some(id),
                )
            })
        });
        let (payment_date, dodo_payment_id) = match (pass_payment, subscription_payment) {
            (Some(pass), Some(sub)) if sub.0 > pass.0 => (Some(sub.0), sub.1),
            (Some(pass), _) => (Some(pass.0), pass.1),
            (None, Some(sub)) => (Some(sub.0), sub.1),
            (None, None) => (None, profile.and_then(|p| p.last_payment_id.clone())),
        };
        Self {
            has_paid,
            payment_date,
            subscription_plan,
            plan_expires_at: expires,
            status,
            plan,
            cancel_at_period_end: subscription.is_some_and(|s| s.cancel_at_next_billing_date),
            subscription_id: subscription.map(|s| s.subscription_id.clone()),
            dodo_payment_id,
            trial_ends_at,
            scheduled_change: subscription.filter(|s| s.grants_access(now)).and_then(|s| {
                Some(ScheduledChangeView {
                    plan: catalog
                        .by_product(s.scheduled_product_id.as_deref()?)
                        .map(|p| p.name.clone()),
                    at: s.scheduled_at?,
                })
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserId;
    use crate::store::{PendingCheckout, UserRecord};

    fn catalog() -> Catalog {
        Catalog::single(crate::plan::Plan::pass(
            "monthly",
            crate::ids::ProductId::parse("pdt_m").expect("valid"),
            30,
        ))
    }

    /// A user whose `monthly` pass ends at `until`.
    fn with_pass(until: i64) -> UserRecord {
        let mut record = record();
        record.set_pass("monthly", Some(at(until)));
        record
    }

    fn record() -> UserRecord {
        UserRecord {
            user_id: UserId::parse("u1").expect("valid"),
            email: None,
            passes: Default::default(),
            plan: None,
            paid_until: None,
            payment_date: None,
            last_payment_id: None,
            pending_checkout: None,
            customer_id: None,
            refunded: false,
            version: 0,
        }
    }

    fn account(profile: UserRecord) -> Account {
        Account {
            profile: Some(profile),
            ..Account::default()
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_seconds(seconds)
    }

    fn subscription(status: SubscriptionStatus, until: i64) -> SubscriptionRecord {
        SubscriptionRecord {
            subscription_id: "sub_1".into(),
            status,
            plan: "pro".into(),
            next_billing_date: Some(at(until)),
            past_due_ends_at: Some(at(until + 200)),
            cancel_at_next_billing_date: false,
            event_at: 1,
            ..SubscriptionRecord::fresh("sub_1")
        }
    }

    #[test]
    fn unknown_user_has_not_paid() {
        let view = AccessView::of(
            &Account::default(),
            &catalog(),
            crate::time::Clock::system().now(),
        );
        assert!(!view.has_paid);
        assert_eq!(view.subscription_plan, "none");
        assert_eq!(view.status, "none");
        assert!(!view.cancel_at_period_end);
    }

    #[test]
    fn access_ends_at_the_expiry() {
        let paid = account(with_pass(1_000));
        let before = AccessView::of(&paid, &catalog(), at(999));
        assert!(before.has_paid);
        assert_eq!(before.subscription_plan, "monthly");
        assert_eq!(before.status, "active");
        let after = AccessView::of(&paid, &catalog(), at(1_000));
        assert!(!after.has_paid);
        assert_eq!(after.status, "expired");
        assert_eq!(after.subscription_plan, "monthly");
    }

    #[test]
    fn an_open_checkout_is_pending_until_paid() {
        let pending = account(UserRecord {
            pending_checkout: Some(PendingCheckout {
                session_id: "cks_1".into(),
                plan: "monthly".into(),
                created_at: at(5),
                checkout_url: None,
            }),
            ..record()
        });
        let view = AccessView::of(&pending, &catalog(), at(10));
        assert!(!view.has_paid);
        assert_eq!(view.subscription_plan, "pending_monthly");
        assert_eq!(view.status, "pending");
    }

    #[test]
    fn a_refunded_pass_says_so() {
        let refunded = account(UserRecord {
            refunded: true,
            ..with_pass(10)
        });
        let view = AccessView::of(&refunded, &catalog(), at(20));
        assert_eq!((view.has_paid, view.status), (false, "refunded"));
    }

    /// L2: a lost dispute ends the access its payment paid for, not the subscription's
    /// for good: the renewal Dodo goes on charging gives it back.
    #[test]
    fn a_lost_dispute_ends_only_the_period_its_payment_paid_for() {
        let now = at(500);
        let mut disputed = subscription(SubscriptionStatus::Active, 1_000);
        disputed.last_payment_id = Some("pay_1".into());
        disputed.last_payment_at = 100_000;
        disputed.period_start = Some(at(100));
        disputed.lost_dispute_payment_ids = ["pay_1".to_owned()].into();
        let view = |sub: &SubscriptionRecord| {
            AccessView::of(
                &Account {
                    profile: Some(record()),
                    subscriptions: vec![sub.clone()],
                    ..Account::default()
                },
                &catalog(),
                now,
            )
        };
        assert_eq!(
            (view(&disputed).has_paid, view(&disputed).status),
            (false, "refunded")
        );
        let mut renewed = disputed.clone();
        renewed.last_payment_id = Some("pay_2".into());
        renewed.last_payment_at = 400_000;
        renewed.period_start = Some(at(400));
        assert_eq!(
            (view(&renewed).has_paid, view(&renewed).status),
            (true, "active")
        );
    }

    #[test]
    fn subscriptions_speak_for_their_state() {
        let now = at(500);
        let cases = [
            (SubscriptionStatus::Active, 1_000, true, "active"),
            (SubscriptionStatus::PastDue, 400, true, "past_due"),
            (SubscriptionStatus::Cancelled, 1_000, true, "cancelled"),
            (SubscriptionStatus::Cancelled, 100, false, "cancelled"),
            (SubscriptionStatus::OnHold, 1_000, false, "on_hold"),
            (SubscriptionStatus::Paused, 1_000, false, "on_hold"),
            (SubscriptionStatus::Expired, 1_000, false, "expired"),
            (SubscriptionStatus::Failed, 1_000, false, "expired"),
            // Set to renew: access runs through the renewal grace, then ends.
            (SubscriptionStatus::Active, 100, true, "active"),
            (
                SubscriptionStatus::Active,
                100 - crate::subscription::RENEWAL_GRACE_SECONDS,
                false,
                "expired",
            ),
        ];
        for (status, until, has_paid, shown) in cases {
            let view = AccessView::of(
                &Account {
                    profile: Some(record()),
                    subscriptions: vec![subscription(status.clone(), until)],
                    ..Account::default()
                },
                &catalog(),
                now,
            );
            assert_eq!(
                (view.has_paid, view.status),
                (has_paid, shown),
                "{status:?} until {until}"
            );
            assert_eq!(view.subscription_id.as_deref(), Some("sub_1"));
            assert_eq!(view.plan.as_deref(), Some("pro"));
        }
    }
}
