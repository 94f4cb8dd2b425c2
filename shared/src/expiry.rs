//! The expiry sweep, run with every hourly reconcile: an `expired` access event for each
//! user whose access ran out since the last run.
//!
//! Every access event that leaves access with an end writes an expiry watch for that
//! moment (`EXPIRY#{hour}`, in the same transaction). The sweep reads the watches of the
//! hours since it last finished, judges each user's stored access just before the watched
//! moment and now, and writes the event (if access did change: a renewal since then
//! leaves nothing to report) together with dropping the watch.

use crate::access_events::access_event;
use crate::entitlements::Entitlements;
use crate::plan::Catalog;
use crate::store::{Store, StoreError, Trigger};
use crate::time::Timestamp;

/// How far back a sweep looks when it has never run, or fell far behind.
const LOOK_BACK_HOURS: i64 = 24 * 7;
/// Wall-clock time a sweep may take after the repairs (the function's timeout leaves this
/// much beyond their budget). A sweep cut short keeps what it settled (each watch is
/// dropped as it is settled) and the next run goes on from there.
pub const SWEEP_BUDGET: std::time::Duration = std::time::Duration::from_secs(40);

/// The last hour swept, as one function instance remembers it between runs (`None` until
/// read from the store).
#[derive(Debug, Default)]
pub struct SweptThrough(std::sync::Mutex<Option<i64>>);

impl SweptThrough {
    fn get(&self) -> Option<i64> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, hour: i64) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(hour);
    }
}

/// Sweeps every hour up to `now`; the number of `expired` events written.
pub async fn sweep(
    store: &Store,
    catalog: &Catalog,
    remembered: &SweptThrough,
    now: Timestamp,
) -> Result<u32, StoreError> {
    let current_hour = now.unix_seconds().div_euclid(3600);
    let swept = match remembered.get() {
        Some(hour) => Some(hour),
        None => store.expiry_swept_through().await?,
    };
    let first = match swept {
        Some(hour) => hour + 1,
        None => current_hour - 24,
    }
    .max(current_hour - LOOK_BACK_HOURS);
    let started = std::time::Instant::now();
    let mut expired = 0;
    // Whole hours only: an access that ends within the current hour is reported by the
    // next run, still within the hour after it ended.
    for hour in first..current_hour {
        for watch in store.expiry_watches(hour).await? {
            if started.elapsed() > SWEEP_BUDGET {
                tracing::warn!(
                    expired,
                    "the expiry sweep ran out of time; the next run goes on"
                );
                return Ok(expired);
            }
            let account = store.get_account(&watch.user).await?;
            let before = Entitlements::of(&account, catalog, watch.ends_at.plus_seconds(-1));
            let after = Entitlements::of(&account, catalog, now);
            let event = access_event(
                &watch.user,
                &before,
                &after,
                &Trigger::Expiry,
                "expiry",
                now,
            );
            store.settle_expiry_watch(&watch, event.as_ref()).await?;
            expired += u32::from(event.is_some());
        }
    }
    if current_hour > first {
        store.mark_expiry_swept(current_hour - 1).await?;
        remembered.set(current_hour - 1);
    }
    Ok(expired)
}
