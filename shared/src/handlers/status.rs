//! `GET /payment/status`: the caller's access, derived at read time from the expiry;
//! `GET /payment/entitlements`: what that access lets them use, from the same one read;
//! and `GET /payment/plans` (public): the catalogue, for a pricing table.

use lambda_http::{Body, Request, Response};

use super::StartError;
use crate::access::AccessView;
use crate::api::{ApiError, answer, caller};
use crate::config::{StoreConfig, Vars};
use crate::entitlements::Entitlements;
use crate::plan::Catalog;
use crate::revalidation::conditional_json;
use crate::runtime::Handler;
use crate::store::Store;
use crate::time::{Clock, Timestamp};

pub struct StatusHandler {
    store: Store,
    catalog: Catalog,
    clock: Clock,
}

impl StatusHandler {
    pub fn new(store: Store, catalog: Catalog) -> Self {
        Self {
            store,
            catalog,
            clock: Clock::system(),
        }
    }

    /// Reads the time from `clock` instead of the system's (the local test clock).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub async fn from_env() -> Result<Self, StartError> {
        let vars = Vars::process();
        let table = StoreConfig::from_vars(&vars)?;
        let catalog = Catalog::from_vars(&vars)?;
        Ok(Self::new(Store::connect(&table), catalog))
    }

    pub async fn respond(
        &self,
        request: &Request,
        now: Timestamp,
    ) -> Result<Response<Body>, ApiError> {
        if request.uri().path().ends_with("/plans") {
            return Ok(crate::plan_listing::plans_response(&self.catalog));
        }
        let caller = caller(request)?;
        // An unknown user has simply not paid: `none`, not an error.
        let account = self.store.get_account(&caller.user_id).await?;
        // Conditional: an unchanged answer is a bodiless 304 (see `revalidation`).
        if request.uri().path().ends_with("/entitlements") {
            return Ok(conditional_json(
                request.headers(),
                &Entitlements::of(&account, &self.catalog, now),
            ));
        }
        Ok(conditional_json(
            request.headers(),
            &AccessView::of(&account, &self.catalog, now),
        ))
    }
}

impl Handler for StatusHandler {
    async fn handle(&self, request: Request) -> Response<Body> {
        answer(&request, self.respond(&request, self.clock.now())).await
    }
}
