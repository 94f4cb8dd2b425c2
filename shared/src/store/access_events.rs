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
    })
}

impl Store {
    /// The event as part of the transaction that makes its change.
    pub(super) fn access_event_put(
        &self,
        event: &AccessEvent,
    ) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(access_event_item(&event.user, event)))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
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
