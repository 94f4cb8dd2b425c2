//! Due items: the subscriptions and checkouts the due index says to check now, each
//! asked about (one by one, or a page of active subscriptions at a time) and repaired
//! through the same idempotent writes as the webhook.

use super::*;

/// How long reconcile keeps asking about a subscription on hold (once a day): Dodo's
/// retries end within 13 days, its dunning e-mails within a week or two.
pub(super) const WATCH_HELD_FOR: i64 = 30 * SECONDS_PER_DAY;

impl Reconciler {
    /// Pages through the active subscriptions (`GET /subscriptions?status=active`) until
    /// every waiting subscription was seen, the pages end, or the sweep has cost half what
    /// asking one by one would (a business with many more subscribers than are due is
    /// better served one by one); repairs each one seen. What is left is asked about one
    /// by one.
    pub(super) async fn sweep_subscription_list(
        &self,
        waiting: &mut HashMap<String, DueItem>,
        now: Timestamp,
        budget: &mut Budget,
        summary: &mut Summary,
    ) {
        let most_pages = (waiting.len() / 2).max(1) as u32;
        let mut page = 0;
        while !waiting.is_empty() && budget.left() > 0 && page < most_pages {
            if budget.take().await.is_err() {
                break;
            }
            summary.list_pages += 1;
            let observed_at = self.clock.now_millis();
            let (subscriptions, listed) = match self.dodo.list_subscriptions(page, "active").await {
                Ok(answer) => answer,
                Err(err) => {
                    // The per-item look-ups below still run for what is left.
                    tracing::warn!(error = %err, page, "could not list subscriptions");
                    summary.failed += 1;
                    return;
                }
            };
            // Judged by what Dodo listed, not by what could be read of it.
            let last_page = listed < LIST_PAGE_SIZE;
            let found: Vec<(DueItem, Subscription)> = subscriptions
                .into_iter()
                .filter_map(|subscription| {
                    let item = waiting.remove(&subscription.subscription_id)?;
                    Some((item, subscription))
                })
                .collect();
            self.repair_all(found, (now, observed_at), summary).await;
            if last_page {
                break;
            }
            page += 1;
        }
    }

