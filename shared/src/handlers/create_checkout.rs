//! `POST /payment/create-checkout-session`: opens a Dodo checkout session for the caller
//! and records it as pending. Nothing is ever stored as paid here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::{StartError, dodo_budget, user_limit};
use crate::api::{ApiError, Caller, answer, caller, json_body, json_response};
use crate::config::{CheckoutConfig, DodoConfig, StoreConfig, Vars};
use crate::dodo::{
    CartLine, CheckoutCustomer, CheckoutFlags, CheckoutRequest, DodoClient, SubscriptionData,
    display_price,
};
use crate::ids::UserId;
use crate::plan::{Catalog, FREE_PLAN, Plan};
use crate::purchase::{DATAFAST_VISITOR_KEY, PLAN_KEY, USER_ID_KEY};
use crate::runtime::Handler;
use crate::store::{PendingCheckout, Store, UserRecord};
use crate::subscription::SubscriptionStatus;
use crate::time::{Clock, Timestamp};

/// How long a checkout waits for the product's price before answering without it.
const PRICE_LOOKUP_LIMIT: Duration = Duration::from_secs(2);
/// An open, unpaid checkout of the same plan younger than this is handed out again
/// instead of opening another (a double click must not start two subscriptions).
const REUSE_CHECKOUT_FOR: i64 = 30 * 60;
/// How long a request waits for a concurrent one of the same user to open the checkout.
const CONCURRENT_CHECKOUT_WAIT: Duration = Duration::from_secs(10);
/// The most Dodo calls one checkout request makes: the customer, then the session.
const DODO_CALLS: i64 = 2;

#[derive(Debug, Default, Deserialize)]
struct CheckoutInput {
    plan: Option<String>,
    datafast_visitor_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct CheckoutResponse {
    checkout_url: String,
    plan: String,
    /// The product's price as Dodo shows it (e.g. `$19.00`); null if Dodo did not say.
    price: Option<String>,
    session_id: String,
}

pub struct CreateCheckoutHandler {
    store: Store,
    dodo: DodoClient,
    catalog: Catalog,
    checkout: CheckoutConfig,
    /// Display prices by product id, fetched from Dodo once per container.
    prices: Mutex<HashMap<String, String>>,
    clock: Clock,
}

impl CreateCheckoutHandler {
    pub fn new(store: Store, dodo: DodoClient, catalog: Catalog, checkout: CheckoutConfig) -> Self {
        Self {
            store,
            dodo,
            catalog,
            checkout,
            prices: Mutex::new(HashMap::new()),
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
        let checkout = CheckoutConfig::from_vars(&vars)?;
        Ok(Self::new(
            Store::connect(&table).with_dodo_budget(crate::store::DodoBudget::from_vars(&vars)?),
            dodo,
            catalog,
            checkout,
        ))
    }

    pub async fn respond(
        &self,
        request: &Request,
        now: Timestamp,
    ) -> Result<Response<Body>, ApiError> {
        let caller = caller(request)?;
        let input: CheckoutInput = json_body(request)?;
        let plan = match input.plan.as_deref() {
            None => self.catalog.default_plan(),
            Some(name) => self.catalog.get(name).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "unknown_plan",
                    if name == FREE_PLAN && self.catalog.free_tier().is_some() {
                        format!("`{FREE_PLAN}` is the free tier, which every user has; it is not for sale")
                    } else {
                        format!("there is no plan named `{}`", truncate(name, 64))
                    },
                )
            })?,
        };
        let visitor = match input.datafast_visitor_id.as_deref().map(str::trim) {
            Some(visitor)
                if visitor.chars().count() > 200 || visitor.chars().any(char::is_control) =>
            {
                return Err(ApiError::bad_request(
                    "datafast_visitor_id must be at most 200 printable characters",
                ));
            }
            Some(visitor) if !visitor.is_empty() => Some(visitor.to_owned()),
            _ => None,
        };
        user_limit(&self.store, &caller.user_id, &self.clock).await?;

