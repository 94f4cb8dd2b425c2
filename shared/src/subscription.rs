//! Dodo subscriptions: the parts of the Subscription object that decide access, and what
//! access each state gives.
//!
//! Dodo delivers webhooks in no guaranteed order, each carrying the subscription's latest
//! state. The store keeps, per subscription, the state of the most recent event (by the
//! envelope's `timestamp`), so every order of the same deliveries ends in the same state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::Value;

use crate::time::Timestamp;

/// Dodo's subscription statuses; unknown values are kept and give no access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionStatus {
    Pending,
    Active,
    PastDue,
    OnHold,
    Paused,
    Cancelled,
    Expired,
    Failed,
    Unknown(String),
}

impl SubscriptionStatus {
    pub fn parse(raw: &str) -> Self {
        match raw {
            "pending" => Self::Pending,
            "active" => Self::Active,
            "past_due" => Self::PastDue,
            "on_hold" => Self::OnHold,
            "paused" => Self::Paused,
            "cancelled" => Self::Cancelled,
            "expired" => Self::Expired,
            "failed" => Self::Failed,
            other => Self::Unknown(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::OnHold => "on_hold",
            Self::Paused => "paused",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Failed => "failed",
            Self::Unknown(other) => other,
        }
    }
}

/// One subscription's state as Dodo last reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub subscription_id: String,
    pub status: SubscriptionStatus,
    pub product_id: Option<String>,
    /// The end of the current paid period.
    pub next_billing_date: Option<Timestamp>,
    /// The start of the current paid period (Dodo's `previous_billing_date`).
    pub previous_billing_date: Option<Timestamp>,
    /// The end of the grace period of a failed renewal.
    pub past_due_ends_at: Option<Timestamp>,
    pub cancel_at_next_billing_date: bool,
    pub customer_id: Option<String>,
    pub customer_email: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// When it was created (a trial runs from here).
    pub created_at: Option<Timestamp>,
    /// Dodo's `trial_period_days` (0: no trial).
    pub trial_period_days: u32,
    /// A plan change Dodo will apply at `effective_at` (Dodo's `scheduled_change`).
    pub scheduled_change: Option<ScheduledChange>,
}

/// Dodo's `ScheduledPlanChange`: the product the subscription moves to, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledChange {
    pub product_id: String,
    pub effective_at: Timestamp,
}

/// How long an active subscription that is due to renew keeps access past its
/// `next_billing_date`: Dodo charges the renewal at that moment, and its webhook (or, if
/// the webhook is lost, the hourly reconcile) needs a little time to tell us. A failed
/// renewal moves the subscription `on_hold`, which ends access at once, so the grace only
/// ever covers the time it takes to hear from Dodo.
pub const RENEWAL_GRACE_SECONDS: i64 = crate::time::SECONDS_PER_DAY;

/// No grace planted: [`RENEWAL_GRACE_SECONDS`] is in force.
const NOT_PLANTED: i64 = i64::MIN;

/// A renewal grace a test planted in this process (see [`plant_renewal_grace_for_tests`]).
static PLANTED_RENEWAL_GRACE: AtomicI64 = AtomicI64::new(NOT_PLANTED);

/// The renewal grace in force: [`RENEWAL_GRACE_SECONDS`], unless a test planted another.
pub fn renewal_grace_seconds() -> i64 {
    match PLANTED_RENEWAL_GRACE.load(Ordering::Relaxed) {
        NOT_PLANTED => RENEWAL_GRACE_SECONDS,
        planted => planted,
    }
}

/// Tests only: makes every subscription in this process count `seconds` of renewal grace
/// instead of the documented one day (`None` puts the day back). It plants a defect in
/// the system under test, so that a test can show the year-in-the-life checker
/// (`dev/src/simulate.rs`) judges by the documented rule rather than by this crate's
/// constant. No configuration or environment variable reaches it: the functions never
/// call it.
#[doc(hidden)]
pub fn plant_renewal_grace_for_tests(seconds: Option<i64>) {
    PLANTED_RENEWAL_GRACE.store(seconds.unwrap_or(NOT_PLANTED), Ordering::Relaxed);
}

/// Until when a subscription state gives access, if it gives any: active until the end of
/// the paid period (plus the renewal grace when it is set to renew); past due until the
/// grace period ends; cancelled until the end of the period already paid; on hold,
/// paused, expired, failed and pending give none.
pub fn access_until(
    status: &SubscriptionStatus,
    next_billing_date: Option<Timestamp>,
    past_due_ends_at: Option<Timestamp>,
    cancel_at_next_billing_date: bool,
) -> Option<Timestamp> {
    match status {
        SubscriptionStatus::Active if !cancel_at_next_billing_date => {
            next_billing_date.map(|date| date.plus_seconds(renewal_grace_seconds()))
        }
        SubscriptionStatus::Active | SubscriptionStatus::Cancelled => next_billing_date,
        SubscriptionStatus::PastDue => past_due_ends_at.or(next_billing_date),
        _ => None,
    }
}

