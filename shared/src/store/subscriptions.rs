//! Subscriptions: each one's state as its most recent event left it, and its owner.

use super::*;

/// A subscription of the user's, as its most recent event left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub subscription_id: String,
    pub status: SubscriptionStatus,
    /// The plan it was last on while on a product this paywall sells.
    pub plan: String,
    pub next_billing_date: Option<Timestamp>,
    pub past_due_ends_at: Option<Timestamp>,
    pub cancel_at_next_billing_date: bool,
    /// When the event that set this state occurred (ms).
    pub event_at: i64,
    /// Whether its current product is one the catalogue sells. A subscription moved to
    /// another product stops granting at the end of the period already paid.
    pub sold: bool,
    /// The end of the period paid while on a product we sell (set once it moved off).
    pub paid_through: Option<Timestamp>,
    /// The latest payment of the subscription we know of, and when it was made (ms).
    pub last_payment_id: Option<String>,
    pub last_payment_at: i64,
    /// A full refund of this payment ends access until a later payment succeeds.
    pub refunded_payment_id: Option<String>,
    /// When the current paid period started (Dodo's `previous_billing_date`): a period
    /// that started after the refunded payment was paid by a later one, even one whose
    /// webhook was lost.
    pub period_start: Option<Timestamp>,
    /// Payments of it whose dispute was lost: while any is, it gives no access.
    pub lost_dispute_payment_ids: std::collections::BTreeSet<String>,
    /// When the trial it was created with ends (its creation plus Dodo's
    /// `trial_period_days`); `None` without a trial.
    pub trial_ends_at: Option<Timestamp>,
    /// A plan change Dodo has scheduled: the product, and when it applies.
    pub scheduled_product_id: Option<String>,
    pub scheduled_at: Option<Timestamp>,
    /// Optimistic-concurrency counter of the item.
    pub rev: i64,
}

impl SubscriptionRecord {
    /// A subscription nothing is known of yet: pending, no payment, no access.
    pub fn fresh(subscription_id: &str) -> Self {
        Self {
            subscription_id: subscription_id.to_owned(),
            status: SubscriptionStatus::Pending,
            plan: String::new(),
            next_billing_date: None,
            past_due_ends_at: None,
            cancel_at_next_billing_date: false,
            event_at: 0,
            sold: true,
            paid_through: None,
            last_payment_id: None,
            last_payment_at: 0,
            refunded_payment_id: None,
            period_start: None,
            lost_dispute_payment_ids: Default::default(),
            trial_ends_at: None,
            scheduled_product_id: None,
            scheduled_at: None,
            rev: 0,
        }
    }

    /// The end of its trial while it is still on it: it gives access and has not been
    /// charged past the trial (its period still ends at the trial's end; an hour's slack,
    /// as Dodo stamps the two a moment apart). The first paid charge moves
    /// `next_billing_date` a period on, which converts it.
    pub fn trialing_until(&self, now: Timestamp) -> Option<Timestamp> {
        let ends = self.trial_ends_at?;
        let on_trial = self
            .next_billing_date
            .is_some_and(|next| next.unix_seconds() <= ends.unix_seconds() + 3600);
        (on_trial && self.grants_access(now)).then_some(ends)
    }

    /// Until when this subscription gives access: the state's own rule (see
    /// [`crate::subscription::access_until`]), capped at the period already paid when it
    /// moved to a product we do not sell, and none at all after a lost dispute or while
    /// its latest payment stands refunded.
    pub fn access_until(&self) -> Option<Timestamp> {
        if self.revoked() {
            return None;
        }
        let natural = self.state_access_until();
        if self.sold {
            natural
        } else {
            natural.min(self.paid_through)
        }
    }

    /// Its access was taken back: its latest payment refunded in full or its dispute
    /// lost. Either ends access for the period that payment paid for, not for good: a
    /// later payment (a renewal Dodo goes on charging) gives it back (L2).
    pub fn revoked(&self) -> bool {
        let refunded_latest =
            self.refunded_payment_id.is_some() && self.refunded_payment_id == self.last_payment_id;
        let disputed_latest = self
            .last_payment_id
            .as_ref()
            .is_some_and(|id| self.lost_dispute_payment_ids.contains(id));
        // The refunded payment paid for the current period unless the period started
        // after it (a renewal we did not hear the payment of). A minute's slack: Dodo
        // stamps the payment and the period a moment apart.
        let paid_current_period = self
            .period_start
            .is_none_or(|start| self.last_payment_at.div_euclid(1000) + 60 >= start.unix_seconds());
        (disputed_latest || refunded_latest) && paid_current_period
    }

