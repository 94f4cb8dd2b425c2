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

mod billing;
pub mod faults;
pub mod record;

use std::collections::HashMap;
use std::path::{Path as FilePath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
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

/// The price every simulated product has: $19.00, the original router's price.
pub const DEFAULT_PRICE_MINOR: i64 = 1900;

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
    faults_injected: u64,
    /// The seed, when seeded, and how many of each API call came so far.
    seed: Option<u64>,
    call_counts: HashMap<String, u64>,
    fault: Option<Fault>,
    deliveries: Vec<Delivery>,
    api_calls: Vec<String>,
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

    /// The customer puts in a new card (in Dodo's portal); `succeeds` says whether it
    /// pays. An on-hold subscription is charged with it at once. `false`: no such
    /// subscription.
    pub async fn new_card(&self, subscription_id: &str, succeeds: bool) -> bool {
        let now = self.now();
        let known = self.with(|inner| inner.records.subscriptions.contains_key(subscription_id));
        let emitted = self.change(|records| records.new_card(subscription_id, succeeds, now));
        self.emit(emitted).await;
        known
    }

    /// `PATCH /subscriptions/{id}` with `cancel_at_next_billing_date`.
    pub async fn cancel_at_period_end(&self, subscription_id: &str, cancel: bool) -> bool {
        let emitted =
            self.change(|records| records.set_cancel_at_period_end(subscription_id, cancel));
        let found = emitted.is_some();
        self.emit(emitted.unwrap_or_default()).await;
        found
    }

    /// `POST /refunds`: a full refund of a succeeded payment.
    pub async fn refund(&self, payment_id: &str) -> Result<Value, String> {
        let now = self.now();
        let emitted = self.change(|records| records.refund(payment_id, "requested", now))?;
        let refund = emitted.first().map(|(_, r)| r.clone()).unwrap_or_default();
        self.emit(emitted).await;
        Ok(refund)
    }

    /// A bank raises a dispute of a payment: `dispute.opened` now, and the bank's answer
    /// (`won` for the merchant, or lost) after [`DISPUTE_RESOLVES_AFTER`].
    pub async fn open_dispute(&self, payment_id: &str, won: bool) -> Result<Value, String> {
        let now = self.now();
        let emitted = self.change(|records| records.open_dispute(payment_id, won, now))?;
        let dispute = emitted.first().map(|(_, d)| d.clone()).unwrap_or_default();
        self.emit(emitted).await;
        Ok(dispute)
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

    /// Creates the payment for a session (and, for a subscription product, the
    /// subscription) and sends its webhooks where Dodo would.
    async fn complete(
        &self,
        session_id: &str,
        succeeded: bool,
        renewal_fails: bool,
    ) -> Result<(String, String), Refusal> {
        let now = self.now();
        let (payment_id, status, emitted, return_url) = self.with(|inner| {
            let subscription_products = inner.subscription_products.clone();
            let records = &mut inner.records;
            let Some(checkout) = records.checkouts.get(session_id).cloned() else {
                return Err(Refusal {
                    status: StatusCode::NOT_FOUND,
                    code: "NOT_FOUND",
                    message: "Checkout session not found",
                });
            };
            let already_paid = checkout
                .payment_id
                .as_ref()
                .and_then(|paid| records.payments.get(paid))
                .and_then(|p| p.get("status"))
                .and_then(Value::as_str)
                == Some("succeeded");
            if already_paid {
                return Err(Refusal {
                    status: StatusCode::CONFLICT,
                    code: "CHECKOUT_ALREADY_COMPLETED",
                    message: "This checkout session has already been paid",
                });
            }
            let request = &checkout.request;
            // The customer the session was attached to, else the one for the e-mail
            // the buyer types on the page (here: a stand-in address).
            let customer_id = match &checkout.customer_id {
                Some(id) => id.clone(),
                None => attach_customer(
                    records,
                    "buyer@example.com",
                    "Buyer",
                    always_create_new_customer(request),
                ),
            };
            let customer = find_customer(records, &customer_id)
                .cloned()
                .unwrap_or_else(|| json!({"customer_id": customer_id}));
            let product_cart = request.get("product_cart").cloned().unwrap_or(json!([]));
            let quantity: i64 = product_cart
                .as_array()
                .map(|lines| {
                    lines
                        .iter()
                        .filter_map(|l| l.get("quantity")?.as_i64())
                        .sum()
                })
                .unwrap_or(1);
            let metadata = request.get("metadata").cloned().unwrap_or(json!({}));
            let subscription_product = request
                .pointer("/product_cart/0/product_id")
                .and_then(Value::as_str)
                .filter(|product| subscription_products.contains(*product));
            // A subscription is created only when its first charge is paid.
            let subscription = match subscription_product {
                Some(product) if succeeded => Some(records.start_subscription(
                    now,
                    product,
                    &customer,
                    &metadata,
                    renewal_fails,
                )),
                _ => None,
            };
            let subscription_id = subscription
                .as_ref()
                .and_then(|s| s["subscription_id"].as_str())
                .map(str::to_owned);
            let payment = NewPayment {
                id: records.new_id("pay"),
                now,
                succeeded,
                quantity,
                customer: &customer,
                metadata,
                checkout_session_id: Some(session_id),
                subscription_id: subscription_id.as_deref(),
                // Dodo sends no cart with a subscription's payments.
                product_cart: subscription_product.is_none().then_some(product_cart),
                retry_attempt: 0,
                charge: subscription_id
                    .is_some()
                    .then_some(("new", (now, add_months(now, 1)))),
            }
            .into_json();
            let payment_id = payment["payment_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Some(stored) = records.checkouts.get_mut(session_id) {
                stored.payment_id = Some(payment_id.clone());
                stored.customer_id = Some(customer_id);
            }
            records.note_object(&payment_id, &payment);
            records.payments.insert(payment_id.clone(), payment.clone());
            self.persist(records);
            let return_url = request
                .get("return_url")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let mut emitted: Emitted = Vec::new();
            if let Some(subscription) = subscription {
                emitted.push(("subscription.active".into(), subscription));
            }
            let event = if succeeded {
                "payment.succeeded"
            } else {
                "payment.failed"
            };
            let status = payment["status"].as_str().unwrap_or_default().to_owned();
            emitted.push((event.into(), payment));
            Ok((payment_id, status, emitted, return_url))
        })?;

        self.emit(emitted).await;
        let redirect = return_url.map(|url| {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}payment_id={payment_id}&status={status}")
        });
        Ok((payment_id, redirect.unwrap_or_default()))
    }

    /// Sends the events of one change, in Dodo's order (newest first under the
    /// `reorder_webhooks` fault: Dodo's documentation says delivery order is "not
    /// guaranteed", and each delivery carries the object's latest state).
    async fn emit(&self, mut events: Emitted) {
        if self.faults().reorder_webhooks {
            events.reverse();
        }
        for (event_type, data) in events {
            self.send_event(&event_type, data).await;
        }
    }

    /// Sends one event to the webhook URL, Standard-Webhooks signed. The first attempt is
    /// made before returning, so that a local flow is deterministic (the redirect follows
    /// the delivery); non-2xx answers are retried on Dodo's schedule: on the simulator's
    /// test clock when it has one (run by [`Self::run_next_due`]), else in the background,
    /// compressed in time. Faults apply here: a dropped delivery is never sent nor
    /// retried, a delayed one waits, a duplicated one is sent twice.
    ///
    /// For a test's own event: its `data` is the test's, not the simulator's (recorded as
    /// shaped by the test).
    pub async fn deliver(&self, event_type: &str, data: Value) {
        self.mark_shaped_by_test();
        self.send_event(event_type, data).await;
    }

    /// Sends one event of the simulator's own (see [`Self::deliver`]).
    async fn send_event(&self, event_type: &str, data: Value) {
        let Some(target) = self.webhook_target() else {
            return;
        };
        // `data` is the object itself, as the SDK's `*WebhookEvent` models have it (they
        // have no `payload_type`, so the simulator sends none and the paywall reads none).
        let is_subscription = event_type.starts_with("subscription.");
        let now_ms = self.now_millis();
        let (sent_at_ms, webhook_id) = self.change(|records| {
            let at = now_ms.max(records.last_event_ms + 1);
            records.last_event_ms = at;
            if let Some(user) = records.owner_of(&data) {
                records.index.last_event_by_user.insert(user, at);
            }
            (at, records.new_id("msg"))
        });
        let body = json!({
            "business_id": "bus_simulator",
            "type": event_type,
            "timestamp": rfc3339_millis(sent_at_ms),
            "data": data,
        })
        .to_string();
        record::webhook(self, event_type, &body);
        let object_id = data
            .get(if is_subscription {
                "subscription_id"
            } else {
                "payment_id"
            })
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let delivery = Pending {
            simulator: self.clone(),
            target,
            event_type: event_type.to_owned(),
            webhook_id,
            body,
            object_id,
        };
        let (dropped, delay) = self.with(|inner| {
            let p = inner.faults.drop_webhooks;
            let dropped = Self::chance(inner, p);
            let delay = inner.faults.delay().filter(|_| !dropped);
            inner.faults_injected += u64::from(delay.is_some());
            (dropped, delay)
        });
        if dropped {
            self.with(|inner| {
                inner.deliveries.push(Delivery {
                    event_type: delivery.event_type.clone(),
                    webhook_id: delivery.webhook_id.clone(),
                    attempt: 1,
                    status: 0,
                    dropped: true,
                    at_ms: now_ms,
                    outcome: None,
                    object_id: delivery.object_id.clone(),
                })
            });
            return;
        }
        match delay {
            Some(delay) if self.clock().is_test() => {
                self.change(|records| {
                    records.schedule_ms(now_ms + delay.as_millis() as i64, delivery.as_action(1))
                });
            }
            Some(delay) => {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    delivery.attempt_and_follow_up(1).await;
                });
            }
            None => delivery.attempt_and_follow_up(1).await,
        }
    }
}

