//! A local stand-in for Dodo Payments: the endpoints the paywall uses, with Dodo's shapes
//! and error bodies, a hosted checkout page, and signed webhook deliveries.
//!
//! - `POST /checkouts`, `GET /checkouts/{id}`, `GET /payments/{id}`, `GET /products/{id}`
//!   answer as Dodo does (`{"code","message"}` errors, bearer auth when a key is set).
//! - `GET /checkout/{session}` is the hosted page with three test cards. A form `POST` to
//!   the same URL with `outcome=succeeded|failed` (and `renewal=succeeds|fails`) does what
//!   the buttons do: it creates the payment (and, for a subscription product, the
//!   subscription), redirects to `return_url?payment_id=…&status=…`, and delivers the
//!   signed webhooks, retrying non-2xx answers on Dodo's schedule: on the simulator's test
//!   clock when it has one ([`DodoSimulator::set_clock`]), else in the background,
//!   compressed in time.
//! - Customers as Dodo keeps them: `POST /customers` creates one; a checkout names one
//!   (`customer: {customer_id}`), or names only an e-mail and is then attached to the
//!   existing customer with that e-mail unless `feature_flags.always_create_new_customer`
//!   is set — Dodo's documented default, which is why an e-mail never identifies a user.
//! - `GET /subscriptions` lists subscriptions in pages (`page_size` ≤ 100, `page_number`
//!   from 0), newest first, as Dodo's list endpoints do.
//! - Its state (checkouts, payments, subscriptions, customers) can be kept in a JSON file,
//!   so that `make dev` keeps it across a restart as it keeps the paywall's.
//! - It sells subscriptions as Dodo does and runs them through time on its clock
//!   ([`billing`]): renewals, failed cards and Dodo's retries, cancellations at period
//!   end, refunds (`POST /refunds`, `GET /refunds`) and disputes (`GET /disputes`).
//! - Faults on demand ([`faults`]): lost, repeated, late and reordered webhooks, API errors.
//! - Tests can inject faults (an error status, a delay) and payments of any shape.
//!
//! Two sources of truth. Shapes are Dodo's official SDK models (`dodopayments` 1.123.0,
//! its `types/`): every object, list item and webhook payload carries the fields those
//! models require, with their types and values, and none they lack (`make
//! test-sdk-models` records what is served and sent, [`record`], and checks it with
//! `dev/sdk-oracle/validate.py`). Behaviour no model states — the delivery retry
//! schedule, no guaranteed order, each delivery carrying the latest state, attaching an
//! e-mail-only checkout to the existing customer — follows Dodo's documentation as
//! DESIGN.md cites it, each at the code that does it.
//!
//! One file per Dodo resource, each reading alone: `checkouts.rs` (sessions and the hosted
//! page), `payments.rs` (and the list pages), `products.rs`, `subscriptions.rs` (with plan
//! changes, trials, cancel and resume: the rules modelled and their sources are at its
//! top), `customers.rs` (and the portal), `claims.rs` (refunds and disputes),
//! `delivery.rs` (signed webhooks and their retries), `billing.rs` (what happens on the
//! clock); this file keeps the shared state, the router and the API gate.

mod billing;
mod checkouts;
mod claims;
mod customers;
mod delivery;
pub mod faults;
mod payments;
mod products;
pub mod record;
mod subscriptions;

use checkouts::*;
use claims::*;
use customers::*;
use delivery::*;
use payments::*;
use products::*;
use subscriptions::*;

use std::collections::HashMap;
use std::path::{Path as FilePath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use paywall::time::{Clock, Timestamp};
use paywall::webhook_signature::WebhookSecret;

use billing::{Action, Emitted, NewPayment};
pub use billing::{DISPUTE_RESOLVES_AFTER, RETRY_AFTER_FAILURE};
use faults::{Faults, Rng};
pub use paywall::time::add_months;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Dodo's retry schedule after the first attempt: +5 s, +5 min, +30 min, +2 h, +5 h,
/// +10 h, +10 h (8 attempts in all; Dodo's webhook documentation — no SDK model states
/// it).
pub const DODO_RETRY_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// The price of a simulated product whose price was not set
/// ([`DodoSimulator::set_product_prices`]): $19.00, the original router's price.
pub const DEFAULT_PRICE_MINOR: i64 = 1900;

/// The name every simulated product has (`GET /products/{id}`, a scheduled change's
/// `product_name`).
const PRODUCT_NAME: &str = "Paywall access";

/// Where and how the simulator delivers webhooks.
#[derive(Clone)]
pub struct WebhookTarget {
    pub url: String,
    pub secret: Arc<WebhookSecret>,
    /// Dodo's schedule is divided by this (60: hours become minutes).
    pub time_compression: u32,
}

/// An injected failure for the API routes (not the checkout page).
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer this status with Dodo's error body.
    Error {
        status: u16,
        code: String,
        message: String,
    },
    /// Wait this long before answering normally.
    Delay(Duration),
}