    /// What the state alone gives, before refunds, disputes and product changes.
    fn state_access_until(&self) -> Option<Timestamp> {
        crate::subscription::access_until(
            &self.status,
            self.next_billing_date,
            self.past_due_ends_at,
            self.cancel_at_next_billing_date,
        )
    }

    pub fn grants_access(&self, now: Timestamp) -> bool {
        self.access_until().is_some_and(|until| until > now)
    }

    /// When the hourly reconcile should next ask Dodo about it: at the end of an active
    /// subscription's period (a lost `renewed` webhook must not lock out a paying user,
    /// nor a lost "resumed" keep one set to cancel from renewing), a few hours after a failed renewal (a lost recovery), an hour after one paid
    /// for but still pending (a lost `active`), else never.
    fn due_at(&self) -> Option<Timestamp> {
        if !self.sold {
            return None;
        }
        match self.status {
            // Set to renew: at its renewal. Set to cancel at period end: then too, to see
            // it end (or learn that it was resumed and renewed, if that webhook was lost).
            SubscriptionStatus::Active => self.next_billing_date,
            SubscriptionStatus::PastDue | SubscriptionStatus::OnHold => Some(
                Timestamp::from_unix_seconds(self.event_at.div_euclid(1000))
                    .plus_seconds(RECHECK_HELD_AFTER),
            ),
            // Paid for, not active yet: asked about again until it is.
            SubscriptionStatus::Pending if self.last_payment_id.is_some() => Some(
                Timestamp::from_unix_seconds(self.event_at.div_euclid(1000))
                    .plus_seconds(RECHECK_PENDING_AFTER),
            ),
            _ => None,
        }
    }
}

/// How long after a failed renewal the reconcile asks Dodo whether it recovered.
const RECHECK_HELD_AFTER: i64 = 6 * 3600;
/// How long after a subscription was paid for, and not heard of as active, the reconcile
/// asks Dodo about it.
const RECHECK_PENDING_AFTER: i64 = 3600;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionOutcome {
    Applied,
    /// A newer event had already been applied: nothing changed.
    Stale,
}

fn optional_s(item: &Item, name: &str) -> Option<String> {
    get_s(item, name).map(str::to_owned)
}

pub(super) fn subscription_from_item(item: &Item) -> Result<SubscriptionRecord, StoreError> {
    Ok(SubscriptionRecord {
        subscription_id: get_s(item, "subscription_id")
            .ok_or_else(|| StoreError::Corrupt("subscription without id".into()))?
            .to_owned(),
        status: SubscriptionStatus::parse(get_s(item, "status").unwrap_or_default()),
        plan: get_s(item, "plan").unwrap_or_default().to_owned(),
        next_billing_date: get_time(item, "next_billing_date")?,
        past_due_ends_at: get_time(item, "past_due_ends_at")?,
        cancel_at_next_billing_date: get_bool(item, "cancel_at_next_billing_date"),
        event_at: get_n(item, "event_at")?.unwrap_or(0),
        // Items written before products were checked were all of products we sell.
        sold: item
            .get("sold")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(true),
        paid_through: get_time(item, "paid_through")?,
        last_payment_id: optional_s(item, "last_payment_id"),
        last_payment_at: get_n(item, "last_payment_at")?.unwrap_or(0),
        refunded_payment_id: optional_s(item, "refunded_payment_id"),
        period_start: get_time(item, "period_start")?,
        lost_dispute_payment_ids: item
            .get("lost_dispute_payment_ids")
            .and_then(|v| v.as_ss().ok())
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default(),
        trial_ends_at: get_time(item, "trial_ends_at")?,
        scheduled_product_id: optional_s(item, "scheduled_product_id"),
        scheduled_at: get_time(item, "scheduled_at")?,
        rev: get_n(item, "rev")?.unwrap_or(0),
    })
}

