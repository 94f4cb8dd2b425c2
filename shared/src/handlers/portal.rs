//! Self-service billing, from inside the founder's app, for the signed-in caller only:
//!
//! - `POST /payment/portal`: a link to Dodo's customer portal for the caller's own Dodo
//!   customer (the id comes from the caller's stored record, never from the request);
//! - `POST /payment/trial`: a card-less trial (see [`super::trial`]);
//! - `POST` and `DELETE /payment/change-plan`: plan changes (see [`super::change_plan`]);
//! - `POST /payment/cancel` and `/payment/resume` (see [`super::cancellation`]).
//!
//! One function answers them all: each acts on the caller's own subscription or trial,
//! under the per-user limit and, before a Dodo call, the Dodo budget all users share.

use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde_json::json;

use super::{StartError, rate_limit};
use crate::access::AccessView;
use crate::api::{ApiError, Caller, answer, caller, json_response};
use crate::config::{DodoConfig, StoreConfig, Vars};
use crate::dodo::DodoClient;
use crate::ids::UserId;
use crate::plan::Catalog;
use crate::runtime::Handler;
use crate::store::{AuditEntry, Store, SubscriptionRecord, with_cause};
use crate::subscription::{Subscription, SubscriptionStatus};
use crate::time::{Clock, Timestamp};

/// The most Dodo calls one portal request makes (the portal session).
const DODO_CALLS: i64 = 1;

pub struct PortalHandler {
    pub(super) store: Store,
    pub(super) dodo: DodoClient,
    pub(super) catalog: Catalog,
    pub(super) clock: Clock,
}

