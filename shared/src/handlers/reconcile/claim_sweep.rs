//! The claims and payments sweep: every run reads Dodo's recent succeeded payments,
//! refunds and disputes, compares them with what is stored (one batch read), and applies
//! what a lost webhook left unapplied. Its calls are reserved (see `Limits::sweep_reserve`),
//! so due items can never starve it.

use super::*;

/// How far back every run reads refunds: a day's lost webhooks, and two more days of
/// reconcile outage, are still repaired.
const REFUNDS_LOOK_BACK: i64 = 3 * SECONDS_PER_DAY;
/// How far back every run reads succeeded payments: three hours, so that two missed
/// runs lose nothing (a payment is usually applied within seconds; this catches those
/// whose every path was lost).
const PAYMENTS_LOOK_BACK: i64 = 3 * 3600;
/// How far back every run reads disputes: an open dispute is decided weeks later.
const DISPUTES_LOOK_BACK: i64 = 60 * SECONDS_PER_DAY;

impl Reconciler {
    /// A payment as Dodo holds it (one call of the run's budget).
    async fn fetch_payment(
        &self,
        payment_id: &str,
        budget: &mut Budget,
    ) -> Result<crate::dodo::Payment, ItemError> {
        let id = PaymentId::parse(payment_id).map_err(|e| ItemError::Other(e.to_string()))?;
        budget.take().await?;
        Ok(self.dodo.get_payment(&id).await?)
    }

    /// Reads Dodo's refunds (created in the last three days) and, every six hours, its
    /// disputes (of the last 60 days: an open dispute is decided weeks later), reads what is stored about them in one
    /// batch, and applies what differs — so that a lost `refund.succeeded` or
    /// `dispute.lost` still takes access back. A claim on a payment never applied here is
    /// followed by that payment, looked up once.
    pub(super) async fn sweep_claims(
        &self,
        now: Timestamp,
        budget: &mut Budget,
        summary: &mut Summary,
    ) {
        budget.release_reserve();
        let observed_at = self.clock.now_millis();
        let mut listed: Vec<(Claim, String)> = Vec::new();
        let every = i64::from(self.limits.disputes_every_hours.max(1));
        let disputes_hour = now.unix_seconds().div_euclid(3600) % every == 0;
        let mut paid: Vec<crate::dodo::Payment> = Vec::new();
        let lists = [
            Some((ClaimList::Payments, now.plus_seconds(-PAYMENTS_LOOK_BACK))),
            Some((ClaimList::Refunds, now.plus_seconds(-REFUNDS_LOOK_BACK))),
            disputes_hour.then(|| (ClaimList::Disputes, now.plus_seconds(-DISPUTES_LOOK_BACK))),
        ];
        // The first page of each list at once (they are independent); further pages,
        // rare, one by one.
        let mut asked = [None; 3];
        for (slot, list) in asked.iter_mut().zip(lists) {
            let Some(list) = list else { continue };
            if budget.take().await.is_err() {
                summary.left_behind += 1;
                continue;
            }
            summary.list_pages += 1;
            *slot = Some(list);
        }
        let first_page = |asked: Option<(ClaimList, Timestamp)>| async move {
            match asked {
                Some((kind, since)) => Some(self.dodo.list_claims(kind, since, 0).await),
                None => None,
            }
        };
        let (a, b, c) = tokio::join!(
            first_page(asked[0]),
            first_page(asked[1]),
            first_page(asked[2])
        );
        let answered = asked
            .into_iter()
            .zip([a, b, c])
            .filter_map(|(asked, first)| {
                let (kind, since) = asked?;
                Some((kind, since, first?))
            });
        for (kind, since, first) in answered {
            let mut answer = first;
            let mut page = 0;
            loop {
                let (items, full) = match answer {
                    Ok(answer) => answer,
                    Err(err) => {
                        tracing::warn!(error = %err, list = ?kind, "reconcile could not list claims");
                        summary.failed += 1;
                        break;
                    }
                };
                if kind == ClaimList::Payments {
                    // An item that cannot be read is skipped: the rest still count.
                    paid.extend(
                        items
                            .iter()
                            .filter_map(|item| crate::dodo::Payment::from_json(item).ok()),
                    );
                } else {
                    listed.extend(items.iter().filter_map(|item| {
                        let payment_id = item.get("payment_id")?.as_str()?.to_owned();
                        Some((listed_claim(kind, item, observed_at)?, payment_id))
                    }));
                }
                if !full {
                    break;
                }
                if budget.take().await.is_err() {
                    summary.left_behind += 1;
                    break;
                }
                summary.list_pages += 1;
                page += 1;
                answer = self.dodo.list_claims(kind, since, page).await;
            }
        }
        self.apply_lost_payments(&paid, now, budget, summary).await;
        if listed.is_empty() {
            return;
        }
        let ids: Vec<&str> = listed.iter().map(|(_, id)| id.as_str()).collect();
        let stored = match self.store.payments_claims(&ids).await {
            Ok(stored) => stored,
            Err(err) => {
                tracing::warn!(error = %err, "reconcile could not read stored claims");
                summary.failed += 1;
                return;
            }
        };
        for (claim, payment_id) in &listed {
            let known = stored.get(payment_id).cloned().unwrap_or_default();
            let already = match claim {
                Claim::Refund { full } => !full || known.fully_refunded,
                Claim::Dispute { status, .. } => {
                    known.dispute_status.as_deref() == Some(status.as_str())
                }
            };
            let result = async {
                let mut changed = false;
                let mut unknown_here = known.payment_unknown;
                if !already {
                    changed |= self.store.apply_claim(payment_id, claim, now).await?
                        != ClaimOutcome::Unchanged;
                    unknown_here = self.store.payment_claims(payment_id).await?.payment_unknown;
                }
                // A claim on a payment never applied here (its webhook lost, the buyer
                // never back on the success page, a renewal heard of only through its
                // subscription): looked up once, and applied, which applies the claim.
                if unknown_here && !known.looked_up {
                    changed |= self.apply_claimed_payment(payment_id, now, budget).await?;
                }
                Ok::<_, ItemError>(changed)
            }
            .await;
            match result {
                Ok(true) => summary.claims_applied += 1,
                Ok(false) => {}
                Err(ItemError::OutOfBudget) => summary.left_behind += 1,
                Err(err) => {
                    tracing::warn!(error = %err, "reconcile could not apply a claim");
                    summary.failed += 1;
                }
            }
        }
    }

