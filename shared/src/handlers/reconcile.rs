//! The `reconcile` function, run on a schedule: repairs what lost webhooks would leave
//! wrong. A subscription set to renew is re-read from Dodo when it renews (a lost
//! `subscription.renewed` never locks out a paying user: access runs on through the
//! renewal grace while this repairs it), one on hold a few hours later (a lost recovery),
//! and a checkout still pending an hour after it opened is looked up (a lost
//! `payment.succeeded` never leaves a buyer without access). Every repair goes through
//! the same idempotent store writes as the webhook, so a run can be repeated or overlap
//! with deliveries.
//!
//! It scales with the number of subscribers: the due index is read page by page; when
//! many subscriptions are due, Dodo's list endpoint answers for a hundred in one call;
//! an item that changed nothing or failed is deferred (an hour, then two, four… up to a
//! day), so that it cannot starve the others; done items leave the index. Each run is
//! bounded in Dodo calls (every call counts) and paced, leaving most of Dodo's 100
//! requests a minute to the API. A run that leaves due items behind or meets errors
//! says so in its summary, in a metric, and by failing, so that the alarm fires.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::StartError;
use crate::config::{DodoConfig, StoreConfig, Vars};
use crate::dodo::{ClaimList, DodoClient, LIST_PAGE_SIZE, PaymentStatus};
use crate::ids::{PaymentId, UserId};
use crate::plan::Catalog;
use crate::purchase::{Applied, Linking, apply_payment, owner_of, subscription_plan_for};
use crate::store::{
    Claim, ClaimOutcome, Due, DueItem, GrantOutcome, GrantSource, Store, StoreError,
};
use crate::subscription::{Subscription, SubscriptionStatus};
use crate::time::{Clock, SECONDS_PER_DAY, Timestamp};

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Dodo calls per run, every call counted.
    pub max_dodo_calls: u32,
    /// The least time between two Dodo calls (Dodo allows about 100 a minute per key,
    /// shared with the API functions).
    pub min_call_interval: Duration,
    /// Wall-clock budget of a run (the function's timeout is longer).
    pub time_budget: Duration,
    /// A checkout unpaid this long is no longer checked.
    pub abandon_checkout_after: i64,
    /// From this many due subscriptions on, pages of `GET /subscriptions` (a hundred a
    /// call) replace one `GET /subscriptions/{id}` each.
    pub list_from: usize,
    /// Dodo's disputes are read by the runs at hours divisible by this (they are decided
    /// over weeks; refunds are read every run).
    pub disputes_every_hours: u32,
    /// Subscriptions repaired at once (each is a read and a transaction in the store).
    pub repair_concurrency: usize,
}

impl Default for Limits {
    /// 150 calls at most 40 a minute: under four minutes, inside the function's five.
    fn default() -> Self {
        Self {
            max_dodo_calls: 150,
            min_call_interval: Duration::from_millis(1500),
            time_budget: Duration::from_secs(240),
            abandon_checkout_after: 2 * SECONDS_PER_DAY,
            list_from: 20,
            disputes_every_hours: 6,
            repair_concurrency: 16,
        }
    }
}

/// What a run did; logged, published as metrics and returned.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Items due when the run started.
    pub due: u32,
    pub checked: u32,
    pub subscriptions_refreshed: u32,
    pub payments_granted: u32,
    pub checkouts_abandoned: u32,
    /// Checkouts paid for nothing this paywall sells (or refunded first): done, no grant.
    pub checkouts_closed: u32,
    /// Checked, nothing new yet: deferred to a later run.
    pub unchanged: u32,
    pub failed: u32,
    pub dodo_calls: u32,
    /// Pages of `GET /subscriptions` read.
    pub list_pages: u32,
    /// Due items this run did not reach (budget or time): the next run takes them.
    pub left_behind: u32,
    /// Items taken out of the index for good: unknown to Dodo, or checked too often
    /// without result (each also counts as failed, once).
    pub dropped: u32,
    /// Refunds and disputes read from Dodo's lists that changed what was stored (their
    /// webhooks were lost, or have not arrived yet).
    pub claims_applied: u32,
    /// Users whose access ran out since the last run (an `expired` access event each).
    pub expired: u32,
}

impl Summary {
    /// Whether the run did all that was due without an error.
    pub fn complete(&self) -> bool {
        self.failed == 0 && self.left_behind == 0
    }