/// One webhook delivery attempt, as the simulator saw it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub event_type: String,
    pub webhook_id: String,
    pub attempt: u32,
    /// The HTTP status, or 0 when the connection failed or the delivery was dropped.
    pub status: u16,
    /// Dropped on purpose (the `drop_webhooks` fault): never sent, never retried.
    pub dropped: bool,
    /// When it was attempted, on the simulator's clock (ms).
    pub at_ms: i64,
    /// The `outcome` the webhook answered (the paywall's answers carry one).
    pub outcome: Option<String>,
    /// The payment (payments, refunds, disputes) or subscription the event is about.
    pub object_id: String,
}

#[derive(Clone, Serialize, Deserialize)]
struct Checkout {
    request: Value,
    payment_id: Option<String>,
    /// The subscription a trial checkout started (no payment until the trial ends).
    #[serde(default)]
    subscription_id: Option<String>,
    /// The customer the session is attached to, once known (at creation when the
    /// request names a customer or an e-mail; else when the buyer types one on the page).
    #[serde(default)]
    customer_id: Option<String>,
}

/// What Dodo would remember: kept in a file when the simulator has one.
#[derive(Default, Serialize, Deserialize)]
struct Records {
    checkouts: HashMap<String, Checkout>,
    payments: HashMap<String, Value>,
    subscriptions: HashMap<String, Value>,
    /// In creation order: "the existing customer with that e-mail" is the first one.
    customers: Vec<Value>,
    /// What the simulator will do, and when (its clock): renewals, retries, deliveries.
    #[serde(default)]
    schedule: Vec<billing::Scheduled>,
    #[serde(default)]
    next_seq: u64,
    /// Subscriptions whose card is declined at the next charge.
    #[serde(default)]
    renewal_fails: HashMap<String, bool>,
    /// On-hold subscriptions: when the charge that put them there failed.
    #[serde(default)]
    holds: HashMap<String, i64>,
    #[serde(default)]
    refunds: Vec<Value>,
    #[serde(default)]
    disputes: Vec<Value>,
    /// When each decided dispute was decided (s): the tests' truth, not Dodo's field.
    #[serde(default)]
    dispute_decided_at: HashMap<String, i64>,
    /// The last envelope timestamp sent (ms): each event is strictly later than the one
    /// before, as Dodo's are, even when one change sends several in the same instant.
    #[serde(default)]
    last_event_ms: i64,
    /// Subscriptions in a free trial: when it ends (s). Gone at the first charge.
    #[serde(default)]
    trial_ends: HashMap<String, i64>,
    /// Each subscription's credit (minor units) from downgrades, spent on later charges.
    #[serde(default)]
    credits: HashMap<String, i64>,
    /// What the subscription's `scheduled_change` does not say: the new recurring amount
    /// and whether a failed payment cancels the change (`prevent_change`).
    #[serde(default)]
    scheduled_terms: HashMap<String, subscriptions::ScheduledTerms>,
    /// Lookups by user and by payment (rebuilt when the records are read back).
    #[serde(skip)]
    index: Index,
    /// Where new ids come from when the simulator is seeded (so a seed replays them).
    #[serde(skip)]
    ids: Option<Rng>,
}

/// What each user has at Dodo, by our metadata's `user_id`, kept as records change so
/// that a test can ask about one user without reading everything.
#[derive(Default)]
struct Index {
    objects_by_user: HashMap<String, Vec<String>>,
    refund_by_payment: HashMap<String, usize>,
    dispute_by_payment: HashMap<String, usize>,
    last_event_by_user: HashMap<String, i64>,
}

/// What Dodo knows about one user (by our metadata): a test's truth.
#[derive(Clone, Debug, Default)]
pub struct UserTruth {
    pub payments: Vec<Value>,
    pub subscriptions: Vec<Value>,
    /// By payment id.
    pub refunds: HashMap<String, Value>,
    pub disputes: HashMap<String, Value>,
    /// When Dodo last sent (or lost) an event about the user (ms on the clock).
    pub last_event_ms: Option<i64>,
}

