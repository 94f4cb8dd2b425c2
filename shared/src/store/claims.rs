//! Claims: refunds and disputes of a payment, and what they take back or give back.

use super::subscriptions::replace_subscription;
use super::*;

/// What Dodo said about a payment after it was made: refunds and disputes. Kept per
/// payment, so that a refund or a dispute that arrives before the payment itself is still
/// applied when the payment arrives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    pub fully_refunded: bool,
    pub dispute_status: Option<String>,
    /// When the dispute state applied occurred (ms); older dispute events are ignored.
    pub dispute_event_at: i64,
    /// When the claims last changed (what they take back was taken back then).
    pub updated_at: Option<Timestamp>,
    /// Reconcile asked Dodo about the payment (it was unknown here when claimed).
    pub looked_up: bool,
    /// When last written, the payment had not been applied here.
    pub payment_unknown: bool,
    pub(super) version: i64,
}

impl Claims {
    /// Whether the payment's access is taken back: refunded in full, or a dispute lost or
    /// accepted (money returned to the buyer).
    pub fn revokes(&self) -> bool {
        self.fully_refunded || self.dispute_lost()
    }

    /// A dispute of the payment was lost or accepted.
    pub fn dispute_lost(&self) -> bool {
        matches!(
            self.dispute_status.as_deref(),
            Some("dispute_lost" | "dispute_accepted")
        )
    }
}

/// One refund or dispute event about a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// `refund.succeeded`: a partial refund changes nothing.
    Refund { full: bool },
    /// `dispute.*`: the dispute's latest status, as of `event_at` (ms).
    Dispute { status: String, event_at: i64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The payment's access was taken back.
    Revoked,
    /// The payment's access was given back (a dispute won).
    Restored,
    /// Recorded; the payment's access did not change (not granted yet, or no change).
    Recorded,
    /// A duplicate or an older event: nothing changed.
    Unchanged,
}

impl Store {
    /// The refunds and disputes recorded for a payment.
    pub async fn payment_claims(&self, payment_id: &str) -> Result<Claims, StoreError> {
        match self.get(claims_key(payment_id)).await? {
            Some(item) => claims_of(&item),
            None => Ok(Claims::default()),
        }
    }

    /// The claims recorded for many payments, read in batches.
    pub async fn payments_claims(
        &self,
        payment_ids: &[&str],
    ) -> Result<HashMap<String, Claims>, StoreError> {
        let keys = payment_ids.iter().map(|id| claims_key(id)).collect();
        let mut found = HashMap::new();
        for item in self.batch_get(keys).await? {
            if let Some(id) = get_s(&item, "pk").and_then(|pk| pk.strip_prefix("PAYMENT#")) {
                found.insert(id.to_owned(), claims_of(&item)?);
            }
        }
        Ok(found)
    }

    /// Which of these payments were applied here (granted, or recorded as a
    /// subscription's payment), read in batches.
    pub async fn payments_applied(
        &self,
        payment_ids: &[&str],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let keys = payment_ids
            .iter()
            .flat_map(|id| [grant_key(id), subscription_payment_key(id)])
            .collect();
        Ok(self
            .batch_get(keys)
            .await?
            .iter()
            .filter_map(|item| {
                get_s(item, "pk")?
                    .strip_prefix("PAYMENT#")
                    .map(str::to_owned)
            })
            .collect())
    }

    /// Notes that reconcile asked Dodo about this claimed payment (so that a payment that
    /// is not ours is asked about once, not every run).
    pub async fn mark_claim_looked_up(&self, payment_id: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(claims_key(payment_id)))
            .update_expression("SET looked_up = :yes")
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .send()
            .await?;
        Ok(())
    }
}

fn claims_of(item: &Item) -> Result<Claims, StoreError> {
    Ok(Claims {
        fully_refunded: get_bool(item, "fully_refunded"),
        dispute_status: get_s(item, "dispute_status").map(str::to_owned),
        dispute_event_at: get_n(item, "dispute_event_at")?.unwrap_or(0),
        version: get_n(item, "version")?.unwrap_or(0),
        updated_at: get_time(item, "updated_at")?,
        looked_up: get_bool(item, "looked_up"),
        payment_unknown: get_bool(item, "payment_unknown"),
    })
}

