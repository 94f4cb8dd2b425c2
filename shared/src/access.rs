//! What the frontend sees: a user's access, derived at read time from the stored expiry.

use serde::Serialize;

use crate::store::UserRecord;
use crate::time::Timestamp;

/// The body of `GET /payment/status`; also the fields `POST /payment/success` returns.
/// Field names and values are the original router's, plus `status`, `plan` and
/// `dodo_payment_id`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AccessView {
    pub has_paid: bool,
    pub payment_date: Option<Timestamp>,
    /// `none` -> `pending_monthly` (checkout opened) -> `monthly` (paid).
    pub subscription_plan: String,
    pub plan_expires_at: Option<Timestamp>,
    /// `none`, `pending`, `active` or `expired`.
    pub status: &'static str,
    pub plan: Option<String>,
    pub dodo_payment_id: Option<String>,
}

impl AccessView {
    pub fn of(record: Option<&UserRecord>, now: Timestamp) -> Self {
        let Some(record) = record else {
            return Self {
                has_paid: false,
                payment_date: None,
                subscription_plan: "none".to_owned(),
                plan_expires_at: None,
                status: "none",
                plan: None,
                dodo_payment_id: None,
            };
        };
        let has_paid = record.paid_until.is_some_and(|until| until > now);
        let pending = record.pending_checkout.as_ref();
        let (status, subscription_plan) = match (has_paid, &record.plan, pending) {
            (true, Some(plan), _) => ("active", plan.clone()),
            (true, None, _) => ("active", crate::plan::DEFAULT_PLAN.to_owned()),
            (false, _, Some(checkout)) => ("pending", format!("pending_{}", checkout.plan)),
            (false, Some(plan), None) => ("expired", plan.clone()),
            (false, None, None) => ("none", "none".to_owned()),
        };
        Self {
            has_paid,
            payment_date: record.payment_date,
            subscription_plan,
            plan_expires_at: record.paid_until,
            status,
            plan: record.plan.clone(),
            dodo_payment_id: record.last_payment_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserId;
    use crate::store::PendingCheckout;

    fn record() -> UserRecord {
        UserRecord {
            user_id: UserId::parse("u1").expect("valid"),
            email: None,
            plan: None,
            paid_until: None,
            payment_date: None,
            last_payment_id: None,
            pending_checkout: None,
            version: 0,
        }
    }

    #[test]
    fn unknown_user_has_not_paid() {
        let view = AccessView::of(None, Timestamp::now());
        assert!(!view.has_paid);
        assert_eq!(view.subscription_plan, "none");
        assert_eq!(view.status, "none");
    }

    #[test]
    fn access_ends_at_the_expiry() {
        let until = Timestamp::from_unix_seconds(1_000);
        let paid = UserRecord {
            plan: Some("monthly".into()),
            paid_until: Some(until),
            ..record()
        };
        let before = AccessView::of(Some(&paid), Timestamp::from_unix_seconds(999));
        assert!(before.has_paid);
        assert_eq!(before.subscription_plan, "monthly");
        assert_eq!(before.status, "active");
        let at = AccessView::of(Some(&paid), until);
        assert!(!at.has_paid);
        assert_eq!(at.status, "expired");
        assert_eq!(at.subscription_plan, "monthly");
    }

    #[test]
    fn an_open_checkout_is_pending_until_paid() {
        let pending = UserRecord {
            pending_checkout: Some(PendingCheckout {
                session_id: "cks_1".into(),
                plan: "monthly".into(),
                created_at: Timestamp::from_unix_seconds(5),
            }),
            ..record()
        };
        let view = AccessView::of(Some(&pending), Timestamp::from_unix_seconds(10));
        assert!(!view.has_paid);
        assert_eq!(view.subscription_plan, "pending_monthly");
        assert_eq!(view.status, "pending");
    }
}
