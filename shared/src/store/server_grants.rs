//! Access given by the founder's backend without a payment (a comp, a make-good):
//! `USER#{sub}` / `SERVER_GRANT` (sorts after `PROFILE`: read with the account). One per
//! user; a new one replaces it. Written together with its audit entry.

use super::*;
use aws_sdk_dynamodb::types::Delete;

pub(super) const SERVER_GRANT: &str = "SERVER_GRANT";

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ServerGrant {
    pub plan: String,
    pub from: Timestamp,
    pub until: Timestamp,
    pub reason: String,
    /// The IAM identity that gave it.
    pub by: String,
}

impl ServerGrant {
    pub fn grants_access(&self, now: Timestamp) -> bool {
        self.from <= now && now < self.until
    }
}

pub(super) fn server_grant_from_item(item: &Item) -> Result<ServerGrant, StoreError> {
    let time = |name| {
        get_time(item, name)?.ok_or_else(|| StoreError::Corrupt(format!("grant without {name}")))
    };
    Ok(ServerGrant {
        plan: get_s(item, "plan").unwrap_or_default().to_owned(),
        from: time("granted_from")?,
        until: time("granted_until")?,
        reason: get_s(item, "reason").unwrap_or_default().to_owned(),
        by: get_s(item, "granted_by").unwrap_or_default().to_owned(),
    })
}

impl Store {
    /// Gives `grant` to `user` (replacing any), with its audit entry and access event.
    pub async fn put_server_grant(
        &self,
        user: &UserId,
        grant: &ServerGrant,
        audit: &AuditEntry,
        event: Option<&AccessEvent>,
        seen_rev: i64,
    ) -> Result<(), StoreError> {
        let mut item = key(format!("USER#{user}"), SERVER_GRANT);
        item.extend(values([
            ("user_id", s(user.as_str())),
            ("plan", s(&grant.plan)),
            ("granted_from", n(grant.from.unix_seconds())),
            ("granted_until", n(grant.until.unix_seconds())),
            ("reason", s(&grant.reason)),
            ("granted_by", s(&grant.by)),
        ]));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut transaction = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(self.audit_put(user, audit)?);
        if let Some(event) = event {
            for put in self.access_event_puts(event)? {
                transaction = transaction.transact_items(put);
            }
        }
        // The event was computed from an account read at `seen_rev` (L9).
        transaction = transaction.transact_items(self.access_rev_guard(user, seen_rev)?);
        match conflict_of(transaction.send().await) {
            Ok(()) => Ok(()),
            Err(WriteConflict::Cancelled) => Err(StoreError::Contention),
            Err(WriteConflict::Failed(err)) => Err(err),
        }
    }

    /// Takes `user`'s grant back; `false` when they had none (nothing is written).
    pub async fn remove_server_grant(
        &self,
        user: &UserId,
        audit: &AuditEntry,
        event: Option<&AccessEvent>,
        seen_rev: i64,
    ) -> Result<bool, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(format!("USER#{user}"), SERVER_GRANT)))
            .condition_expression("attribute_exists(pk)")
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut transaction = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().delete(delete).build())
            .transact_items(self.audit_put(user, audit)?);
        if let Some(event) = event {
            for put in self.access_event_puts(event)? {
                transaction = transaction.transact_items(put);
            }
        }
        transaction = transaction.transact_items(self.access_rev_guard(user, seen_rev)?);
        match conflict_of(transaction.send().await) {
            Ok(()) => Ok(true),
            // No grant (taken back meanwhile), or another write got in the way: retry.
            Err(WriteConflict::Cancelled) => {
                match self.get(key(format!("USER#{user}"), SERVER_GRANT)).await? {
                    None => Ok(false),
                    Some(_) => Err(StoreError::Contention),
                }
            }
            Err(WriteConflict::Failed(err)) => Err(err),
        }
    }
}
