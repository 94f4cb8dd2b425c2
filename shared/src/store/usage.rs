//! Metered limits: one counter per user and limit (`USER#{sub}` / `USAGE#{limit}`), for
//! the current paid period only, and the answers given to each idempotency key
//! (`USER#{sub}` / `IDEMPOTENCY#usage#{key}`, kept 30 days).
//!
//! A call consumes with one transaction: the key's answer is written only if the key was
//! never used, and the counter moves only if it still holds what was read. So concurrent
//! calls never take more than the limit (a loser decides again on what it lost to), and a
//! repeated key consumes nothing more.
//!
//! Two round trips per call: the account query (strongly consistent) already holds the
//! counter, and the transaction itself tells what a repeated key was answered: each of
//! its writes asks for the stored item back when its condition fails
//! (`ReturnValuesOnConditionCheckFailure = ALL_OLD`), so a cancellation carries the
//! key's first answer (replayed) or the counter as it now is (decided again, one more
//! round trip), without another read.

use super::*;
use crate::time::Clock;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;

/// Sort-key prefix of a user's usage counters (sorts after `PROFILE`: read with the
/// account, so entitlements cost one query).
pub(super) const USAGE_PREFIX: &str = "USAGE#";
/// Sort-key prefix of answered idempotency keys (sorts before `PROFILE`: never read with
/// the account).
const IDEMPOTENCY_PREFIX: &str = "IDEMPOTENCY#usage#";
const IDEMPOTENCY_DAYS: i64 = 30;
/// Each round of concurrent calls on one counter lets one through, so a burst of N calls
/// settles in N rounds; beyond this many, the caller retries with the same key (safe).
const MAX_USAGE_ATTEMPTS: u32 = 64;

/// How much of one limit was used in one paid period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageCounter {
    /// The period the count belongs to (see [`crate::entitlements::Period`]).
    pub period: String,
    pub used: u64,
}

/// One call to consume: `amount` of `limit` within the period `period` whose allowance is
/// `allowed` (0 when the user's plan has no such limit).
#[derive(Clone, Debug)]
pub struct UsageRequest<'a> {
    pub user: &'a UserId,
    pub limit: &'a str,
    pub amount: u64,
    pub idempotency_key: &'a str,
    pub period: &'a str,
    pub allowed: u64,
}

/// What a call was answered (and what a repeat of its key is answered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageAnswer {
    pub allowed: bool,
    pub remaining: u64,
    /// This key was answered before; nothing was consumed now.
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("this idempotency_key was used for another request ({0})")]
    KeyReused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(super) fn usage_from_item(item: &Item) -> Result<Option<(String, UsageCounter)>, StoreError> {
    let Some(name) = get_s(item, "sk").and_then(|sk| sk.strip_prefix(USAGE_PREFIX)) else {
        return Ok(None);
    };
    Ok(Some((
        name.to_owned(),
        UsageCounter {
            period: get_s(item, "period").unwrap_or_default().to_owned(),
            used: get_n(item, "used")?.unwrap_or(0).max(0) as u64,
        },
    )))
}

/// Whether period key `stored` is a later period of the same standing than `asked`:
/// keys end in the period's end (`sub:{id}:{end}`, `pass:{end}`, `grant:{from}:{end}`,
/// `free:{end}`); keys of different standings (another plan, a grant) are not compared.
fn is_later_period(stored: &str, asked: &str) -> bool {
    let split = |key: &str| {
        key.rsplit_once(':')
            .and_then(|(kind, end)| Some((kind.to_owned(), end.parse::<i64>().ok()?)))
    };
    match (split(stored), split(asked)) {
        (Some((stored_kind, stored_end)), Some((asked_kind, asked_end))) => {
            stored_kind == asked_kind && stored_end > asked_end
        }
        _ => false,
    }
}

/// When the period a key names ends (its last number).
fn period_end(key: &str) -> Option<i64> {
    key.rsplit_once(':')?.1.parse().ok()
}

fn counter_key(user: &UserId, limit: &str) -> Item {
    key(format!("USER#{user}"), &format!("{USAGE_PREFIX}{limit}"))
}

