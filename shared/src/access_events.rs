//! Access events: what the founder's backend hears when a user's access changes.
//!
//! Published to EventBridge as `source: "paywall"`, `detail-type: "Access Changed"`, with
//! `detail`: `event_id`, `user_id`, `change`, `before` and `after` entitlements, `cause`
//! (the Dodo delivery id, `reconcile`, `success`, `server` or `expiry`) and `at`. Built
//! here; the store writes each in the transaction that makes its change, and the table's
//! stream delivers it (at least once: `event_id` lets consumers drop repeats).

use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::entitlements::{Entitlements, Source};
use crate::ids::UserId;
use crate::plan::Catalog;
use crate::store::{AccessChange, AccessEvent, AccessObserver, Trigger};
use crate::subscription::SubscriptionStatus;
use crate::time::Timestamp;

pub const EVENT_SOURCE: &str = "paywall";
pub const EVENT_DETAIL_TYPE: &str = "Access Changed";

#[derive(Serialize)]
struct Detail<'a> {
    event_id: &'a str,
    user_id: &'a str,
    change: &'static str,
    before: &'a Entitlements,
    after: &'a Entitlements,
    cause: &'a str,
    at: Timestamp,
}

/// The kind of change, from what access was and is: `granted`, `renewed`, `plan_changed`,
/// `on_hold`, `revoked`, `restored`, `comp_granted`, `comp_revoked`, `expired`,
/// `trial_started`, `trial_converted` (its first paid charge, or the plan bought),
/// `trial_ended` (over without a conversion), `cancellation_scheduled`, `resumed`,
/// `changed`.
pub fn change_kind(before: &Entitlements, after: &Entitlements, trigger: &Trigger) -> &'static str {
    let had = before.source.is_some();
    let has = after.source.is_some();
    let was_trial = before.trial_ends_at.is_some();
    let is_trial = after.trial_ends_at.is_some();
    match (trigger, had, has) {
        (Trigger::ServerGrant, _, _) => "comp_granted",
        (Trigger::ServerRevoke, _, _) => "comp_revoked",
        (_, _, true) if is_trial && !was_trial => "trial_started",
        // Converted: something paid speaks now. Anything else after a trial (a grant
        // underneath it) means the trial ended.
        (_, true, true)
            if was_trial
                && !is_trial
                && matches!(after.source, Some(Source::Pass | Source::Subscription)) =>
        {
            "trial_converted"
        }
        (_, true, _) if was_trial && !is_trial => "trial_ended",
        (_, true, false) if was_trial => "trial_ended",
        (_, true, true)
            if before.plan == after.plan
                && before.cancel_at_period_end != after.cancel_at_period_end =>
        {
            if after.cancel_at_period_end {
                "cancellation_scheduled"
            } else {
                "resumed"
            }
        }
        (Trigger::Expiry, _, _) => "expired",
        (Trigger::Claim, true, false) => "revoked",
        (Trigger::Claim, false, true) => "restored",
        (
            Trigger::Subscription(SubscriptionStatus::OnHold | SubscriptionStatus::Paused),
            true,
            false,
        ) => "on_hold",
        (Trigger::Subscription(SubscriptionStatus::Active), false, true)
            if before.plan == after.plan && before.valid_until.is_some() =>
        {
            "restored"
        }
        (_, true, false) => "expired",
        (_, false, true) => "granted",
        (_, true, true) if before.plan != after.plan => "plan_changed",
        (_, true, true) if after.valid_until > before.valid_until => "renewed",
        _ => "changed",
    }
}

/// The event for a change from `before` to `after`, or `None` when access did not change
/// (usage aside).
pub fn access_event(
    user: &UserId,
    before: &Entitlements,
    after: &Entitlements,
    trigger: &Trigger,
    cause: &str,
    at: Timestamp,
) -> Option<AccessEvent> {
    if before.same_access(after) {
        return None;
    }
    let change = change_kind(before, after, trigger);
    // Unique per write (two identical changes in one second are two events); the write
    // that carries it is one transaction, so a retried write never leaves two.
    let nonce = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), at);
    let digest = Sha256::digest(format!(
        "{user}\n{cause}\n{}\n{change}\n{nonce}",
        at.unix_seconds()
    ));
    let event_id = format!(
        "evt_{}",
        digest[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let detail = Detail {
        event_id: &event_id,
        user_id: user.as_str(),
        change,
        before,
        after,
        cause,
        at,
    };
    Some(AccessEvent {
        event_id: event_id.clone(),
        user: user.clone(),
        at_millis: at.unix_seconds() * 1000,
        detail: serde_json::to_string(&detail).unwrap_or_default(),
        ends_at: after.valid_until,
    })
}

/// The observer the handlers install on their store: entitlements before and after each
/// change, from `catalog`.
pub fn observer(catalog: &Catalog) -> AccessObserver {
    let catalog = catalog.clone();
    Arc::new(move |change: &AccessChange| {
        let before = Entitlements::of(change.before, &catalog, change.at);
        let after = Entitlements::of(change.after, &catalog, change.at);
        access_event(
            change.user,
            &before,
            &after,
            &change.trigger,
            change.cause,
            change.at,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(plan: Option<&str>, trial_ends: Option<i64>, cancel: bool) -> Entitlements {
        Entitlements {
            plan: plan.map(str::to_owned),
            source: plan.map(|_| Source::Subscription),
            valid_until: plan.map(|_| Timestamp::from_unix_seconds(1_000)),
            trial_ends_at: trial_ends.map(Timestamp::from_unix_seconds),
            cancel_at_period_end: cancel,
            features: Vec::new(),
            limits: Default::default(),
        }
    }

    #[test]
    fn trials_and_cancellations_are_named() {
        let active = Trigger::Subscription(SubscriptionStatus::Active);
        let none = access(None, None, false);
        let trialing = access(Some("pro"), Some(500), false);
        let paid = access(Some("pro"), None, false);
        let leaving = access(Some("pro"), None, true);
        let comped = Entitlements {
            source: Some(Source::Grant),
            ..access(Some("pro"), None, false)
        };
        for (before, after, trigger, kind) in [
            (&none, &trialing, &active, "trial_started"),
            (&trialing, &paid, &active, "trial_converted"),
            (&trialing, &none, &Trigger::Expiry, "trial_ended"),
            (
                &trialing,
                &none,
                &Trigger::Subscription(SubscriptionStatus::OnHold),
                "trial_ended",
            ),
            (&none, &paid, &Trigger::Payment, "granted"),
            (&paid, &leaving, &active, "cancellation_scheduled"),
            (&leaving, &paid, &active, "resumed"),
            (&paid, &none, &Trigger::Expiry, "expired"),
            (&trialing, &comped, &Trigger::Expiry, "trial_ended"),
        ] {
            assert_eq!(
                change_kind(before, after, trigger),
                kind,
                "{before:?} -> {after:?}"
            );
        }
    }
}
