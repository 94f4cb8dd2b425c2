//! Access events: what the founder's backend hears when a user's access changes.
//!
//! Published to EventBridge as `source: "paywall"`, `detail-type: "Access Changed"`, with
//! `detail`: `event_id`, `user_id`, `change`, `before` and `after` entitlements, `cause`
//! (the Dodo delivery id, `reconcile`, `server` or `expiry`) and `at`. Built here and
//! written by the store in the transaction that makes the change.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::entitlements::Entitlements;
use crate::ids::UserId;
use crate::store::AccessEvent;
use crate::time::Timestamp;

pub const EVENT_SOURCE: &str = "paywall";
pub const EVENT_DETAIL_TYPE: &str = "Access Changed";

/// What made the change, as far as the writer knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A payment, subscription event or claim (webhook, success call or reconcile).
    Payment,
    /// A refund or a lost dispute.
    Claim,
    /// A grant given by the founder's backend.
    ServerGrant,
    /// A grant taken back by the founder's backend.
    ServerRevoke,
    /// Access ran out.
    Expiry,
}

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
/// `on_hold`, `revoked`, `restored`, `comp_granted`, `comp_revoked`, `expired`, `changed`.
pub fn change_kind(before: &Entitlements, after: &Entitlements, trigger: Trigger) -> &'static str {
    let had = before.source.is_some();
    let has = after.source.is_some();
    match (trigger, had, has) {
        (Trigger::ServerGrant, _, _) => "comp_granted",
        (Trigger::ServerRevoke, _, _) => "comp_revoked",
        (Trigger::Expiry, _, _) => "expired",
        (Trigger::Claim, true, false) => "revoked",
        (Trigger::Claim, false, true) => "restored",
        (Trigger::Payment, true, false) => "on_hold",
        (_, false, true) => "granted",
        (_, true, true) if before.plan != after.plan => "plan_changed",
        (_, true, true) if after.valid_until > before.valid_until => "renewed",
        _ => "changed",
    }
}

/// The event for a change from `before` to `after`, or `None` when access did not change
/// (usage aside). Its id is derived from the user, cause, time and the change, so a
/// writer that retries after a conflict builds the same event.
pub fn access_event(
    user: &UserId,
    before: &Entitlements,
    after: &Entitlements,
    trigger: Trigger,
    cause: &str,
    at_millis: i64,
) -> Option<AccessEvent> {
    if before.same_access(after) {
        return None;
    }
    let change = change_kind(before, after, trigger);
    let after_json = serde_json::to_string(after).unwrap_or_default();
    let digest = Sha256::digest(format!(
        "{user}\n{cause}\n{at_millis}\n{change}\n{after_json}"
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
        at: Timestamp::from_unix_seconds(at_millis.div_euclid(1000)),
    };
    Some(AccessEvent {
        event_id: event_id.clone(),
        user: user.clone(),
        at_millis,
        detail: serde_json::to_string(&detail).unwrap_or_default(),
    })
}