fn idempotency_key(user: &UserId, idempotency_key: &str) -> Item {
    key(
        format!("USER#{user}"),
        &format!("{IDEMPOTENCY_PREFIX}{idempotency_key}"),
    )
}

/// What a key was first used for: a repeat must ask the same.
fn fingerprint(request: &UsageRequest) -> String {
    format!("{}:{}", request.limit, request.amount)
}

impl Store {
    /// Checks and consumes `request.amount` of a limit, atomically and idempotently.
    /// `seen` is the counter as a strongly consistent read just found it (the account
    /// query's; `None` when there was none): the first attempt decides on it, and a
    /// counter that has moved since only costs one more attempt. `clock` is read again
    /// for every attempt: a request decided just before a period's end and retried just
    /// after it must see that its period has ended (L6, below).
    pub async fn consume_usage(
        &self,
        request: &UsageRequest<'_>,
        seen: Option<UsageCounter>,
        clock: &Clock,
    ) -> Result<UsageAnswer, UsageError> {
        let answer_key = idempotency_key(request.user, request.idempotency_key);
        let counter = counter_key(request.user, request.limit);
        let mut stored = seen;
        for attempt in 0..MAX_USAGE_ATTEMPTS {
            let now = clock.now();
            // A request that computed its period before a boundary (a period that has ended
            // by now) must not put the counter back to it (which would reset it again for
            // the next caller, and again: L6). It answers 503; its retry computes the
            // period anew. A period that still runs (another pass that now speaks) is
            // simply counted. A repeated key is still answered as it was first (a rare
            // path: one more read).
            if stored
                .as_ref()
                .is_some_and(|c| is_later_period(&c.period, request.period))
                && period_end(request.period).is_some_and(|end| end <= now.unix_seconds())
            {
                return match self.get(answer_key).await? {
                    Some(answered) => replay(&answered, request),
                    None => Err(StoreError::Contention.into()),
                };
            }
            let used = stored
                .as_ref()
                .filter(|c| c.period == request.period)
                .map_or(0, |c| c.used);
            let fits = used
                .checked_add(request.amount)
                .is_some_and(|total| total <= request.allowed);
            let answer = UsageAnswer {
                allowed: fits,
                remaining: if fits {
                    request.allowed - used - request.amount
                } else {
                    request.allowed.saturating_sub(used)
                },
                replayed: false,
            };
            // The answer first: its cancellation reason is the first one.
            let mut transaction = self
                .client
                .transact_write_items()
                .transact_items(self.answer_put(answer_key.clone(), request, &answer, now)?);
            if fits {
                transaction = transaction.transact_items(self.counter_update(
                    &counter,
                    request,
                    stored.clone(),
                    used,
                )?);
            }
            match outcome_of(transaction.send().await)? {
                Outcome::Written => return Ok(answer),
                Outcome::KeyAnswered(Some(answered)) => return replay(&answered, request),
                // An engine that did not give the answer back: read it.
                Outcome::KeyAnswered(None) => {
                    if let Some(answered) = self.get(answer_key.clone()).await? {
                        return replay(&answered, request);
                    }
                    // Expired meanwhile: the key is free again.
                }
                Outcome::CounterMoved(now_stored) => {
                    // An engine that did not give the counter back, though there is one
                    // (the decision assumed none): read it, or the same decision would
                    // fail again every round.
                    let now_stored = match now_stored {
                        None if stored.is_none() => self.get(counter.clone()).await?,
                        given => given,
                    };
                    stored = now_stored
                        .as_ref()
                        .map(usage_from_item)
                        .transpose()?
                        .flatten()
                        .map(|(_, counter)| counter);
                    tokio::time::sleep(jitter(attempt)).await;
                }
                // Another transaction held an item: the same decision may still hold.
                Outcome::Busy => tokio::time::sleep(jitter(attempt)).await,
            }
        }
        Err(StoreError::Contention.into())
    }

