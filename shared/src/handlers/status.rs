//! `GET /payment/status`: the caller's access, derived at read time from the expiry.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};

use super::StartError;
use crate::access::AccessView;
use crate::api::{ApiError, answer, caller, json_response};
use crate::config::{StoreConfig, Vars};
use crate::runtime::Handler;
use crate::store::Store;
use crate::time::{Clock, Timestamp};

pub struct StatusHandler {
    store: Store,
    clock: Clock,
}

impl StatusHandler {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            clock: Clock::system(),
        }
    }

    /// Reads the time from `clock` instead of the system's (the local test clock).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub async fn from_env() -> Result<Self, StartError> {
        let table = StoreConfig::from_vars(&Vars::process())?;
        Ok(Self::new(Store::connect(&table)))
    }

    pub async fn respond(
        &self,
        request: &Request,
        now: Timestamp,
    ) -> Result<Response<Body>, ApiError> {
        let caller = caller(request)?;
        // An unknown user has simply not paid: `none`, not an error.
        let account = self.store.get_account(&caller.user_id).await?;
        Ok(json_response(
            StatusCode::OK,
            &AccessView::of(&account, now),
        ))
    }
}

impl Handler for StatusHandler {
    async fn handle(&self, request: Request) -> Response<Body> {
        answer(&request, self.respond(&request, self.clock.now())).await
    }
}
