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

mod budget;
mod claim_sweep;
mod due_items;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use budget::{Budget, MAX_ATTEMPTS, defer_for};
use due_items::{WATCH_HELD_FOR, repair_subscription};

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
    /// Calls kept for the sweep of Dodo's payments, refunds and disputes (at most half
    /// the run's): due items can never starve it (issue 17, M4).
    pub sweep_reserve: u32,
    /// Due checkouts checked per run at most (the oldest due first); the rest wait for
    /// the next run, so that a flood of abandoned checkouts cannot crowd out anything.
    pub max_checkouts_per_run: usize,
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
            sweep_reserve: 10,
            max_checkouts_per_run: 60,
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
    /// Due checkouts past the per-run cap, left for the next run (not a failure: a
    /// flood of abandoned checkouts must not make every run fail and alarm).
    pub checkouts_deferred: u32,
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
        let checkouts_due = checkouts.len();
        let checkouts = checkouts
            .into_iter()
            .take(self.limits.max_checkouts_per_run);
        summary.checkouts_deferred +=
            checkouts_due.saturating_sub(self.limits.max_checkouts_per_run) as u32;
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
        // The run's one line (with the metric line run_scheduled prints): what each item
        // did is counted here, its own lines are DEBUG.
        if summary.complete() {
            tracing::info!(summary = ?summary, "reconcile run");
        } else {
            tracing::error!(summary = ?summary, "reconcile run left work behind or met errors");
        }
        summary
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
                    tracing::debug!(item = ?item.what, "on hold for 30 days: no longer checked");
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
}