    /// Repairs a page's worth of subscriptions, a few at a time: each is two store
    /// round trips, and ten thousand of them one after another would outlast the run.
    pub(super) async fn repair_all(
        &self,
        found: Vec<(DueItem, Subscription)>,
        (now, observed_at): (Timestamp, i64),
        summary: &mut Summary,
    ) {
        let mut tasks = tokio::task::JoinSet::new();
        let mut found = found.into_iter();
        loop {
            while tasks.len() < self.limits.repair_concurrency.max(1)
                && let Some((item, subscription)) = found.next()
            {
                let store = self.store.clone();
                let catalog = Arc::clone(&self.catalog);
                tasks.spawn(async move {
                    let result = repair_subscription(
                        &store,
                        &catalog,
                        &item,
                        &subscription,
                        (now, observed_at),
                    )
                    .await;
                    (item, result)
                });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            summary.checked += 1;
            match joined {
                Ok((item, result)) => self.count(&item, result, now, summary).await,
                Err(err) => {
                    tracing::error!(error = %err, "a repair task failed");
                    summary.failed += 1;
                }
            }
        }
    }

    pub(super) async fn fetch_subscription(
        &self,
        subscription_id: &str,
        budget: &mut Budget,
    ) -> Result<Subscription, ItemError> {
        budget.take().await?;
        self.dodo
            .get_subscription(subscription_id)
            .await
            .map_err(gone_if_unknown)
    }

    pub(super) async fn repair_checkout(
        &self,
        item: &DueItem,
        now: Timestamp,
        budget: &mut Budget,
    ) -> Result<Repair, ItemError> {
        let Due::Checkout {
            user,
            session_id,
            created_at,
        } = &item.what
        else {
            return Err(ItemError::Other("not a checkout".into()));
        };
        let age = now.unix_seconds() - created_at.unix_seconds();
        let abandoned = age > self.limits.abandon_checkout_after;
        let mut paid = self.checkout_paid(user, session_id, now, budget).await;
        // No payment: a checkout with Dodo's free trial has none; its subscription is
        // found by our metadata on it (when its webhook was lost).
        if matches!(paid, Ok(None)) {
            paid = self
                .trial_subscription_of(user, session_id, *created_at, budget)
                .await;
        }
        match paid {
            Ok(Some(done)) => Ok(done),
            // Unpaid (or Dodo cannot say) this long after it opened: the buyer walked
            // away, whatever Dodo answers now.
            Ok(None) | Err(ItemError::Dodo(_) | ItemError::Gone(_)) if abandoned => {
                self.store.forget_pending_checkout(user, session_id).await?;
                Ok(Repair::Abandoned)
            }
            Ok(None) => Ok(Repair::Unchanged),
            Err(err) => Err(err),
        }
    }

    /// The subscription a checkout with Dodo's trial started, stored, if Dodo has one:
    /// such a checkout makes no payment to find it by. A trial is only offered with a
    /// verified e-mail, so the checkout named the customer the paywall bound to the user:
    /// that customer's subscriptions to the plan's product created since the checkout
    /// opened are read (a handful), and ours is the one whose metadata names this user.
    /// `None` for any other checkout (no Dodo call), or while there is none.
    async fn trial_subscription_of(
        &self,
        user: &UserId,
        session_id: &str,
        opened_at: Timestamp,
        budget: &mut Budget,
    ) -> Result<Option<Repair>, ItemError> {
        let Some(profile) = self.store.get_user(user).await? else {
            return Ok(None);
        };
        let Some(plan) = profile
            .pending_checkout
            .as_ref()
            .filter(|c| c.session_id == session_id)
            .and_then(|c| self.catalog.get(&c.plan).cloned())
            .filter(|p| p.is_subscription() && p.card_trial_days().is_some())
        else {
            return Ok(None);
        };
        let Some(customer) = profile.customer_id.as_deref() else {
            return Ok(None);
        };
        budget.take().await?;
        let observed_at = self.clock.now_millis();
        let found = self
            .dodo
            .list_new_subscriptions(customer, &plan.product_id, opened_at)
            .await
            .map_err(gone_if_unknown)?
            .into_iter()
            .find(|s| crate::purchase::metadata_user(&s.metadata).as_ref() == Some(user));
        let Some(subscription) = found else {
            return Ok(None);
        };
        self.store
            .apply_subscription(user, &subscription, Some(&plan.name), observed_at)
            .await?;
        self.store.complete_checkout(user, session_id).await?;
        tracing::debug!(user_id = %user, subscription_id = %subscription.subscription_id, "reconcile found a trial subscription whose webhook was lost");
        Ok(Some(Repair::Granted))
    }

    /// The checkout's payment, applied if it succeeded; `None` while unpaid.
    pub(super) async fn checkout_paid(
        &self,
        user: &UserId,
        session_id: &str,
        now: Timestamp,
        budget: &mut Budget,
    ) -> Result<Option<Repair>, ItemError> {
        budget.take().await?;
        let Some(payment_id) = self
            .dodo
            .get_checkout_payment(session_id)
            .await
            .map_err(gone_if_unknown)?
        else {
            return Ok(None);
        };
        self.grant_checkout_payment(user, session_id, &payment_id, now, budget)
            .await
    }

    /// Applies a checkout's payment if Dodo says it succeeded (a no-op if the webhook or
    /// the success call did already). `None`: not paid yet.
    pub(super) async fn grant_checkout_payment(
        &self,
        user: &UserId,
        session_id: &str,
        payment_id: &str,
        now: Timestamp,
        budget: &mut Budget,
    ) -> Result<Option<Repair>, ItemError> {
        let id = PaymentId::parse(payment_id).map_err(|e| ItemError::Gone(e.to_string()))?;
        budget.take().await?;
        let payment = self.dodo.get_payment(&id).await.map_err(gone_if_unknown)?;
        if payment.status != PaymentStatus::Succeeded {
            return Ok(None);
        }
        if payment
            .checkout_session_id
            .as_deref()
            .is_some_and(|s| s != session_id)
        {
            return Err(ItemError::Gone(
                "Dodo names a payment of another session".into(),
            ));
        }
        let applied = apply_payment(
            &self.store,
            &self.catalog,
            user,
            &payment,
            GrantSource::Reconcile,
            now,
        )
        .await?;
        Ok(Some(match applied {
            Applied::SubscriptionPayment { subscription_id } => {
                // Its subscription's state, so that access starts now.
                let observed_at = self.clock.now_millis();
                let subscription = self.fetch_subscription(&subscription_id, budget).await?;
                let plan = subscription_plan_for(&self.catalog, &subscription);
                self.store
                    .apply_subscription(
                        user,
                        &subscription,
                        plan.map(|p| p.name.as_str()),
                        observed_at,
                    )
                    .await?;
                // This due item's own checkout is done, whether or not Dodo named its
                // session on the payment (L4: else it stayed due, every run).
                self.store.complete_checkout(user, session_id).await?;
                Repair::Granted
            }
            Applied::Pass(GrantOutcome::Applied(_)) => {
                tracing::debug!(user_id = %user, payment_id, "reconcile granted a payment whose webhook was lost");
                Repair::Granted
            }
            Applied::Pass(GrantOutcome::AlreadyApplied { .. }) => {
                self.store.complete_checkout(user, session_id).await?;
                Repair::Granted
            }
            // Paid, but for nothing it can grant: the checkout is done all the same.
            Applied::Pass(GrantOutcome::Revoked) | Applied::Nothing(_) => {
                self.store.complete_checkout(user, session_id).await?;
                Repair::Closed
            }
        }))
    }
}

/// Stores what Dodo says of a due subscription, unless it says nothing new (still
/// active, its renewal not charged yet).
pub(super) async fn repair_subscription(
    store: &Store,
    catalog: &Catalog,
    item: &DueItem,
    subscription: &Subscription,
    (now, observed_at): (Timestamp, i64),
) -> Result<Repair, ItemError> {
    let Due::Subscription { user, .. } = &item.what else {
        return Err(ItemError::Other("not a subscription".into()));
    };
    // Still active past its period's end: Dodo has not renewed (or ended) it yet.
    let renewal_pending = subscription.status == SubscriptionStatus::Active
        && subscription
            .next_billing_date
            .is_some_and(|date| date <= now);
    if renewal_pending {
        return Ok(Repair::Unchanged);
    }
    // On hold as stored: nothing to write (its time on hold keeps counting).
    if matches!(
        subscription.status,
        SubscriptionStatus::OnHold | SubscriptionStatus::PastDue
    ) && let Some(stored) = store
        .get_subscription(user, &subscription.subscription_id)
        .await?
        && stored.status == subscription.status
        && stored.next_billing_date == subscription.next_billing_date
        && stored.cancel_at_next_billing_date == subscription.cancel_at_next_billing_date
    {
        return Ok(Repair::StillHeld {
            since: stored.event_at,
        });
    }
    let plan = subscription_plan_for(catalog, subscription);
    // Dodo's answer is the newest state there is, as of just before it was asked: a
    // webhook about anything later still wins.
    store
        .apply_subscription(
            user,
            subscription,
            plan.map(|p| p.name.as_str()),
            observed_at,
        )
        .await?;
    // Stored: it is due again by its own rule (its next renewal, a few hours on for one
    // on hold), or has left the index.
    Ok(Repair::Refreshed)
}