/// `2026-11-28T04:35:26.123Z`
fn rfc3339_millis(ms: i64) -> String {
    let text = Timestamp::from_unix_seconds(ms.div_euclid(1000)).to_rfc3339();
    match text.strip_suffix('Z') {
        Some(seconds) => format!("{seconds}.{:03}Z", ms.rem_euclid(1000)),
        None => text,
    }
}

/// One event on its way to the webhook, across its attempts (same `webhook-id`, a fresh
/// timestamp and signature each time, as Standard Webhooks senders do).
struct Pending {
    simulator: DodoSimulator,
    target: WebhookTarget,
    event_type: String,
    webhook_id: String,
    body: String,
    object_id: String,
}

impl Pending {
    fn as_action(&self, attempt: u32) -> Action {
        Action::Deliver {
            event_type: self.event_type.clone(),
            webhook_id: self.webhook_id.clone(),
            body: self.body.clone(),
            attempt,
            object_id: self.object_id.clone(),
        }
    }

    /// Attempt `attempt`; then a duplicate (the fault), or the next retry when refused.
    async fn attempt_and_follow_up(self, attempt: u32) {
        if self.attempt(attempt).await {
            let duplicate = self.simulator.with(|inner| {
                let p = inner.faults.duplicate_webhooks;
                DodoSimulator::chance(inner, p)
            });
            if duplicate {
                self.attempt(attempt).await;
            }
            return;
        }
        let Some(pause) = DODO_RETRY_SCHEDULE.get(attempt as usize - 1).copied() else {
            return; // Dodo gives up after its last attempt.
        };
        let clock = self.simulator.clock();
        if clock.is_test() {
            let at = clock.now_millis() + pause.as_millis() as i64;
            let action = self.as_action(attempt + 1);
            self.simulator
                .change(|records| records.schedule_ms(at, action));
            return;
        }
        tokio::spawn(async move {
            let compression = self.target.time_compression.max(1);
            let mut attempt = attempt;
            for pause in &DODO_RETRY_SCHEDULE[attempt as usize - 1..] {
                tokio::time::sleep(*pause / compression).await;
                attempt += 1;
                if self.attempt(attempt).await {
                    return;
                }
            }
        });
    }