fn text<'v>(value: &'v Value, key: &str) -> Option<&'v str> {
    value
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn time(value: &Value, key: &str) -> Option<Timestamp> {
    text(value, key).and_then(Timestamp::parse_rfc3339)
}

impl Subscription {
    /// Reads a Subscription object leniently: `subscription_id` and `status` are required.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let subscription_id =
            text(value, "subscription_id").ok_or("subscription without subscription_id")?;
        let status = text(value, "status").ok_or("subscription without status")?;
        let customer = value.get("customer").unwrap_or(&Value::Null);
        Ok(Self {
            subscription_id: subscription_id.to_owned(),
            status: SubscriptionStatus::parse(status),
            product_id: text(value, "product_id").map(str::to_owned),
            next_billing_date: time(value, "next_billing_date"),
            previous_billing_date: time(value, "previous_billing_date"),
            past_due_ends_at: time(value, "past_due_ends_at"),
            cancel_at_next_billing_date: value
                .get("cancel_at_next_billing_date")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            customer_id: text(customer, "customer_id").map(str::to_owned),
            customer_email: text(customer, "email").map(str::to_owned),
            metadata: crate::dodo::metadata_of(value),
            created_at: time(value, "created_at"),
            trial_period_days: value
                .get("trial_period_days")
                .and_then(Value::as_u64)
                .map_or(0, |days| days.min(10_000) as u32),
            scheduled_change: value.get("scheduled_change").and_then(|change| {
                Some(ScheduledChange {
                    product_id: text(change, "product_id")?.to_owned(),
                    effective_at: time(change, "effective_at")?,
                })
            }),
        })
    }

    /// When its trial ends, if it was created with one: Dodo has no trial status ("there
    /// is no direct field to detect trial status"), so the trial is its creation plus
    /// `trial_period_days`.
    pub fn trial_ends_at(&self) -> Option<Timestamp> {
        (self.trial_period_days > 0)
            .then(|| {
                self.created_at
                    .map(|created| created.plus_days(self.trial_period_days))
            })
            .flatten()
    }

    pub fn access_until(&self) -> Option<Timestamp> {
        access_until(
            &self.status,
            self.next_billing_date,
            self.past_due_ends_at,
            self.cancel_at_next_billing_date,
        )
    }

    pub fn grants_access(&self, now: Timestamp) -> bool {
        self.access_until().is_some_and(|until| until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sub(status: &str) -> Subscription {
        Subscription::from_json(&json!({
            "subscription_id": "sub_1", "status": status, "product_id": "pdt_pro",
            "next_billing_date": "2030-02-01T00:00:00Z",
            "past_due_ends_at": "2030-02-04T00:00:00.000000Z",
            "cancel_at_next_billing_date": true,
            "customer": {"customer_id": "cus_1", "email": "a@example.com"},
            "metadata": {"user_id": "u1"},
            "addons": [], "meters": [{"unknown": true}],
        }))
        .expect("valid")
    }

    #[test]
    fn each_state_gives_the_access_dodo_describes() {
        let now = Timestamp::parse_rfc3339("2030-01-15T00:00:00Z").expect("time");
        let feb1 = Timestamp::parse_rfc3339("2030-02-01T00:00:00Z");
        let feb4 = Timestamp::parse_rfc3339("2030-02-04T00:00:00Z");
        assert_eq!(sub("active").access_until(), feb1);
        assert_eq!(sub("cancelled").access_until(), feb1);
        let mut renewing = sub("active");
        renewing.cancel_at_next_billing_date = false;
        assert_eq!(
            renewing.access_until(),
            feb1.map(|d| d.plus_seconds(RENEWAL_GRACE_SECONDS))
        );
        assert_eq!(sub("past_due").access_until(), feb4);
        for none in [
            "on_hold",
            "paused",
            "expired",
            "failed",
            "pending",
            "hibernating",
        ] {
            assert_eq!(sub(none).access_until(), None, "{none}");
            assert!(!sub(none).grants_access(now));
        }
        assert!(sub("active").grants_access(now));
        let s = sub("active");
        assert!(s.cancel_at_next_billing_date);
        assert_eq!(s.customer_id.as_deref(), Some("cus_1"));
        assert_eq!(s.metadata.get("user_id").map(String::as_str), Some("u1"));
        assert_eq!(
            sub("hibernating").status,
            SubscriptionStatus::Unknown("hibernating".into())
        );
    }

    #[test]
    fn a_subscription_needs_its_id_and_status() {
        assert!(Subscription::from_json(&json!({"status": "active"})).is_err());
        assert!(Subscription::from_json(&json!({"subscription_id": "sub_1"})).is_err());
    }
}