impl Store {
    /// Records a refund or a dispute of a payment and, when it changes whether the
    /// payment's access stands, takes the access back (or gives it back) in the same
    /// transaction: the user's expiry moves by the days the payment granted.
    pub async fn apply_claim(
        &self,
        payment_id: &str,
        claim: &Claim,
        now: Timestamp,
    ) -> Result<ClaimOutcome, StoreError> {
        let build_error =
            |e: aws_sdk_dynamodb::error::BuildError| StoreError::Unavailable(e.to_string());
        for attempt in 0..MAX_GRANT_ATTEMPTS {
            let before = self.payment_claims(payment_id).await?;
            let mut after = before.clone();
            match claim {
                Claim::Refund { full } => after.fully_refunded |= *full,
                Claim::Dispute { status, event_at } => {
                    // Only a change of status is written: the same status heard again
                    // (Dodo's retries, reconcile reading the list every hour) changes
                    // nothing, and keeps when the claims last changed.
                    if *event_at >= before.dispute_event_at
                        && before.dispute_status.as_deref() != Some(status.as_str())
                    {
                        after.dispute_status = Some(status.clone());
                        after.dispute_event_at = *event_at;
                    }
                }
            }
            if after == before {
                return Ok(ClaimOutcome::Unchanged);
            }
            let grant = self.payment_grant(payment_id).await?;
            let subscription_paid = match &grant {
                Some(_) => None,
                None => self.subscription_payment(payment_id).await?,
            };
            let mut item = claims_key(payment_id);
            item.extend(values([
                ("fully_refunded", AttributeValue::Bool(after.fully_refunded)),
                ("dispute_event_at", n(after.dispute_event_at)),
                ("version", n(before.version + 1)),
                ("updated_at", n(now.unix_seconds())),
                // Claimed before its payment was applied here: reconcile looks it up.
                (
                    "payment_unknown",
                    AttributeValue::Bool(grant.is_none() && subscription_paid.is_none()),
                ),
            ]));
            if let Some(status) = &after.dispute_status {
                item.insert("dispute_status".to_owned(), s(status));
            }
            let claims = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk) OR version = :version")
                .expression_attribute_values(":version", n(before.version))
                .build()
                .map_err(build_error)?;
            let mut request = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(claims).build());

