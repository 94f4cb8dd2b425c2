//! The plan catalogue, kept on the server: clients name a plan, never a product or a price.
//!
//! Pricing as code: `plans.toml` at the workspace root is built into the binaries; `PLANS`
//! (JSON of the same shape) overrides it at deploy time:
//! `{"monthly": {"product_id": "pdt_a", "kind": "pass", "days": 30, "price": "$19",
//!   "features": ["export"], "limits": {"api_calls": 1000}},
//!   "pro": {"product_id": "pdt_b", "kind": "subscription"},
//!   "free": {"features": [], "limits": {"api_calls": 50}}}`.
//! A plan named `free` has no product: it is what a user with nothing paid may use.
//! Without either there is one plan, `monthly`: a pass of `PLAN_DURATION_DAYS` (default 30)
//! on `DODO_PRODUCT_ID`, as in the original router.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::{ConfigError, Vars, parse_days};
use crate::ids::ProductId;
use crate::time::Timestamp;

pub const DEFAULT_PLAN: &str = "monthly";
pub const DEFAULT_DURATION_DAYS: u32 = 30;
/// The plan a user with nothing paid is on, when the catalogue defines it.
pub const FREE_PLAN: &str = "free";
/// The largest amount a limit may name (well inside DynamoDB's and JSON's exact integers).
pub const MAX_LIMIT: u64 = 1_000_000_000_000;

/// `plans.toml`, as JSON (see `build.rs`); `{}` when the file names no plan.
const BUILT_IN_PLANS: &str = include_str!(concat!(env!("OUT_DIR"), "/plans.json"));

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanKind {
    /// One payment buys `days` of access; buying again extends it.
    Pass { days: u32 },
    /// Access follows the Dodo subscription's state.
    Subscription,
}

/// What a plan lets its user use: named features, and amounts per paid period.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowance {
    /// Sorted, without repeats.
    pub features: Vec<String>,
    /// Limit name -> amount per paid period.
    pub limits: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The name clients use and `subscription_plan` shows, e.g. `monthly`.
    pub name: String,
    pub product_id: ProductId,
    /// How long one payment grants access (passes; 0 for subscriptions).
    pub days: u32,
    pub kind: PlanKind,
    /// A display price set in `PLANS`; otherwise Dodo's product price is shown.
    pub price: Option<String>,
    pub allowance: Allowance,
    /// A free trial of the plan, once per person (see [`Trial`]).
    pub trial: Option<Trial>,
    /// How a subscriber moves to this plan from another (subscriptions only).
    pub change: ChangePolicy,
    /// How often a subscription bills, for display (`month` unless the catalogue says).
    pub interval: Option<String>,
}

/// A plan's free trial: `days` long, once per person (a user, or a verified e-mail).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Trial {
    pub days: u32,
    /// `true`: Dodo runs it, with the card taken at checkout (`trial_days`, subscriptions
    /// only; the first charge at its end). `false`: the paywall runs it, no card and no
    /// Dodo (`POST /payment/trial`).
    pub card: bool,
}

/// When a plan change takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeTiming {
    Immediately,
    NextBillingDate,
}

impl ChangeTiming {
    /// Dodo's `effective_at`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Immediately => "immediately",
            Self::NextBillingDate => "next_billing_date",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "immediately" => Some(Self::Immediately),
            "next_billing_date" => Some(Self::NextBillingDate),
            _ => None,
        }
    }
}

/// Dodo's proration billing modes (`POST /subscriptions/{id}/change-plan`).
pub const PRORATION_MODES: [&str; 5] = [
    "prorated_immediately",
    "full_immediately",
    "difference_immediately",
    "do_not_bill",
    "prorated_immediately_keep_cycle",
];

/// How a subscriber moves to a plan: an upgrade (to a higher price) and a downgrade each
/// at their moment, billed by `proration`; a failed payment keeps the current plan
/// (`prevent_change`) unless the catalogue says `apply_change`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangePolicy {
    pub upgrade: ChangeTiming,
    pub downgrade: ChangeTiming,
    pub proration: &'static str,
    pub on_payment_failure: &'static str,
}

