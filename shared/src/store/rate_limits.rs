//! Per-user rate limits on the routes that call Dodo, counted in DynamoDB so that the
//! limit holds across Lambda instances.
//!
//! Item: `RATE#{sub}` / `DODO`: the times (unix ms) of the user's calls within the last
//! window, and a `version` for optimistic concurrency; it expires (TTL) a little after
//! the window. A sliding window, so that no 60 seconds ever hold more than the limit
//! (a fixed per-minute counter would let twice the limit through across a minute's edge).

use super::*;

/// Calls to Dodo-calling routes one user may make per window.
pub const RATE_LIMIT_CALLS: usize = 10;
pub const RATE_LIMIT_WINDOW_SECONDS: i64 = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    /// Over the limit: the caller may try again after this many seconds.
    Limited {
        retry_after: i64,
    },
}

fn rate_key(user: &UserId) -> Item {
    key(format!("RATE#{user}"), "DODO")
}

impl Store {
    /// Counts one call of `user` at `now_ms` if the window has room for it.
    pub async fn take_rate_limited_call(
        &self,
        user: &UserId,
        now_ms: i64,
    ) -> Result<RateDecision, StoreError> {
        let window_ms = RATE_LIMIT_WINDOW_SECONDS * 1000;
        // Enough attempts for a whole burst of one user's calls to take turns.
        for attempt in 0..(RATE_LIMIT_CALLS as u32 + 6) {
            let stored = self.get(rate_key(user)).await?;
            let version = match &stored {
                Some(item) => get_n(item, "version")?.unwrap_or(0),
                None => 0,
            };
            let mut calls: Vec<i64> = stored
                .as_ref()
                .and_then(|item| item.get("calls"))
                .and_then(|v| v.as_ns().ok())
                .map(|numbers| numbers.iter().filter_map(|n| n.parse().ok()).collect())
                .unwrap_or_default();
            calls.retain(|at| *at > now_ms - window_ms && *at <= now_ms + window_ms);
            if calls.len() >= RATE_LIMIT_CALLS {
                let oldest = calls.iter().min().copied().unwrap_or(now_ms);
                let retry_after_ms = (oldest + window_ms - now_ms).max(1);
                return Ok(RateDecision::Limited {
                    retry_after: (retry_after_ms + 999) / 1000,
                });
            }
            // A number set needs distinct members: two calls in one millisecond count
            // as two.
            let mut at = now_ms;
            while calls.contains(&at) {
                at += 1;
            }
            calls.push(at);
            let mut item = rate_key(user);
            item.extend(values([
                ("version", n(version + 1)),
                (
                    "expires_at",
                    n(now_ms / 1000 + 2 * RATE_LIMIT_WINDOW_SECONDS),
                ),
                (
                    "calls",
                    AttributeValue::Ns(calls.iter().map(i64::to_string).collect()),
                ),
            ]));
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk) OR version = :version")
                .expression_attribute_values(":version", n(version))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(RateDecision::Allowed),
                // Another call of the same user counted first: read again.
                Err(err) if is_condition_failed(&err) => tokio::time::sleep(backoff(attempt)).await,
                Err(err) => return Err(err.into()),
            }
        }
        Err(StoreError::Contention)
    }
}
