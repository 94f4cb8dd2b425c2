//! The `access-events` function: reads the table's stream and publishes each new access
//! event to EventBridge (`source: "paywall"`, `detail-type: "Access Changed"`).
//!
//! At least once: a batch whose publishing partly fails reports the first failed record,
//! so Lambda retries from there (earlier ones may be published again: consumers drop
//! repeats by `event_id`); records that keep failing go to the dead-letter queue.

use serde_json::{Value, json};

use super::StartError;
use crate::access_events::{EVENT_DETAIL_TYPE, EVENT_SOURCE};
use crate::config::Vars;
use crate::eventbridge::{Entry, EventBridgeClient, MAX_ENTRIES};
use crate::store::ACCESS_EVENT_PREFIX;

pub struct AccessEventPublisher {
    events: EventBridgeClient,
}

/// A stream record that carries a new access event.
struct Pending {
    sequence_number: String,
    entry: Entry,
}

fn string_attribute<'v>(image: &'v Value, name: &str) -> Option<&'v str> {
    image.get(name)?.get("S")?.as_str()
}

/// The access events among a batch of stream records (new items whose sort key is an
/// event's), in stream order.
fn pending_events(batch: &Value) -> Vec<Pending> {
    let Some(records) = batch.get("Records").and_then(Value::as_array) else {
        return Vec::new();
    };
    records
        .iter()
        .filter(|r| r.get("eventName").and_then(Value::as_str) == Some("INSERT"))
        .filter_map(|record| {
            let dynamodb = record.get("dynamodb")?;
            let image = dynamodb.get("NewImage")?;
            string_attribute(image, "sk")?.strip_prefix(ACCESS_EVENT_PREFIX)?;
            Some(Pending {
                sequence_number: dynamodb.get("SequenceNumber")?.as_str()?.to_owned(),
                entry: Entry {
                    source: EVENT_SOURCE.to_owned(),
                    detail_type: EVENT_DETAIL_TYPE.to_owned(),
                    detail: string_attribute(image, "detail")?.to_owned(),
                },
            })
        })
        .collect()
}

impl AccessEventPublisher {
    pub fn new(events: EventBridgeClient) -> Self {
        Self { events }
    }

    pub async fn from_env() -> Result<Self, StartError> {
        Ok(Self::new(EventBridgeClient::from_vars(&Vars::process())?))
    }

    /// Publishes a batch of stream records; the answer Lambda reads (`batchItemFailures`
    /// names the first record to retry from, if any).
    pub async fn publish(&self, batch: &Value) -> Value {
        let pending = pending_events(batch);
        let mut published = 0;
        for chunk in pending.chunks(MAX_ENTRIES) {
            let entries: Vec<Entry> = chunk.iter().map(|p| p.entry.clone()).collect();
            let first_failed = match self.events.put_events(&entries).await {
                Ok(taken) => taken.iter().position(|ok| !ok),
                Err(err) => {
                    tracing::warn!(error = %err, "publishing access events failed");
                    Some(0)
                }
            };
            if let Some(index) = first_failed {
                tracing::warn!(
                    published = published + index,
                    "retrying the rest of the batch"
                );
                return json!({"batchItemFailures": [
                    {"itemIdentifier": chunk[index].sequence_number}
                ]});
            }
            published += chunk.len();
        }
        tracing::info!(published, "access events published");
        json!({"batchItemFailures": []})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_access_events_are_published() {
        let batch = json!({"Records": [
            {"eventName": "INSERT", "dynamodb": {"SequenceNumber": "1",
              "NewImage": {"sk": {"S": "EVENT#0000000000001#evt_a"}, "detail": {"S": "{\"a\":1}"}}}},
            {"eventName": "MODIFY", "dynamodb": {"SequenceNumber": "2",
              "NewImage": {"sk": {"S": "EVENT#0000000000002#evt_b"}, "detail": {"S": "{}"}}}},
            {"eventName": "INSERT", "dynamodb": {"SequenceNumber": "3",
              "NewImage": {"sk": {"S": "PROFILE"}}}},
            {"eventName": "REMOVE", "dynamodb": {"SequenceNumber": "4"}},
        ]});
        let pending = pending_events(&batch);
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].sequence_number, "1");
        assert_eq!(pending[0].entry.detail, "{\"a\":1}");
        assert_eq!(pending[0].entry.detail_type, "Access Changed");
        assert!(pending_events(&json!({})).is_empty());
    }
}