    /// Returns whether the endpoint answered 2xx.
    async fn attempt(&self, attempt: u32) -> bool {
        let now_ms = self.simulator.now_millis();
        let timestamp = now_ms.div_euclid(1000);
        let signature = self
            .target
            .secret
            .sign(&self.webhook_id, timestamp, self.body.as_bytes());
        let answer = self
            .simulator
            .shared
            .http
            .post(&self.target.url)
            .header("content-type", "application/json")
            .header("webhook-id", &self.webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(self.body.clone())
            .send()
            .await;
        let (status, outcome) = match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or_default();
                let outcome = body["outcome"].as_str().map(str::to_owned);
                (status, outcome)
            }
            Err(_) => (0, None),
        };
        self.simulator.with(|inner| {
            inner.deliveries.push(Delivery {
                event_type: self.event_type.clone(),
                webhook_id: self.webhook_id.clone(),
                attempt,
                status,
                dropped: false,
                at_ms: now_ms,
                outcome,
                object_id: self.object_id.clone(),
            })
        });
        (200..300).contains(&status)
    }
}

/// A simulator serving on its own loopback port; stops when dropped.
pub struct RunningSimulator {
    pub simulator: DodoSimulator,
    pub url: String,
    _stop: oneshot::Sender<()>,
}

/// Metadata values must be strings in the API version Dodo documents (1.53.2).
fn validate_checkout(body: &Value) -> Result<(), String> {
    let lines = body
        .get("product_cart")
        .and_then(Value::as_array)
        .filter(|lines| !lines.is_empty())
        .ok_or("product_cart must be a non-empty array")?;
    for line in lines {
        if line.get("product_id").and_then(Value::as_str).is_none() {
            return Err("product_cart[].product_id is required".into());
        }
        if line.get("quantity").and_then(Value::as_u64).unwrap_or(0) < 1 {
            return Err("product_cart[].quantity must be a positive integer".into());
        }
    }
    if let Some(metadata) = body.get("metadata") {
        let strings_only = metadata
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string));
        if !strings_only {
            return Err("metadata must map to string values".into());
        }
    }
    if let Some(url) = body.get("return_url")
        && !url.is_string()
    {
        return Err("return_url must be a string".into());
    }
    Ok(())
}

async fn create_checkout(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    if let Err(answer) = sim.gate(&headers, "POST /checkouts".into()).await {
        return answer;
    }
    let Ok(body) = body else {
        return dodo_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "Request body is too large",
        );
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST_BODY",
            "Request body is not valid JSON",
        );
    };
    if let Err(message) = validate_checkout(&request) {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST_BODY",
            &message,
        );
    }
    let session_id = sim.change(|records| records.new_id("cks"));
    let checkout_url = format!("{}/checkout/{session_id}", sim.shared.public_url);
    let attached = sim.change(|records| {
        let customer = request.get("customer");
        let customer_id = match customer.and_then(|c| c.get("customer_id")) {
            Some(id) => {
                let id = id.as_str().unwrap_or_default().to_owned();
                if find_customer(records, &id).is_none() {
                    return Err(());
                }
                Some(id)
            }
            // An e-mail alone: attached to the existing customer with that e-mail, unless
            // told to always create a new one (Dodo's documented default).
            None => customer
                .and_then(|c| c.get("email"))
                .and_then(Value::as_str)
                .map(|email| {
                    let name = customer
                        .and_then(|c| c.get("name"))
                        .and_then(Value::as_str)
                        .unwrap_or(email);
                    attach_customer(records, email, name, always_create_new_customer(&request))
                }),
        };
        records.checkouts.insert(
            session_id.clone(),
            Checkout {
                request: request.clone(),
                payment_id: None,
                customer_id,
            },
        );
        Ok(())
    });
    if attached.is_err() {
        return dodo_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Customer not found");
    }
    axum::Json(json!({"session_id": session_id, "checkout_url": checkout_url})).into_response()
}

