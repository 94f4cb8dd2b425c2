//! Grants: a payment's access, applied exactly once, and succeeded payments nothing linked.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantSource {
    Webhook,
    SuccessCall,
    Reconcile,
}

impl GrantSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::SuccessCall => "success_call",
            Self::Reconcile => "reconcile",
        }
    }
}

/// Access bought by one payment.
#[derive(Clone, Debug)]
pub struct Grant {
    pub user_id: UserId,
    pub payment_id: String,
    pub plan: String,
    pub days: u32,
    pub source: GrantSource,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantOutcome {
    /// This call granted the payment; the user's record after it.
    Applied(Box<UserRecord>),
    /// The payment had been granted before, to `owner`. Nothing changed.
    AlreadyApplied { owner: UserId },
    /// The payment was refunded or lost in a dispute before it could be granted: it is
    /// recorded as granted and revoked, and gives no access.
    Revoked,
}

/// The stored mark of a granted payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRecord {
    pub user_id: UserId,
    pub plan: String,
    pub days: u32,
    pub granted_until: Timestamp,
    /// Taken back by a full refund or a lost dispute (and given back if it is won).
    pub revoked: bool,
    /// When it was granted (by whichever path brought it first).
    pub applied_at: Option<Timestamp>,
}

fn grant_of(item: &Item) -> Result<GrantRecord, StoreError> {
    Ok(GrantRecord {
        user_id: get_user_id(item)?,
        plan: get_s(item, "plan").unwrap_or_default().to_owned(),
        days: get_n(item, "days")?
            .unwrap_or(0)
            .clamp(0, i64::from(u32::MAX)) as u32,
        granted_until: get_time(item, "granted_until")?
            .ok_or_else(|| StoreError::Corrupt("grant without granted_until".into()))?,
        revoked: get_bool(item, "revoked"),
        applied_at: get_time(item, "applied_at")?,
    })
}

impl Store {
    /// The mark left by granting a payment, if it was granted.
    pub async fn payment_grant(&self, payment_id: &str) -> Result<Option<GrantRecord>, StoreError> {
        match self.get(grant_key(payment_id)).await? {
            Some(item) => Ok(Some(grant_of(&item)?)),
            None => Ok(None),
        }
    }

    /// The grant marks of many payments, read in batches (absent: not granted).
    pub async fn payment_grants(
        &self,
        payment_ids: &[&str],
    ) -> Result<HashMap<String, GrantRecord>, StoreError> {
        let keys = payment_ids.iter().map(|id| grant_key(id)).collect();
        let mut found = HashMap::new();
        for item in self.batch_get(keys).await? {
            if let Some(id) = get_s(&item, "pk").and_then(|pk| pk.strip_prefix("PAYMENT#")) {
                found.insert(id.to_owned(), grant_of(&item)?);
            }
        }
        Ok(found)
    }

    /// or a concurrent grant can neither lose nor double-apply the payment. A new payment
    /// extends from the later of now and the current expiry.
    pub async fn apply_grant(
        &self,
        grant: &Grant,
        now: Timestamp,
    ) -> Result<GrantOutcome, StoreError> {
        for attempt in 0..MAX_GRANT_ATTEMPTS {
            if let Some(existing) = self.payment_grant(&grant.payment_id).await? {
                return Ok(GrantOutcome::AlreadyApplied {
                    owner: existing.user_id,
                });
            }
            let claims = self.payment_claims(&grant.payment_id).await?;
            // The whole account (one query): the profile to update, and what access was
            // for the event.
            let account = self.get_account(&grant.user_id).await?;
            let current = account
                .profile
                .clone()
                .unwrap_or_else(|| UserRecord::empty(grant.user_id.clone()));
            // This plan's own time: a pass of another plan neither moves nor relabels it.
            let starts = current
                .passes
                .get(&grant.plan)
                .map_or(now, |until| (*until).max(now));
            let until = starts.plus_days(grant.days);
            let mut after = current.clone();
            after.set_pass(
                &grant.plan,
                Some(if claims.revokes() { starts } else { until }),
            );

            // Refunded or lost before it arrived: recorded as granted and revoked (so that
            // a dispute won later restores it), the user ending as if it had been granted
            // and then taken back.
            let revoked = claims.revokes();
            let event = self.access_event_writes_from(
                &account,
                &grant.user_id,
                Trigger::Payment,
                now,
                |account| {
                    let profile = account
                        .profile
                        .get_or_insert_with(|| UserRecord::empty(grant.user_id.clone()));
                    profile.passes = after.passes.clone();
                    profile.plan = after.plan.clone();
                    profile.paid_until = after.paid_until;
                    profile.payment_date = Some(now);
                    profile.refunded = revoked;
                },
            )?;
            match self
                .write_grant(
                    grant,
                    &current,
                    &after,
                    &claims,
                    (starts, until),
                    now,
                    event,
                )
                .await
            {
                Ok(()) if revoked => return Ok(GrantOutcome::Revoked),
                Ok(()) => {
                    return Ok(GrantOutcome::Applied(Box::new(UserRecord {
                        passes: after.passes,
                        plan: after.plan,
                        paid_until: after.paid_until,
                        payment_date: Some(now),
                        last_payment_id: Some(grant.payment_id.clone()),
                        pending_checkout: None,
                        refunded: false,
                        version: current.version + 1,
                        ..current
                    })));
                }
                Err(WriteConflict::Cancelled) => {
                    // Either the payment was granted meanwhile (the loop's first read
                    // says so), its claims changed, or the user changed: read again and
                    // retry, backing off a little more each time so concurrent writers
                    // spread out.
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(WriteConflict::Failed(err)) => return Err(err),
            }
        }
        Err(StoreError::Contention)
    }

    /// The grant mark, written only if the payment was never granted.
    fn grant_mark(
        &self,
        grant: &Grant,
        starts: Timestamp,
        until: Timestamp,
        now: Timestamp,
        revoked: bool,
    ) -> Result<Put, WriteConflict> {
        let mut item = grant_key(&grant.payment_id);
        item.extend(values([
            ("user_id", s(grant.user_id.as_str())),
            ("plan", s(&grant.plan)),
            ("days", n(i64::from(grant.days))),
            ("granted_from", n(starts.unix_seconds())),
            ("granted_until", n(until.unix_seconds())),
            ("applied_at", n(now.unix_seconds())),
            ("source", s(grant.source.as_str())),
            ("revoked", AttributeValue::Bool(revoked)),
        ]));
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| WriteConflict::Failed(StoreError::Unavailable(e.to_string())))
    }