pub(super) fn subscription_key(user: &UserId, subscription_id: &str) -> Item {
    key(
        format!("USER#{user}"),
        &format!("{SUBSCRIPTION_PREFIX}{subscription_id}"),
    )
}

/// `PAYMENT#{id}` / `SUBSCRIPTION`: a payment of a subscription, and whose.
pub(super) fn subscription_payment_key(payment_id: &str) -> Item {
    key(format!("PAYMENT#{payment_id}"), SUBSCRIPTION_PAYMENT)
}

/// Fails a transaction unless the subscription item is still at revision `rev`.
pub(super) fn unchanged_since(rev: i64) -> (&'static str, AttributeValue) {
    (
        "attribute_not_exists(pk) OR attribute_not_exists(rev) OR rev = :rev",
        n(rev),
    )
}

/// The subscription a payment was made for, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionPayment {
    pub user_id: UserId,
    pub subscription_id: String,
}

impl Store {
    /// Which user a Dodo subscription belongs to, once linked.
    pub async fn subscription_owner(
        &self,
        subscription_id: &str,
    ) -> Result<Option<UserId>, StoreError> {
        self.get(key(format!("SUBSCRIPTION#{subscription_id}"), OWNER))
            .await?
            .as_ref()
            .map(get_user_id)
            .transpose()
    }

    /// One subscription of a user, as stored.
    pub async fn get_subscription(
        &self,
        user: &UserId,
        subscription_id: &str,
    ) -> Result<Option<SubscriptionRecord>, StoreError> {
        self.get(subscription_key(user, subscription_id))
            .await?
            .as_ref()
            .map(subscription_from_item)
            .transpose()
    }

    /// The subscription a payment paid for, if it was recorded as a subscription payment.
    pub async fn subscription_payment(
        &self,
        payment_id: &str,
    ) -> Result<Option<SubscriptionPayment>, StoreError> {
        let Some(item) = self.get(subscription_payment_key(payment_id)).await? else {
            return Ok(None);
        };
        Ok(Some(SubscriptionPayment {
            user_id: get_user_id(&item)?,
            subscription_id: get_s(&item, "subscription_id")
                .unwrap_or_default()
                .to_owned(),
        }))
    }