async fn get_checkout(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(answer) = sim.gate(&headers, format!("GET /checkouts/{id}")).await {
        return answer;
    }
    let found = sim.with(|inner| {
        let checkout = inner.records.checkouts.get(&id)?;
        let payment = checkout
            .payment_id
            .as_ref()
            .and_then(|p| inner.records.payments.get(p));
        Some(json!({
            "id": id,
            "created_at": paywall::time::Clock::system().now().to_rfc3339(),
            "customer_email": checkout.request.pointer("/customer/email"),
            "payment_id": checkout.payment_id,
            "payment_status": payment.and_then(|p| p.get("status")),
        }))
    });
    match found {
        Some(session) => axum::Json(session).into_response(),
        None => dodo_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Checkout session not found",
        ),
    }
}

async fn get_payment(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(answer) = sim.gate(&headers, format!("GET /payments/{id}")).await {
        return answer;
    }
    match sim.payment(&id) {
        Some(payment) => axum::Json(payment).into_response(),
        None => dodo_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Payment not found"),
    }
}

async fn get_subscription(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(answer) = sim.gate(&headers, format!("GET /subscriptions/{id}")).await {
        return answer;
    }
    match sim.with(|inner| inner.records.subscriptions.get(&id).cloned()) {
        Some(subscription) => axum::Json(subscription).into_response(),
        None => dodo_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Subscription not found"),
    }
}

async fn get_product(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(answer) = sim.gate(&headers, format!("GET /products/{id}")).await {
        return answer;
    }
    let is_recurring = sim.with(|inner| inner.subscription_products.contains(&id));
    let price = if is_recurring {
        json!({"type": "recurring_price", "price": DEFAULT_PRICE_MINOR, "currency": "USD",
               "discount": 0, "purchasing_power_parity": false,
               "payment_frequency_count": 1, "payment_frequency_interval": "Month",
               "subscription_period_count": 10, "subscription_period_interval": "Year"})
    } else {
        json!({"type": "one_time_price", "price": DEFAULT_PRICE_MINOR, "currency": "USD",
               "discount": 0, "purchasing_power_parity": false})
    };
    // Every field Dodo's `Product` requires (SDK `types/product.py`).
    axum::Json(json!({
        "product_id": id,
        "business_id": "bus_simulator",
        "brand_id": "bus_simulator",
        "name": "Paywall access",
        "is_recurring": is_recurring,
        "price": price,
        "tax_category": "saas",
        "license_key_enabled": false,
        "metadata": {},
        "entitlements": [],
        "credit_entitlements": [],
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }))
    .into_response()
}

fn find_customer<'r>(records: &'r Records, id: &str) -> Option<&'r Value> {
    records
        .customers
        .iter()
        .find(|c| c["customer_id"].as_str() == Some(id))
}

fn new_customer(records: &mut Records, email: &str, name: &str) -> String {
    let customer_id = records.new_id("cus");
    records.customers.push(json!({
        "customer_id": customer_id,
        "business_id": "bus_simulator",
        "email": email,
        "name": name,
        "created_at": paywall::time::Clock::system().now().to_rfc3339(),
        "metadata": {},
    }));
    customer_id
}

/// The customer a checkout with only an e-mail is attached to: the existing customer with
/// that e-mail (the oldest), unless `always_create_new` — as Dodo does.
fn attach_customer(
    records: &mut Records,
    email: &str,
    name: &str,
    always_create_new: bool,
) -> String {
    if !always_create_new
        && let Some(existing) = records
            .customers
            .iter()
            .find(|c| c["email"].as_str() == Some(email))
            .and_then(|c| c["customer_id"].as_str())
    {
        return existing.to_owned();
    }
    new_customer(records, email, name)
}

