//! The plan catalogue, kept on the server: clients name a plan, never a product or a price.
//!
//! `PLANS` holds JSON that maps plan names to a Dodo product and a kind:
//! `{"monthly": {"product_id": "pdt_a", "kind": "pass", "days": 30, "price": "$19"},
//!   "pro": {"product_id": "pdt_b", "kind": "subscription"}}`.
//! Without it there is one plan, `monthly`: a pass of `PLAN_DURATION_DAYS` (default 30) on
//! `DODO_PRODUCT_ID`, as in the original router.

use serde::Deserialize;

use crate::config::{ConfigError, Vars, parse_days};
use crate::ids::ProductId;

pub const DEFAULT_PLAN: &str = "monthly";
pub const DEFAULT_DURATION_DAYS: u32 = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanKind {
    /// One payment buys `days` of access; buying again extends it.
    Pass { days: u32 },
    /// Access follows the Dodo subscription's state.
    Subscription,
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
}

impl Plan {
    /// A pass of `days` on `product_id`.
    pub fn pass(name: &str, product_id: ProductId, days: u32) -> Self {
        Self {
            name: name.to_owned(),
            product_id,
            days,
            kind: PlanKind::Pass { days },
            price: None,
        }
    }

    pub fn is_subscription(&self) -> bool {
        self.kind == PlanKind::Subscription
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanEntry {
    product_id: String,
    kind: String,
    days: Option<u32>,
    price: Option<String>,
}

fn plans_error(reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var: "PLANS",
        reason: reason.into(),
    }
}

fn parse_plans(raw: &str, default_days: u32) -> Result<Vec<Plan>, ConfigError> {
    let entries: std::collections::BTreeMap<String, PlanEntry> = serde_json::from_str(raw)
        .map_err(|e| plans_error(format!("not the expected JSON: {e}")))?;
    if entries.is_empty() {
        return Err(plans_error("names no plan"));
    }
    entries
        .into_iter()
        .map(|(name, entry)| {
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_name {
                return Err(plans_error(format!(
                    "`{name}` is not a plan name (letters, digits, _ and -)"
                )));
            }
            let product_id = ProductId::parse(&entry.product_id)
                .map_err(|e| plans_error(format!("plan `{name}`: {e}")))?;
            let kind = match (entry.kind.as_str(), entry.days) {
                ("pass", days) => {
                    let days = days.unwrap_or(default_days);
                    if !(1..=3660).contains(&days) {
                        return Err(plans_error(format!(
                            "plan `{name}`: days must be 1 to 3660"
                        )));
                    }
                    PlanKind::Pass { days }
                }
                ("subscription", None) => PlanKind::Subscription,
                ("subscription", Some(_)) => {
                    return Err(plans_error(format!(
                        "plan `{name}`: a subscription's period comes from Dodo, not `days`"
                    )));
                }
                (other, _) => {
                    return Err(plans_error(format!(
                        "plan `{name}`: kind must be `pass` or `subscription`, not `{other}`"
                    )));
                }
            };
            let days = match kind {
                PlanKind::Pass { days } => days,
                PlanKind::Subscription => 0,
            };
            Ok(Plan {
                name,
                product_id,
                days,
                kind,
                price: entry.price.filter(|p| !p.trim().is_empty()),
            })
        })
        .collect()
}

#[derive(Clone, Debug)]
pub struct Catalog {
    plans: Vec<Plan>,
}

impl Catalog {
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let default_days = match vars.optional("PLAN_DURATION_DAYS") {
            Some(raw) => parse_days("PLAN_DURATION_DAYS", &raw)?,
            None => DEFAULT_DURATION_DAYS,
        };
        if let Some(raw) = vars.optional("PLANS") {
            return Ok(Self {
                plans: parse_plans(&raw, default_days)?,
            });
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
        Self { plans: vec![plan] }
    }

    /// A catalogue of several plans; the first is the default unless one is `monthly`.
    pub fn of(plans: Vec<Plan>) -> Option<Self> {
        (!plans.is_empty()).then_some(Self { plans })
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

    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }
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
        ] {
            let lookup = |name: &str| (name == "PLANS").then(|| plans.to_owned());
            let err = Catalog::from_vars(&Vars::new(&lookup)).expect_err(plans);
            assert!(err.to_string().contains("PLANS"), "{plans}: {err}");
        }
    }
}
