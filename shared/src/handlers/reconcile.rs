//! The `reconcile` function, run on a schedule: repairs what lost webhooks would leave
//! wrong. Subscriptions whose paid period ends within a day are re-read from Dodo (a lost
//! `subscription.renewed` never locks out a paying user), and checkouts still pending an
//! hour after they opened are looked up (a lost `payment.succeeded` never leaves a buyer
//! without access). Every repair goes through the same idempotent store writes as the
//! webhook, so a run can be repeated or overlap with deliveries. Each run is bounded in
//! time and in Dodo calls (Dodo allows about 100 requests a minute).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::StartError;
use crate::config::{DodoConfig, StoreConfig, Vars};
use crate::dodo::{DodoClient, PaymentStatus};
use crate::ids::{PaymentId, UserId};
use crate::plan::Catalog;
use crate::purchase::plan_for;
use crate::store::{DueItem, Grant, GrantOutcome, GrantSource, Store, StoreError};
use crate::time::{SECONDS_PER_DAY, Timestamp, now_millis};

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Items read from the due index per run.
    pub max_items: i32,
    /// Dodo calls per run (well under Dodo's ~100 a minute, leaving room for the API).
    pub max_dodo_calls: u32,
    /// Wall-clock budget of a run (the function's timeout is longer).
    pub time_budget: Duration,
    /// A checkout unpaid this long is no longer checked.
    pub abandon_checkout_after: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_items: 50,
            max_dodo_calls: 60,
            time_budget: Duration::from_secs(60),
            abandon_checkout_after: 2 * SECONDS_PER_DAY,
        }
    }
}

/// What a run did; logged and returned.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub checked: u32,
    pub subscriptions_refreshed: u32,
    pub payments_granted: u32,
    pub checkouts_abandoned: u32,
    pub unchanged: u32,
    pub failed: u32,
    pub dodo_calls: u32,
    /// The run stopped at its time or call budget; the rest waits for the next run.
    pub stopped_early: bool,
}

pub struct Reconciler {
    store: Store,
    dodo: DodoClient,
    catalog: Catalog,
    limits: Limits,
}

#[derive(Debug, thiserror::Error)]
enum ItemError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dodo(#[from] crate::dodo::DodoError),
    #[error("{0}")]
    Other(String),
}

enum Repair {
    Refreshed,
    Granted,
    Abandoned,
    Unchanged,
}

impl Reconciler {
    pub fn new(store: Store, dodo: DodoClient, catalog: Catalog, limits: Limits) -> Self {
        Self {
            store,
            dodo,
            catalog,
            limits,
        }
    }

    pub async fn from_env() -> Result<Self, StartError> {
        let vars = Vars::process();
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

    pub async fn run(&self, now: Timestamp) -> Summary {
        let started = Instant::now();
        let mut summary = Summary::default();
        let due = match self
            .store
            .due_for_reconcile(now.plus_days(1), self.limits.max_items)
            .await
        {
            Ok(due) => due,
            Err(err) => {
                tracing::error!(error = %err, "reconcile could not read what is due");
                summary.failed += 1;
                return summary;
            }
        };
        for item in due {
            // Each item needs at most two Dodo calls.
            if started.elapsed() > self.limits.time_budget
                || summary.dodo_calls + 2 > self.limits.max_dodo_calls
            {
                summary.stopped_early = true;
                break;
            }
            summary.checked += 1;
            match self.repair(&item, now, &mut summary.dodo_calls).await {
                Ok(Repair::Refreshed) => summary.subscriptions_refreshed += 1,
                Ok(Repair::Granted) => summary.payments_granted += 1,
                Ok(Repair::Abandoned) => summary.checkouts_abandoned += 1,
                Ok(Repair::Unchanged) => summary.unchanged += 1,
                Err(err) => {
                    tracing::warn!(error = %err, "reconcile could not check an item");
                    summary.failed += 1;
                }
            }
        }
        tracing::info!(
            checked = summary.checked,
            subscriptions_refreshed = summary.subscriptions_refreshed,
            payments_granted = summary.payments_granted,
            checkouts_abandoned = summary.checkouts_abandoned,
            unchanged = summary.unchanged,
            failed = summary.failed,
            dodo_calls = summary.dodo_calls,
            stopped_early = summary.stopped_early,
            "reconcile run"
        );
        summary
    }

    async fn repair(
        &self,
        item: &DueItem,
        now: Timestamp,
        calls: &mut u32,
    ) -> Result<Repair, ItemError> {
        match item {
            DueItem::Subscription {
                user,
                subscription_id,
                plan,
            } => {
                *calls += 1;
                let subscription = self.dodo.get_subscription(subscription_id).await?;
                // Dodo's answer now is the newest state there is.
                self.store
                    .apply_subscription(user, &subscription, plan, now_millis())
                    .await?;
                Ok(Repair::Refreshed)
            }
            DueItem::Checkout {
                user,
                session_id,
                created_at,
            } => {
                let age = now.unix_seconds() - created_at.unix_seconds();
                if age < crate::store::CHECKOUT_RECHECK_AFTER {
                    return Ok(Repair::Unchanged);
                }
                *calls += 1;
                let paid = match self.dodo.get_checkout_payment(session_id).await? {
                    Some(payment_id) => {
                        *calls += 1;
                        self.grant_checkout_payment(user, session_id, &payment_id, now)
                            .await?
                    }
                    None => false,
                };
                if paid {
                    return Ok(Repair::Granted);
                }
                if age > self.limits.abandon_checkout_after {
                    self.store.forget_pending_checkout(user, session_id).await?;
                    return Ok(Repair::Abandoned);
                }
                Ok(Repair::Unchanged)
            }
        }
    }

    /// Grants a checkout's payment if Dodo says it succeeded (a no-op if the webhook or
    /// the success call granted it already). Returns whether it is granted now.
    async fn grant_checkout_payment(
        &self,
        user: &UserId,
        session_id: &str,
        payment_id: &str,
        now: Timestamp,
    ) -> Result<bool, ItemError> {
        let id = PaymentId::parse(payment_id).map_err(|e| ItemError::Other(e.to_string()))?;
        let payment = self.dodo.get_payment(&id).await?;
        if payment.status != PaymentStatus::Succeeded {
            return Ok(false);
        }
        if payment
            .checkout_session_id
            .as_deref()
            .is_some_and(|s| s != session_id)
        {
            return Err(ItemError::Other(
                "the payment belongs to another session".into(),
            ));
        }
        if let Some(subscription_id) = &payment.subscription_id {
            // Subscriptions are kept by their own state; link it so it is checked.
            let subscription = self.dodo.get_subscription(subscription_id).await?;
            let Some(plan) = crate::purchase::subscription_plan_for(&self.catalog, &subscription)
            else {
                return Ok(false);
            };
            self.store
                .apply_subscription(user, &subscription, &plan.name, now_millis())
                .await?;
            return Ok(true);
        }
        let Some(plan) = plan_for(&self.catalog, &payment).filter(|p| !p.is_subscription()) else {
            return Ok(false);
        };
        let grant = Grant {
            user_id: user.clone(),
            payment_id: payment.payment_id.clone(),
            customer_id: payment.customer_id.clone(),
            plan: plan.name.clone(),
            days: plan.days,
            source: GrantSource::Reconcile,
        };
        Ok(match self.store.apply_grant(&grant, now).await? {
            GrantOutcome::Applied(_) => {
                tracing::info!(user_id = %user, payment_id, "reconcile granted a payment whose webhook was lost");
                true
            }
            GrantOutcome::AlreadyApplied { .. } => true,
            GrantOutcome::Revoked => false,
        })
    }
}