fn always_create_new_customer(request: &Value) -> bool {
    request
        .pointer("/feature_flags/always_create_new_customer")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

async fn create_customer(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(answer) = sim.gate(&headers, "POST /customers".into()).await {
        return answer;
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (Some(email), Some(name)) = (
        request.get("email").and_then(Value::as_str),
        request.get("name").and_then(Value::as_str),
    ) else {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST_BODY",
            "email and name are required",
        );
    };
    let customer = sim.change(|records| {
        let id = new_customer(records, email, name);
        find_customer(records, &id).cloned()
    });
    axum::Json(customer.unwrap_or(Value::Null)).into_response()
}

async fn get_customer(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(answer) = sim.gate(&headers, format!("GET /customers/{id}")).await {
        return answer;
    }
    match sim.customer(&id) {
        Some(customer) => axum::Json(customer).into_response(),
        None => dodo_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Customer not found"),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    page_size: Option<usize>,
    page_number: Option<usize>,
    status: Option<String>,
}

/// `GET /subscriptions`: newest first, `page_size` (default 10, at most 100) from
/// `page_number` (from 0), only those in `status` when it is given.
async fn list_subscriptions(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(answer) = sim.gate(&headers, "GET /subscriptions".into()).await {
        return answer;
    }
    let Ok(axum::extract::Query(query)) = query else {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_QUERY",
            "page_size and page_number must be non-negative integers",
        );
    };
    let size = query.page_size.unwrap_or(10).min(100);
    let page = query.page_number.unwrap_or(0);
    let items = sim.with(|inner| {
        // Newest first; ties by id so that pages are stable.
        let mut all: Vec<(&str, &str, &Value)> = inner
            .records
            .subscriptions
            .values()
            .filter(|s| {
                query
                    .status
                    .as_deref()
                    .is_none_or(|wanted| s["status"].as_str() == Some(wanted))
            })
            .map(|s| {
                (
                    s["created_at"].as_str().unwrap_or_default(),
                    s["subscription_id"].as_str().unwrap_or_default(),
                    s,
                )
            })
            .collect();
        all.sort_unstable_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)));
        all.into_iter()
            .skip(page.saturating_mul(size))
            .take(size)
            .map(|(_, _, s)| subscription_list_item(s))
            .collect::<Vec<_>>()
    });
    axum::Json(json!({ "items": items })).into_response()
}

async fn portal_session(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(answer) = sim
        .gate(
            &headers,
            format!("POST /customers/{id}/customer-portal/session"),
        )
        .await
    {
        return answer;
    }
    if sim.customer(&id).is_none() {
        return dodo_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Customer not found");
    }
    axum::Json(json!({"link": format!("{}/portal/{id}", sim.shared.public_url)})).into_response()
}