    /// The summary as a CloudWatch embedded-metric-format log line (metrics without an
    /// SDK call: CloudWatch reads them from the log).
    pub fn metric_line(&self, at_millis: i64) -> String {
        let names = [
            ("Due", self.due),
            (
                "Repaired",
                self.subscriptions_refreshed + self.payments_granted,
            ),
            ("Failed", self.failed),
            ("LeftBehind", self.left_behind),
            ("DodoCalls", self.dodo_calls),
        ];
        let mut line = serde_json::json!({
            "_aws": {
                "Timestamp": at_millis,
                "CloudWatchMetrics": [{
                    "Namespace": "DodoPaywall/Reconcile",
                    "Dimensions": [[]],
                    "Metrics": names.iter().map(|(name, _)| serde_json::json!({"Name": name, "Unit": "Count"})).collect::<Vec<_>>(),
                }],
            },
        });
        for (name, value) in names {
            line[name] = serde_json::json!(value);
        }
        line.to_string()
    }
}

pub struct Reconciler {
    store: Store,
    dodo: DodoClient,
    catalog: Arc<Catalog>,
    limits: Limits,
    clock: Clock,
    /// The last hour the expiry sweep finished, as this instance knows it (a warm
    /// function skips reading it back).
    swept_through: crate::expiry::SweptThrough,
}

#[derive(Debug, thiserror::Error)]
enum ItemError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dodo(#[from] crate::dodo::DodoError),
    #[error("{0}")]
    Other(String),
    #[error("the run's Dodo call budget is spent")]
    OutOfBudget,
    /// Asking again cannot help (Dodo does not know it, or its id is not one).
    #[error("{0}")]
    Gone(String),
}

/// Dodo's 404: the object is not Dodo's (any more), so there is nothing to repair.
fn gone_if_unknown(err: crate::dodo::DodoError) -> ItemError {
    if err.is_not_found() {
        ItemError::Gone(err.to_string())
    } else {
        ItemError::Dodo(err)
    }
}

enum Repair {
    Refreshed,
    Granted,
    Abandoned,
    /// Paid, for nothing this paywall sells: the checkout is done, nothing granted.
    Closed,
    /// Nothing new: check again later.
    Unchanged,
    /// Still on hold, as stored since `since` (ms): asked about again a day later, for
    /// [`WATCH_HELD_FOR`]; then its own webhook is left to tell of a recovery.
    StillHeld {
        since: i64,
    },
}

/// How long reconcile keeps asking about a subscription on hold (once a day): Dodo's
/// retries end within 13 days, its dunning e-mails within a week or two.
const WATCH_HELD_FOR: i64 = 30 * SECONDS_PER_DAY;

/// Counts and paces a run's Dodo calls, and keeps its time budget.
struct Budget {
    started: Instant,
    last_call: Option<Instant>,
    calls: u32,
    limits: Limits,
}

impl Budget {
    fn new(limits: Limits) -> Self {
        Self {
            started: Instant::now(),
            last_call: None,
            calls: 0,
            limits,
        }
    }

    fn left(&self) -> u32 {
        if self.started.elapsed() >= self.limits.time_budget {
            return 0;
        }
        self.limits.max_dodo_calls.saturating_sub(self.calls)
    }

    /// Takes one call, waiting out the pacing interval; `Err` when none is left.
    async fn take(&mut self) -> Result<(), ItemError> {
        if self.left() == 0 {
            return Err(ItemError::OutOfBudget);
        }
        if let Some(last) = self.last_call {
            let wait = self.limits.min_call_interval.saturating_sub(last.elapsed());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        self.last_call = Some(Instant::now());
        self.calls += 1;
        Ok(())
    }
}

/// Checks that find nothing new (or fail) before an item is dropped: with the back-off
/// below, about six days.
const MAX_ATTEMPTS: u32 = 10;

/// How far back every run reads refunds: a day's lost webhooks, and two more days of
/// reconcile outage, are still repaired.
const REFUNDS_LOOK_BACK: i64 = 3 * SECONDS_PER_DAY;
/// How far back every run reads succeeded payments: three hours, so that two missed
/// runs lose nothing (a payment is usually applied within seconds; this catches those
/// whose every path was lost).
const PAYMENTS_LOOK_BACK: i64 = 3 * 3600;
/// How far back every run reads disputes: an open dispute is decided weeks later.
const DISPUTES_LOOK_BACK: i64 = 60 * SECONDS_PER_DAY;

/// How long an item that changed nothing (or failed) waits: an hour, doubling with each
/// attempt, at most a day.
fn defer_for(attempts: u32) -> i64 {
    (3600_i64 << attempts.min(5)).min(SECONDS_PER_DAY)
}

impl Reconciler {
    pub fn new(store: Store, dodo: DodoClient, catalog: Catalog, limits: Limits) -> Self {
        Self {
            store: store.with_access_events(crate::access_events::observer(&catalog)),
            // One request, one counted call: nothing retried behind the budget's back.
            dodo: dodo.without_retries(),
            catalog: Arc::new(catalog),
            limits,
            clock: Clock::system(),
            swept_through: Default::default(),
        }
    }

