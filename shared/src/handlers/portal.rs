//! `POST /payment/portal`: a link to Dodo's customer portal for the caller's own Dodo
//! customer (never another's: the id comes from the caller's stored record, not from the
//! request), where they manage their subscription, card and invoices.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::json;

use super::{StartError, rate_limit};
use crate::api::{ApiError, answer, caller, json_response};
use crate::config::{DodoConfig, StoreConfig, Vars};
use crate::dodo::DodoClient;
use crate::runtime::Handler;
use crate::store::Store;
use crate::time::Clock;

/// The most Dodo calls one portal request makes (the portal session).
const DODO_CALLS: i64 = 1;

pub struct PortalHandler {
    store: Store,
    dodo: DodoClient,
    clock: Clock,
}

impl PortalHandler {
    pub fn new(store: Store, dodo: DodoClient) -> Self {
        Self {
            store,
            dodo,
            clock: Clock::system(),
        }
    }

    /// Reads the time from `clock` instead of the system's (the local test clock).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub async fn from_env() -> Result<Self, StartError> {
        let env = Vars::process();
        let fetched = crate::secrets::fetch(&env, &[crate::secrets::DODO_API_KEY]).await?;
        let vars = env.with_fetched(&fetched);
        let table = StoreConfig::from_vars(&vars)?;
        let dodo = DodoClient::new(&DodoConfig::from_vars(&vars)?)?;
        Ok(Self::new(
            Store::connect(&table).with_dodo_budget(crate::store::DodoBudget::from_vars(&vars)?),
            dodo,
        ))
    }

    pub async fn respond(&self, request: &Request) -> Result<Response<Body>, ApiError> {
        let caller = caller(request)?;
        rate_limit(&self.store, &caller.user_id, &self.clock, DODO_CALLS).await?;
        let customer = self
            .store
            .get_user(&caller.user_id)
            .await?
            .and_then(|record| record.customer_id)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no_customer",
                    "the signed-in user has no Dodo customer yet (one is created with their first checkout)",
                )
            })?;
        let link = self.dodo.create_portal_session(&customer).await?;
        Ok(json_response(
            StatusCode::OK,
            &json!({ "portal_url": link }),
        ))
    }
}

impl Handler for PortalHandler {
    async fn handle(&self, request: Request) -> Response<Body> {
        answer(&request, self.respond(&request)).await
    }
}