impl PortalHandler {
    pub fn new(store: Store, dodo: DodoClient, catalog: Catalog) -> Self {
        Self {
            store: store.with_access_events(crate::access_events::observer(&catalog)),
            dodo,
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
        let env = Vars::process();
        let fetched = crate::secrets::fetch(&env, &[crate::secrets::DODO_API_KEY]).await?;
        let vars = env.with_fetched(&fetched);
        let table = StoreConfig::from_vars(&vars)?;
        let dodo = DodoClient::new(&DodoConfig::from_vars(&vars)?)?;
        let catalog = Catalog::from_vars(&vars)?;
        Ok(Self::new(
            Store::connect(&table).with_dodo_budget(crate::store::DodoBudget::from_vars(&vars)?),
            dodo,
            catalog,
        ))
    }

    pub async fn respond(&self, request: &Request) -> Result<Response<Body>, ApiError> {
        let path = request.uri().path().trim_end_matches('/');
        let route = path.rsplit('/').next().unwrap_or_default();
        let method = request.method();
        let caller = caller(request)?;
        match (route, method) {
            ("portal", &Method::POST) => self.portal_link(&caller).await,
            ("trial", &Method::POST) => self.start_trial(request, &caller).await,
            ("change-plan", &Method::POST) => self.change_plan(request, &caller).await,
            ("change-plan", &Method::DELETE) => {
                self.cancel_scheduled_change(request, &caller).await
            }
            ("cancel", &Method::POST) => self.set_cancel(request, &caller, true).await,
            ("resume", &Method::POST) => self.set_cancel(request, &caller, false).await,
            ("change-plan", _) => Err(ApiError::method_not_allowed("POST, DELETE")),
            (_, _) => Err(ApiError::method_not_allowed("POST")),
        }
    }

    async fn portal_link(&self, caller: &Caller) -> Result<Response<Body>, ApiError> {
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

    /// The catalogue's plan a request names; `400` when it names none (`what`: what the
    /// plan is for) or one not sold.
    pub(super) fn named_plan(
        &self,
        name: Option<String>,
        what: &str,
    ) -> Result<&crate::plan::Plan, ApiError> {
        let name = name.ok_or_else(|| ApiError::bad_request(format!("name the `plan` {what}")))?;
        self.catalog.get(&name).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unknown_plan",
                format!(
                    "there is no plan named `{}`",
                    name.chars().take(64).collect::<String>()
                ),
            )
        })
    }

    /// The caller's subscription that a change, cancellation or resumption acts on: the
    /// one that speaks for them and still runs (gives access, or is on hold at Dodo).
    pub(super) fn running_subscription(
        &self,
        subscriptions: &[SubscriptionRecord],
        now: Timestamp,
    ) -> Result<SubscriptionRecord, ApiError> {
        subscriptions
            .iter()
            .filter(|s| s.sold && !s.plan.is_empty())
            .filter(|s| match s.status {
                SubscriptionStatus::Active | SubscriptionStatus::PastDue => s.grants_access(now),
                SubscriptionStatus::OnHold | SubscriptionStatus::Paused => true,
                _ => false,
            })
            .max_by_key(|s| s.access_until())
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "no_subscription",
                    "the signed-in user has no running subscription (buy one with POST /payment/create-checkout-session)",
                )
            })
    }

    /// Stores the subscription as Dodo has it after Dodo acted on the caller's request
    /// (the only source of access), with `audit`, the entry of that action, in the same
    /// transaction. Dodo has changed the subscription by now, so a failure here must not
    /// answer "nothing changed": it answers [`changed_not_stored`], and the retry it asks
    /// for reads the subscription from Dodo and stores it with the entry, asking Dodo
    /// again only for what Dodo has not done.
    pub(super) async fn store_from_dodo(
        &self,
        user: &UserId,
        subscription: &Subscription,
        audit: &AuditEntry,
    ) -> Result<(), ApiError> {
        let plan = crate::purchase::subscription_plan_for(&self.catalog, subscription);
        self.store
            .apply_subscription_audited(
                user,
                subscription,
                plan.map(|p| p.name.as_str()),
                self.clock.now_millis(),
                Some(audit),
            )
            .await
            .map_err(|err| changed_not_stored(err.into()))?;
        Ok(())
    }

    /// The caller's status after a change: what `GET /payment/status` answers.
    pub(super) async fn status_of(&self, user: &UserId) -> Result<AccessView, ApiError> {
        let account = self.store.get_account(user).await?;
        Ok(AccessView::of(&account, &self.catalog, self.clock.now()))
    }

    /// An audit entry of the caller's own action (`user.cancel`, `user.change_plan`, ...).
    pub(super) fn audit(
        &self,
        request: &Request,
        caller: &Caller,
        event_type: &str,
        effect: &str,
        object_id: &str,
    ) -> AuditEntry {
        let now_millis = self.clock.now_millis();
        let unique = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), now_millis);
        let id = crate::api::request_id(request).unwrap_or_else(|| now_millis.to_string());
        AuditEntry {
            webhook_id: format!("user_{id}_{unique:016x}"),
            event_type: event_type.to_owned(),
            effect: effect.to_owned(),
            object_id: object_id.to_owned(),
            at: self.clock.now(),
            actor: Some(format!("user:{}", caller.user_id)),
            reason: None,
        }
    }
}

impl Handler for PortalHandler {
    async fn handle(&self, request: Request) -> Response<Body> {
        // The access events a user's own action causes name it `user`.
        with_cause(
            "user",
            self.clock.clone(),
            answer(&request, self.respond(&request)),
        )
        .await
    }
}

/// What a request answers when Dodo has acted on it (changed a plan, set or dropped a
/// cancellation) but what Dodo did could not be stored (or, after a drop, read back): `503
/// changed_not_stored`, never the `503` that says nothing changed (`busy`,
/// `store_unavailable`), which a client may take for "not done". Retrying is safe and
/// completes it; the webhook Dodo sends stores it too.
pub(super) fn changed_not_stored(cause: ApiError) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "changed_not_stored",
        "Dodo Payments has made the change (and may have charged for it), but the paywall could not store it yet; retry: the retry stores what Dodo has, and asks Dodo again only for what Dodo did not do",
    );
    error.retry_after = Some(1);
    // The cause (its code and what the SDK said) goes to the log line only.
    error.with_detail(format!(
        "{}: {}",
        cause.code,
        cause.detail.as_deref().unwrap_or("")
    ))
}