    /// Reads the time from `clock` instead of the system's (the local test clock).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The clock this reconciler reads.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub async fn from_env() -> Result<Self, StartError> {
        let env = Vars::process();
        let fetched = crate::secrets::fetch(&env, &[crate::secrets::DODO_API_KEY]).await?;
        let vars = env.with_fetched(&fetched);
        let table = StoreConfig::from_vars(&vars)?;
        let dodo = DodoClient::new(&DodoConfig::from_vars(&vars)?)?;
        let catalog = Catalog::from_vars(&vars)?;
        Ok(Self::new(
            Store::connect(&table),
            dodo,
            catalog,
            Limits::default(),
        ))
    }

    /// One run: repairs what lost webhooks left behind, then publishes `expired` for the
    /// users whose access ran out since the last run.
    pub async fn run(&self, now: Timestamp) -> Summary {
        let mut summary =
            crate::store::with_cause("reconcile", self.clock.clone(), self.repair(now)).await;
        let swept = crate::store::with_cause(
            "expiry",
            self.clock.clone(),
            crate::expiry::sweep(&self.store, &self.catalog, &self.swept_through, now),
        )
        .await;
        match swept {
            Ok(expired) => summary.expired = expired,
            Err(err) => {
                tracing::error!(error = %err, "the expiry sweep failed; the next run resumes it");
                summary.failed += 1;
            }
        }
        summary
    }

    async fn repair(&self, now: Timestamp) -> Summary {
        let mut summary = Summary::default();
        let mut budget = Budget::new(self.limits);
        let due = match self.store.due_for_reconcile(now).await {
            Ok(due) => due,
            Err(err) => {
                tracing::error!(error = %err, "reconcile could not read what is due");
                summary.failed += 1;
                return summary;
            }
        };
        summary.due = due.len() as u32;
        let (subscriptions, checkouts): (Vec<DueItem>, Vec<DueItem>) = due
            .into_iter()
            .partition(|item| matches!(item.what, Due::Subscription { .. }));

        // Subscriptions first: a paying user's access is at stake.
        let mut waiting: HashMap<String, DueItem> = subscriptions
            .into_iter()
            .filter_map(|item| match &item.what {
                Due::Subscription {
                    subscription_id, ..
                } => Some((subscription_id.clone(), item)),
                Due::Checkout { .. } => None,
            })
            .collect();
        if waiting.len() >= self.limits.list_from {
            self.sweep_subscription_list(&mut waiting, now, &mut budget, &mut summary)
                .await;
        }
        let mut rest: Vec<DueItem> = waiting.into_values().collect();
        rest.sort_by_key(|item| item.due_at);
        for item in rest.into_iter().chain(checkouts) {
            if budget.left() == 0 {
                summary.left_behind += 1;
                continue;
            }
            summary.checked += 1;
            let result = match &item.what {
                Due::Subscription {
                    subscription_id, ..
                } => {
                    let observed_at = self.clock.now_millis();
                    match self.fetch_subscription(subscription_id, &mut budget).await {
                        Ok(subscription) => {
                            repair_subscription(
                                &self.store,
                                &self.catalog,
                                &item,
                                &subscription,
                                (now, observed_at),
                            )
                            .await
                        }
                        Err(err) => Err(err),
                    }
                }
                Due::Checkout { .. } => self.repair_checkout(&item, now, &mut budget).await,
            };
            self.count(&item, result, now, &mut summary).await;
        }
        self.sweep_claims(now, &mut budget, &mut summary).await;
        summary.dodo_calls = budget.calls;
        if summary.complete() {
            tracing::info!(summary = ?summary, "reconcile run");
        } else {
            tracing::error!(summary = ?summary, "reconcile run left work behind or met errors");
        }
        summary
    }

