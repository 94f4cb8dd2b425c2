//! Access events: one item per change of a user's access (`USER#{sub}` /
//! `EVENT#{ms}#{event_id}`), written in the same transaction as the change, so an event
//! exists exactly when its change was stored. The table's stream carries each new one to
//! the function that publishes it to EventBridge; the item itself expires after a week.

use super::*;

/// Sort-key prefix of access events (sorts before `PROFILE`: never read with the account).
pub const ACCESS_EVENT_PREFIX: &str = "EVENT#";
const ACCESS_EVENT_DAYS: i64 = 7;

/// An event as stored: its id, its user, when, and the `detail` published (JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessEvent {
    pub event_id: String,
    pub user: UserId,
    pub at_millis: i64,
    pub detail: String,
    /// When the access it reports ends, if it does: the hourly sweep publishes `expired`
    /// then (see [`Store::expiry_watches`]).
    pub ends_at: Option<Timestamp>,
}

/// What made a change of access, as far as its writer knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A payment (a pass bought, a subscription's payment recorded).
    Payment,
    /// A subscription's new state.
    Subscription(SubscriptionStatus),
    /// A refund or dispute.
    Claim,
    /// A grant given by the founder's backend.
    ServerGrant,
    /// A grant taken back by the founder's backend.
    ServerRevoke,
    /// Access ran out.
    Expiry,
}

/// A change of one user's access, as a write is about to store it.
#[derive(Debug)]
pub struct AccessChange<'a> {
    pub user: &'a UserId,
    pub before: &'a Account,
    pub after: &'a Account,
    pub trigger: Trigger,
    /// The Dodo delivery id, `reconcile`, `success`, `server` or `expiry`.
    pub cause: &'a str,
    pub at: Timestamp,
}

/// Builds the event for a change, or `None` when access did not change. Installed by the
/// handlers (which know the catalogue); the store only writes what it returns.
pub type AccessObserver =
    std::sync::Arc<dyn Fn(&AccessChange) -> Option<AccessEvent> + Send + Sync>;

tokio::task_local! {
    static CAUSE: (String, crate::time::Clock);
}

/// Runs `work` with `cause` named on every access event it writes, and access judged at
/// `clock`'s time (the event of a delayed delivery is about access as it is now).
pub async fn with_cause<F: std::future::Future>(
    cause: impl Into<String>,
    clock: crate::time::Clock,
    work: F,
) -> F::Output {
    CAUSE.scope((cause.into(), clock), work).await
}

/// The cause in scope, and the time to judge access at (`fallback` outside a scope).
fn current_cause(fallback: Timestamp) -> (String, Timestamp) {
    CAUSE
        .try_with(|(cause, clock)| (cause.clone(), clock.now()))
        .unwrap_or_else(|_| ("paywall".to_owned(), fallback))
}

/// Sort key of an expiry watch: `EXPIRY#{hour}` / `USER#{sub}#{ends_at}`.
fn expiry_watch_key(user: &UserId, ends_at: Timestamp) -> Item {
    key(
        format!("EXPIRY#{}", ends_at.unix_seconds().div_euclid(3600)),
        &format!("USER#{user}#{}", ends_at.unix_seconds()),
    )
}

/// A user whose access was to end at `ends_at` (the hourly sweep checks them then).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiryWatch {
    pub user: UserId,
    pub ends_at: Timestamp,
}

pub(super) fn access_event_item(table_user: &UserId, event: &AccessEvent) -> Item {
    let mut item = key(
        format!("USER#{table_user}"),
        &format!(
            "{ACCESS_EVENT_PREFIX}{:013}#{}",
            event.at_millis, event.event_id
        ),
    );
    item.extend(values([
        ("event_id", s(&event.event_id)),
        ("user_id", s(event.user.as_str())),
        ("at_ms", n(event.at_millis)),
        ("detail", s(&event.detail)),
        (
            "expires_at",
            n(event.at_millis / 1000 + ACCESS_EVENT_DAYS * SECONDS_PER_DAY),
        ),
    ]));
    item
}

/// An event from a stream record's new image or a stored item.
pub fn access_event_from_item(item: &Item) -> Option<AccessEvent> {
    get_s(item, "sk")?.strip_prefix(ACCESS_EVENT_PREFIX)?;
    Some(AccessEvent {
        event_id: get_s(item, "event_id")?.to_owned(),
        user: UserId::parse(get_s(item, "user_id")?).ok()?,
        at_millis: get_n(item, "at_ms").ok()??,
        detail: get_s(item, "detail")?.to_owned(),
        ends_at: None,
    })
}

/// The sort key of a user's access revision (see [`Account::access_rev`]); after
/// `PROFILE`, so the account's one query reads it.
pub(super) const ACCESS_REV: &str = "REV";