    /// Records a succeeded payment of a subscription: links the subscription to its user,
    /// keeps the payment as the subscription's latest period payment (if it is one, and
    /// the latest: `pays_period` false for a charge of part of a period, such as a plan
    /// change's proration, which a refund of must not end the period another payment
    /// paid), and applies any refund or dispute of it that arrived first — all in one
    /// transaction, checked against the payment's claims and the subscription's revision
    /// read.
    pub async fn record_subscription_payment(
        &self,
        user: &UserId,
        subscription_id: &str,
        payment_id: &str,
        paid_at: i64,
        pays_period: bool,
    ) -> Result<(), StoreError> {
        let build_error =
            |e: aws_sdk_dynamodb::error::BuildError| StoreError::Unavailable(e.to_string());
        for attempt in 0..MAX_GRANT_ATTEMPTS {
            let claims = self.payment_claims(payment_id).await?;
            let stored = self.get_subscription(user, subscription_id).await?;
            let rev = stored.as_ref().map_or(0, |s| s.rev);
            let latest =
                pays_period && stored.as_ref().is_none_or(|s| s.last_payment_at <= paid_at);

            // A payment may arrive before any event of its subscription: until one does,
            // the subscription is pending (no access, no plan yet).
            let mut set = vec![
                "user_id = :user",
                "subscription_id = :subscription",
                "rev = :next",
                "#status = if_not_exists(#status, :pending)",
            ];
            let mut attribute_values = values([
                (":user", s(user.as_str())),
                (":subscription", s(subscription_id)),
                (":next", n(rev + 1)),
                (":pending", s(SubscriptionStatus::Pending.as_str())),
            ]);
            if latest {
                set.push("last_payment_id = :payment");
                set.push("last_payment_at = :paid_at");
                attribute_values.insert(":payment".into(), s(payment_id));
                attribute_values.insert(":paid_at".into(), n(paid_at));
            }
            if claims.fully_refunded && latest {
                set.push("refunded_payment_id = :payment");
            }
            // Nothing heard of the subscription itself yet, or it is stored as not active
            // (on hold, say, and this payment recovered it): reconcile asks Dodo about it
            // an hour on, so that a lost `subscription.active` never strands a payer.
            let state_lags = stored.as_ref().is_none_or(|s| {
                s.event_at == 0 || (latest && s.status != SubscriptionStatus::Active)
            });
            if state_lags {
                set.push("due_bucket = :due");
                set.push("due_at = :due_at");
                attribute_values.insert(":due".into(), s(DUE_BUCKET));
                attribute_values.insert(
                    ":due_at".into(),
                    n(paid_at.div_euclid(1000) + RECHECK_PENDING_AFTER),
                );
            }
            let mut add = Vec::new();
            if claims.dispute_lost() {
                add.push("lost_dispute_payment_ids :lost");
                attribute_values.insert(
                    ":lost".into(),
                    AttributeValue::Ss(vec![payment_id.to_owned()]),
                );
            }
            let (condition, rev_value) = unchanged_since(rev);
            attribute_values.insert(":rev".into(), rev_value);
            let record = Update::builder()
                .table_name(&self.table)
                .set_key(Some(subscription_key(user, subscription_id)))
                .update_expression(if add.is_empty() {
                    format!("SET {}", set.join(", "))
                } else {
                    format!("SET {} ADD {}", set.join(", "), add.join(", "))
                })
                .condition_expression(condition)
                .expression_attribute_names("#status", "status")
                .set_expression_attribute_values(Some(attribute_values))
                .build()
                .map_err(build_error)?;
            let mut mark = subscription_payment_key(payment_id);
            mark.extend(values([
                ("user_id", s(user.as_str())),
                ("subscription_id", s(subscription_id)),
                ("paid_at", n(paid_at)),
            ]));
            let mark = Put::builder()
                .table_name(&self.table)
                .set_item(Some(mark))
                .build()
                .map_err(build_error)?;
            let event = self
                .access_event_writes(user, Trigger::Payment, now_of(paid_at), |account| {
                    let mut record = stored
                        .clone()
                        .unwrap_or_else(|| SubscriptionRecord::fresh(subscription_id));
                    if latest {
                        record.last_payment_id = Some(payment_id.to_owned());
                        record.last_payment_at = paid_at;
                        if claims.fully_refunded {
                            record.refunded_payment_id = Some(payment_id.to_owned());
                        }
                    }
                    if claims.dispute_lost() {
                        record
                            .lost_dispute_payment_ids
                            .insert(payment_id.to_owned());
                    }
                    replace_subscription(account, record)
                })
                .await?;
            let request = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().update(record).build())
                .transact_items(TransactWriteItem::builder().put(mark).build())
                .with_items(event)
                .transact_items(
                    TransactWriteItem::builder()
                        .put(self.owner_link(user, subscription_id)?)
                        .build(),
                )
                .transact_items(
                    self.claims_unchanged(payment_id, &claims)
                        .map_err(WriteConflict::into_store_error)?,
                );
            match conflict_of(request.send().await) {
                Ok(()) => return Ok(()),
                Err(WriteConflict::Cancelled) => tokio::time::sleep(backoff(attempt)).await,
                Err(WriteConflict::Failed(err)) => return Err(err),
            }
        }
        Err(StoreError::Contention)
    }

    fn owner_link(&self, user: &UserId, subscription_id: &str) -> Result<Put, StoreError> {
        let mut link = key(format!("SUBSCRIPTION#{subscription_id}"), OWNER);
        link.insert("user_id".to_owned(), s(user.as_str()));
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(link))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// Stores a subscription's state for `user` unless a newer event was applied before,
    /// with the subscription -> user link, in one transaction.
    ///
    /// `plan` is the plan its product is sold as, or `None` when it moved to a product
    /// this paywall does not sell: it then keeps the plan it had and gives access only
    /// until the end of the period already paid.
    pub async fn apply_subscription(
        &self,
        user: &UserId,
        subscription: &Subscription,
        plan: Option<&str>,
        event_at: i64,
    ) -> Result<SubscriptionOutcome, StoreError> {
        self.apply_subscription_audited(user, subscription, plan, event_at, None)
            .await
    }

    /// [`Self::apply_subscription`], with `audit` written in the same transaction: the
    /// user's action that made Dodo change the subscription is in the trail exactly when
    /// its result is stored, so that a retry after a failure neither loses the entry nor
    /// writes it twice. When a newer state was stored first (`Stale`), the action still
    /// happened: the entry is written by itself.
    pub async fn apply_subscription_audited(
        &self,
        user: &UserId,
        subscription: &Subscription,
        plan: Option<&str>,
        event_at: i64,
        audit: Option<&AuditEntry>,
    ) -> Result<SubscriptionOutcome, StoreError> {
        let build_error =
            |e: aws_sdk_dynamodb::error::BuildError| StoreError::Unavailable(e.to_string());
        let state_key = subscription_key(user, &subscription.subscription_id);
        for attempt in 0..MAX_GRANT_ATTEMPTS {
            // The whole account (one strongly consistent query): the stored state, and
            // what access was for the event.
            let account = self.get_account(user).await?;
            let stored = account
                .subscriptions
                .iter()
                .find(|s| s.subscription_id == subscription.subscription_id)
                .cloned();
            if stored.as_ref().is_some_and(|s| s.event_at > event_at) {
                if let Some(audit) = audit {
                    self.record_event(user, audit).await?;
                }
                return Ok(SubscriptionOutcome::Stale);
            }
            let rev = stored.as_ref().map_or(0, |s| s.rev);
            let paid_through = match (plan, &stored) {
                (Some(_), _) => None,
                // Already off our products: the cap set when it moved stays.
                (None, Some(before)) if !before.sold => before.paid_through,
                // Moving off now: the end of the period it had paid for on ours.
                (None, Some(before)) => crate::subscription::access_until(
                    &before.status,
                    before.next_billing_date,
                    before.past_due_ends_at,
                    true,
                ),
                (None, None) => None,
            };
            let record = SubscriptionRecord {
                subscription_id: subscription.subscription_id.clone(),
                status: subscription.status.clone(),
                plan: plan
                    .map(str::to_owned)
                    .or_else(|| stored.as_ref().map(|s| s.plan.clone()))
                    .unwrap_or_default(),
                next_billing_date: subscription.next_billing_date,
                past_due_ends_at: subscription.past_due_ends_at,
                period_start: subscription.previous_billing_date,
                cancel_at_next_billing_date: subscription.cancel_at_next_billing_date,
                event_at,
                sold: plan.is_some(),
                paid_through,
                trial_ends_at: subscription.trial_ends_at(),
                scheduled_product_id: subscription
                    .scheduled_change
                    .as_ref()
                    .map(|c| c.product_id.clone()),
                scheduled_at: subscription
                    .scheduled_change
                    .as_ref()
                    .map(|c| c.effective_at),
                ..stored
                    .clone()
                    .unwrap_or_else(|| SubscriptionRecord::fresh(&subscription.subscription_id))
            };

            let mut set: Vec<String> = [
                "user_id = :user",
                "subscription_id = :subscription",
                "#status = :status",
                "#plan = :plan",
                "cancel_at_next_billing_date = :cancel",
                "event_at = :event_at",
                "sold = :sold",
                "rev = :next",
                "due_attempts = :zero",
            ]
            .map(str::to_owned)
            .to_vec();
            let mut remove: Vec<&str> = Vec::new();
            let mut attribute_values = values([
                (":user", s(user.as_str())),
                (":subscription", s(&record.subscription_id)),
                (":status", s(record.status.as_str())),
                (":plan", s(&record.plan)),
                (
                    ":cancel",
                    AttributeValue::Bool(record.cancel_at_next_billing_date),
                ),
                (":event_at", n(event_at)),
                (":sold", AttributeValue::Bool(record.sold)),
                (":next", n(rev + 1)),
                (":zero", n(0)),
            ]);
            // A subscription that should renew is checked with Dodo when it does, so a
            // lost renewal webhook never locks out a paying user.
            let due_at = record.due_at();
            for (name, value) in [
                ("next_billing_date", record.next_billing_date),
                ("past_due_ends_at", record.past_due_ends_at),
                ("period_start", record.period_start),
                ("paid_through", record.paid_through),
                ("trial_ends_at", record.trial_ends_at),
                ("scheduled_at", record.scheduled_at),
                ("due_at", due_at),
            ] {
                match value {
                    Some(time) => {
                        set.push(format!("{name} = :{name}"));
                        attribute_values.insert(format!(":{name}"), n(time.unix_seconds()));
                    }
                    None => remove.push(name),
                }
            }
            match &record.scheduled_product_id {
                Some(product) => {
                    set.push("scheduled_product_id = :scheduled_product".to_owned());
                    attribute_values.insert(":scheduled_product".to_owned(), s(product));
                }
                None => remove.push("scheduled_product_id"),
            }
            if due_at.is_some() {
                set.push("due_bucket = :due".to_owned());
                attribute_values.insert(":due".to_owned(), s(DUE_BUCKET));
            } else {
                remove.push("due_bucket");
            }
            let mut expression = format!("SET {}", set.join(", "));
            if !remove.is_empty() {
                expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
            }
            // Only a newer (or equally recent) event may replace the stored state, and
            // only if nothing else changed the item since it was read.
            let (unchanged, rev_value) = unchanged_since(rev);
            attribute_values.insert(":rev".to_owned(), rev_value);
            let state = Update::builder()
                .table_name(&self.table)
                .set_key(Some(state_key.clone()))
                .update_expression(expression)
                .condition_expression(format!(
                    "(attribute_not_exists(event_at) OR event_at <= :event_at) AND ({unchanged})"
                ))
                .expression_attribute_names("#status", "status")
                .expression_attribute_names("#plan", "plan")
                .set_expression_attribute_values(Some(attribute_values))
                .build()
                .map_err(build_error)?;
            let event = self.access_event_writes_from(
                &account,
                user,
                Trigger::Subscription(record.status.clone()),
                now_of(event_at),
                |account| replace_subscription(account, record.clone()),
            )?;
            // A trial Dodo started is this person's trial of the plan, for good: the
            // user's claim and their verified e-mail's, written when its state is first
            // stored. Only a verified address: the one on their profile (stored only
            // when verified), and the customer's when it is the customer the paywall made
            // from that address. An address typed on Dodo's page proves nothing, and
            // claiming it would use up its owner's trial.
            let trial_claims = match (plan, record.trial_ends_at) {
                (Some(plan), Some(_))
                    if stored.as_ref().is_none_or(|s| s.trial_ends_at.is_none()) =>
                {
                    let profile = account.profile.as_ref();
                    let bound_customer = profile.and_then(|p| p.customer_id.as_deref());
                    let customers_own = subscription.customer_email.as_deref().filter(|_| {
                        bound_customer.is_some()
                            && subscription.customer_id.as_deref() == bound_customer
                    });
                    let emails: Vec<&str> = customers_own
                        .into_iter()
                        .chain(profile.and_then(|p| p.email.as_deref()))
                        .collect();
                    self.started_trial_puts(plan, user, &emails, now_of(event_at))?
                }
                _ => Vec::new(),
            };
            let request = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().update(state).build())
                .transact_items(
                    TransactWriteItem::builder()
                        .put(self.owner_link(user, &subscription.subscription_id)?)
                        .build(),
                )
                .with_items(trial_claims)
                .with_items(event)
                .with_items(
                    audit
                        .map(|entry| self.audit_put(user, entry))
                        .transpose()?
                        .into_iter()
                        .collect(),
                );
            match conflict_of(request.send().await) {
                Ok(()) => return Ok(SubscriptionOutcome::Applied),
                Err(WriteConflict::Cancelled) => tokio::time::sleep(backoff(attempt)).await,
                Err(WriteConflict::Failed(err)) => return Err(err),
            }
        }
        Err(StoreError::Contention)
    }
}

/// `account` with `record` in place of the stored state of its subscription.
pub(super) fn replace_subscription(account: &mut Account, record: SubscriptionRecord) {
    account
        .subscriptions
        .retain(|s| s.subscription_id != record.subscription_id);
    account.subscriptions.push(record);
}

/// The time of an event (ms), as the instant its access change is judged at.
fn now_of(event_at_millis: i64) -> Timestamp {
    Timestamp::from_unix_seconds(event_at_millis.div_euclid(1000))
}
