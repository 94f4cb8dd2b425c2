//! What a user may use: their plan's features and limits, from the same stored state as
//! their access (one read), and the paid period their usage counts against.
//!
//! The plan that speaks is the first of: an active subscription (the one that runs
//! longest), an active pass, a card-less trial, a grant from the founder's backend, else
//! the free tier (the catalogue's plan `free`), else nothing. Limits reset at the start of each paid period:
//! a subscription's billing period; each `days`-long stretch of a pass (two passes bought
//! back to back are two periods); each 30 days of a grant; each calendar month (UTC) on
//! the free tier.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::plan::{Allowance, Catalog, FREE_PLAN};
use crate::store::Account;
use crate::time::{SECONDS_PER_DAY, Timestamp, start_of_next_month};

/// A grant's limits reset every this many days.
pub const GRANT_PERIOD_DAYS: i64 = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Pass,
    Subscription,
    /// A card-less trial the paywall runs (`POST /payment/trial`).
    Trial,
    Grant,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LimitState {
    pub limit: u64,
    pub used: u64,
    pub remaining: u64,
    /// When `used` goes back to 0 (the current period's end); `null` when unknown.
    pub resets_at: Option<Timestamp>,
}

/// The body of `GET /payment/entitlements`, and `before`/`after` of an access event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entitlements {
    pub plan: Option<String>,
    pub source: Option<Source>,
    pub valid_until: Option<Timestamp>,
    /// While the plan is a trial (Dodo's, before its first charge, or a card-less one):
    /// when the trial ends. `null` otherwise.
    pub trial_ends_at: Option<Timestamp>,
    /// The subscription that speaks ends at `valid_until` instead of renewing.
    pub cancel_at_period_end: bool,
    pub features: Vec<String>,
    pub limits: BTreeMap<String, LimitState>,
}

/// The paid period usage counts against: `key` names it in the usage counter, so a
/// counter from an earlier period reads as 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Period {
    pub key: String,
    pub resets_at: Option<Timestamp>,
}

/// What gives the user access now, and for which period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    pub plan: Option<String>,
    pub source: Option<Source>,
    pub valid_until: Option<Timestamp>,
    pub period: Option<Period>,
    /// When the trial that gives access ends, if one does.
    pub trial_ends_at: Option<Timestamp>,
    pub cancel_at_period_end: bool,
}

impl Standing {
    pub fn of(account: &Account, catalog: &Catalog, now: Timestamp) -> Self {
        let subscription = account
            .subscriptions
            .iter()
            .filter(|s| !s.plan.is_empty() && s.grants_access(now))
            .max_by_key(|s| s.access_until());
        if let Some(sub) = subscription {
            let end = sub.next_billing_date.or(sub.access_until());
            return Self {
                plan: Some(sub.plan.clone()),
                source: Some(Source::Subscription),
                valid_until: sub.access_until(),
                trial_ends_at: sub.trialing_until(now),
                cancel_at_period_end: sub.cancel_at_next_billing_date,
                period: Some(Period {
                    key: format!(
                        "sub:{}:{}",
                        sub.subscription_id,
                        end.map_or(0, Timestamp::unix_seconds)
                    ),
                    resets_at: end,
                }),
            };
        }
        let profile = account.profile.as_ref();
        // Each pass plan's time is its own: the best plan whose time runs now speaks.
        if let Some((plan, until)) = profile
            .and_then(|p| catalog.best_pass(p.passes_running(now)))
            .map(|(plan, until)| (plan.to_owned(), until))
        {
            let days = catalog.get(&plan).map_or(0, |p| i64::from(p.days));
            // The `days`-long stretch (counted back from the expiry) that holds now.
            let end = if days > 0 {
                let span = days * SECONDS_PER_DAY;
                let stretches_after = (until.unix_seconds() - now.unix_seconds() - 1) / span;
                until.plus_seconds(-stretches_after * span)
            } else {
                until
            };
            return Self {
                plan: Some(plan),
                source: Some(Source::Pass),
                valid_until: Some(until),
                period: Some(Period {
                    key: format!("pass:{}", end.unix_seconds()),
                    resets_at: Some(end),
                }),
                trial_ends_at: None,
                cancel_at_period_end: false,
            };
        }
        // A card-less trial of a plan still sold: its limits count over the whole trial.
        if let Some(trial) = account
            .trial
            .as_ref()
            .filter(|t| t.grants_access(now) && catalog.get(&t.plan).is_some())
        {
            return Self {
                plan: Some(trial.plan.clone()),
                source: Some(Source::Trial),
                valid_until: Some(trial.until),
                period: Some(Period {
                    key: format!("trial:{}:{}", trial.plan, trial.until.unix_seconds()),
                    resets_at: Some(trial.until),
                }),
                trial_ends_at: Some(trial.until),
                cancel_at_period_end: false,
            };
        }
        if let Some(grant) = account.grant.as_ref().filter(|g| g.grants_access(now)) {
            let span = GRANT_PERIOD_DAYS * SECONDS_PER_DAY;
            let stretch = (now.unix_seconds() - grant.from.unix_seconds()) / span;
            let end = grant
                .from
                .plus_seconds((stretch + 1) * span)
                .min(grant.until);
            return Self {
                plan: Some(grant.plan.clone()),
                source: Some(Source::Grant),
                valid_until: Some(grant.until),
                period: Some(Period {
                    key: format!("grant:{}:{}", grant.from.unix_seconds(), end.unix_seconds()),
                    resets_at: Some(end),
                }),
                trial_ends_at: None,
                cancel_at_period_end: false,
            };
        }
        if catalog.free_tier().is_some() {
            let end = Timestamp::from_unix_seconds(start_of_next_month(now.unix_seconds()));
            return Self {
                plan: Some(FREE_PLAN.to_owned()),
                source: None,
                valid_until: None,
                period: Some(Period {
                    key: format!("free:{}", end.unix_seconds()),
                    resets_at: Some(end),
                }),
                trial_ends_at: None,
                cancel_at_period_end: false,
            };
        }
        Self {
            plan: None,
            source: None,
            valid_until: None,
            period: None,
            trial_ends_at: None,
            cancel_at_period_end: false,
        }
    }

