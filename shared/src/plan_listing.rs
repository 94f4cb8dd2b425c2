//! `GET /payment/plans`: the catalogue as a pricing table reads it, with nothing a
//! client could use to buy around it (no product ids: clients name plans).

use std::collections::BTreeMap;

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Response};
use serde::Serialize;

use crate::api::json_response;
use crate::plan::{Catalog, Plan, PlanKind, Trial};

#[derive(Debug, Serialize)]
pub struct PlanListing {
    pub plans: Vec<ListedPlan>,
    /// What a signed-in user with nothing paid may use, when the catalogue has a free tier.
    pub free: Option<ListedAllowance>,
}

#[derive(Debug, Serialize)]
pub struct ListedPlan {
    pub name: String,
    /// `pass` or `subscription`.
    pub kind: &'static str,
    /// The display price from the catalogue (`$49/month`); `null` when it names none.
    pub price: Option<String>,
    /// The price in hundredths of the currency unit, read from `price` (`4900`).
    pub price_amount: Option<u64>,
    /// A subscription's billing interval (`month`), `null` for a pass.
    pub interval: Option<String>,
    /// A pass's days, `null` for a subscription.
    pub days: Option<u32>,
    /// The plan's trial (`{days, card}`), `null` without one.
    pub trial: Option<Trial>,
    pub features: Vec<String>,
    pub limits: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct ListedAllowance {
    pub features: Vec<String>,
    pub limits: BTreeMap<String, u64>,
}

impl ListedPlan {
    fn of(plan: &Plan) -> Self {
        let (kind, days) = match plan.kind {
            PlanKind::Pass { days } => ("pass", Some(days)),
            PlanKind::Subscription => ("subscription", None),
        };
        Self {
            name: plan.name.clone(),
            kind,
            price: plan.price.clone(),
            price_amount: plan.price_amount(),
            interval: plan.interval.clone(),
            days,
            trial: plan.trial,
            features: plan.allowance.features.clone(),
            limits: plan.allowance.limits.clone(),
        }
    }
}

impl PlanListing {
    /// The plans in catalogue order, cheapest first where prices say.
    pub fn of(catalog: &Catalog) -> Self {
        let mut plans: Vec<ListedPlan> = catalog.plans().iter().map(ListedPlan::of).collect();
        plans.sort_by_key(|p| p.price_amount.unwrap_or(u64::MAX));
        Self {
            plans,
            free: catalog.free_tier().map(|free| ListedAllowance {
                features: free.features.clone(),
                limits: free.limits.clone(),
            }),
        }
    }
}

/// The answer: the same for everyone, so caches may keep it a minute.
pub fn plans_response(catalog: &Catalog) -> Response<Body> {
    let mut response = json_response(StatusCode::OK, &PlanListing::of(catalog));
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}