/// The portal page names its customer and what they bought, so a person (or a test) can
/// see whose portal a link opens.
async fn portal_page(State(sim): State<DodoSimulator>, Path(customer): Path<String>) -> Response {
    let Some(record) = sim.customer(&customer) else {
        return (
            StatusCode::NOT_FOUND,
            Html("<h1>Customer not found</h1>".to_owned()),
        )
            .into_response();
    };
    let payments: Vec<String> = sim.with(|inner| {
        let mut ids: Vec<String> = inner
            .records
            .payments
            .values()
            .filter(|p| {
                p.pointer("/customer/customer_id").and_then(Value::as_str) == Some(&customer)
            })
            .filter_map(|p| p["payment_id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    });
    let items: String = payments
        .iter()
        .map(|id| format!("<li class=\"payment\">{}</li>", escape_html(id)))
        .collect();
    let mut subscriptions: Vec<Value> = sim
        .subscriptions()
        .into_iter()
        .filter(|s| s.pointer("/customer/customer_id").and_then(Value::as_str) == Some(&customer))
        .collect();
    subscriptions.sort_by(|a, b| {
        a["subscription_id"]
            .as_str()
            .cmp(&b["subscription_id"].as_str())
    });
    let subscription_items: String = subscriptions
        .iter()
        .map(|s| {
            let id = escape_html(s["subscription_id"].as_str().unwrap_or_default());
            let status = escape_html(s["status"].as_str().unwrap_or_default());
            let next = escape_html(s["next_billing_date"].as_str().unwrap_or_default());
            let cancelling = s["cancel_at_next_billing_date"] == true;
            let (action, label, when) = if cancelling {
                ("resume", "Keep renewing", format!("cancels at period end ({next})"))
            } else {
                ("cancel", "Cancel at period end", format!("next charge {next}"))
            };
            format!(
                "<li class=\"subscription\"><p><code>{id}</code> <span class=\"status\">{status}</span>, \
                 <span class=\"renewal\">{when}</span></p>\
                 <form method=\"post\" action=\"{p}/portal/{c}/subscriptions/{id}\">\
                 <input type=\"hidden\" name=\"action\" value=\"card\">\
                 <button name=\"renewal\" value=\"succeeds\">New card</button>\
                 <button name=\"renewal\" value=\"fails\">New card (declined)</button></form>\
                 <form method=\"post\" action=\"{p}/portal/{c}/subscriptions/{id}\">\
                 <button name=\"action\" value=\"{action}\">{label}</button></form></li>",
                c = escape_html(&customer),
                p = escape_html(&sim.shared.public_url),
            )
        })
        .collect();
    let none = |items: &str, what: &str| {
        if items.is_empty() {
            format!("<li class=\"note\">No {what}.</li>")
        } else {
            String::new()
        }
    };
    // The app that sent the customer here: the local server the simulator is served on.
    let app = sim
        .shared
        .public_url
        .strip_suffix("/dodo")
        .map(|origin| format!("{origin}/"))
        .unwrap_or_else(|| "/".to_owned());
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Customer portal (Dodo simulator)</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body {{ font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto; padding: 0 1rem; color: #1b1b1f; }}
 .card {{ border: 1px solid #ddd; border-radius: 12px; padding: 1.5rem; }}
 .note {{ color: #666; font-size: .85rem; }}
 ul {{ padding-left: 0; list-style: none; }}
 li.subscription {{ border-top: 1px solid #eee; padding: .5rem 0; }}
 form {{ display: inline; }}
 button {{ font-size: .95rem; padding: .4rem .9rem; border-radius: 8px; border: 1px solid #888; cursor: pointer; margin: 0 .4rem .4rem 0; }}
 a.back {{ display: inline-block; margin-top: 1rem; }}
</style></head>
<body><div class="card">
<p class="note">Dodo Payments simulator: no money moves.</p>
<h1>Customer portal</h1>
<p>Customer <code id="customer">{customer}</code> (<span id="email">{email}</span>):
subscriptions, cards and invoices would be managed here.</p>
<h2>Subscriptions</h2>
<ul id="subscriptions">{subscription_items}{no_subscriptions}</ul>
<h2>Payments</h2>
<ul id="payments">{items}{no_payments}</ul>
<a class="back" id="back" href="{app}">← Back to the app</a>
</div></body></html>"#,
        customer = escape_html(&customer),
        email = escape_html(record["email"].as_str().unwrap_or_default()),
        no_subscriptions = none(&subscription_items, "subscriptions"),
        no_payments = none(&items, "payments"),
        app = escape_html(&app),
    ))
    .into_response()
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn checkout_page(State(sim): State<DodoSimulator>, Path(session): Path<String>) -> Response {
    let Some(request) = sim.checkout_request(&session) else {
        return (
            StatusCode::NOT_FOUND,
            Html("<h1>Checkout session not found</h1>".to_owned()),
        )
            .into_response();
    };
    // The customer the session is attached to (the paywall names its user's own), else
    // the e-mail the request gave, else the page would ask for one.
    let attached = sim
        .checkout_customer(&session)
        .and_then(|id| sim.customer(&id))
        .and_then(|customer| customer["email"].as_str().map(str::to_owned));
    let email = attached
        .or_else(|| {
            request
                .pointer("/customer/email")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "(Dodo would ask for it here)".to_owned());
    let product = request
        .pointer("/product_cart/0/product_id")
        .and_then(Value::as_str)
        .unwrap_or("?");
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Checkout (Dodo simulator)</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body {{ font-family: system-ui, sans-serif; max-width: 28rem; margin: 4rem auto; padding: 0 1rem; color: #1b1b1f; }}
 .card {{ border: 1px solid #ddd; border-radius: 12px; padding: 1.5rem; }}
 .note {{ color: #666; font-size: .85rem; }}
 button {{ font-size: 1rem; padding: .6rem 1.2rem; border-radius: 8px; border: 1px solid #888; cursor: pointer; margin-right: .5rem; }}
 #pay {{ background: #1b1b1f; color: white; border-color: #1b1b1f; }}
</style></head>
<body><div class="card">
<p class="note">Dodo Payments simulator: no money moves.</p>
<h1>Checkout</h1>
<p>Product <code>{product}</code>: <strong>$19.00</strong></p>
<p>Customer: <span id="customer-email">{email}</span></p>
<p class="note">Three test cards:</p>
<form method="post">
<button id="pay" name="outcome" value="succeeded">Pay $19.00</button>
<button id="decline" name="outcome" value="failed">Declined card</button>
</form>
<form method="post"><input type="hidden" name="outcome" value="succeeded">
<input type="hidden" name="renewal" value="fails">
<button id="pay-then-fail">Pay now, declined at renewal</button>
</form></div></body></html>"#,
        product = escape_html(product),
        email = escape_html(&email),
    ))
    .into_response()
}

#[derive(Deserialize)]
struct Outcome {
    outcome: String,
    /// `fails`: the card pays now and is declined at every later charge.
    renewal: Option<String>,
}

async fn complete_checkout(
    State(sim): State<DodoSimulator>,
    Path(session): Path<String>,
    form: Result<Form<Outcome>, axum::extract::rejection::FormRejection>,
) -> Response {
    // A malformed form is Dodo's JSON error, not axum's plain-text rejection.
    let Ok(Form(form)) = form else {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST_BODY",
            "the form needs outcome=succeeded or outcome=failed",
        );
    };
    let succeeded = match form.outcome.as_str() {
        "succeeded" => true,
        "failed" => false,
        _ => {
            return dodo_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_REQUEST_BODY",
                "outcome must be `succeeded` or `failed`",
            );
        }
    };
    let renewal_fails = match form.renewal.as_deref() {
        None | Some("succeeds") => false,
        Some("fails") => true,
        Some(_) => {
            return dodo_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_REQUEST_BODY",
                "renewal must be `succeeds` or `fails`",
            );
        }
    };
    match sim.complete(&session, succeeded, renewal_fails).await {
        Ok((payment_id, redirect)) if redirect.is_empty() => {
            axum::Json(json!({"payment_id": payment_id})).into_response()
        }
        Ok((_, redirect)) => Redirect::to(&redirect).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

#[derive(Deserialize)]
struct SubscriptionPatch {
    cancel_at_next_billing_date: Option<bool>,
}

/// `PATCH /subscriptions/{id}`: `cancel_at_next_billing_date` (the rest of Dodo's fields
/// are not simulated and are refused).
async fn patch_subscription(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(answer) = sim
        .gate(&headers, format!("PATCH /subscriptions/{id}"))
        .await
    {
        return answer;
    }
    let Ok(SubscriptionPatch {
        cancel_at_next_billing_date: Some(cancel),
    }) = serde_json::from_slice(&body)
    else {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST_BODY",
            "the simulator changes only cancel_at_next_billing_date (a boolean)",
        );
    };
    if !sim.cancel_at_period_end(&id, cancel).await {
        return dodo_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Subscription not found");
    }
    axum::Json(sim.subscription(&id).unwrap_or_default()).into_response()
}

#[derive(Deserialize)]
struct PortalAction {
    /// `card`: a new card (`renewal=succeeds|fails`); `cancel`/`resume`: at period end.
    action: String,
    renewal: Option<String>,
}

/// The portal's buttons: a new card for a subscription, or cancel it at period end (or
/// take that back), as the customer would in Dodo's portal.
async fn portal_action(
    State(sim): State<DodoSimulator>,
    Path((customer, id)): Path<(String, String)>,
    form: Result<Form<PortalAction>, axum::extract::rejection::FormRejection>,
) -> Response {
    let owned = sim.subscription(&id).is_some_and(|s| {
        s.pointer("/customer/customer_id").and_then(Value::as_str) == Some(&customer)
    });
    if !owned {
        return dodo_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Subscription not found");
    }
    let Ok(Form(form)) = form else {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST_BODY",
            "the form needs action=card|cancel|resume",
        );
    };
    match (form.action.as_str(), form.renewal.as_deref()) {
        ("card", None | Some("succeeds")) => sim.new_card(&id, true).await,
        ("card", Some("fails")) => sim.new_card(&id, false).await,
        ("cancel", _) => sim.cancel_at_period_end(&id, true).await,
        ("resume", _) => sim.cancel_at_period_end(&id, false).await,
        _ => {
            return dodo_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_REQUEST_BODY",
                "action must be card, cancel or resume; renewal succeeds or fails",
            );
        }
    };
    Redirect::to(&format!("{}/portal/{customer}", sim.shared.public_url)).into_response()
}

#[derive(Deserialize)]
struct RefundRequest {
    payment_id: String,
}

/// `POST /refunds`: a full refund (the simulator does not split payments).
async fn create_refund(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(answer) = sim.gate(&headers, "POST /refunds".into()).await {
        return answer;
    }
    let Ok(request) = serde_json::from_slice::<RefundRequest>(&body) else {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST_BODY",
            "payment_id is required",
        );
    };
    match sim.refund(&request.payment_id).await {
        Ok(refund) => axum::Json(refund).into_response(),
        Err(message) => dodo_error(StatusCode::UNPROCESSABLE_ENTITY, "REFUND_REFUSED", &message),
    }
}

#[derive(Deserialize)]
struct DisputeRequest {
    payment_id: String,
    /// The bank's answer in seven days: `won` (for the merchant) or `lost`.
    outcome: String,
}

async fn raise_dispute(State(sim): State<DodoSimulator>, body: axum::body::Bytes) -> Response {
    let request = serde_json::from_slice::<DisputeRequest>(&body)
        .ok()
        .filter(|r| r.outcome == "won" || r.outcome == "lost");
    let Some(request) = request else {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_REQUEST_BODY",
            "payment_id and outcome (won or lost) are required",
        );
    };
    match sim
        .open_dispute(&request.payment_id, request.outcome == "won")
        .await
    {
        Ok(dispute) => axum::Json(dispute).into_response(),
        Err(message) => dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "DISPUTE_REFUSED",
            &message,
        ),
    }
}

#[derive(Deserialize)]
struct ClaimListQuery {
    page_size: Option<usize>,
    page_number: Option<usize>,
    created_at_gte: Option<String>,
    status: Option<String>,
}

/// Which records a list call asks for.
enum Listed {
    Payments,
    Refunds,
    Disputes,
}

/// `GET /payments`, `GET /refunds` and `GET /disputes`: newest first, pages as
/// `GET /subscriptions`, only those created at or after `created_at_gte` (and, for
/// payments, in `status`) when given.
fn list_page(sim: &DodoSimulator, listed: Listed, query: &ClaimListQuery) -> Response {
    let since = match &query.created_at_gte {
        None => None,
        Some(text) => match Timestamp::parse_rfc3339(text) {
            Some(since) => Some(since),
            None => {
                return dodo_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "INVALID_QUERY",
                    "created_at_gte must be an RFC 3339 time",
                );
            }
        },
    };
    let created = |item: &Value| {
        item["created_at"]
            .as_str()
            .and_then(Timestamp::parse_rfc3339)
    };
    let size = query.page_size.unwrap_or(10).min(100);
    let page = sim.with(|inner| {
        let records = &inner.records;
        let all: Box<dyn Iterator<Item = &Value>> = match listed {
            Listed::Payments => Box::new(records.payments.values()),
            Listed::Refunds => Box::new(records.refunds.iter()),
            Listed::Disputes => Box::new(records.disputes.iter()),
        };
        let mut items: Vec<(Option<Timestamp>, &str, &Value)> = all
            .filter(|item| since.is_none_or(|since| created(item).is_some_and(|at| at >= since)))
            .filter(|item| {
                query
                    .status
                    .as_deref()
                    .is_none_or(|wanted| item["status"].as_str() == Some(wanted))
            })
            .map(|item| {
                let id = ["payment_id", "refund_id", "dispute_id"]
                    .iter()
                    .rev()
                    .find_map(|key| item[*key].as_str())
                    .unwrap_or_default();
                (created(item), id, item)
            })
            .collect();
        // Newest first; ties by id so that pages are stable.
        items.sort_unstable_by(|a, b| (b.0, b.1).cmp(&(a.0, a.1)));
        items
            .into_iter()
            .skip(query.page_number.unwrap_or(0).saturating_mul(size))
            .take(size)
            .map(|(_, _, item)| match listed {
                Listed::Payments => payment_list_item(item),
                Listed::Refunds => refund_list_item(item),
                Listed::Disputes => dispute_list_item(item),
            })
            .collect::<Vec<Value>>()
    });
    axum::Json(json!({ "items": page })).into_response()
}

/// The fields of `value` named in `keys` (those it has).
fn project(value: &Value, keys: &[&str]) -> serde_json::Map<String, Value> {
    keys.iter()
        .filter_map(|key| Some(((*key).to_owned(), value.get(*key)?.clone())))
        .collect()
}

/// A payment as `GET /payments` lists it: Dodo's `PaymentListResponse`, shorter than the
/// `Payment` of `GET /payments/{id}` — no `product_cart`, `billing`, `refunds`,
/// `disputes`, `is_update_payment_method` (so what a listed payment bought is read from
/// `GET /payments/{id}`) — plus `has_license_key` and the latest `dispute_status`.
fn payment_list_item(payment: &Value) -> Value {
    let mut item = project(
        payment,
        &[
            "payment_id",
            "brand_id",
            "created_at",
            "currency",
            "customer",
            "digital_products_delivered",
            "includes_usage",
            "is_multi_subscription",
            "metadata",
            "payment_provider",
            "retry_attempt",
            "service_periods",
            "subscription_ids",
            "total_amount",
            "charge_type",
            "checkout_session_id",
            "payment_method",
            "refund_status",
            "status",
            "subscription_id",
        ],
    );
    item.insert("has_license_key".into(), json!(false));
    let dispute_status = payment["disputes"]
        .as_array()
        .and_then(|disputes| disputes.last())
        .map(|dispute| dispute["dispute_status"].clone());
    item.insert(
        "dispute_status".into(),
        dispute_status.unwrap_or(Value::Null),
    );
    Value::Object(item)
}

/// A refund as `GET /refunds` and a payment's `refunds` list it: Dodo's
/// `RefundListItem` (no `customer`, `brand_id` or `metadata`).
pub(crate) fn refund_list_item(refund: &Value) -> Value {
    Value::Object(project(
        refund,
        &[
            "refund_id",
            "payment_id",
            "business_id",
            "created_at",
            "is_partial",
            "status",
            "amount",
            "currency",
            "reason",
        ],
    ))
}

/// A dispute as `GET /disputes` lists it: Dodo's `DisputeListResponse`.
fn dispute_list_item(dispute: &Value) -> Value {
    let mut item = project(
        dispute,
        &[
            "dispute_id",
            "payment_id",
            "business_id",
            "amount",
            "currency",
            "created_at",
            "dispute_stage",
            "dispute_status",
        ],
    );
    item.insert("payment_provider".into(), json!("dodo"));
    Value::Object(item)
}

/// A subscription as `GET /subscriptions` lists it: Dodo's `SubscriptionListResponse`
/// (no `brand_id`, addons, meters or credit carts; `discounts` always present).
fn subscription_list_item(subscription: &Value) -> Value {
    let mut item = project(
        subscription,
        &[
            "subscription_id",
            "status",
            "product_id",
            "quantity",
            "customer",
            "metadata",
            "billing",
            "created_at",
            "previous_billing_date",
            "next_billing_date",
            "cancel_at_next_billing_date",
            "cancelled_at",
            "currency",
            "recurring_pre_tax_amount",
            "tax_inclusive",
            "payment_frequency_count",
            "payment_frequency_interval",
            "subscription_period_count",
            "subscription_period_interval",
            "trial_period_days",
            "on_demand",
            "has_payment_method",
        ],
    );
    item.insert("discounts".into(), json!([]));
    Value::Object(item)
}

type ClaimQuery =
    Result<axum::extract::Query<ClaimListQuery>, axum::extract::rejection::QueryRejection>;

/// One list route: the key and faults, the query, then the page.
async fn list_route(
    sim: &DodoSimulator,
    headers: &HeaderMap,
    query: ClaimQuery,
    listed: Listed,
    call: &str,
) -> Response {
    if let Err(answer) = sim.gate(headers, call.to_owned()).await {
        return answer;
    }
    let Ok(axum::extract::Query(query)) = query else {
        return dodo_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "INVALID_QUERY",
            "bad query",
        );
    };
    list_page(sim, listed, &query)
}

async fn list_payments(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    query: ClaimQuery,
) -> Response {
    list_route(&sim, &headers, query, Listed::Payments, "GET /payments").await
}

async fn list_refunds(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    query: ClaimQuery,
) -> Response {
    list_route(&sim, &headers, query, Listed::Refunds, "GET /refunds").await
}

async fn list_disputes(
    State(sim): State<DodoSimulator>,
    headers: HeaderMap,
    query: ClaimQuery,
) -> Response {
    list_route(&sim, &headers, query, Listed::Disputes, "GET /disputes").await
}