    /// Applies the listed succeeded payments that were never applied here: their
    /// `payment.succeeded` was lost and nothing else brought them (a subscription that
    /// recovered from on hold long after reconcile stopped asking about it; a renewal
    /// whose webhooks were all lost). A subscription's payment brings its subscription's
    /// state with it, so that access starts now.
    pub(super) async fn apply_lost_payments(
        &self,
        paid: &[crate::dodo::Payment],
        now: Timestamp,
        budget: &mut Budget,
        summary: &mut Summary,
    ) {
        if paid.is_empty() {
            return;
        }
        let ids: Vec<&str> = paid.iter().map(|p| p.payment_id.as_str()).collect();
        let applied = match self.store.payments_applied(&ids).await {
            Ok(applied) => applied,
            Err(err) => {
                tracing::warn!(error = %err, "reconcile could not read which payments were applied");
                summary.failed += 1;
                return;
            }
        };
        for listed in paid.iter().filter(|p| !applied.contains(&p.payment_id)) {
            let result = async {
                let Some(user) = owner_of(&self.store, listed, Linking::Strict).await? else {
                    return Ok::<_, ItemError>(false);
                };
                // Dodo lists payments as `PaymentListResponse`, which has no
                // `product_cart` and no `is_update_payment_method`: what a payment bought
                // is read from the payment itself (`GET /payments/{id}`).
                let payment = &self.fetch_payment(&listed.payment_id, budget).await?;
                if payment.status != PaymentStatus::Succeeded {
                    return Ok(false);
                }
                let outcome = apply_payment(
                    &self.store,
                    &self.catalog,
                    &user,
                    payment,
                    GrantSource::Reconcile,
                    now,
                )
                .await?;
                match outcome {
                    Applied::SubscriptionPayment { subscription_id } => {
                        let observed_at = self.clock.now_millis();
                        let subscription =
                            self.fetch_subscription(&subscription_id, budget).await?;
                        let plan = subscription_plan_for(&self.catalog, &subscription);
                        self.store
                            .apply_subscription(
                                &user,
                                &subscription,
                                plan.map(|p| p.name.as_str()),
                                observed_at,
                            )
                            .await?;
                        Ok(true)
                    }
                    Applied::Pass(GrantOutcome::Applied(_)) => Ok(true),
                    _ => Ok(false),
                }
            }
            .await;
            match result {
                Ok(true) => {
                    tracing::debug!(payment_id = %listed.payment_id, "reconcile applied a payment whose webhook was lost");
                    summary.payments_granted += 1;
                }
                Ok(false) => {}
                Err(ItemError::OutOfBudget) => summary.left_behind += 1,
                Err(err) => {
                    tracing::warn!(error = %err, "reconcile could not apply a listed payment");
                    summary.failed += 1;
                }
            }
        }
    }

    /// Fetches a claimed payment the paywall never applied and applies it to its owner
    /// (which applies its stored claims in the same write); `true` when it changed
    /// something. Marked as looked up either way, so a payment that is not ours is asked
    /// about once.
    pub(super) async fn apply_claimed_payment(
        &self,
        payment_id: &str,
        now: Timestamp,
        budget: &mut Budget,
    ) -> Result<bool, ItemError> {
        let Ok(id) = PaymentId::parse(payment_id) else {
            return Ok(false);
        };
        budget.take().await?;
        let payment = match self.dodo.get_payment(&id).await {
            Ok(payment) => Some(payment),
            Err(err) if err.is_not_found() => None,
            Err(err) => return Err(err.into()),
        };
        let mut changed = false;
        if let Some(payment) = payment.filter(|p| p.status == PaymentStatus::Succeeded)
            && let Some(user) = owner_of(&self.store, &payment, Linking::Strict).await?
        {
            let applied = apply_payment(
                &self.store,
                &self.catalog,
                &user,
                &payment,
                GrantSource::Reconcile,
                now,
            )
            .await?;
            changed = !matches!(applied, Applied::Nothing(_));
        }
        self.store.mark_claim_looked_up(payment_id).await?;
        Ok(changed)
    }
}

/// A listed refund or dispute as the claim its webhook would make (`None`: nothing to
/// apply, such as a refund that has not succeeded).
fn listed_claim(kind: ClaimList, item: &serde_json::Value, observed_at: i64) -> Option<Claim> {
    let text = |key: &str| item.get(key).and_then(serde_json::Value::as_str);
    text("payment_id")?;
    match kind {
        ClaimList::Refunds if text("status") == Some("succeeded") => Some(Claim::Refund {
            full: !item
                .get("is_partial")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
        }),
        ClaimList::Refunds | ClaimList::Payments => None,
        // The list is the dispute's state as of just before it was asked.
        ClaimList::Disputes => text("dispute_status").map(|status| Claim::Dispute {
            status: status.to_owned(),
            event_at: observed_at,
        }),
    }
}