impl Store {
    /// Bumps `user`'s access revision from `seen` (what the snapshot the change was
    /// computed from said), failing the transaction if any other access-changing write
    /// came in between: the caller reads again and recomputes its event.
    pub(super) fn access_rev_guard(
        &self,
        user: &UserId,
        seen: i64,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(format!("USER#{user}"), ACCESS_REV)))
            .update_expression("SET rev = :next, user_id = :user")
            .condition_expression("attribute_not_exists(pk) OR rev = :seen")
            .expression_attribute_values(":seen", n(seen))
            .expression_attribute_values(":next", n(seen + 1))
            .expression_attribute_values(":user", s(user.as_str()))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// The same store, writing an access event with every change of access (built by
    /// `observer`).
    pub fn with_access_events(mut self, observer: AccessObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The event and its expiry watch, as part of the transaction that makes the change.
    pub(super) fn access_event_puts(
        &self,
        event: &AccessEvent,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let build = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Unavailable(e.to_string());
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(access_event_item(&event.user, event)))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build)?;
        let mut puts = vec![TransactWriteItem::builder().put(put).build()];
        if let Some(ends_at) = event.ends_at {
            let mut watch = expiry_watch_key(&event.user, ends_at);
            watch.extend(values([
                ("user_id", s(event.user.as_str())),
                ("ends_at", n(ends_at.unix_seconds())),
                // Swept within the hour; kept a while for a sweep that fell behind.
                (
                    "expires_at",
                    n(ends_at.unix_seconds() + 30 * SECONDS_PER_DAY),
                ),
            ]));
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(watch))
                .build()
                .map_err(build)?;
            puts.push(TransactWriteItem::builder().put(put).build());
        }
        Ok(puts)
    }

    /// The event (and watch) for a change the caller is about to write: reads the
    /// account, applies `change` to a copy, and asks the observer. Nothing when no
    /// observer is installed or access does not change.
    pub(super) async fn access_event_writes(
        &self,
        user: &UserId,
        trigger: Trigger,
        now: Timestamp,
        change: impl FnOnce(&mut Account),
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        if self.observer.is_none() {
            return Ok(Vec::new());
        }
        let before = self.get_account(user).await?;
        self.access_event_writes_from(&before, user, trigger, now, change)
    }

    /// [`Self::access_event_writes`] from an account the caller has just read.
    pub(super) fn access_event_writes_from(
        &self,
        before: &Account,
        user: &UserId,
        trigger: Trigger,
        now: Timestamp,
        change: impl FnOnce(&mut Account),
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let Some(observer) = &self.observer else {
            return Ok(Vec::new());
        };
        let mut after = before.clone();
        change(&mut after);
        let (cause, now) = current_cause(now);
        let mut writes = match observer(&AccessChange {
            user,
            before,
            after: &after,
            trigger,
            cause: &cause,
            at: now,
        }) {
            Some(event) => self.access_event_puts(&event)?,
            None => Vec::new(),
        };
        // Even a change that emits no event is serialised: its "no change" was judged
        // from `before`, which a concurrent write may have made stale (L9).
        writes.push(self.access_rev_guard(user, before.access_rev)?);
        Ok(writes)
    }

    /// The users whose access was to end within `hour` (unix seconds / 3600).
    pub async fn expiry_watches(&self, hour: i64) -> Result<Vec<ExpiryWatch>, StoreError> {
        let mut watches = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(format!("EXPIRY#{hour}")))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await?;
            for item in output.items() {
                watches.push(ExpiryWatch {
                    user: get_user_id(item)?,
                    ends_at: get_time(item, "ends_at")?
                        .ok_or_else(|| StoreError::Corrupt("watch without ends_at".into()))?,
                });
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(watches)
    }

    /// Settles a watch: writes `event` (the access ran out) if given, and drops the watch,
    /// in one transaction. An event already written (an earlier sweep that stopped before
    /// dropping the watch) is not written twice.
    pub async fn settle_expiry_watch(
        &self,
        watch: &ExpiryWatch,
        event: Option<&AccessEvent>,
    ) -> Result<(), StoreError> {
        let delete = aws_sdk_dynamodb::types::Delete::builder()
            .table_name(&self.table)
            .set_key(Some(expiry_watch_key(&watch.user, watch.ends_at)))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut transaction = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().delete(delete.clone()).build());
        if let Some(event) = event {
            for put in self.access_event_puts(event)? {
                transaction = transaction.transact_items(put);
            }
        }
        match conflict_of(transaction.send().await) {
            Ok(()) => Ok(()),
            // The event exists already: just drop the watch.
            Err(WriteConflict::Cancelled) => {
                let result = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(delete.key))
                    .send()
                    .await;
                result.map(|_| ()).map_err(Into::into)
            }
            Err(WriteConflict::Failed(err)) => Err(err),
        }
    }

    /// The last hour the expiry sweep finished, if any.
    pub async fn expiry_swept_through(&self) -> Result<Option<i64>, StoreError> {
        let item = self.get(key("EXPIRY".to_owned(), "SWEPT")).await?;
        item.map(|item| get_n(&item, "hour"))
            .transpose()
            .map(Option::flatten)
    }

    /// Records that every hour up to `hour` was swept.
    pub async fn mark_expiry_swept(&self, hour: i64) -> Result<(), StoreError> {
        let mut item = key("EXPIRY".to_owned(), "SWEPT");
        item.insert("hour".to_owned(), n(hour));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await?;
        Ok(())
    }

    /// Every stored access event, newest first (the local server's `/dev/events`: a scan,
    /// never used in AWS, where the stream delivers them).
    pub async fn all_access_events(&self) -> Result<Vec<AccessEvent>, StoreError> {
        let mut events = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(sk, :event)")
                .expression_attribute_values(":event", s(ACCESS_EVENT_PREFIX))
                .set_exclusive_start_key(start)
                .send()
                .await?;
            events.extend(output.items().iter().filter_map(access_event_from_item));
            start = output.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        events.sort_by(|a, b| (b.at_millis, &b.event_id).cmp(&(a.at_millis, &a.event_id)));
        Ok(events)
    }
}