    /// Fails the transaction if the payment's claims changed since they were read.
    pub(super) fn claims_unchanged(
        &self,
        payment_id: &str,
        claims: &Claims,
    ) -> Result<TransactWriteItem, WriteConflict> {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(claims_key(payment_id)))
            .condition_expression("attribute_not_exists(pk) OR version = :claims_version")
            .expression_attribute_values(":claims_version", n(claims.version))
            .build()
            .map_err(|e| WriteConflict::Failed(StoreError::Unavailable(e.to_string())))?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    /// Writes a grant: the mark and the user's access in one transaction, checking that
    /// the payment's claims did not change since they were read. A `revoked` grant leaves
    /// the expiry where it would be after a grant and its revocation (`starts`) and marks
    /// the user refunded.
    #[allow(clippy::too_many_arguments)]
    async fn write_grant(
        &self,
        grant: &Grant,
        current: &UserRecord,
        after: &UserRecord,
        claims: &Claims,
        (starts, until): (Timestamp, Timestamp),
        now: Timestamp,
        event: Vec<TransactWriteItem>,
    ) -> Result<(), WriteConflict> {
        let revoked = claims.revokes();
        let build_error = |e: aws_sdk_dynamodb::error::BuildError| {
            WriteConflict::Failed(StoreError::Unavailable(e.to_string()))
        };
        let mark = self.grant_mark(grant, starts, until, now, revoked)?;

        // The condition makes the read-modify-write safe: it fails if anyone granted
        // another payment to this user since we read `current`.
        let attribute_values = values([
            (":user", s(grant.user_id.as_str())),
            (":passes", after.passes_value()),
            (":plan", s(after.plan.as_deref().unwrap_or(&grant.plan))),
            (
                ":until",
                n(after
                    .paid_until
                    .unwrap_or(if revoked { starts } else { until })
                    .unix_seconds()),
            ),
            (":now", n(now.unix_seconds())),
            (":payment", s(&grant.payment_id)),
            (":refunded", AttributeValue::Bool(revoked)),
            (":version", n(current.version as i64)),
            (":next", n(current.version as i64 + 1)),
        ]);
        let set = String::from(
            "SET user_id = :user, passes = :passes, #plan = :plan, paid_until = :until, payment_date = :now, \
             last_payment_id = :payment, refunded = :refunded, version = :next",
        );
        let access = Update::builder()
            .table_name(&self.table)
            .set_key(Some(user_key(&grant.user_id)))
            .update_expression(format!("{set} REMOVE {CHECKOUT_FIELDS}"))
            .condition_expression("attribute_not_exists(pk) OR version = :version")
            .expression_attribute_names("#plan", "plan")
            .set_expression_attribute_values(Some(attribute_values))
            .build()
            .map_err(build_error)?;

        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(mark).build())
            .transact_items(TransactWriteItem::builder().update(access).build())
            .transact_items(self.claims_unchanged(&grant.payment_id, claims)?)
            .with_items(event)
            .send()
            .await;
        conflict_of(result)
    }

    /// Keeps a succeeded payment (`PAYMENT`) or a subscription (`SUBSCRIPTION`) that
    /// nothing linked to a user, for support to resolve.
    pub async fn record_unmatched(
        &self,
        kind: &str,
        id: &str,
        customer_email: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut item = key(format!("{kind}#{id}"), UNMATCHED);
        item.extend(values([("received_at", n(now.unix_seconds()))]));
        if let Some(email) = customer_email {
            // Not `email`: that name feeds the user index.
            item.insert("customer_email".to_owned(), s(email));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await?;
        Ok(())
    }
}