fn user_of(value: &Value) -> Option<&str> {
    value.pointer("/metadata/user_id").and_then(Value::as_str)
}

impl Records {
    /// A new id such as `pay_…`: from the seed when seeded, else random.
    fn new_id(&mut self, prefix: &str) -> String {
        match &mut self.ids {
            Some(ids) => format!("{prefix}_{:020x}", ids.next_u64())
                .chars()
                .take(prefix.len() + 21)
                .collect(),
            None => format!("{prefix}_{}", random_suffix()),
        }
    }

    /// Notes a new payment or subscription under its user.
    fn note_object(&mut self, id: &str, value: &Value) {
        if let Some(user) = user_of(value) {
            let objects = self
                .index
                .objects_by_user
                .entry(user.to_owned())
                .or_default();
            if !objects.iter().any(|known| known == id) {
                objects.push(id.to_owned());
            }
        }
    }

    fn rebuild_index(&mut self) {
        let objects: Vec<(String, Value)> = self
            .payments
            .iter()
            .chain(self.subscriptions.iter())
            .map(|(id, value)| (id.clone(), value.clone()))
            .collect();
        for (id, value) in objects {
            self.note_object(&id, &value);
        }
        for (i, refund) in self.refunds.iter().enumerate() {
            if let Some(payment) = refund["payment_id"].as_str() {
                self.index.refund_by_payment.insert(payment.to_owned(), i);
            }
        }
        for (i, dispute) in self.disputes.iter().enumerate() {
            if let Some(payment) = dispute["payment_id"].as_str() {
                self.index.dispute_by_payment.insert(payment.to_owned(), i);
            }
        }
    }

    /// The user an event is about: our metadata, or the payment's for a refund or dispute.
    fn owner_of(&self, data: &Value) -> Option<String> {
        if let Some(user) = user_of(data) {
            return Some(user.to_owned());
        }
        let payment = self.payments.get(data["payment_id"].as_str()?)?;
        user_of(payment).map(str::to_owned)
    }
}

#[derive(Default)]
struct Inner {
    records: Records,
    faults: Faults,
    rng: Option<Rng>,
    /// Products sold as subscriptions (the rest are one-time).
    subscription_products: std::collections::HashSet<String>,
    /// Each product's price in minor units (else [`DEFAULT_PRICE_MINOR`]).
    product_prices: HashMap<String, i64>,
    faults_injected: u64,
    /// The seed, when seeded, and how many of each API call came so far.
    seed: Option<u64>,
    call_counts: HashMap<String, u64>,
    fault: Option<Fault>,
    deliveries: Vec<Delivery>,
    api_calls: Vec<String>,
}

impl Inner {
    fn price_of(&self, product_id: &str) -> i64 {
        self.product_prices
            .get(product_id)
            .copied()
            .unwrap_or(DEFAULT_PRICE_MINOR)
    }
}

struct Shared {
    public_url: String,
    api_key: Option<String>,
    webhook: Mutex<Option<WebhookTarget>>,
    inner: Mutex<Inner>,
    clock: Mutex<Clock>,
    http: reqwest::Client,
    /// Where the records are kept between runs, if anywhere.
    state_file: Option<PathBuf>,
    /// A test stored objects of its own shape here ([`record`] marks what follows).
    shaped_by_test: std::sync::atomic::AtomicBool,
}

/// The simulator's state, cheap to clone; mount [`DodoSimulator::router`] anywhere.
#[derive(Clone)]
pub struct DodoSimulator {
    shared: Arc<Shared>,
}

fn random_suffix() -> String {
    use std::hash::{BuildHasher, RandomState};
    let a = RandomState::new().hash_one(paywall::time::Clock::system().now().unix_seconds());
    let b = RandomState::new().hash_one(a);
    format!("{a:016x}{b:08x}").chars().take(20).collect()
}

/// Dodo's error answer, kept small until it is turned into a response.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        dodo_error(self.status, self.code, self.message)
    }
}

fn dodo_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

impl DodoSimulator {
    /// `public_url` is where the simulator is reachable (it builds `checkout_url`s from
    /// it); `api_key`, when set, is the only bearer token accepted.
    pub fn new(public_url: impl Into<String>, api_key: Option<String>) -> Self {
        Self::build(public_url.into(), api_key, None, Records::default())
    }

