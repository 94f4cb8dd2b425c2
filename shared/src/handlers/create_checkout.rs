//! `POST /payment/create-checkout-session`: opens a Dodo checkout session for the caller
//! and records it as pending. Nothing is ever stored as paid here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::StartError;
use crate::api::{ApiError, caller, json_body, json_response};
use crate::config::{CheckoutConfig, DodoConfig, StoreConfig, Vars};
use crate::dodo::{CartLine, CheckoutCustomer, CheckoutRequest, DodoClient, display_price};
use crate::plan::{Catalog, Plan};
use crate::purchase::{DATAFAST_VISITOR_KEY, PLAN_KEY, USER_ID_KEY};
use crate::runtime::Handler;
use crate::store::{PendingCheckout, Store};
use crate::subscription::SubscriptionStatus;
use crate::time::Timestamp;

/// How long a checkout waits for the product's price before answering without it.
const PRICE_LOOKUP_LIMIT: Duration = Duration::from_secs(2);

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
}

impl CreateCheckoutHandler {
    pub fn new(store: Store, dodo: DodoClient, catalog: Catalog, checkout: CheckoutConfig) -> Self {
        Self {
            store,
            dodo,
            catalog,
            checkout,
            prices: Mutex::new(HashMap::new()),
        }
    }

    pub async fn from_env() -> Result<Self, StartError> {
        let vars = Vars::process();
        let table = StoreConfig::from_vars(&vars)?;
        let dodo = DodoClient::new(&DodoConfig::from_vars(&vars)?)?;
        let catalog = Catalog::from_vars(&vars)?;
        let checkout = CheckoutConfig::from_vars(&vars)?;
        Ok(Self::new(Store::connect(&table), dodo, catalog, checkout))
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
                    format!("there is no plan named `{}`", truncate(name, 64)),
                )
            })?,
        };

        if plan.is_subscription() {
            // One running subscription at a time: a second would bill twice.
            let account = self.store.get_account(&caller.user_id).await?;
            let running = account.subscriptions.iter().any(|s| {
                s.grants_access(now)
                    && matches!(
                        s.status,
                        SubscriptionStatus::Active | SubscriptionStatus::PastDue
                    )
            });
            if running {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "already_subscribed",
                    "you already have an active subscription; change or cancel it in the customer portal (POST /payment/portal)",
                ));
            }
        }

        // Metadata links the session to the caller; it comes back on the payment and on
        // every webhook about it. Values are strings, as Dodo's oldest API requires.
        let mut metadata = BTreeMap::from([
            (USER_ID_KEY, caller.user_id.to_string()),
            (PLAN_KEY, plan.name.clone()),
        ]);
        if let Some(visitor) = input.datafast_visitor_id.as_deref().map(str::trim)
            && !visitor.is_empty()
        {
            if visitor.len() > 200 || visitor.chars().any(char::is_control) {
                return Err(ApiError::bad_request(
                    "datafast_visitor_id must be at most 200 printable characters",
                ));
            }
            metadata.insert(DATAFAST_VISITOR_KEY, visitor.to_owned());
        }

        let checkout_request = CheckoutRequest {
            product_cart: vec![CartLine {
                product_id: plan.product_id.as_str(),
                quantity: 1,
            }],
            customer: caller.email.as_ref().map(|email| CheckoutCustomer {
                email: email.as_str(),
                name: email.local_part(),
            }),
            return_url: &self.checkout.success_url,
            metadata,
        };
        let (session, price) = tokio::join!(
            self.dodo.create_checkout(&checkout_request),
            self.price_of(plan)
        );
        let session = session?;

        // If this write fails the session is simply abandoned; were it paid anyway, its
        // metadata still links the payment to the caller.
        self.store
            .record_checkout(
                &caller.user_id,
                caller.email.as_ref(),
                &PendingCheckout {
                    session_id: session.session_id.clone(),
                    plan: plan.name.clone(),
                    created_at: now,
                },
            )
            .await?;
        tracing::info!(user_id = %caller.user_id, session_id = %session.session_id, plan = %plan.name, "checkout opened");

        Ok(json_response(
            StatusCode::OK,
            &CheckoutResponse {
                checkout_url: session.checkout_url,
                plan: plan.name.clone(),
                price,
                session_id: session.session_id,
            },
        ))
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

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

impl Handler for CreateCheckoutHandler {
    async fn handle(&self, request: Request) -> Response<Body> {
        self.respond(&request, Timestamp::now())
            .await
            .unwrap_or_else(ApiError::into_response)
    }
}
