//! The audit trail: one entry per applied delivery, on its user, kept a year.

use super::*;

/// One applied webhook delivery in a user's audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub webhook_id: String,
    pub event_type: String,
    /// What it did: `granted`, `duplicate`, `applied`, `stale`, `revoked`, ...
    pub effect: String,
    /// The payment or subscription it was about.
    pub object_id: String,
    pub at: Timestamp,
}

impl Store {
    /// Adds a delivery to the user's audit trail. Keyed by the delivery id and written
    /// once, so Dodo's retries of one delivery leave its first effect.
    pub async fn record_event(&self, user: &UserId, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut item = key(
            format!("USER#{user}"),
            &format!("{LOG_PREFIX}{}", entry.webhook_id),
        );
        item.extend(values([
            ("webhook_id", s(&entry.webhook_id)),
            ("event_type", s(&entry.event_type)),
            ("effect", s(&entry.effect)),
            ("object_id", s(&entry.object_id)),
            ("at", n(entry.at.unix_seconds())),
            (
                "expires_at",
                n(entry.at.unix_seconds() + AUDIT_DAYS * SECONDS_PER_DAY),
            ),
        ]));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        unless_condition_failed(result)
    }

    /// A user's audit trail, oldest first (for support).
    pub async fn audit_trail(&self, user: &UserId) -> Result<Vec<AuditEntry>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :log)")
            .expression_attribute_values(":pk", s(format!("USER#{user}")))
            .expression_attribute_values(":log", s(LOG_PREFIX))
            .send()
            .await?;
        let mut entries = output
            .items()
            .iter()
            .map(|item| {
                Ok(AuditEntry {
                    webhook_id: get_s(item, "webhook_id").unwrap_or_default().to_owned(),
                    event_type: get_s(item, "event_type").unwrap_or_default().to_owned(),
                    effect: get_s(item, "effect").unwrap_or_default().to_owned(),
                    object_id: get_s(item, "object_id").unwrap_or_default().to_owned(),
                    at: get_time(item, "at")?.unwrap_or(Timestamp::from_unix_seconds(0)),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        entries.sort_by_key(|e| e.at);
        Ok(entries)
    }
}
