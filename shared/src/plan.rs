//! The plan catalogue, kept on the server: clients name a plan, never a product or a price.
//!
//! Today there is one plan, `monthly`: a pass of `PLAN_DURATION_DAYS` (default 30) on
//! `DODO_PRODUCT_ID`, as in the original router.

use crate::config::{ConfigError, Vars, parse_days};
use crate::ids::ProductId;

pub const DEFAULT_PLAN: &str = "monthly";
pub const DEFAULT_DURATION_DAYS: u32 = 30;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The name clients use and `subscription_plan` shows, e.g. `monthly`.
    pub name: String,
    pub product_id: ProductId,
    /// How long one payment grants access.
    pub days: u32,
}

#[derive(Clone, Debug)]
pub struct Catalog {
    plans: Vec<Plan>,
}

impl Catalog {
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let raw_product = vars.required("DODO_PRODUCT_ID")?;
        let product_id = ProductId::parse(&raw_product).map_err(|e| ConfigError::Invalid {
            var: "DODO_PRODUCT_ID",
            reason: e.to_string(),
        })?;
        let days = match vars.optional("PLAN_DURATION_DAYS") {
            Some(raw) => parse_days("PLAN_DURATION_DAYS", &raw)?,
            None => DEFAULT_DURATION_DAYS,
        };
        Ok(Self::single(Plan {
            name: DEFAULT_PLAN.to_owned(),
            product_id,
            days,
        }))
    }

    pub fn single(plan: Plan) -> Self {
        Self { plans: vec![plan] }
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
}