    /// The features and limits of the plan that speaks (none for a plan no longer sold).
    pub fn allowance<'c>(&self, catalog: &'c Catalog) -> Option<&'c Allowance> {
        match (self.plan.as_deref(), self.source) {
            (Some(FREE_PLAN), None) => catalog.free_tier(),
            (Some(plan), _) => catalog
                .get(plan)
                .map(|p| &p.allowance)
                .or_else(|| (plan == FREE_PLAN).then(|| catalog.free_tier()).flatten()),
            (None, _) => None,
        }
    }

    /// How much of `limit` the current period allows (0 when the plan has no such limit).
    pub fn limit(&self, catalog: &Catalog, limit: &str) -> u64 {
        self.allowance(catalog)
            .and_then(|a| a.limits.get(limit).copied())
            .unwrap_or(0)
    }
}

impl Entitlements {
    pub fn of(account: &Account, catalog: &Catalog, now: Timestamp) -> Self {
        let standing = Standing::of(account, catalog, now);
        let allowance = standing.allowance(catalog).cloned().unwrap_or_default();
        let limits = allowance
            .limits
            .iter()
            .map(|(name, &limit)| {
                let used = match (&standing.period, account.usage.get(name)) {
                    (Some(period), Some(counter)) if counter.period == period.key => counter.used,
                    _ => 0,
                };
                let state = LimitState {
                    limit,
                    used,
                    remaining: limit.saturating_sub(used),
                    resets_at: standing.period.as_ref().and_then(|p| p.resets_at),
                };
                (name.clone(), state)
            })
            .collect();
        Self {
            plan: standing.plan,
            source: standing.source,
            valid_until: standing.valid_until,
            trial_ends_at: standing.trial_ends_at,
            cancel_at_period_end: standing.cancel_at_period_end,
            features: allowance.features,
            limits,
        }
    }

    /// The same access (what an access event reports a change of): usage aside.
    pub fn same_access(&self, other: &Self) -> bool {
        (
            &self.plan,
            self.source,
            self.valid_until,
            &self.features,
            self.trial_ends_at,
            self.cancel_at_period_end,
        ) == (
            &other.plan,
            other.source,
            other.valid_until,
            &other.features,
            other.trial_ends_at,
            other.cancel_at_period_end,
        ) && self.limits.keys().eq(other.limits.keys())
            && self
                .limits
                .values()
                .zip(other.limits.values())
                .all(|(a, b)| a.limit == b.limit)
    }
}