            let outcome = match &grant {
                Some(grant) if grant.revoked != after.revokes() => {
                    let revoke = after.revokes();
                    let profile = self
                        .get_user(&grant.user_id)
                        .await?
                        .unwrap_or_else(|| UserRecord::empty(grant.user_id.clone()));
                    let shift =
                        i64::from(grant.days) * SECONDS_PER_DAY * if revoke { -1 } else { 1 };
                    // Only this pass's own plan's time moves: what another plan's pass
                    // paid for is untouched, and what this plan had before is restored.
                    // A profile written before passes were kept per plan holds one
                    // timeline, under the plan bought last: the days are taken back
                    // from (or given back to) that one, never given to another plan.
                    let plan = if profile.passes.contains_key(&grant.plan) {
                        grant.plan.clone()
                    } else {
                        profile.plan.clone().unwrap_or_else(|| grant.plan.clone())
                    };
                    let until = profile.passes.get(&plan).map_or(
                        if revoke {
                            now.min(grant.granted_until)
                        } else {
                            grant.granted_until
                        },
                        |until| until.plus_seconds(shift),
                    );
                    let mut after_profile = profile.clone();
                    after_profile.set_pass(&plan, Some(until));
                    let mark = Update::builder()
                        .table_name(&self.table)
                        .set_key(Some(grant_key(payment_id)))
                        .update_expression("SET revoked = :revoked")
                        .condition_expression("attribute_exists(pk)")
                        .expression_attribute_values(":revoked", AttributeValue::Bool(revoke))
                        .build()
                        .map_err(build_error)?;
                    let access = Update::builder()
                        .table_name(&self.table)
                        .set_key(Some(user_key(&grant.user_id)))
                        .update_expression(
                            "SET user_id = :user, passes = :passes, #plan = :plan, paid_until = :until, \
                             refunded = :refunded, version = :next",
                        )
                        .condition_expression("attribute_not_exists(pk) OR version = :version")
                        .expression_attribute_names("#plan", "plan")
                        .set_expression_attribute_values(Some(values([
                            (":user", s(grant.user_id.as_str())),
                            (":passes", after_profile.passes_value()),
                            (":plan", s(after_profile.plan.as_deref().unwrap_or(&plan))),
                            (
                                ":until",
                                n(after_profile.paid_until.unwrap_or(until).unix_seconds()),
                            ),
                            (":refunded", AttributeValue::Bool(revoke)),
                            (":version", n(profile.version as i64)),
                            (":next", n(profile.version as i64 + 1)),
                        ])))
                        .build()
                        .map_err(build_error)?;
                    let event = self
                        .access_event_writes(&grant.user_id, Trigger::Claim, now, |account| {
                            let profile = account
                                .profile
                                .get_or_insert_with(|| UserRecord::empty(grant.user_id.clone()));
                            profile.set_pass(&plan, Some(until));
                            profile.refunded = revoke;
                        })
                        .await?;
                    request = request
                        .transact_items(TransactWriteItem::builder().update(mark).build())
                        .transact_items(TransactWriteItem::builder().update(access).build())
                        .with_items(event);
                    if revoke {
                        ClaimOutcome::Revoked
                    } else {
                        ClaimOutcome::Restored
                    }
                }
                Some(_) => ClaimOutcome::Recorded,
                None => match subscription_paid {
                    // A subscription's payment: a lost dispute ends the subscription's
                    // access at once; a full refund of its latest payment ends it until
                    // a later payment succeeds.
                    Some(paid) => {
                        let (update, outcome) = self
                            .subscription_claim_update(&paid, payment_id, &after)
                            .await?;
                        if let Some((update, record)) = update {
                            let event = self
                                .access_event_writes(
                                    &paid.user_id,
                                    Trigger::Claim,
                                    now,
                                    |account| replace_subscription(account, record),
                                )
                                .await?;
                            request = request
                                .transact_items(TransactWriteItem::builder().update(update).build())
                                .with_items(event);
                        }
                        outcome
                    }
                    None => {
                        // Not granted yet: the claim must land before any grant does, or
                        // the grant must see it; checking that neither a grant nor a
                        // subscription payment exists serialises the two.
                        for absent_key in
                            [grant_key(payment_id), subscription_payment_key(payment_id)]
                        {
                            let absent = ConditionCheck::builder()
                                .table_name(&self.table)
                                .set_key(Some(absent_key))
                                .condition_expression("attribute_not_exists(pk)")
                                .build()
                                .map_err(build_error)?;
                            request = request.transact_items(
                                TransactWriteItem::builder().condition_check(absent).build(),
                            );
                        }
                        ClaimOutcome::Recorded
                    }
                },
            };
            match conflict_of(request.send().await) {
                Ok(()) => return Ok(outcome),
                Err(WriteConflict::Cancelled) => tokio::time::sleep(backoff(attempt)).await,
                Err(WriteConflict::Failed(err)) => return Err(err),
            }
        }
        Err(StoreError::Contention)
    }

    /// The change a subscription payment's claims make to its subscription, read now and
    /// checked at write time against the subscription's revision.
    async fn subscription_claim_update(
        &self,
        paid: &SubscriptionPayment,
        payment_id: &str,
        after: &Claims,
    ) -> Result<(Option<(Update, SubscriptionRecord)>, ClaimOutcome), StoreError> {
        let Some(record) = self
            .get_subscription(&paid.user_id, &paid.subscription_id)
            .await?
        else {
            return Ok((None, ClaimOutcome::Recorded));
        };
        let latest = record.last_payment_id.as_deref() == Some(payment_id);
        let mut set = vec!["rev = :next"];
        // `ADD` / `DELETE` on a set: each payment's lost dispute counts on its own, so one
        // won back does not hide another still lost.
        let mut change = String::new();
        let refund = after.fully_refunded
            && latest
            && record.refunded_payment_id.as_deref() != Some(payment_id);
        if refund {
            set.push("refunded_payment_id = :payment");
        }
        let lost_here = record.lost_dispute_payment_ids.contains(payment_id);
        let restore = !after.dispute_lost() && lost_here;
        if after.dispute_lost() && !lost_here {
            change = " ADD lost_dispute_payment_ids :payment_set".to_owned();
        } else if restore {
            change = " DELETE lost_dispute_payment_ids :payment_set".to_owned();
        }
        if !refund && change.is_empty() {
            return Ok((None, ClaimOutcome::Recorded));
        }
        let (unchanged, rev_value) = unchanged_since(record.rev);
        let expression = format!("SET {}{change}", set.join(", "));
        let mut attribute_values = values([(":rev", rev_value), (":next", n(record.rev + 1))]);
        // DynamoDB refuses a value the expression does not use.
        if refund {
            attribute_values.insert(":payment".to_owned(), s(payment_id));
        }
        if !change.is_empty() {
            attribute_values.insert(
                ":payment_set".to_owned(),
                AttributeValue::Ss(vec![payment_id.to_owned()]),
            );
        }
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(subscription_key(&paid.user_id, &paid.subscription_id)))
            .update_expression(expression)
            .condition_expression(format!("attribute_exists(pk) AND ({unchanged})"))
            .set_expression_attribute_values(Some(attribute_values))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut after_record = record.clone();
        if refund {
            after_record.refunded_payment_id = Some(payment_id.to_owned());
        }
        if restore {
            after_record.lost_dispute_payment_ids.remove(payment_id);
        } else if after.dispute_lost() {
            after_record
                .lost_dispute_payment_ids
                .insert(payment_id.to_owned());
        }
        let outcome = match (record.revoked(), after_record.revoked()) {
            (false, true) => ClaimOutcome::Revoked,
            (true, false) => ClaimOutcome::Restored,
            _ => ClaimOutcome::Recorded,
        };
        Ok((Some((update, after_record)), outcome))
    }
}
