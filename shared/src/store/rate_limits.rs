//! Per-user rate limits on the routes that call Dodo, counted in DynamoDB so that the
//! limit holds across Lambda instances.
//!
//! Item: `RATE#{sub}` / `DODO`: the times (unix ms) of the user's calls within the last
//! window, and a `version` for optimistic concurrency; it expires (TTL) a little after
//! the window. A sliding window, so that no 60 seconds ever hold more than the limit
//! (a fixed per-minute counter would let twice the limit through across a minute's edge).

use super::*;

/// The Dodo calls that users' requests (checkout, success, portal) may make, all users
/// together: below Dodo's quota for one API key (about 100 a minute, the book), so that the
/// hourly reconcile (paced at 40 a minute) keeps its share however many accounts sign up
/// (issue 17, M3). `DODO_USER_CALLS_PER_MINUTE` sets it (default 50).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DodoBudget {
    pub per_minute: i64,
    /// The most one instant may spend (a burst after a quiet spell): half a minute's.
    pub burst: i64,
}

impl Default for DodoBudget {
    fn default() -> Self {
        Self::per_minute(50)
    }
}

impl DodoBudget {
    pub fn per_minute(calls: i64) -> Self {
        let calls = calls.max(1);
        Self {
            per_minute: calls,
            burst: (calls / 2).max(2),
        }
    }

    /// `DODO_USER_CALLS_PER_MINUTE` (1 to 10000), else the default.
    pub fn from_vars(vars: &crate::config::Vars) -> Result<Self, crate::config::ConfigError> {
        match vars.optional("DODO_USER_CALLS_PER_MINUTE") {
            None => Ok(Self::default()),
            Some(raw) => match raw.parse::<i64>() {
                Ok(calls) if (1..=10_000).contains(&calls) => Ok(Self::per_minute(calls)),
                _ => Err(crate::config::ConfigError::Invalid {
                    var: "DODO_USER_CALLS_PER_MINUTE",
                    reason: format!("`{raw}` is not a whole number from 1 to 10000"),
                }),
            },
        }
    }
}

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
            if self.put_if_version(item, version).await? {
                return Ok(RateDecision::Allowed);
            }
            // Another call of the same user counted first: read again.
            tokio::time::sleep(backoff(attempt)).await;
        }
        Err(StoreError::Contention)
    }

    /// Writes `item` if its stored `version` is still `version` (or it is new): `false`
    /// when another writer got there first.
    async fn put_if_version(&self, item: Item, version: i64) -> Result<bool, StoreError> {
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
            Ok(_) => Ok(true),
            Err(err) if is_condition_failed(&err) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// The same store, with this budget for users' Dodo calls.
    pub fn with_dodo_budget(mut self, budget: DodoBudget) -> Self {
        self.dodo_budget = budget;
        self
    }

    /// Takes `calls` from the Dodo budget shared by every user's requests: a token bucket
    /// (`RATE#dodo` / `BUDGET`) refilled at its `per_minute`, holding at most its `burst`.
    /// Empty: `Limited` with the seconds until it holds `calls`.
    pub async fn take_dodo_budget(
        &self,
        calls: i64,
        now_ms: i64,
    ) -> Result<RateDecision, StoreError> {
        // Thousandths of a call, so that the refill is exact in whole numbers.
        const MILLI: i64 = 1000;
        let DodoBudget { per_minute, burst } = self.dodo_budget;
        let capacity = burst * MILLI;
        let needed = calls.clamp(1, burst) * MILLI;
        let budget_key = || key("RATE#dodo".to_owned(), "BUDGET");
        for attempt in 0..12 {
            let stored = self.get(budget_key()).await?;
            let (version, tokens, at) = match &stored {
                Some(item) => (
                    get_n(item, "version")?.unwrap_or(0),
                    get_n(item, "tokens")?.unwrap_or(capacity),
                    get_n(item, "updated_ms")?.unwrap_or(now_ms),
                ),
                None => (0, capacity, now_ms),
            };
            // A clock that went back refills nothing (and never drains).
            let elapsed_ms = now_ms.saturating_sub(at).max(0);
            let refilled = elapsed_ms.saturating_mul(per_minute) / 60;
            let tokens = tokens.saturating_add(refilled).min(capacity);
            if tokens < needed {
                let missing = needed - tokens;
                let wait_ms = missing * 60 / per_minute;
                return Ok(RateDecision::Limited {
                    retry_after: (wait_ms + 999) / 1000,
                });
            }
            let mut item = budget_key();
            item.extend(values([
                ("version", n(version + 1)),
                ("tokens", n(tokens - needed)),
                ("updated_ms", n(now_ms.max(at))),
            ]));
            if self.put_if_version(item, version).await? {
                return Ok(RateDecision::Allowed);
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
        Err(StoreError::Contention)
    }
}
