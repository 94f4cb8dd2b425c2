//! The audit trail: one entry per applied delivery or server action, on its user, kept a
//! year.

use super::*;

/// One applied webhook delivery (or server action) in a user's audit trail.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// The delivery's `webhook-id`; for a server action, `server_` and the request id.
    pub webhook_id: String,
    pub event_type: String,
    /// What it did: `granted`, `duplicate`, `applied`, `stale`, `revoked`, ...
    pub effect: String,
    /// The payment or subscription it was about (or the plan a grant gave).
    pub object_id: String,
    pub at: Timestamp,
    /// Who did it, for server actions: the caller's IAM identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Why, as the caller said (server grants).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One page of a user's audit trail, newest first.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

fn audit_from_item(item: &Item) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        webhook_id: get_s(item, "webhook_id").unwrap_or_default().to_owned(),
        event_type: get_s(item, "event_type").unwrap_or_default().to_owned(),
        effect: get_s(item, "effect").unwrap_or_default().to_owned(),
        object_id: get_s(item, "object_id").unwrap_or_default().to_owned(),
        at: get_time(item, "at")?.unwrap_or(Timestamp::from_unix_seconds(0)),
        actor: get_s(item, "actor").map(str::to_owned),
        reason: get_s(item, "reason").map(str::to_owned),
    })
}

/// Where a page starts after: `{at}:{webhook_id}` of the last entry shown.
fn cursor_of(entry: &AuditEntry) -> String {
    format!("{}:{}", entry.at.unix_seconds(), entry.webhook_id)
}

impl Store {
    fn audit_item(&self, user: &UserId, entry: &AuditEntry) -> Item {
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
        for (name, value) in [("actor", &entry.actor), ("reason", &entry.reason)] {
            if let Some(value) = value {
                item.insert(name.to_owned(), s(value));
            }
        }
        item
    }

    /// The entry as part of a transaction, written once.
    pub(super) fn audit_put(
        &self,
        user: &UserId,
        entry: &AuditEntry,
    ) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.audit_item(user, entry)))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Adds a delivery to the user's audit trail. Keyed by the delivery id and written
    /// once, so Dodo's retries of one delivery leave its first effect.
    pub async fn record_event(&self, user: &UserId, entry: &AuditEntry) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.audit_item(user, entry)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        unless_condition_failed(result)
    }

    /// A user's audit trail, oldest first (for support).
    pub async fn audit_trail(&self, user: &UserId) -> Result<Vec<AuditEntry>, StoreError> {
        let mut entries = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :log)")
                .expression_attribute_values(":pk", s(format!("USER#{user}")))
                .expression_attribute_values(":log", s(LOG_PREFIX))
                .set_exclusive_start_key(start)
                .send()
                .await?;
            for item in output.items() {
                entries.push(audit_from_item(item)?);
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        entries.sort_by(|a, b| (a.at, &a.webhook_id).cmp(&(b.at, &b.webhook_id)));
        Ok(entries)
    }

    /// One page of `limit` entries, newest first, after `cursor` (a page's `next_cursor`).
    pub async fn audit_page(
        &self,
        user: &UserId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Option<AuditPage>, StoreError> {
        let trail = self.audit_trail(user).await?;
        // A cursor that names no entry of this user's trail is no page at all (`None`),
        // rather than an empty one that would read as "no history".
        if let Some(cursor) = cursor
            && !trail.iter().any(|entry| cursor_of(entry) == cursor)
        {
            return Ok(None);
        }
        let newest_first = trail.into_iter().rev();
        let mut after_cursor: Vec<AuditEntry> = match cursor {
            None => newest_first.collect(),
            Some(cursor) => newest_first
                .skip_while(|entry| cursor_of(entry) != cursor)
                .skip(1)
                .collect(),
        };
        let next_cursor = (after_cursor.len() > limit).then(|| cursor_of(&after_cursor[limit - 1]));
        after_cursor.truncate(limit);
        Ok(Some(AuditPage {
            entries: after_cursor,
            next_cursor,
        }))
    }
}