        let account = self.store.get_account(&caller.user_id).await?;
        if plan.is_subscription() {
            // One running subscription at a time: a second would bill twice. One on hold
            // or paused still runs at Dodo (a retried card recovers it), so it counts (L3).
            let running = account.subscriptions.iter().any(|s| match s.status {
                SubscriptionStatus::Active | SubscriptionStatus::PastDue => s.grants_access(now),
                SubscriptionStatus::OnHold | SubscriptionStatus::Paused => !s.plan.is_empty(),
                _ => false,
            });
            if running {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "already_subscribed",
                    "you already have a subscription (active or on hold): change it, cancel it or update its card in the customer portal",
                ));
            }
        }
        // A double click or a second tab: the session opened moments ago is the answer.
        if let Some(open) = reusable(account.profile.as_ref(), plan, now) {
            return Ok(self.answer(plan, open).await);
        }
        if !self.store.begin_checkout(&caller.user_id, now).await? {
            return self
                .await_concurrent_checkout(&caller.user_id, plan, now)
                .await;
        }
        // Holding the lock: read again, for a session recorded (and the lock released)
        // between the first read and taking the lock.
        let profile = self.store.get_user(&caller.user_id).await?;
        if let Some(open) = reusable(profile.as_ref(), plan, now) {
            self.store.abandon_checkout_attempt(&caller.user_id).await?;
            return Ok(self.answer(plan, open).await);
        }
        let opened = self
            .open_checkout(&caller, plan, visitor, profile.as_ref(), now)
            .await;
        if opened.is_err() {
            // Let the next attempt in at once rather than after the lock goes stale.
            if let Err(err) = self.store.abandon_checkout_attempt(&caller.user_id).await {
                tracing::warn!(error = %err, "could not release the checkout lock");
            }
        }
        let opened = opened?;
        Ok(self.answer(plan, opened).await)
    }

    /// Opens a Dodo checkout for the caller's own customer and records it as pending.
    async fn open_checkout(
        &self,
        caller: &Caller,
        plan: &Plan,
        visitor: Option<String>,
        profile: Option<&UserRecord>,
        now: Timestamp,
    ) -> Result<PendingCheckout, ApiError> {
        // Only now, with Dodo about to be called, from the budget all users share.
        dodo_budget(&self.store, &self.clock, DODO_CALLS).await?;
        let customer = self.customer_of(caller, profile).await?;
        // Metadata links the session to the caller; it comes back on the payment and on
        // every webhook about it. Values are strings, as Dodo's oldest API requires.
        let mut metadata = BTreeMap::from([
            (USER_ID_KEY, caller.user_id.to_string()),
            (PLAN_KEY, plan.name.clone()),
        ]);
        if let Some(visitor) = visitor {
            metadata.insert(DATAFAST_VISITOR_KEY, visitor);
        }
        let trial = self.trial_for(caller, plan, now).await?;
        let checkout_request = CheckoutRequest {
            product_cart: vec![CartLine {
                product_id: plan.product_id.as_str(),
                quantity: 1,
            }],
            customer: customer
                .as_deref()
                .map(|customer_id| CheckoutCustomer { customer_id }),
            return_url: &self.checkout.success_url,
            // Without a customer of ours, Dodo's page must not attach the buyer to an
            // existing customer that has the e-mail they type.
            feature_flags: customer.is_none().then_some(CheckoutFlags {
                always_create_new_customer: true,
            }),
            metadata,
            subscription_data: trial.map(|days| SubscriptionData {
                trial_period_days: days,
            }),
        };
        let session = self.dodo.create_checkout(&checkout_request).await?;
        let pending = PendingCheckout {
            session_id: session.session_id,
            plan: plan.name.clone(),
            created_at: now,
            checkout_url: Some(session.checkout_url),
        };
        // If this write fails the session is simply abandoned; were it paid anyway, its
        // metadata still links the payment to the caller.
        self.store
            .record_checkout(&caller.user_id, caller.verified_email(), &pending)
            .await?;
        tracing::info!(user_id = %caller.user_id, session_id = %pending.session_id, plan = %plan.name, "checkout opened");
        Ok(pending)
    }

    /// The days of Dodo's trial this checkout asks for: the plan's card trial, once per
    /// person (the user, and their verified e-mail, normalised; without a verified
    /// e-mail, no trial: a new account would be a new person). One who had a trial of
    /// the plan, or whose e-mail another user has on offer, checks out without one.
    /// Always said for a subscription (0: none), so that a trial set on the Dodo product
    /// itself never runs past the catalogue's rule; `None` for a pass.
    async fn trial_for(
        &self,
        caller: &Caller,
        plan: &Plan,
        now: Timestamp,
    ) -> Result<Option<u32>, ApiError> {
        if !plan.is_subscription() {
            return Ok(None);
        }
        let (Some(days), Some(email)) = (plan.card_trial_days(), caller.verified_email()) else {
            return Ok(Some(0));
        };
        let email = Some(email.as_str());
        let offered = self
            .store
            .trial_available(&plan.name, &caller.user_id, email)
            .await?
            && self
                .store
                .offer_trial(&plan.name, &caller.user_id, email, now)
                .await?;
        Ok(Some(if offered { days } else { 0 }))
    }

    /// The caller's Dodo customer: the one bound to them, else a new one created for
    /// them now and bound (a concurrent first checkout may have bound another first:
    /// that one is used). `None` when there is no verified e-mail to create one with:
    /// Dodo attaches e-mail-only payments to the customer with that address, so a
    /// customer made from an address the caller has not proved would collect its real
    /// owner's payments (issue 17, M2). Dodo's checkout then makes a new customer.
    async fn customer_of(
        &self,
        caller: &Caller,
        profile: Option<&UserRecord>,
    ) -> Result<Option<String>, ApiError> {
        if let Some(bound) = profile.and_then(|p| p.customer_id.clone()) {
            return Ok(Some(bound));
        }
        let Some(email) = caller.verified_email() else {
            return Ok(None);
        };
        let created = self
            .dodo
            .create_customer(email.as_str(), email.local_part())
            .await?;
        Ok(Some(
            self.store.bind_customer(&caller.user_id, &created).await?,
        ))
    }

    /// Another request of the same user is opening a checkout right now: answer with
    /// its session once it is recorded, instead of opening a second one.
    async fn await_concurrent_checkout(
        &self,
        user: &UserId,
        plan: &Plan,
        now: Timestamp,
    ) -> Result<Response<Body>, ApiError> {
        let deadline = tokio::time::Instant::now() + CONCURRENT_CHECKOUT_WAIT;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let profile = self.store.get_user(user).await?;
            if let Some(open) = reusable(profile.as_ref(), plan, now) {
                return Ok(self.answer(plan, open).await);
            }
        }
        let mut busy = ApiError::new(
            StatusCode::CONFLICT,
            "checkout_in_progress",
            "a checkout for this user is being opened by another request; retry shortly",
        );
        busy.retry_after = Some(2);
        Err(busy)
    }

    async fn answer(&self, plan: &Plan, open: PendingCheckout) -> Response<Body> {
        let price = self.price_of(plan).await;
        json_response(
            StatusCode::OK,
            &CheckoutResponse {
                checkout_url: open.checkout_url.unwrap_or_default(),
                plan: plan.name.clone(),
                price,
                session_id: open.session_id,
            },
        )
    }

    /// The plan's display price: the catalogue's, else Dodo's product price, cached for the
    /// container's life. A slow or failing lookup never fails the checkout: the price is
    /// then null.
    async fn price_of(&self, plan: &Plan) -> Option<String> {
        if let Some(price) = &plan.price {
            return Some(price.clone());
        }
        let key = plan.product_id.as_str();
        if let Some(price) = self.cached_price(key) {
            return Some(price);
        }
        let lookup =
            tokio::time::timeout(PRICE_LOOKUP_LIMIT, self.dodo.get_product(&plan.product_id));
        match lookup.await {
            Ok(Ok(product)) => {
                let price = display_price(&product)?;
                if let Ok(mut prices) = self.prices.lock() {
                    prices.insert(key.to_owned(), price.clone());
                }
                Some(price)
            }
            Ok(Err(err)) => {
                tracing::warn!(product_id = key, error = %err, "could not read the product's price");
                None
            }
            Err(_) => {
                tracing::warn!(product_id = key, "the product's price took too long");
                None
            }
        }
    }

    fn cached_price(&self, product_id: &str) -> Option<String> {
        self.prices.lock().ok()?.get(product_id).cloned()
    }
}

/// The user's open checkout of `plan`, if it is young enough to hand out again.
fn reusable(profile: Option<&UserRecord>, plan: &Plan, now: Timestamp) -> Option<PendingCheckout> {
    profile?.pending_checkout.clone().filter(|open| {
        open.plan == plan.name
            && open.checkout_url.is_some()
            && open.created_at.unix_seconds() > now.unix_seconds() - REUSE_CHECKOUT_FOR
    })
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

impl Handler for CreateCheckoutHandler {
    async fn handle(&self, request: Request) -> Response<Body> {
        answer(&request, self.respond(&request, self.clock.now())).await
    }
}