impl Default for ChangePolicy {
    fn default() -> Self {
        Self {
            upgrade: ChangeTiming::Immediately,
            downgrade: ChangeTiming::NextBillingDate,
            proration: "prorated_immediately",
            on_payment_failure: "prevent_change",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TrialEntry {
    days: u32,
    #[serde(default = "card_by_default")]
    card: bool,
}

fn card_by_default() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeEntry {
    upgrade: Option<String>,
    downgrade: Option<String>,
    proration: Option<String>,
    on_payment_failure: Option<String>,
}

/// The longest trial a plan may offer.
pub const MAX_TRIAL_DAYS: u32 = 365;

impl Plan {
    /// A pass of `days` on `product_id`.
    pub fn pass(name: &str, product_id: ProductId, days: u32) -> Self {
        Self {
            name: name.to_owned(),
            product_id,
            days,
            kind: PlanKind::Pass { days },
            price: None,
            allowance: Allowance::default(),
            trial: None,
            change: ChangePolicy::default(),
            interval: None,
        }
    }

    /// A subscription on `product_id`.
    pub fn subscription(name: &str, product_id: ProductId) -> Self {
        Self {
            kind: PlanKind::Subscription,
            days: 0,
            ..Self::pass(name, product_id, 0)
        }
    }

    pub fn is_subscription(&self) -> bool {
        self.kind == PlanKind::Subscription
    }

    /// How many days one payment covers: a pass's `days`, a subscription's interval.
    pub fn period_days(&self) -> u32 {
        match (self.kind, self.interval.as_deref()) {
            (PlanKind::Pass { days }, _) => days,
            (PlanKind::Subscription, Some("day")) => 1,
            (PlanKind::Subscription, Some("week")) => 7,
            (PlanKind::Subscription, Some("year")) => 365,
            (PlanKind::Subscription, _) => 30,
        }
    }

    /// The trial Dodo runs on this plan's checkout (a card taken), if any.
    pub fn card_trial_days(&self) -> Option<u32> {
        self.trial.filter(|t| t.card).map(|t| t.days)
    }

    /// The trial the paywall runs without a card (`POST /payment/trial`), if any.
    pub fn cardless_trial_days(&self) -> Option<u32> {
        self.trial.filter(|t| !t.card).map(|t| t.days)
    }

    /// The amount in the display price, in hundredths (`$19` -> 1900, `€9,99/month`
    /// -> 999, `$1,234.50` -> 123450): the first number in it. `None` without a price
    /// or a number.
    pub fn price_amount(&self) -> Option<u64> {
        let price = self.price.as_deref()?;
        let start = price.find(|c: char| c.is_ascii_digit())?;
        let raw: String = price[start..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
            .collect();
        let raw = raw.trim_end_matches(['.', ',']);
        // The decimal separator is the last `.` or `,` when at most two digits follow it
        // (`9.99`, `9,99`, `1.234,56`); any other is a thousands separator.
        let decimal = raw.rfind(['.', ',']).filter(|at| raw.len() - at - 1 <= 2);
        let (whole, fraction) = match decimal {
            Some(at) => (&raw[..at], &raw[at + 1..]),
            None => (raw, ""),
        };
        let whole: String = whole.chars().filter(char::is_ascii_digit).collect();
        let cents: String = fraction.chars().chain("00".chars()).take(2).collect();
        whole
            .parse::<u64>()
            .ok()?
            .checked_mul(100)?
            .checked_add(cents.parse().ok()?)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanEntry {
    product_id: Option<String>,
    kind: Option<String>,
    days: Option<u32>,
    price: Option<String>,
    #[serde(default)]
    features: Vec<String>,
    #[serde(default)]
    limits: BTreeMap<String, serde_json::Value>,
    /// A trial with the card taken by Dodo: `trial_days = 14` is `trial = { days = 14 }`.
    trial_days: Option<u32>,
    trial: Option<TrialEntry>,
    change: Option<ChangeEntry>,
    interval: Option<String>,
}

/// Plan, feature and limit names: what a URL, a JSON key and a log line carry safely.
pub fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Reads a catalogue; errors name `source` (`PLANS` or `plans.toml`), the plan and the
/// field. Returns the plans sold and the free tier.
fn parse_plans(
    source: &'static str,
    raw: &str,
    default_days: u32,
) -> Result<(Vec<Plan>, Option<Allowance>), ConfigError> {
    let error = |reason: String| match source {
        "PLANS" => ConfigError::Invalid {
            var: "PLANS",
            reason,
        },
        file => ConfigError::InvalidFile { file, reason },
    };
    let entries: BTreeMap<String, PlanEntry> =
        serde_json::from_str(raw).map_err(|e| error(format!("not the expected shape: {e}")))?;
    let mut plans = Vec::new();
    let mut free = None;
    for (name, entry) in entries {
        if !is_name(&name) || name.contains('.') {
            return Err(error(format!(
                "`{name}` is not a plan name (letters, digits, _ and -)"
            )));
        }
        let allowance = parse_allowance(&entry, &|field, reason| {
            error(format!("plan `{name}`: {field} {reason}"))
        })?;
        if name == FREE_PLAN {
            for (field, given) in [
                ("product_id", entry.product_id.is_some()),
                ("kind", entry.kind.is_some()),
                ("days", entry.days.is_some()),
                ("price", entry.price.is_some()),
                ("trial", entry.trial.is_some() || entry.trial_days.is_some()),
                ("change", entry.change.is_some()),
                ("interval", entry.interval.is_some()),
            ] {
                if given {
                    return Err(error(format!(
                        "plan `free`: {field} is not allowed (the free tier is not sold)"
                    )));
                }
            }
            free = Some(allowance);
            continue;
        }
        let product_id = ProductId::parse(entry.product_id.as_deref().unwrap_or_default())
            .map_err(|e| error(format!("plan `{name}`: product_id {e}")))?;
        let kind = match (entry.kind.as_deref(), entry.days) {
            (Some("pass"), days) => {
                let days = days.unwrap_or(default_days);
                if !(1..=3660).contains(&days) {
                    return Err(error(format!("plan `{name}`: days must be 1 to 3660")));
                }
                PlanKind::Pass { days }
            }
            (Some("subscription"), None) => PlanKind::Subscription,
            (Some("subscription"), Some(_)) => {
                return Err(error(format!(
                    "plan `{name}`: days is not allowed (a subscription's period comes from Dodo)"
                )));
            }
            (other, _) => {
                return Err(error(format!(
                    "plan `{name}`: kind must be `pass` or `subscription`, not `{}`",
                    other.unwrap_or("(missing)")
                )));
            }
        };
        let days = match kind {
            PlanKind::Pass { days } => days,
            PlanKind::Subscription => 0,
        };
        // A product sold by two plans would be granted as whichever comes first,
        // whatever the buyer chose (L12).
        if let Some(other) = plans.iter().find(|p: &&Plan| p.product_id == product_id) {
            return Err(error(format!(
                "plan `{name}`: product_id {product_id} is already sold by plan `{}`",
                other.name
            )));
        }
        let plan_error = |reason: &str| error(format!("plan `{name}`: {reason}"));
        let trial = parse_trial(&entry, kind).map_err(|r| plan_error(&r))?;
        let change = parse_change(entry.change.as_ref(), kind).map_err(|r| plan_error(&r))?;
        let interval = match (&entry.interval, kind) {
            (Some(_), PlanKind::Pass { .. }) => {
                return Err(plan_error(
                    "interval is not allowed (a pass lasts its days)",
                ));
            }
            (Some(interval), _)
                if !["day", "week", "month", "year"].contains(&interval.as_str()) =>
            {
                return Err(plan_error("interval must be day, week, month or year"));
            }
            (Some(interval), _) => Some(interval.clone()),
            (None, PlanKind::Subscription) => Some("month".to_owned()),
            (None, _) => None,
        };
        plans.push(Plan {
            name,
            product_id,
            days,
            kind,
            price: entry.price.filter(|p| !p.trim().is_empty()),
            allowance,
            trial,
            change,
            interval,
        });
    }
    if plans.is_empty() {
        return Err(error("names no plan to sell".to_owned()));
    }
    Ok((plans, free))
}

/// `trial_days` or `trial`: a card trial (Dodo's) only on a subscription.
fn parse_trial(entry: &PlanEntry, kind: PlanKind) -> Result<Option<Trial>, String> {
    let trial = match (entry.trial_days, &entry.trial) {
        (Some(_), Some(_)) => return Err("give trial_days or trial, not both".into()),
        (Some(days), None) => Trial { days, card: true },
        (None, Some(t)) => Trial {
            days: t.days,
            card: t.card,
        },
        (None, None) => return Ok(None),
    };
    if !(1..=MAX_TRIAL_DAYS).contains(&trial.days) {
        return Err(format!("trial days must be 1 to {MAX_TRIAL_DAYS}"));
    }
    if trial.card && kind != PlanKind::Subscription {
        return Err(
            "a trial with a card is Dodo's subscription trial: use `trial = { days = N, card = false }` on a pass"
                .into(),
        );
    }
    Ok(Some(trial))
}

fn parse_change(entry: Option<&ChangeEntry>, kind: PlanKind) -> Result<ChangePolicy, String> {
    let mut policy = ChangePolicy::default();
    let Some(entry) = entry else {
        return Ok(policy);
    };
    if kind != PlanKind::Subscription {
        return Err("change is for subscriptions (a pass is bought, not changed to)".into());
    }
    let timing = |field: &str, raw: &Option<String>, default: ChangeTiming| match raw {
        None => Ok(default),
        Some(raw) => ChangeTiming::parse(raw)
            .ok_or_else(|| format!("change.{field} must be `immediately` or `next_billing_date`")),
    };
    policy.upgrade = timing("upgrade", &entry.upgrade, policy.upgrade)?;
    policy.downgrade = timing("downgrade", &entry.downgrade, policy.downgrade)?;
    if let Some(mode) = &entry.proration {
        policy.proration = PRORATION_MODES.iter().find(|m| *m == mode).ok_or_else(|| {
            format!(
                "change.proration must be one of {}",
                PRORATION_MODES.join(", ")
            )
        })?;
    }
    if let Some(failure) = &entry.on_payment_failure {
        policy.on_payment_failure = ["prevent_change", "apply_change"]
            .into_iter()
            .find(|f| f == failure)
            .ok_or("change.on_payment_failure must be `prevent_change` or `apply_change`")?;
    }
    Ok(policy)
}

fn parse_allowance(
    entry: &PlanEntry,
    error: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Allowance, ConfigError> {
    let mut features = entry.features.clone();
    for feature in &features {
        if !is_name(feature) {
            return Err(error(
                "features",
                format!("`{feature}` is not a feature name (letters, digits, _, - and .)"),
            ));
        }
    }
    features.sort();
    features.dedup();
    let mut limits = BTreeMap::new();
    for (limit, amount) in &entry.limits {
        if !is_name(limit) {
            return Err(error(
                "limits",
                format!("`{limit}` is not a limit name (letters, digits, _, - and .)"),
            ));
        }
        let amount = amount
            .as_u64()
            .filter(|a| (1..=MAX_LIMIT).contains(a))
            .ok_or_else(|| {
                error(
                    &format!("limits.{limit}"),
                    format!("must be a whole number from 1 to {MAX_LIMIT}"),
                )
            })?;
        limits.insert(limit.clone(), amount);
    }
    Ok(Allowance { features, limits })
}

#[derive(Clone, Debug)]
pub struct Catalog {
    plans: Vec<Plan>,
    free: Option<Allowance>,
}

impl Catalog {
    /// `PLANS`, else `plans.toml` (built in), else the single plan on `DODO_PRODUCT_ID`.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        Self::from_sources(vars, BUILT_IN_PLANS)
    }

    /// Whether `plans.toml` names any plan (then `DODO_PRODUCT_ID` is not needed).
    pub fn has_built_in_plans() -> bool {
        has_plans(BUILT_IN_PLANS)
    }

    fn from_sources(vars: &Vars, built_in: &str) -> Result<Self, ConfigError> {
        let default_days = match vars.optional("PLAN_DURATION_DAYS") {
            Some(raw) => parse_days("PLAN_DURATION_DAYS", &raw)?,
            None => DEFAULT_DURATION_DAYS,
        };
        let parsed = match vars.optional("PLANS") {
            Some(raw) => Some(parse_plans("PLANS", &raw, default_days)?),
            None if has_plans(built_in) => Some(parse_plans("plans.toml", built_in, default_days)?),
            None => None,
        };
        if let Some((plans, free)) = parsed {
            return Ok(Self { plans, free });
        }
        let raw_product = vars.required("DODO_PRODUCT_ID")?;
        let product_id = ProductId::parse(&raw_product).map_err(|e| ConfigError::Invalid {
            var: "DODO_PRODUCT_ID",
            reason: e.to_string(),
        })?;
        Ok(Self::single(Plan::pass(
            DEFAULT_PLAN,
            product_id,
            default_days,
        )))
    }

    pub fn single(plan: Plan) -> Self {
        Self {
            plans: vec![plan],
            free: None,
        }
    }

    /// A catalogue of several plans; the first is the default unless one is `monthly`.
    pub fn of(plans: Vec<Plan>) -> Option<Self> {
        (!plans.is_empty()).then_some(Self { plans, free: None })
    }

    /// The same catalogue with a free tier.
    pub fn with_free_tier(mut self, free: Allowance) -> Self {
        self.free = Some(free);
        self
    }

    /// The plan a client asked for; `None` when the client named no plan we sell.
    pub fn get(&self, name: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.name == name)
    }

    /// The plan used when a request names none (the original's single plan).
    pub fn default_plan(&self) -> &Plan {
        self.get(DEFAULT_PLAN).unwrap_or(&self.plans[0])
    }

    /// The plan whose product a payment bought, when the payment does not name its plan.
    pub fn by_product(&self, product_id: &str) -> Option<&Plan> {
        self.plans
            .iter()
            .find(|p| p.product_id.as_str() == product_id)
    }

    /// Of the passes that run at some moment (plan -> end), the one that speaks: the
    /// best plan (see [`Catalog::rank`]); a plan no longer in the catalogue ranks lowest.
    pub fn best_pass<'a>(
        &self,
        running: impl Iterator<Item = (&'a str, Timestamp)>,
    ) -> Option<(&'a str, Timestamp)> {
        running.max_by_key(|(plan, until)| (self.rank(plan), *until))
    }

    /// How plans compare when a user holds several passes at once: the higher price per
    /// day (the amount in `price` over the pass's days: a year's pass never outranks the
    /// month of a dearer plan bought beside it), then more features, then higher limits
    /// in total, then the name.
    pub fn rank(&self, name: &str) -> (u64, usize, u128, String) {
        match self.get(name) {
            Some(plan) => (
                plan.price_amount().map_or(0, |amount| {
                    amount.saturating_mul(1000) / u64::from(plan.period_days().max(1))
                }),
                plan.allowance.features.len(),
                plan.allowance.limits.values().map(|v| u128::from(*v)).sum(),
                name.to_owned(),
            ),
            None => (0, 0, 0, String::new()),
        }
    }

    /// Whether moving from `from` to `to` is an upgrade: `to` ranks higher (price per
    /// day, then features, then limits; see [`Catalog::rank`]).
    pub fn is_upgrade(&self, from: &str, to: &str) -> bool {
        self.rank(to) > self.rank(from)
    }

    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    /// What a user with nothing paid may use (the plan `free`), if the catalogue has one.
    pub fn free_tier(&self) -> Option<&Allowance> {
        self.free.as_ref()
    }
}

fn has_plans(raw: &str) -> bool {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw)
        .is_ok_and(|plans| !plans.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_a_thirty_day_monthly_pass() {
        let lookup = |name: &str| (name == "DODO_PRODUCT_ID").then(|| "pdt_a".to_owned());
        let catalog = Catalog::from_vars(&Vars::new(&lookup)).expect("valid");
        let plan = catalog.default_plan();
        assert_eq!(plan.name, "monthly");
        assert_eq!(plan.kind, PlanKind::Pass { days: 30 });
        assert_eq!(plan.days, 30);
        assert_eq!(plan.product_id.as_str(), "pdt_a");
        assert!(catalog.get("yearly").is_none());
        assert_eq!(catalog.by_product("pdt_a").map(|p| p.days), Some(30));
    }

    #[test]
    fn duration_comes_from_plan_duration_days() {
        let lookup = |name: &str| match name {
            "DODO_PRODUCT_ID" => Some("pdt_a".to_owned()),
            "PLAN_DURATION_DAYS" => Some("7".to_owned()),
            _ => None,
        };
        let catalog = Catalog::from_vars(&Vars::new(&lookup)).expect("valid");
        assert_eq!(catalog.default_plan().days, 7);

        let lookup = |name: &str| (name == "PLAN_DURATION_DAYS").then(|| "7".to_owned());
        let err = Catalog::from_vars(&Vars::new(&lookup)).expect_err("no product");
        assert!(err.to_string().contains("DODO_PRODUCT_ID"));
    }

    #[test]
    fn plans_come_from_the_plans_variable() {
        let plans = r#"{"monthly": {"product_id": "pdt_a", "kind": "pass", "days": 30, "price": "$19"},
                        "weekly": {"product_id": "pdt_w", "kind": "pass"},
                        "pro": {"product_id": "pdt_b", "kind": "subscription"}}"#;
        let lookup = |name: &str| match name {
            "PLANS" => Some(plans.to_owned()),
            "PLAN_DURATION_DAYS" => Some("7".to_owned()),
            _ => None,
        };
        let catalog = Catalog::from_vars(&Vars::new(&lookup)).expect("valid");
        let pro = catalog.get("pro").expect("pro");
        assert!(pro.is_subscription());
        assert_eq!(catalog.by_product("pdt_b"), Some(pro));
        assert_eq!(
            catalog
                .get("monthly")
                .and_then(|p| p.price.clone())
                .as_deref(),
            Some("$19")
        );
        assert_eq!(
            catalog.get("weekly").map(|p| p.kind),
            Some(PlanKind::Pass { days: 7 })
        );
        assert_eq!(catalog.default_plan().name, "monthly");
    }

    #[test]
    fn malformed_plans_name_the_variable() {
        for plans in [
            "not json",
            "{}",
            r#"{"a": {"product_id": "pdt_a", "kind": "lifetime"}}"#,
            r#"{"a": {"product_id": "pdt_a", "kind": "subscription", "days": 30}}"#,
            r#"{"a": {"product_id": "pdt a", "kind": "pass"}}"#,
            r#"{"a b": {"product_id": "pdt_a", "kind": "pass"}}"#,
            r#"{"a": {"product_id": "pdt_a", "kind": "pass", "days": 0}}"#,
            r#"{"a": {"product_id": "pdt_a", "kind": "pass", "price_cents": 5}}"#,
            r#"{"free": {"features": ["x"]}}"#,
        ] {
            let lookup = |name: &str| (name == "PLANS").then(|| plans.to_owned());
            let err = Catalog::from_vars(&Vars::new(&lookup)).expect_err(plans);
            assert!(err.to_string().contains("PLANS"), "{plans}: {err}");
        }
    }

    #[test]
    fn a_product_sold_by_two_plans_is_refused() {
        let err = error_of(
            r#"{"a": {"product_id": "pdt_same", "kind": "pass"},
                "b": {"product_id": "pdt_same", "kind": "pass", "days": 7}}"#,
        );
        assert!(
            err.contains("pdt_same") && err.contains("already sold"),
            "{err}"
        );
    }

    #[test]
    fn plans_rank_by_price_then_features_then_limits() {
        let plans = r#"{"cheap": {"product_id": "pdt_c", "kind": "pass", "price": "$5"},
                        "dear": {"product_id": "pdt_d", "kind": "pass", "price": "€49.50/month"},
                        "rich": {"product_id": "pdt_r", "kind": "pass", "features": ["x", "y"]},
                        "bare": {"product_id": "pdt_b", "kind": "pass"}}"#;
        let lookup = |name: &str| (name == "PLANS").then(|| plans.to_owned());
        let catalog = Catalog::from_vars(&Vars::new(&lookup)).expect("valid");
        assert_eq!(catalog.get("dear").and_then(Plan::price_amount), Some(4950));
        assert_eq!(catalog.get("cheap").and_then(Plan::price_amount), Some(500));
        let priced = |price: &str| {
            let mut plan = Plan::pass("p", ProductId::parse("pdt_p").expect("valid"), 30);
            plan.price = Some(price.to_owned());
            plan.price_amount()
        };
        assert_eq!(priced("€9,99"), Some(999));
        assert_eq!(priced("1.234,56 €"), Some(123_456));
        assert_eq!(priced("$1,234.50/month"), Some(123_450));
        assert_eq!(priced("free"), None);
        let until = Timestamp::from_unix_seconds(10);
        let best = |names: &[&'static str]| {
            catalog
                .best_pass(names.iter().map(|n| (*n, until)))
                .map(|(n, _)| n)
        };
        assert_eq!(best(&["cheap", "dear", "rich"]), Some("dear"));
        assert_eq!(best(&["cheap", "rich", "bare"]), Some("cheap"));
        assert_eq!(best(&["rich", "bare"]), Some("rich"));
        assert_eq!(best(&[]), None);
        // Per day: a year's pass at $99 never outranks a month at $29 beside it.
        let plans = r#"{"year": {"product_id": "pdt_y", "kind": "pass", "days": 365, "price": "$99"},
                        "month": {"product_id": "pdt_m", "kind": "pass", "days": 30, "price": "$29"}}"#;
        let lookup = |name: &str| (name == "PLANS").then(|| plans.to_owned());
        let catalog = Catalog::from_vars(&Vars::new(&lookup)).expect("valid");
        let picked = catalog.best_pass([("year", until), ("month", until)].into_iter());
        assert_eq!(picked.map(|(n, _)| n), Some("month"));
    }

    #[test]
    fn trials_and_plan_changes_are_read_and_checked() {
        let plans = r#"{"basic": {"product_id": "pdt_b", "kind": "subscription", "price": "$9/month", "trial_days": 7},
                        "team": {"product_id": "pdt_t", "kind": "subscription", "price": "$99/month",
                                 "trial": {"days": 14, "card": false},
                                 "change": {"upgrade": "next_billing_date", "proration": "full_immediately",
                                            "on_payment_failure": "apply_change"}},
                        "week": {"product_id": "pdt_w", "kind": "pass", "days": 7, "trial": {"days": 3, "card": false}}}"#;
        let lookup = |name: &str| (name == "PLANS").then(|| plans.to_owned());
        let catalog = Catalog::from_vars(&Vars::new(&lookup)).expect("valid");
        let basic = catalog.get("basic").expect("basic");
        assert_eq!(basic.card_trial_days(), Some(7));
        assert_eq!(basic.cardless_trial_days(), None);
        assert_eq!(basic.change, ChangePolicy::default());
        assert_eq!(basic.interval.as_deref(), Some("month"));
        let team = catalog.get("team").expect("team");
        assert_eq!(team.cardless_trial_days(), Some(14));
        assert_eq!(team.change.upgrade, ChangeTiming::NextBillingDate);
        assert_eq!(team.change.downgrade, ChangeTiming::NextBillingDate);
        assert_eq!(team.change.proration, "full_immediately");
        assert_eq!(team.change.on_payment_failure, "apply_change");
        assert_eq!(
            catalog.get("week").and_then(Plan::cardless_trial_days),
            Some(3)
        );
        assert!(catalog.is_upgrade("basic", "team"));
        assert!(!catalog.is_upgrade("team", "basic"));
        // A monthly price and a pass's days compare per day.
        assert!(
            catalog.is_upgrade("week", "team"),
            "$99 a month over no price"
        );

        for (plans, names) in [
            (
                r#"{"p": {"product_id": "pdt_p", "kind": "pass", "trial_days": 7}}"#,
                vec!["`p`", "card = false"],
            ),
            (
                r#"{"p": {"product_id": "pdt_p", "kind": "subscription", "trial_days": 0}}"#,
                vec!["`p`", "trial days"],
            ),
            (
                r#"{"p": {"product_id": "pdt_p", "kind": "subscription", "trial_days": 7, "trial": {"days": 7}}}"#,
                vec!["not both"],
            ),
            (
                r#"{"p": {"product_id": "pdt_p", "kind": "subscription", "change": {"proration": "sometimes"}}}"#,
                vec!["change.proration", "prorated_immediately"],
            ),
            (
                r#"{"p": {"product_id": "pdt_p", "kind": "subscription", "change": {"downgrade": "later"}}}"#,
                vec!["change.downgrade"],
            ),
            (
                r#"{"p": {"product_id": "pdt_p", "kind": "pass", "change": {}}}"#,
                vec!["change is for subscriptions"],
            ),
            (
                r#"{"p": {"product_id": "pdt_p", "kind": "subscription", "interval": "fortnight"}}"#,
                vec!["interval"],
            ),
            (r#"{"free": {"trial_days": 7}}"#, vec!["`free`", "trial"]),
        ] {
            let err = error_of(plans);
            for name in names {
                assert!(err.contains(name), "{plans}: {err} should name {name}");
            }
        }
    }

    fn error_of(plans: &str) -> String {
        let lookup = |name: &str| (name == "PLANS").then(|| plans.to_owned());
        Catalog::from_vars(&Vars::new(&lookup))
            .expect_err(plans)
            .to_string()
    }

    #[test]
    fn features_and_limits_are_validated_naming_plan_and_field() {
        for (plans, names) in [
            (
                r#"{"pro": {"product_id": "pdt_b", "kind": "subscription", "limits": {"api_calls": 0}}}"#,
                ["`pro`", "limits.api_calls"],
            ),
            (
                r#"{"pro": {"product_id": "pdt_b", "kind": "subscription", "limits": {"api_calls": 1.5}}}"#,
                ["`pro`", "limits.api_calls"],
            ),
            (
                r#"{"pro": {"product_id": "pdt_b", "kind": "subscription", "limits": {"api_calls": "10"}}}"#,
                ["`pro`", "limits.api_calls"],
            ),
            (
                r#"{"pro": {"product_id": "pdt_b", "kind": "subscription", "features": ["a b"]}}"#,
                ["`pro`", "features"],
            ),
            (
                r#"{"pro": {"kind": "subscription"}}"#,
                ["`pro`", "product_id"],
            ),
            (
                r#"{"pro": {"product_id": "pdt_b", "kind": "subscription"}, "free": {"product_id": "pdt_f"}}"#,
                ["`free`", "product_id"],
            ),
            (r#"{"pro": {"product_id": "pdt_b"}}"#, ["`pro`", "kind"]),
        ] {
            let err = error_of(plans);
            for name in names {
                assert!(err.contains(name), "{plans}: {err} should name {name}");
            }
        }
    }

    #[test]
    fn plans_carry_features_limits_and_a_free_tier() {
        let plans = r#"{"free": {"features": ["basic"], "limits": {"api_calls": 50}},
                        "pro": {"product_id": "pdt_b", "kind": "subscription",
                                "features": ["export", "basic", "export"],
                                "limits": {"api_calls": 10000, "seats": 5}}}"#;
        let lookup = |name: &str| (name == "PLANS").then(|| plans.to_owned());
        let catalog = Catalog::from_vars(&Vars::new(&lookup)).expect("valid");
        assert_eq!(catalog.plans().len(), 1, "free is not sold");
        assert!(catalog.get("free").is_none());
        let pro = catalog.get("pro").expect("pro");
        assert_eq!(pro.allowance.features, ["basic", "export"]);
        assert_eq!(pro.allowance.limits.get("seats"), Some(&5));
        let free = catalog.free_tier().expect("free tier");
        assert_eq!(free.limits.get("api_calls"), Some(&50));
    }

    #[test]
    fn plans_toml_overrides_the_single_product_and_plans_overrides_it() {
        let built_in = r#"{"basic": {"product_id": "pdt_toml", "kind": "pass", "days": 7}}"#;
        let only_product = |name: &str| (name == "DODO_PRODUCT_ID").then(|| "pdt_a".to_owned());
        let catalog = Catalog::from_sources(&Vars::new(&only_product), built_in).expect("valid");
        assert_eq!(catalog.default_plan().product_id.as_str(), "pdt_toml");
        let with_plans = |name: &str| match name {
            "PLANS" => Some(r#"{"x": {"product_id": "pdt_env", "kind": "subscription"}}"#.into()),
            _ => None,
        };
        let catalog = Catalog::from_sources(&Vars::new(&with_plans), built_in).expect("valid");
        assert_eq!(catalog.default_plan().product_id.as_str(), "pdt_env");
        let catalog = Catalog::from_sources(&Vars::new(&only_product), "{}").expect("valid");
        assert_eq!(catalog.default_plan().product_id.as_str(), "pdt_a");
        let err = Catalog::from_sources(
            &Vars::new(&only_product),
            r#"{"basic": {"product_id": "pdt_toml", "kind": "pass", "days": 0}}"#,
        )
        .expect_err("bad days");
        assert!(err.to_string().contains("plans.toml"), "{err}");
        assert!(err.to_string().contains("`basic`"), "{err}");
    }

    /// The catalogue shipped at the root, and the book's example, are valid.
    #[test]
    fn the_shipped_catalogues_are_valid() {
        let nothing = |name: &str| (name == "DODO_PRODUCT_ID").then(|| "pdt_a".to_owned());
        Catalog::from_vars(&Vars::new(&nothing)).expect("plans.toml is valid");
        let example = include_str!(concat!(env!("OUT_DIR"), "/plans.example.json"));
        let catalog = Catalog::from_sources(&Vars::new(&|_| None), example)
            .expect("plans.example.toml is valid");
        assert_eq!(
            catalog.plans().len(),
            2,
            "two plans sold, and the free tier"
        );
        assert!(catalog.free_tier().is_some());
    }
}
