//! The endpoints. Each is a struct holding what it needs (built once at cold start)
//! and answering every request through [`crate::runtime::Handler`].

pub mod access_events;
mod cancellation;
mod change_plan;
pub mod create_checkout;
pub mod portal;
pub mod reconcile;
pub mod server;
pub mod status;
pub mod success;
mod trial;
pub mod webhook;

pub use access_events::AccessEventPublisher;
pub use create_checkout::CreateCheckoutHandler;
pub use portal::PortalHandler;
pub use reconcile::Reconciler;
pub use server::ServerHandler;
pub use status::StatusHandler;
pub use success::SuccessHandler;
pub use webhook::WebhookHandler;

/// Errors at cold start (configuration): the binary exits with this message.
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

use crate::api::ApiError;
use crate::ids::UserId;
use crate::store::{RateDecision, Store};
use crate::time::Clock;

/// At most [`crate::store::RATE_LIMIT_CALLS`] calls a minute per user to the routes that
/// call Dodo, counted in the store (so across Lambda instances); beyond that a `429`
/// with `Retry-After`, before any Dodo call. Then the request's `dodo_calls` (the most it
/// may make) from the budget all users share; when that is spent, a `503` with
/// `Retry-After`, before any Dodo call.
pub async fn rate_limit(
    store: &Store,
    user: &UserId,
    clock: &Clock,
    dodo_calls: i64,
) -> Result<(), ApiError> {
    user_limit(store, user, clock).await?;
    dodo_budget(store, clock, dodo_calls).await
}

/// The per-user half of [`rate_limit`]: `429` past ten calls a minute.
pub async fn user_limit(store: &Store, user: &UserId, clock: &Clock) -> Result<(), ApiError> {
    match store
        .take_rate_limited_call(user, clock.now_millis())
        .await?
    {
        RateDecision::Allowed => Ok(()),
        RateDecision::Limited { retry_after } => Err(ApiError::rate_limited(retry_after)),
    }
}

/// The shared half of [`rate_limit`]: `dodo_calls` from the budget all users' requests
/// draw on, taken just before the calls are made (a request that ends up making none,
/// such as a checkout handed out again, takes nothing); `503 busy` when it is spent.
pub async fn dodo_budget(store: &Store, clock: &Clock, dodo_calls: i64) -> Result<(), ApiError> {
    match store
        .take_dodo_budget(dodo_calls, clock.now_millis())
        .await?
    {
        RateDecision::Allowed => Ok(()),
        RateDecision::Limited { retry_after } => Err(ApiError::busy(retry_after)),
    }
}