    /// Pages through the active subscriptions (`GET /subscriptions?status=active`) until
    /// every waiting subscription was seen, the pages end, or the sweep has cost half what
    /// asking one by one would (a business with many more subscribers than are due is
    /// better served one by one); repairs each one seen. What is left is asked about one
    /// by one.
    async fn sweep_subscription_list(
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
    async fn repair_all(
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

    /// Reads Dodo's refunds (created in the last three days) and, every six hours, its
    /// disputes (of the last 60 days: an open dispute is decided weeks later), reads what is stored about them in one
    /// batch, and applies what differs — so that a lost `refund.succeeded` or
    /// `dispute.lost` still takes access back. A claim on a payment never applied here is
    /// followed by that payment, looked up once.
    async fn sweep_claims(&self, now: Timestamp, budget: &mut Budget, summary: &mut Summary) {
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
    async fn apply_lost_payments(
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
                    tracing::info!(payment_id = %listed.payment_id, "reconcile applied a payment whose webhook was lost");
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
    async fn apply_claimed_payment(
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

    async fn fetch_payment(
        &self,
        payment_id: &str,
        budget: &mut Budget,
    ) -> Result<crate::dodo::Payment, ItemError> {
        let id = PaymentId::parse(payment_id).map_err(|e| ItemError::Other(e.to_string()))?;
        budget.take().await?;
        Ok(self.dodo.get_payment(&id).await?)
    }

    async fn fetch_subscription(
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

    /// Tallies one item's result; defers it when it changed nothing or failed.
    async fn count(
        &self,
        item: &DueItem,
        result: Result<Repair, ItemError>,
        now: Timestamp,
        summary: &mut Summary,
    ) {
        let defer = match result {
            Ok(Repair::Refreshed) => {
                summary.subscriptions_refreshed += 1;
                false
            }
            Ok(Repair::Granted) => {
                summary.payments_granted += 1;
                false
            }
            Ok(Repair::Abandoned) => {
                summary.checkouts_abandoned += 1;
                false
            }
            Ok(Repair::Closed) => {
                summary.checkouts_closed += 1;
                false
            }
            Ok(Repair::Unchanged) => {
                summary.unchanged += 1;
                true
            }
            Ok(Repair::StillHeld { since }) => {
                summary.unchanged += 1;
                let held_for = now.unix_seconds() - since.div_euclid(1000);
                let next = if held_for >= WATCH_HELD_FOR {
                    tracing::info!(item = ?item.what, "on hold for 30 days: no longer checked");
                    self.store.drop_due(item).await
                } else {
                    self.store
                        .defer_due(item, now.plus_seconds(SECONDS_PER_DAY), 0)
                        .await
                };
                if let Err(err) = next {
                    tracing::warn!(error = %err, "could not reschedule a held subscription");
                    summary.failed += 1;
                }
                false
            }
            Err(ItemError::OutOfBudget) => {
                summary.checked -= 1;
                summary.left_behind += 1;
                false
            }
            Err(ItemError::Gone(why)) => {
                // Asking again cannot help: out of the index, said once (an error, so
                // that this run's alarm points at it), never again.
                tracing::error!(item = ?item.what, reason = %why, "dropped from reconcile");
                summary.failed += 1;
                summary.dropped += 1;
                if let Err(err) = self.store.drop_due(item).await {
                    tracing::warn!(error = %err, "could not drop a due item");
                }
                false
            }
            Err(err) => {
                tracing::warn!(error = %err, "reconcile could not check an item");
                summary.failed += 1;
                true
            }
        };
        if defer && let Err(err) = self.defer(item, now, summary).await {
            tracing::warn!(error = %err, "could not defer a due item");
            summary.failed += 1;
        }
    }

    /// Checks it again later, each time later; after [`MAX_ATTEMPTS`] checks that found
    /// nothing new or failed, it is dropped from the index (said in the log and the run's
    /// summary), so that nothing fails every run forever.
    async fn defer(
        &self,
        item: &DueItem,
        now: Timestamp,
        summary: &mut Summary,
    ) -> Result<(), StoreError> {
        let attempts = self.store.due_attempts(item).await? + 1;
        if attempts >= MAX_ATTEMPTS {
            tracing::error!(item = ?item.what, attempts, "dropped from reconcile after too many checks");
            summary.failed += 1;
            summary.dropped += 1;
            return self.store.drop_due(item).await;
        }
        let until = now.plus_seconds(defer_for(attempts - 1));
        self.store.defer_due(item, until, attempts).await
    }

    async fn repair_checkout(
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
        let paid = self.checkout_paid(user, session_id, now, budget).await;
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

    /// The checkout's payment, applied if it succeeded; `None` while unpaid.
    async fn checkout_paid(
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
    async fn grant_checkout_payment(
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
                Repair::Granted
            }
            Applied::Pass(GrantOutcome::Applied(_)) => {
                tracing::info!(user_id = %user, payment_id, "reconcile granted a payment whose webhook was lost");
                Repair::Granted
            }
            Applied::Pass(GrantOutcome::AlreadyApplied { .. }) => Repair::Granted,
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

async fn repair_subscription(
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