    fn answer_put(
        &self,
        mut item: Item,
        request: &UsageRequest,
        answer: &UsageAnswer,
        now: Timestamp,
    ) -> Result<TransactWriteItem, StoreError> {
        item.extend(values([
            ("request", s(fingerprint(request))),
            ("allowed", AttributeValue::Bool(answer.allowed)),
            ("remaining", n(answer.remaining as i64)),
            ("at", n(now.unix_seconds())),
            (
                "expires_at",
                n(now.unix_seconds() + IDEMPOTENCY_DAYS * SECONDS_PER_DAY),
            ),
        ]));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            // A repeated key: the cancellation carries its first answer.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// The counter's new value, on the condition that it still holds what was read.
    fn counter_update(
        &self,
        counter: &Item,
        request: &UsageRequest,
        stored: Option<UsageCounter>,
        used: u64,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(counter.clone()))
            .update_expression("SET #period = :period, used = :used, user_id = :user")
            .expression_attribute_names("#period", "period")
            .expression_attribute_values(":period", s(request.period))
            .expression_attribute_values(":used", n((used + request.amount) as i64))
            .expression_attribute_values(":user", s(request.user.as_str()))
            // A counter that moved: the cancellation carries it as it now is.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        update = match stored {
            Some(stored) => update
                .condition_expression("#period = :read_period AND used = :read_used")
                .expression_attribute_values(":read_period", s(stored.period))
                .expression_attribute_values(":read_used", n(stored.used as i64)),
            None => update.condition_expression("attribute_not_exists(pk)"),
        };
        let update = update
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

/// How a usage transaction ended.
enum Outcome {
    Written,
    /// The key was answered before (the stored answer, when the engine gave it back).
    KeyAnswered(Option<Item>),
    /// The counter no longer holds what was read (as it now is; `None`: there is none).
    CounterMoved(Option<Item>),
    /// Cancelled for another reason (a concurrent transaction on the same items).
    Busy,
}

fn outcome_of<T, R>(
    result: Result<T, SdkError<TransactWriteItemsError, R>>,
) -> Result<Outcome, StoreError>
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let err = match result {
        Ok(_) => return Ok(Outcome::Written),
        Err(err) => err,
    };
    let cancelled = match &err {
        SdkError::ServiceError(service) => match service.err() {
            TransactWriteItemsError::TransactionCanceledException(cancelled) => Some(cancelled),
            _ => None,
        },
        _ => None,
    };
    let Some(cancelled) = cancelled else {
        return Err(err.into());
    };
    let failed = |index: usize| {
        cancelled
            .cancellation_reasons()
            .get(index)
            .filter(|reason| reason.code() == Some("ConditionalCheckFailed"))
    };
    Ok(if let Some(reason) = failed(0) {
        Outcome::KeyAnswered(reason.item.clone())
    } else if let Some(reason) = failed(1) {
        Outcome::CounterMoved(reason.item.clone())
    } else {
        Outcome::Busy
    })
}

/// 1 to 8 ms: enough to let the round's winner through, short because every round has
/// one (a counter is never stuck, only busy).
fn jitter(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, RandomState};
    Duration::from_millis(1 + RandomState::new().hash_one(attempt) % 8)
}

/// The answer a key was given the first time, if this call asks the same.
fn replay(answered: &Item, request: &UsageRequest) -> Result<UsageAnswer, UsageError> {
    let asked = get_s(answered, "request").unwrap_or_default();
    if asked != fingerprint(request) {
        return Err(UsageError::KeyReused(asked.to_owned()));
    }
    Ok(UsageAnswer {
        allowed: get_bool(answered, "allowed"),
        remaining: get_n(answered, "remaining")?.unwrap_or(0).max(0) as u64,
        replayed: true,
    })
}

#[cfg(test)]
mod tests {
    use super::is_later_period;

    #[test]
    fn only_a_later_period_of_the_same_standing_counts_as_later() {
        assert!(is_later_period("free:200", "free:100"));
        assert!(!is_later_period("free:100", "free:200"));
        assert!(!is_later_period("free:100", "free:100"));
        assert!(is_later_period("sub:sub_1:900", "sub:sub_1:800"));
        assert!(!is_later_period("sub:sub_2:900", "sub:sub_1:800"));
        assert!(!is_later_period("pass:900", "grant:1:800"));
        assert!(!is_later_period("garbage", "free:1"));
    }
}