    /// A simulator that keeps its records in `state_file` (read now if it exists, written
    /// after every change), so that what it knew survives a restart.
    pub fn with_state_file(
        public_url: impl Into<String>,
        api_key: Option<String>,
        state_file: &FilePath,
    ) -> Result<Self, String> {
        let records = match std::fs::read(state_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!("{} is not the simulator's state: {e}", state_file.display())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Records::default(),
            Err(e) => return Err(format!("cannot read {}: {e}", state_file.display())),
        };
        let mut records = records;
        records.rebuild_index();
        Ok(Self::build(
            public_url.into(),
            api_key,
            Some(state_file.to_owned()),
            records,
        ))
    }

    fn build(
        public_url: String,
        api_key: Option<String>,
        state_file: Option<PathBuf>,
        records: Records,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                public_url: public_url.trim_end_matches('/').to_owned(),
                api_key,
                webhook: Mutex::new(None),
                inner: Mutex::new(Inner {
                    records,
                    ..Inner::default()
                }),
                clock: Mutex::new(Clock::system()),
                http: paywall::http::client_builder()
                    .timeout(Duration::from_secs(15)) // Dodo's own delivery timeout
                    .build()
                    .unwrap_or_default(),
                state_file,
                shaped_by_test: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Serves a new simulator alone on a loopback port (for tests).
    pub async fn start(api_key: Option<String>) -> std::io::Result<RunningSimulator> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let simulator = Self::new(url.clone(), api_key);
        let (stop, stopped) = oneshot::channel::<()>();
        let app = simulator.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(RunningSimulator {
            simulator,
            url,
            _stop: stop,
        })
    }

    pub fn set_webhook(&self, target: Option<WebhookTarget>) {
        if let Ok(mut webhook) = self.shared.webhook.lock() {
            *webhook = target;
        }
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        self.with(|inner| inner.fault = fault);
    }

    /// Runs the simulator on `clock` (the local test clock): payments, subscriptions and
    /// webhooks are stamped with its time, and what Dodo does later (renewals, retries of
    /// charges and of deliveries) waits for it, run by [`Self::run_next_due`].
    pub fn set_clock(&self, clock: Clock) {
        *self.shared.clock.lock().unwrap_or_else(|p| p.into_inner()) = clock;
    }

    pub fn clock(&self) -> Clock {
        self.shared
            .clock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn now_millis(&self) -> i64 {
        self.clock().now_millis()
    }

    fn now(&self) -> i64 {
        self.clock().now().unix_seconds()
    }

    /// The products sold as subscriptions; a checkout for one creates a subscription.
    pub fn set_subscription_products(&self, products: impl IntoIterator<Item = String>) {
        let products = products.into_iter().collect();
        self.with(|inner| inner.subscription_products = products);
    }

    /// Each product's price in minor units (cents), for `GET /products/{id}`, checkouts,
    /// a subscription's `recurring_pre_tax_amount` and so its renewals and plan changes.
    /// A product left out costs [`DEFAULT_PRICE_MINOR`]. Replaces the prices set before.
    pub fn set_product_prices(&self, prices: impl IntoIterator<Item = (String, i64)>) {
        let prices = prices.into_iter().collect();
        self.with(|inner| inner.product_prices = prices);
    }

    /// A product's price in minor units.
    pub fn product_price(&self, product_id: &str) -> i64 {
        self.with(|inner| inner.price_of(product_id))
    }

    /// Faults from now on (`Faults::default()`: none).
    pub fn set_faults(&self, faults: Faults) {
        self.with(|inner| inner.faults = faults);
    }

    pub fn faults(&self) -> Faults {
        self.with(|inner| inner.faults.clone())
    }

    /// Draws faults from this seed (else from the system's randomness).
    pub fn seed(&self, seed: u64) {
        self.with(|inner| {
            inner.rng = Some(Rng::seeded(seed));
            inner.seed = Some(seed);
            inner.records.ids = Some(Rng::seeded(seed ^ 0x1d5));
        });
    }

    /// Draws whether a fault of probability `p` happens now (and counts it if so).
    fn chance(inner: &mut Inner, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        let rng = inner.rng.get_or_insert_with(|| {
            use std::hash::{BuildHasher, RandomState};
            Rng::seeded(RandomState::new().hash_one(0u8))
        });
        let happens = rng.chance(p);
        inner.faults_injected += u64::from(happens);
        happens
    }

    /// How many faults were injected so far (dropped, repeated, delayed deliveries, API
    /// errors).
    pub fn faults_injected(&self) -> u64 {
        self.with(|inner| inner.faults_injected)
    }

    /// When the next subscription charge is due (ms on the clock), if any.
    pub fn next_renewal_millis(&self) -> Option<i64> {
        self.with(|inner| {
            inner
                .records
                .schedule
                .iter()
                .filter(|s| matches!(s.action, Action::Renew { .. } | Action::RetryCharge { .. }))
                .map(|s| s.at_ms)
                .min()
        })
    }

    /// When the next scheduled action is due (ms on the clock), if any.
    pub fn next_due_millis(&self) -> Option<i64> {
        self.with(|inner| inner.records.schedule.iter().map(|s| s.at_ms).min())
    }

    /// Runs the earliest action due by now on the clock (a renewal, a retried charge, a
    /// dispute's outcome, a webhook delivery), with its webhooks. `false` when none is.
    pub async fn run_next_due(&self) -> bool {
        let now_ms = self.now_millis();
        let due = self.change(|records| {
            let index = records
                .schedule
                .iter()
                .enumerate()
                .filter(|(_, s)| s.at_ms <= now_ms)
                .min_by_key(|(_, s)| (s.at_ms, s.seq))
                .map(|(i, _)| i)?;
            Some(records.schedule.swap_remove(index))
        });
        let Some(due) = due else {
            return false;
        };
        match due.action {
            Action::Deliver {
                event_type,
                webhook_id,
                body,
                attempt,
                object_id,
            } => {
                if let Some(target) = self.webhook_target() {
                    let pending = Pending {
                        simulator: self.clone(),
                        target,
                        event_type,
                        webhook_id,
                        body,
                        object_id,
                    };
                    pending.attempt_and_follow_up(attempt).await;
                }
            }
            action => {
                let now = self.now();
                let emitted = self.change(|records| records.run_billing(&action, now));
                self.emit(emitted).await;
            }
        }
        true
    }

    /// Every payment, subscription, refund and dispute Dodo knows (the truth a test
    /// compares the paywall with).
    pub fn payments(&self) -> Vec<Value> {
        self.with(|inner| inner.records.payments.values().cloned().collect())
    }

    pub fn subscriptions(&self) -> Vec<Value> {
        self.with(|inner| inner.records.subscriptions.values().cloned().collect())
    }

    pub fn refunds(&self) -> Vec<Value> {
        self.with(|inner| inner.records.refunds.clone())
    }

    pub fn disputes(&self) -> Vec<Value> {
        self.with(|inner| inner.records.disputes.clone())
    }

    /// What Dodo knows about one user (by our metadata's `user_id`).
    pub fn user_truth(&self, user: &str) -> UserTruth {
        self.with(|inner| {
            let records = &inner.records;
            let mut truth = UserTruth {
                last_event_ms: records.index.last_event_by_user.get(user).copied(),
                ..UserTruth::default()
            };
            for id in records
                .index
                .objects_by_user
                .get(user)
                .into_iter()
                .flatten()
            {
                if let Some(payment) = records.payments.get(id) {
                    truth.payments.push(payment.clone());
                    if let Some(&i) = records.index.refund_by_payment.get(id) {
                        truth.refunds.insert(id.clone(), records.refunds[i].clone());
                    }
                    if let Some(&i) = records.index.dispute_by_payment.get(id) {
                        let mut dispute = records.disputes[i].clone();
                        // When it was decided, as `updated_at` (not a field of Dodo's).
                        if let Some(&at) = dispute["dispute_id"]
                            .as_str()
                            .and_then(|d| records.dispute_decided_at.get(d))
                        {
                            dispute["updated_at"] =
                                json!(Timestamp::from_unix_seconds(at).to_rfc3339());
                        }
                        truth.disputes.insert(id.clone(), dispute);
                    }
                } else if let Some(subscription) = records.subscriptions.get(id) {
                    truth.subscriptions.push(subscription.clone());
                }
            }
            truth
        })
    }

    /// When Dodo last sent (or lost) an event about the user (ms on the clock).
    pub fn last_event_millis(&self, user: &str) -> Option<i64> {
        self.with(|inner| inner.records.index.last_event_by_user.get(user).copied())
    }

    /// The user (our metadata) a payment or subscription belongs to.
    pub fn owner_of(&self, object_id: &str) -> Option<String> {
        self.with(|inner| {
            let records = &inner.records;
            records
                .payments
                .get(object_id)
                .or_else(|| records.subscriptions.get(object_id))
                .and_then(user_of)
                .map(str::to_owned)
        })
    }

    fn webhook_target(&self) -> Option<WebhookTarget> {
        self.shared.webhook.lock().ok().and_then(|w| w.clone())
    }

    /// Whether a test stored objects of its own shape here.
    fn shaped_by_test(&self) -> bool {
        self.shared
            .shaped_by_test
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn mark_shaped_by_test(&self) {
        self.shared
            .shaped_by_test
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stores a payment exactly as given (any fields, any status), served by
    /// `GET /payments/{payment_id}`.
    pub fn put_payment(&self, payment: Value) {
        self.mark_shaped_by_test();
        if let Some(id) = payment.get("payment_id").and_then(Value::as_str) {
            let id = id.to_owned();
            self.change(|records| {
                records.note_object(&id, &payment);
                records.payments.insert(id, payment)
            });
        }
    }

    /// Stores a subscription exactly as given, served by `GET /subscriptions/{id}`.
    pub fn put_subscription(&self, subscription: Value) {
        self.mark_shaped_by_test();
        if let Some(id) = subscription.get("subscription_id").and_then(Value::as_str) {
            let id = id.to_owned();
            self.change(|records| {
                records.note_object(&id, &subscription);
                records.subscriptions.insert(id, subscription)
            });
        }
    }

    /// Makes `payment_id` the payment of checkout `session_id` (as if paid there), for
    /// payments of any shape stored with [`Self::put_payment`].
    pub fn set_checkout_payment(&self, session_id: &str, payment_id: &str) {
        self.change(|records| {
            if let Some(checkout) = records.checkouts.get_mut(session_id) {
                checkout.payment_id = Some(payment_id.to_owned());
            }
        });
    }

    pub fn subscription(&self, id: &str) -> Option<Value> {
        self.with(|inner| inner.records.subscriptions.get(id).cloned())
    }

    pub fn payment(&self, id: &str) -> Option<Value> {
        self.with(|inner| inner.records.payments.get(id).cloned())
    }

    /// The bodies of every `POST /checkouts`, in no particular order.
    pub fn checkout_requests(&self) -> Vec<Value> {
        self.with(|inner| {
            inner
                .records
                .checkouts
                .values()
                .map(|c| c.request.clone())
                .collect()
        })
    }

    /// The body sent for one session.
    pub fn checkout_request(&self, session_id: &str) -> Option<Value> {
        self.with(|inner| {
            inner
                .records
                .checkouts
                .get(session_id)
                .map(|c| c.request.clone())
        })
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.with(|inner| inner.deliveries.clone())
    }

    /// `METHOD /path` of every API call received.
    pub fn api_calls(&self) -> Vec<String> {
        self.with(|inner| inner.api_calls.clone())
    }

    /// The customer with this id, as `GET /customers/{id}` answers it.
    pub fn customer(&self, id: &str) -> Option<Value> {
        self.with(|inner| find_customer(&inner.records, id).cloned())
    }

    /// Every customer with this e-mail, oldest first.
    pub fn customers_with_email(&self, email: &str) -> Vec<Value> {
        self.with(|inner| {
            inner
                .records
                .customers
                .iter()
                .filter(|c| c["email"].as_str() == Some(email))
                .cloned()
                .collect()
        })
    }

    /// The customer a checkout session is attached to, if any yet.
    pub fn checkout_customer(&self, session_id: &str) -> Option<String> {
        self.with(|inner| inner.records.checkouts.get(session_id)?.customer_id.clone())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut guard = match self.shared.inner.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Changes the records, then keeps them in the state file (if any).
    fn change<T>(&self, f: impl FnOnce(&mut Records) -> T) -> T {
        self.with(|inner| {
            let out = f(&mut inner.records);
            self.persist(&inner.records);
            out
        })
    }

    fn persist(&self, records: &Records) {
        let Some(path) = &self.shared.state_file else {
            return;
        };
        // Written whole to a temporary file, then renamed: a crash never leaves half.
        let temporary = path.with_extension("json.tmp");
        let written = serde_json::to_vec(records)
            .map_err(|e| e.to_string())
            .and_then(|bytes| std::fs::write(&temporary, bytes).map_err(|e| e.to_string()))
            .and_then(|()| std::fs::rename(&temporary, path).map_err(|e| e.to_string()));
        if let Err(err) = written {
            tracing::warn!(error = %err, "the Dodo simulator could not save its state");
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/checkouts", axum::routing::post(create_checkout))
            .route("/checkouts/{id}", get(get_checkout))
            .route("/payments", get(list_payments))
            .route("/payments/{id}", get(get_payment))
            .route("/products/{id}", get(get_product))
            .route("/subscriptions", get(list_subscriptions))
            .route("/customers", axum::routing::post(create_customer))
            .route("/customers/{id}", get(get_customer))
            .route(
                "/customers/{id}/customer-portal/session",
                axum::routing::post(portal_session),
            )
            .route("/portal/{customer}", get(portal_page))
            .route(
                "/portal/{customer}/subscriptions/{id}",
                axum::routing::post(portal_action),
            )
            .route(
                "/subscriptions/{id}",
                get(get_subscription).patch(patch_subscription),
            )
            .route(
                "/subscriptions/{id}/change-plan",
                axum::routing::post(change_plan),
            )
            .route(
                "/subscriptions/{id}/change-plan/preview",
                axum::routing::post(preview_change_plan),
            )
            .route(
                "/subscriptions/{id}/change-plan/scheduled",
                axum::routing::delete(cancel_scheduled_change),
            )
            .route("/refunds", get(list_refunds).post(create_refund))
            .route("/disputes", get(list_disputes))
            // Off unless DODO_SIMULATOR_RECORD_DIR is set: Dodo's routes' JSON answers,
            // for the SDK's models to judge (`make test-sdk-models`).
            .route_layer(axum::middleware::from_fn_with_state(
                self.clone(),
                record::answers,
            ))
            // Not Dodo's API: banks raise disputes; tests and `simulate` stand in for them.
            .route("/simulator/disputes", axum::routing::post(raise_dispute))
            .route(
                "/checkout/{session}",
                get(checkout_page).post(complete_checkout),
            )
            .with_state(self.clone())
            // Dodo's own error shape for what it does not serve, too.
            .method_not_allowed_fallback(|| async {
                dodo_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "METHOD_NOT_ALLOWED",
                    "Method not allowed",
                )
            })
            .fallback(|| async { dodo_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not found") })
    }

    /// Checks the bearer key and applies an injected fault. `Err` is the answer to send.
    async fn gate(&self, headers: &HeaderMap, call: String) -> Result<(), Response> {
        let (fault, random_error) = self.with(|inner| {
            let p = inner.faults.dodo_errors;
            let error = match inner.seed {
                // Seeded: drawn from the call and how many like it came before, so that
                // calls made at once (reconcile reads its lists together) draw the same
                // whatever order they arrive in.
                Some(seed) if p > 0.0 => {
                    use std::hash::{Hash, Hasher};
                    let count = inner.call_counts.entry(call.clone()).or_insert(0);
                    *count += 1;
                    let mut hasher = std::collections::hash_map::DefaultHasher::new();
                    (seed, &call, *count).hash(&mut hasher);
                    let happens = Rng::seeded(hasher.finish()).chance(p);
                    inner.faults_injected += u64::from(happens);
                    happens
                }
                _ => Self::chance(inner, p),
            };
            inner.api_calls.push(call);
            (inner.fault.clone(), error)
        });
        if random_error {
            return Err(dodo_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERROR",
                "Something went wrong (an injected fault)",
            ));
        }
        if let Some(expected) = &self.shared.api_key {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given != Some(expected.as_str()) {
                return Err(dodo_error(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "Invalid API key",
                ));
            }
        }
        match fault {
            None => Ok(()),
            Some(Fault::Delay(pause)) => {
                tokio::time::sleep(pause).await;
                Ok(())
            }
            Some(Fault::Error {
                status,
                code,
                message,
            }) => Err(dodo_error(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                &code,
                &message,
            )),
        }
    }
}

/// A simulator serving on its own loopback port; stops when dropped.
pub struct RunningSimulator {
    pub simulator: DodoSimulator,
    pub url: String,
    _stop: oneshot::Sender<()>,
}

/// The fields of `value` named in `keys` (those it has).
fn project(value: &Value, keys: &[&str]) -> serde_json::Map<String, Value> {
    keys.iter()
        .filter_map(|key| Some(((*key).to_owned(), value.get(*key)?.clone())))
        .collect()
}
