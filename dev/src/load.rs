//! `cargo run -p dev -- load --users N --seconds S [--rate R] [--instances K]
//! [--max-instances M] [--bin-dir DIR]`: the Lambda binaries under load, then checked.
//!
//! What runs: each function's built binary (release unless `--bin-dir` or
//! `PAYWALL_BIN_DIR` says otherwise) as several processes polling one local Runtime API
//! ([`FunctionPool`]: `K` instances each to start with, one more whenever all are busy, up
//! to `M`, each such start counted as a cold start), against the embedded DynamoDB engine
//! behind the IAM gate (every call held to the calling function's role in template.yaml)
//! with the table's stream on; the stream is read as Lambda's event source mapping reads
//! it (batches of up to 100, retried from the first failed record) and fed to the
//! `access-events` function, which publishes to the local EventBridge. Dodo is the
//! simulator, over real HTTP: the create-checkout and success functions call it, and it
//! delivers signed webhooks to a local Function URL that invokes the webhook function;
//! a tenth of successful deliveries is sent twice (its `duplicate_webhooks` fault), as
//! Dodo may.
//!
//! N virtual users, each a closed loop (the next request when the last is answered,
//! unless `--rate` caps all users together at R requests a second), over a mix:
//! entitlement reads most often (`GET /payment/entitlements`, `GET /payment/status`);
//! metered calls (`POST /server/usage`) with a new idempotency key, a key used before
//! (sent again), or a new key sent twice at once, on N/8 metered users (at least 2)
//! shared by all virtual users, so that counters are contended and reach the free
//! plan's allowance (100) within a run; and purchases: a checkout, the payment on the
//! simulator's hosted page (one card in ten declined), its webhooks, and the frontend's
//! `/payment/success` confirmation (sometimes twice at once, a double click).
//!
//! Afterwards, through the administrator's client on the same table, it checks:
//! - usage counted once: every answer to one key is the same; per user, the amounts of
//!   the keys answered `allowed` add up to the stored counter; no two allowed answers
//!   saw the same counter (their `remaining` differ);
//! - nothing beyond a limit: every counter is at most its allowance;
//! - no payment granted twice (nor lost): each succeeded payment has at most one grant,
//!   to its buyer, a declined one none, one that was acknowledged (a webhook answered
//!   2xx, a confirmation answered 200) has one; a user's grants extend one another by
//!   exactly one pass each, and the user's access ends where the last one does;
//! - access events, none missing or duplicated: every event stored with its change is on
//!   the bus exactly once, nothing else is, and each user has one per grant (metered
//!   users, whose access never changes, none).
//!
//! Metered users never buy: their plan (`free`) and hence their counter's period stay the
//! same for the whole run, so the counter can be compared with the answers exactly.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paywall::ids::UserId;
use paywall::store::Store;
use paywall::webhook_signature::WebhookSecret;
use serde_json::{Value, json};

use crate::dodo_simulator::faults::{Faults, Rng};
use crate::dodo_simulator::{DodoSimulator, RunningSimulator, WebhookTarget};
use crate::fixtures::{api_gateway_event, function_url_event, server_event};
use crate::function_pool::FunctionPool;
use crate::lambda_harness::binary_dir;
use crate::local_dynamodb::{LocalDynamo, create_table_from_template, template_path};
use crate::local_stream::{LocalEventBus, LocalStream};

pub mod checks;
pub use checks::{
    Check, GrantFacts, KeyAnswers, PaymentFacts, event_checks, grant_checks, usage_checks,
};

pub const USAGE: &str = "usage: cargo run -p dev -- load [--users N] [--seconds S] [--rate R] \
[--instances K] [--max-instances M] [--bin-dir DIR]
  --users N          concurrent virtual users (default 50)
  --seconds S        how long they run (default 30)
  --rate R           at most R requests a second, all users together (default: no cap,
                     each user sends its next request when the last is answered)
  --instances K      instances of each function started before the run (default 2)
  --max-instances M  at most M instances of each function (default 16)
  --bin-dir DIR      where the built functions are (default: PAYWALL_BIN_DIR, else
                     target/release; build them with `cargo build --release --bins`)";

/// The routes as the report names them.
pub const ENTITLEMENTS: &str = "GET /payment/entitlements";
pub const STATUS: &str = "GET /payment/status";
pub const USAGE_NEW_KEY: &str = "POST /server/usage (new key)";
pub const USAGE_REPEATED_KEY: &str = "POST /server/usage (repeated key)";
pub const CHECKOUT: &str = "POST /payment/create-checkout-session";
pub const SUCCESS: &str = "POST /payment/success";
pub const WEBHOOK: &str = "webhook (Function URL, from Dodo)";
pub const ACCESS_EVENTS: &str = "access-events (stream batch)";
/// Not a Lambda: the buyer's form POST on the simulator's hosted page, which answers
/// after its webhooks' first attempts.
pub const PAY: &str = "Dodo's checkout page (simulator)";
/// Every route a Lambda function answers, in the report's order.
pub const LAMBDA_ROUTES: [&str; 8] = [
    ENTITLEMENTS,
    STATUS,
    USAGE_NEW_KEY,
    USAGE_REPEATED_KEY,
    CHECKOUT,
    SUCCESS,
    WEBHOOK,
    ACCESS_EVENTS,
];

const TABLE: &str = "paywall-load";
const DODO_API_KEY: &str = "sk_load";
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PRODUCT: &str = "pdt_load_pass";
const PASS_PLAN: &str = "monthly";
const PASS_DAYS: i64 = 30;
const LIMIT: &str = "api_calls";
/// The free plan's allowance: small, so that counters reach it during a run.
const FREE_ALLOWANCE: u64 = 100;
/// The Lambda event source mapping's `BatchSize` in template.yaml.
const STREAM_BATCH: usize = 100;

/// The catalogue the functions run with (`PLANS`): metered users are on `free`, buyers
/// buy the `monthly` pass.
fn plans() -> String {
    json!({
        "free": {"features": ["basic"], "limits": {LIMIT: FREE_ALLOWANCE}},
        PASS_PLAN: {"product_id": PRODUCT, "kind": "pass", "days": PASS_DAYS, "price": "$19",
                    "features": ["basic", "export"], "limits": {LIMIT: 1000}}
    })
    .to_string()
}

#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub users: usize,
    pub seconds: u64,
    pub rate: Option<f64>,
    pub instances: usize,
    pub max_instances: usize,
    pub bin_dir: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            users: 50,
            seconds: 30,
            rate: None,
            instances: 2,
            max_instances: 16,
            bin_dir: binary_dir("release"),
        }
    }
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Self::default();
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let whole = |what: &str, min: u64, max: u64| {
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| format!("{what} must be a whole number from {min} to {max}"))
            };
            match flag.as_str() {
                "--users" => options.users = whole("--users", 1, 10_000)? as usize,
                "--seconds" => options.seconds = whole("--seconds", 1, 3600)?,
                "--rate" => {
                    options.rate = Some(
                        value
                            .parse::<f64>()
                            .ok()
                            .filter(|r| r.is_finite() && *r > 0.0)
                            .ok_or("--rate must be a number of requests a second above 0")?,
                    )
                }
                "--instances" => options.instances = whole("--instances", 1, 64)? as usize,
                "--max-instances" => {
                    options.max_instances = whole("--max-instances", 1, 256)? as usize
                }
                "--bin-dir" => options.bin_dir = PathBuf::from(value),
                other => return Err(format!("unknown option {other}")),
            }
        }
        options.max_instances = options.max_instances.max(options.instances);
        Ok(options)
    }
}

/// The `p`th quantile (0..=1) of sorted samples, by the nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// How an answer counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Ok,
    /// A refusal that is the documented answer under load, to be retried: `503` (the
    /// store contended, or the Dodo budget spent), `429` (one user's Dodo calls), `409
    /// checkout_in_progress` (a concurrent checkout of the same user).
    Refused,
    /// Anything else: an error status, a timeout, no answer.
    Failed,
}

fn kind_of(status: u16, code: &str) -> Kind {
    match (status, code) {
        (200..=299, _) => Kind::Ok,
        (503 | 429, _) | (409, "checkout_in_progress") => Kind::Refused,
        _ => Kind::Failed,
    }
}

#[derive(Default)]
struct RouteSamples {
    latencies: Vec<Duration>,
    /// `"200"`, `"503 store_unavailable"`, `"no answer: …"` -> count, and its kind.
    outcomes: BTreeMap<String, (Kind, u64)>,
}

/// Every request's route, outcome and latency.
#[derive(Default)]
pub struct Recorder {
    routes: Mutex<HashMap<&'static str, RouteSamples>>,
}

impl Recorder {
    fn record(&self, route: &'static str, outcome: String, kind: Kind, took: Duration) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let samples = routes.entry(route).or_default();
        samples.latencies.push(took);
        samples.outcomes.entry(outcome).or_insert((kind, 0)).1 += 1;
    }
}

/// Spaces requests `1/rate` apart, all users together.
struct Pacer {
    interval: Duration,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Pacer {
    async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = tokio::time::Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// A payment made on the simulator's page, as the buyer saw it.
#[derive(Clone, Debug)]
struct Purchase {
    user: String,
    /// A `/payment/success` confirmation of it was answered 2xx.
    confirmed: bool,
}

struct Pools {
    status: Arc<FunctionPool>,
    server: Arc<FunctionPool>,
    checkout: Arc<FunctionPool>,
    success: Arc<FunctionPool>,
    webhook: Arc<FunctionPool>,
    access_events: Arc<FunctionPool>,
}

impl Pools {
    fn all(&self) -> [&Arc<FunctionPool>; 6] {
        [
            &self.status,
            &self.server,
            &self.checkout,
            &self.success,
            &self.webhook,
            &self.access_events,
        ]
    }
}

/// What the virtual users share.
struct Load {
    pools: Pools,
    recorder: Arc<Recorder>,
    pacer: Option<Pacer>,
    /// The buyer's browser: redirects are read, not followed.
    browser: reqwest::Client,
    keys: Mutex<BTreeMap<String, KeyAnswers>>,
    purchases: Mutex<BTreeMap<String, Purchase>>,
    metered_users: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// `(statusCode, parsed body)` of an API Gateway / Function URL answer.
fn http_answer(response: &Value) -> (u16, Value) {
    let status = response["statusCode"].as_u64().unwrap_or_default() as u16;
    let body = response["body"]
        .as_str()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

impl Load {
    /// Invokes `pool` with `event` (paced when a rate is set), records it under `route`,
    /// and returns the HTTP status and body (`None`: no answer).
    async fn call(
        &self,
        route: &'static str,
        pool: &FunctionPool,
        event: Value,
    ) -> Option<(u16, Value)> {
        if let Some(pacer) = &self.pacer {
            pacer.wait().await;
        }
        let started = Instant::now();
        let answer = pool.invoke(event).await;
        let took = started.elapsed();
        match answer {
            Ok(response) => {
                let (status, body) = http_answer(&response);
                let code = body["error"]["code"].as_str().unwrap_or_default();
                let outcome = outcome_label(status, code);
                self.recorder
                    .record(route, outcome, kind_of(status, code), took);
                Some((status, body))
            }
            Err(error) => {
                self.recorder
                    .record(route, format!("no answer: {error}"), Kind::Failed, took);
                None
            }
        }
    }

    async fn read(&self, route: &'static str, user: &str) {
        let path = if route == STATUS {
            "/payment/status"
        } else {
            "/payment/entitlements"
        };
        let email = format!("{user}@example.com");
        let event = api_gateway_event("GET", path, Some((user, Some(&email))), None);
        self.call(route, &self.pools.status, event).await;
    }

    /// One metered call; a `503` is retried with the same key a few times, as the
    /// founder's backend would (what is still unanswered is settled after the run).
    async fn usage(&self, route: &'static str, user: &str, key: &str, amount: u64) {
        lock(&self.keys)
            .entry(key.to_owned())
            .or_insert_with(|| KeyAnswers {
                user: user.to_owned(),
                amount,
                answers: Vec::new(),
            });
        let body = json!({"user_id": user, "feature": LIMIT, "amount": amount,
                          "idempotency_key": key})
        .to_string();
        for attempt in 0..3u64 {
            let event = server_event(
                "POST",
                "/server/usage",
                Some("arn:aws:iam::123456789012:user/backend"),
                Some(&body),
            );
            match self.call(route, &self.pools.server, event).await {
                Some((200, answer)) => {
                    self.note_usage_answer(key, &answer);
                    return;
                }
                Some((503, _)) => {
                    tokio::time::sleep(Duration::from_millis(20 * (attempt + 1))).await
                }
                _ => return,
            }
        }
    }

    fn note_usage_answer(&self, key: &str, answer: &Value) {
        let allowed = answer["allowed"].as_bool().unwrap_or(false);
        let remaining = answer["remaining"].as_u64().unwrap_or(u64::MAX);
        if let Some(record) = lock(&self.keys).get_mut(key) {
            record.answers.push((allowed, remaining));
        }
    }

    /// A checkout, the payment on Dodo's page (its webhooks arrive meanwhile), and the
    /// frontend's confirmation.
    async fn purchase(&self, user: &str, rng: &mut Rng) {
        let email = format!("{user}@example.com");
        let claims = Some((user, Some(email.as_str())));
        let body = json!({"plan": PASS_PLAN}).to_string();
        let event = api_gateway_event(
            "POST",
            "/payment/create-checkout-session",
            claims,
            Some(&body),
        );
        let Some((200, session)) = self.call(CHECKOUT, &self.pools.checkout, event).await else {
            return;
        };
        let Some(url) = session["checkout_url"].as_str() else {
            return;
        };
        let outcome = if rng.chance(0.1) {
            "failed"
        } else {
            "succeeded"
        };
        let started = Instant::now();
        let paid = self
            .browser
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("outcome={outcome}"))
            .send()
            .await;
        let took = started.elapsed();
        let location = match paid {
            Ok(answer) => {
                let status = answer.status().as_u16();
                let kind = if status == 303 {
                    Kind::Ok
                } else {
                    Kind::Failed
                };
                self.recorder.record(PAY, status.to_string(), kind, took);
                answer
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            }
            Err(error) => {
                self.recorder
                    .record(PAY, format!("no answer: {error}"), Kind::Failed, took);
                return;
            }
        };
        let Some(payment_id) = location
            .split(['?', '&'])
            .find_map(|pair| pair.strip_prefix("payment_id="))
            .map(str::to_owned)
        else {
            return;
        };
        lock(&self.purchases).insert(
            payment_id.clone(),
            Purchase {
                user: user.to_owned(),
                confirmed: false,
            },
        );
        if outcome != "succeeded" {
            return;
        }
        let body = json!({"payment_id": payment_id}).to_string();
        let confirm = || {
            self.call(
                SUCCESS,
                &self.pools.success,
                api_gateway_event("POST", "/payment/success", claims, Some(&body)),
            )
        };
        // A double click now and then: two confirmations at once.
        let answers = if rng.chance(0.1) {
            let (a, b) = tokio::join!(confirm(), confirm());
            vec![a, b]
        } else {
            vec![confirm().await]
        };
        if answers
            .iter()
            .any(|a| a.as_ref().is_some_and(|(status, _)| *status == 200))
            && let Some(purchase) = lock(&self.purchases).get_mut(&payment_id)
        {
            purchase.confirmed = true;
        }
    }

    /// One virtual user until `until`.
    async fn user(self: Arc<Self>, index: usize, until: Instant) {
        let mut rng = Rng::seeded(0x10ad_0000 + index as u64);
        // Each buyer buys at most twice (the second pass extends the first), so that no
        // one meets the limit of ten Dodo-calling requests a minute per user.
        let mut purchases = 0usize;
        let buyer = |n: usize| format!("load-buyer-{index}-{}", n / 2);
        let mut my_keys: Vec<(String, String, u64)> = Vec::new();
        let mut next_key = 0usize;
        while Instant::now() < until {
            let roll = rng.below(100);
            let metered = format!("load-metered-{}", rng.below(self.metered_users));
            match roll {
                0..45 => {
                    let who = buyer(rng.below(purchases as u64 + 1) as usize);
                    self.read(ENTITLEMENTS, &who).await
                }
                45..65 => {
                    let who = buyer(rng.below(purchases as u64 + 1) as usize);
                    self.read(STATUS, &who).await
                }
                65..80 => {
                    next_key += 1;
                    let key = format!("u{index}-k{next_key}");
                    let amount = 1 + rng.below(3);
                    self.usage(USAGE_NEW_KEY, &metered, &key, amount).await;
                    my_keys.push((metered, key, amount));
                }
                80..88 if !my_keys.is_empty() => {
                    let (user, key, amount) =
                        my_keys[rng.below(my_keys.len() as u64) as usize].clone();
                    self.usage(USAGE_REPEATED_KEY, &user, &key, amount).await;
                }
                80..93 => {
                    // The same new key twice at once (a retry racing its original).
                    next_key += 1;
                    let key = format!("u{index}-k{next_key}");
                    let amount = 1 + rng.below(3);
                    tokio::join!(
                        self.usage(USAGE_NEW_KEY, &metered, &key, amount),
                        self.usage(USAGE_REPEATED_KEY, &metered, &key, amount)
                    );
                    my_keys.push((metered, key, amount));
                }
                _ => {
                    self.purchase(&buyer(purchases), &mut rng).await;
                    purchases += 1;
                }
            }
        }
    }
}

/// The Function URL of the webhook function, where the simulator delivers.
async fn function_url(
    axum::extract::State((pool, recorder)): axum::extract::State<(
        Arc<FunctionPool>,
        Arc<Recorder>,
    )>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let passed: Vec<(&str, String)> = [
        "content-type",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    ]
    .into_iter()
    .filter_map(|name| {
        let value = headers.get(name)?.to_str().ok()?;
        Some((name, value.to_owned()))
    })
    .collect();
    let event = function_url_event(&body, &passed, false);
    let started = Instant::now();
    let answer = pool.invoke(event).await;
    let took = started.elapsed();
    match answer {
        Ok(response) => {
            let (status, body) = http_answer(&response);
            let code = body["error"]["code"].as_str().unwrap_or_default();
            let outcome = outcome_label(status, code);
            recorder.record(WEBHOOK, outcome, kind_of(status, code), took);
            let status = axum::http::StatusCode::from_u16(status)
                .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
            (
                status,
                [("content-type", "application/json")],
                response["body"].as_str().unwrap_or_default().to_owned(),
            )
                .into_response()
        }
        Err(error) => {
            recorder.record(WEBHOOK, format!("no answer: {error}"), Kind::Failed, took);
            axum::http::StatusCode::BAD_GATEWAY.into_response()
        }
    }
}

/// Reads what the stream holds since the last read and hands it to the `access-events`
/// function in batches of up to 100, each retried from its first failed record, as
/// Lambda's event source mapping does with `ReportBatchItemFailures`. Returns the
/// records read and the retries made.
async fn feed_stream(
    stream: &mut LocalStream,
    pool: &FunctionPool,
    recorder: &Recorder,
) -> Result<(usize, usize), String> {
    let batch = stream.next_batch().await.map_err(|e| e.to_string())?;
    let records = batch["Records"].as_array().cloned().unwrap_or_default();
    let mut retries = 0;
    for chunk in records.chunks(STREAM_BATCH) {
        let mut pending = chunk.to_vec();
        for _ in 0..10 {
            let started = Instant::now();
            let answer = pool.invoke(json!({ "Records": pending })).await;
            let took = started.elapsed();
            let failed = match answer {
                Ok(answer) => match answer["batchItemFailures"][0]["itemIdentifier"].as_str() {
                    None => {
                        recorder.record(ACCESS_EVENTS, "ok".into(), Kind::Ok, took);
                        break;
                    }
                    Some(first) => {
                        recorder.record(
                            ACCESS_EVENTS,
                            "batch item failure (retried)".into(),
                            Kind::Refused,
                            took,
                        );
                        Some(first.to_owned())
                    }
                },
                Err(error) => {
                    recorder.record(
                        ACCESS_EVENTS,
                        format!("no answer: {error}"),
                        Kind::Failed,
                        took,
                    );
                    None
                }
            };
            retries += 1;
            // Lambda retries from the first failed record (the whole batch if it failed).
            if let Some(first) = failed {
                pending.retain({
                    let mut reached = false;
                    move |record| {
                        reached |= record["dynamodb"]["SequenceNumber"] == first.as_str();
                        reached
                    }
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok((records.len(), retries))
}

/// One route's figures.
#[derive(Clone, Debug)]
pub struct RouteLine {
    pub route: &'static str,
    pub requests: u64,
    pub ok: u64,
    pub refused: u64,
    pub failed: u64,
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
    /// Outcomes other than 2xx, with their counts.
    pub errors: Vec<(String, Kind, u64)>,
}

/// One function's instances.
#[derive(Clone, Debug)]
pub struct Instances {
    pub function: String,
    pub at_end: usize,
    pub cold_starts: usize,
    /// Exit statuses of instances that stopped (crashed) during the run.
    pub exited: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub options: Options,
    pub machine: String,
    /// `/proc/loadavg`'s three figures when the run ended (other work on the machine).
    pub load_average_after: String,
    pub elapsed: Duration,
    pub routes: Vec<RouteLine>,
    pub instances: Vec<Instances>,
    pub stream_retries: usize,
    pub checks: Vec<Check>,
    /// Notes that are not violations (payments left for the hourly reconcile...).
    pub notes: Vec<String>,
}

impl Report {
    pub fn violations(&self) -> usize {
        self.checks.iter().map(|c| c.violations.len()).sum()
    }

    pub fn requests(&self, route: &str) -> u64 {
        self.routes
            .iter()
            .find(|line| line.route == route)
            .map_or(0, |line| line.requests)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "Load test: {} users for {:.1} s{}, {} to {} instances per function, binaries from {}",
            o.users,
            self.elapsed.as_secs_f64(),
            o.rate
                .map(|r| format!(", capped at {r} requests/s"))
                .unwrap_or_else(|| ", closed loop (no rate cap)".into()),
            o.instances,
            o.max_instances,
            o.bin_dir.display()
        )?;
        writeln!(
            f,
            "Machine: {}; after it {}",
            self.machine, self.load_average_after
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "| route | requests | per s | p50 ms | p99 ms | p99.9 ms | max ms | 2xx | refused (retry) | failed |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|---|---|---|---|")?;
        let lambda: Vec<&RouteLine> = self
            .routes
            .iter()
            .filter(|l| LAMBDA_ROUTES.contains(&l.route))
            .collect();
        for line in self.routes.iter() {
            writeln!(
                f,
                "| {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
                line.route,
                line.requests,
                line.per_second,
                ms(line.p50),
                ms(line.p99),
                ms(line.p999),
                ms(line.max),
                line.ok,
                line.refused,
                line.failed
            )?;
        }
        let total: u64 = lambda.iter().map(|l| l.requests).sum();
        let failed: u64 = lambda.iter().map(|l| l.failed).sum();
        let refused: u64 = lambda.iter().map(|l| l.refused).sum();
        writeln!(
            f,
            "\nLambda invocations: {total} in {:.1} s = {:.1} requests/s ({refused} refused under load, to be retried; {failed} failed).",
            self.elapsed.as_secs_f64(),
            total as f64 / self.elapsed.as_secs_f64().max(0.001)
        )?;
        let errors: Vec<String> = self
            .routes
            .iter()
            .flat_map(|line| {
                line.errors.iter().map(move |(outcome, kind, count)| {
                    let kind = match kind {
                        Kind::Refused => "refused",
                        _ => "FAILED",
                    };
                    format!("  {}: {outcome} × {count} ({kind})", line.route)
                })
            })
            .collect();
        if errors.is_empty() {
            writeln!(f, "Errors: none.")?;
        } else {
            writeln!(f, "Errors by route and status:")?;
            for line in errors {
                writeln!(f, "{line}")?;
            }
        }
        let instances: Vec<String> = self
            .instances
            .iter()
            .map(|i| {
                format!(
                    "{} {} (+{} cold){}",
                    i.function,
                    i.at_end,
                    i.cold_starts,
                    if i.exited.is_empty() {
                        String::new()
                    } else {
                        format!(", {} EXITED: {}", i.exited.len(), i.exited.join("; "))
                    }
                )
            })
            .collect();
        writeln!(
            f,
            "Instances at the end (cold starts during the run): {}.",
            instances.join(", ")
        )?;
        writeln!(
            f,
            "Stream batches retried after a reported failure: {}.",
            self.stream_retries
        )?;
        writeln!(f, "\nInvariants:")?;
        for check in &self.checks {
            if check.violations.is_empty() {
                writeln!(f, "  ok    {} ({} checked)", check.name, check.checked)?;
            } else {
                writeln!(
                    f,
                    "  FAIL  {} ({} checked, {} violations)",
                    check.name,
                    check.checked,
                    check.violations.len()
                )?;
                for violation in check.violations.iter().take(20) {
                    writeln!(f, "        {violation}")?;
                }
            }
        }
        for note in &self.notes {
            writeln!(f, "Note: {note}")?;
        }
        if self.violations() == 0 {
            writeln!(f, "\nNo invariant violated.")
        } else {
            writeln!(f, "\n{} invariant violations.", self.violations())
        }
    }
}

/// What the numbers were measured on, and how busy it was before the run.
pub fn machine() -> String {
    format!(
        "{}; load average before the run {}",
        crate::route_costs::machine(),
        load_average()
    )
}

/// How an answer is counted in the report: its status, and the API's error code if any.
fn outcome_label(status: u16, code: &str) -> String {
    if code.is_empty() {
        status.to_string()
    } else {
        format!("{status} {code}")
    }
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub async fn run(options: Options) -> Result<Report, String> {
    let machine = machine();
    let dynamo = LocalDynamo::in_memory()
        .await
        .map_err(|e| format!("dynoxide: {e}"))?;
    let admin = dynamo.client();
    create_table_from_template(&admin, &template_path(), TABLE)
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = LocalStream::open(dynamo.endpoint(), TABLE)
        .await
        .map_err(|e| e.to_string())?;
    let store = Store::new(admin, TABLE);
    let dodo: RunningSimulator = DodoSimulator::start(Some(DODO_API_KEY.into()))
        .await
        .map_err(|e| format!("Dodo simulator: {e}"))?;
    dodo.simulator.set_faults(Faults {
        duplicate_webhooks: 0.1,
        ..Faults::default()
    });
    let bus = LocalEventBus::default();
    let bus_url = bus.start().await.map_err(|e| format!("EventBridge: {e}"))?;
    let config: Vec<(&'static str, String)> = vec![
        ("TABLE_NAME", TABLE.into()),
        ("AWS_ENDPOINT_URL_DYNAMODB", dynamo.endpoint().into()),
        ("DODO_PAYMENTS_API_KEY", DODO_API_KEY.into()),
        ("DODO_PAYMENTS_BASE_URL", dodo.url.clone()),
        ("DODO_PAYMENTS_WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
        ("DODO_PRODUCT_ID", PRODUCT.into()),
        ("DODO_SUCCESS_URL", "https://app.example.com/back".into()),
        ("AWS_ENDPOINT_URL_EVENTBRIDGE", bus_url),
        ("PLANS", plans()),
        // The shared Dodo budget (default 50 a minute, all users together) would answer
        // most checkouts `503 busy` within seconds: the load test measures the functions.
        ("DODO_USER_CALLS_PER_MINUTE", "10000".into()),
    ];
    let pool = |name: &str| {
        let binary = options.bin_dir.join(name);
        let config = config.clone();
        let (initial, max) = (options.instances, options.max_instances);
        async move {
            if !binary.exists() {
                return Err(format!(
                    "{} is missing: build the functions first (`cargo build --release --bins`) or name their folder with --bin-dir",
                    binary.display()
                ));
            }
            FunctionPool::start(&binary, &config, initial, max)
                .await
                .map(Arc::new)
        }
    };
    let pools = Pools {
        status: pool("status").await?,
        server: pool("server").await?,
        checkout: pool("create-checkout").await?,
        success: pool("success").await?,
        webhook: pool("webhook").await?,
        access_events: pool("access-events").await?,
    };
    let recorder = Arc::new(Recorder::default());

    // The webhook's Function URL, where the simulator delivers (its retries compressed
    // 600 times: Dodo's +5 s, +5 min, +30 min become 8 ms, 0.5 s, 3 s).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let webhook_url = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let app = axum::Router::new()
        .fallback(function_url)
        .with_state((Arc::clone(&pools.webhook), Arc::clone(&recorder)));
    let (stop_url, url_stopped) = tokio::sync::oneshot::channel::<()>();
    let url_served = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = url_stopped.await;
            })
            .await;
    });
    dodo.simulator.set_webhook(Some(WebhookTarget {
        url: webhook_url,
        secret: Arc::new(WebhookSecret::parse(WEBHOOK_SECRET).map_err(|e| e.to_string())?),
        time_compression: 600,
    }));

    let load = Arc::new(Load {
        pools,
        recorder: Arc::clone(&recorder),
        pacer: options.rate.map(|rate| Pacer {
            interval: Duration::from_secs_f64(1.0 / rate),
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }),
        browser: paywall::http::client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?,
        keys: Mutex::new(BTreeMap::new()),
        purchases: Mutex::new(BTreeMap::new()),
        // Few enough that counters are contended and reach their allowance within a run.
        metered_users: (options.users as u64 / 8).max(2),
    });

    // The stream, read every 100 ms while the users run (Lambda's batching window is
    // 1 s in the template; shorter here so that the run's end needs little draining).
    let stop_feeding = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = Arc::clone(&stop_feeding);
        let pool = Arc::clone(&load.pools.access_events);
        let recorder = Arc::clone(&recorder);
        tokio::spawn(async move {
            let mut retries = 0;
            let mut failure = None;
            while !stop.load(Ordering::SeqCst) {
                match feed_stream(&mut stream, &pool, &recorder).await {
                    Ok((_, r)) => retries += r,
                    Err(e) => failure = Some(e),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (stream, retries, failure)
        })
    };

    let started = Instant::now();
    let until = started + Duration::from_secs(options.seconds);
    let users: Vec<_> = (0..options.users)
        .map(|index| tokio::spawn(Arc::clone(&load).user(index, until)))
        .collect();
    for user in users {
        user.await
            .map_err(|e| format!("a virtual user panicked: {e}"))?;
    }
    let elapsed = started.elapsed();
    let load_average_after = load_average();

    // Dodo's retries of refused deliveries: wait until none has been made for a second.
    let mut deliveries = dodo.simulator.deliveries().len();
    let settle_until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < settle_until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = dodo.simulator.deliveries().len();
        if now == deliveries {
            break;
        }
        deliveries = now;
    }
    // Then the Function URL closes (its requests in flight answered first): a retry
    // Dodo would make later reaches nothing, so no change is written while the store is
    // being checked, and what it leaves ungranted is the hourly reconcile's.
    let _ = stop_url.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), url_served).await;
    // Keys never answered (503 three times): the backend's later retry learns their
    // answer (stored if the call had been counted, decided now otherwise).
    let unanswered: Vec<(String, KeyAnswers)> = lock(&load.keys)
        .iter()
        .filter(|(_, k)| k.answers.is_empty())
        .map(|(key, k)| (key.clone(), k.clone()))
        .collect();
    let mut settled = 0;
    for (key, record) in &unanswered {
        let body = json!({"user_id": record.user, "feature": LIMIT, "amount": record.amount,
                          "idempotency_key": key})
        .to_string();
        for _ in 0..10 {
            let event = server_event(
                "POST",
                "/server/usage",
                Some("arn:aws:iam::123456789012:user/backend"),
                Some(&body),
            );
            if let Ok(answer) = load.pools.server.invoke(event).await
                && let (200, answer) = http_answer(&answer)
            {
                load.note_usage_answer(key, &answer);
                settled += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The stream's last records: read until a pass finds none.
    stop_feeding.store(true, Ordering::SeqCst);
    let (mut stream, mut stream_retries, stream_failure) = feeder
        .await
        .map_err(|e| format!("the stream reader panicked: {e}"))?;
    if let Some(failure) = stream_failure {
        return Err(format!("reading the table's stream failed: {failure}"));
    }
    for _ in 0..50 {
        let (read, retries) =
            feed_stream(&mut stream, &load.pools.access_events, &recorder).await?;
        stream_retries += retries;
        if read == 0 {
            break;
        }
    }

    // The figures.
    let mut routes = Vec::new();
    {
        let mut samples = lock(&recorder.routes);
        for route in LAMBDA_ROUTES.iter().chain([&PAY]) {
            let Some(samples) = samples.get_mut(route) else {
                continue;
            };
            samples.latencies.sort();
            let count = |k: Kind| {
                samples
                    .outcomes
                    .values()
                    .filter(|(kind, _)| *kind == k)
                    .map(|(_, n)| n)
                    .sum()
            };
            let requests = samples.latencies.len() as u64;
            routes.push(RouteLine {
                route,
                requests,
                ok: count(Kind::Ok),
                refused: count(Kind::Refused),
                failed: count(Kind::Failed),
                per_second: requests as f64 / elapsed.as_secs_f64().max(0.001),
                p50: percentile(&samples.latencies, 0.5),
                p99: percentile(&samples.latencies, 0.99),
                p999: percentile(&samples.latencies, 0.999),
                max: samples.latencies.last().copied().unwrap_or_default(),
                errors: samples
                    .outcomes
                    .iter()
                    .filter(|(_, (kind, _))| *kind != Kind::Ok)
                    .map(|(outcome, (kind, n))| (outcome.clone(), *kind, *n))
                    .collect(),
            });
        }
    }
    let instances = load
        .pools
        .all()
        .iter()
        .map(|pool| Instances {
            function: pool.name.clone(),
            at_end: pool.instances(),
            cold_starts: pool.cold_starts(),
            exited: pool.exited(),
        })
        .collect::<Vec<_>>();

    // The invariants.
    let mut checks = Vec::new();
    let mut notes = Vec::new();
    if settled > 0 {
        notes.push(format!(
            "{settled} usage keys answered only after the run (503 three times during it)"
        ));
    }
    let keys = lock(&load.keys).clone();
    let mut counters = BTreeMap::new();
    for user in keys
        .values()
        .map(|k| k.user.clone())
        .collect::<HashSet<_>>()
    {
        let id = UserId::parse(&user).map_err(|e| e.to_string())?;
        let account = store.get_account(&id).await.map_err(|e| e.to_string())?;
        counters.insert(
            user,
            account.usage.get(LIMIT).map_or(0, |counter| counter.used),
        );
    }
    checks.extend(usage_checks(&keys, &counters, FREE_ALLOWANCE));
    // That the limit was reached at all: refusals, and the users who met them.
    let first_answers = keys.values().filter_map(|k| Some((k, *k.answers.first()?)));
    let refused_users: HashSet<&str> = first_answers
        .clone()
        .filter(|(_, (allowed, _))| !allowed)
        .map(|(k, _)| k.user.as_str())
        .collect();
    notes.push(format!(
        "usage: {} keys allowed, {} refused by the limit; {} of {} metered users reached their allowance of {FREE_ALLOWANCE} (highest counter {})",
        first_answers.clone().filter(|(_, (allowed, _))| *allowed).count(),
        first_answers.filter(|(_, (allowed, _))| !allowed).count(),
        refused_users.len(),
        counters.len(),
        counters.values().max().copied().unwrap_or(0)
    ));

    let purchases = lock(&load.purchases).clone();
    let acknowledged: HashSet<String> = dodo
        .simulator
        .deliveries()
        .iter()
        .filter(|d| d.event_type == "payment.succeeded" && (200..300).contains(&d.status))
        .map(|d| d.object_id.clone())
        .collect();
    let mut payments = Vec::new();
    for payment in dodo.simulator.payments() {
        let Some(id) = payment["payment_id"].as_str() else {
            continue;
        };
        let Some(purchase) = purchases.get(id) else {
            continue;
        };
        let grant = store.payment_grant(id).await.map_err(|e| e.to_string())?;
        payments.push(PaymentFacts {
            payment_id: id.to_owned(),
            buyer: purchase.user.clone(),
            succeeded: payment["status"] == "succeeded",
            acknowledged: purchase.confirmed || acknowledged.contains(id),
            grant: grant.map(|g| GrantFacts {
                owner: g.user_id.as_str().to_owned(),
                granted_until: g.granted_until.unix_seconds(),
                revoked: g.revoked,
            }),
        });
    }
    let mut pass_ends = BTreeMap::new();
    for buyer in purchases
        .values()
        .map(|p| p.user.clone())
        .collect::<HashSet<_>>()
    {
        let id = UserId::parse(&buyer).map_err(|e| e.to_string())?;
        let end = store
            .get_user(&id)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|user| user.passes.get(PASS_PLAN).map(|t| t.unix_seconds()));
        pass_ends.insert(buyer, end);
    }
    let (grant_check, left) = grant_checks(&payments, &pass_ends);
    checks.push(grant_check);
    if left > 0 {
        notes.push(format!(
            "{left} succeeded payments neither acknowledged nor granted (every webhook attempt and confirmation refused under load): the hourly reconcile's to grant"
        ));
    }

    let stored: Vec<(String, String)> = store
        .all_access_events()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|event| (event.event_id, event.user.as_str().to_owned()))
        .collect();
    let published: Vec<(String, String)> = bus
        .entries()
        .iter()
        .filter_map(|entry| {
            let detail: Value = serde_json::from_str(entry["Detail"].as_str()?).ok()?;
            Some((
                detail["event_id"].as_str()?.to_owned(),
                detail["user_id"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let mut grants_per_user: BTreeMap<String, usize> = BTreeMap::new();
    for payment in &payments {
        if let Some(grant) = &payment.grant {
            *grants_per_user.entry(grant.owner.clone()).or_default() += 1;
        }
    }
    for user in keys.values() {
        grants_per_user.entry(user.user.clone()).or_default();
    }
    checks.push(event_checks(
        &stored,
        &published,
        &grants_per_user,
        stream_retries,
    ));
    let crashed: Vec<String> = instances
        .iter()
        .flat_map(|i| i.exited.iter().map(move |e| format!("{}: {e}", i.function)))
        .collect();
    checks.push(Check {
        name: "no function instance crashed",
        checked: instances.iter().map(|i| i.at_end).sum(),
        violations: crashed,
    });

    Ok(Report {
        options,
        machine,
        load_average_after,
        elapsed,
        routes,
        instances,
        stream_retries,
        checks,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_and_bad_ones_refused() {
        let args = |text: &str| {
            text.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let options = Options::parse(&args("--users 200 --seconds 5 --rate 300 --instances 3"))
            .expect("valid");
        assert_eq!(
            (
                options.users,
                options.seconds,
                options.rate,
                options.instances
            ),
            (200, 5, Some(300.0), 3)
        );
        assert_eq!(options.max_instances, 16);
        assert!(Options::parse(&args("--users 0")).is_err());
        assert!(Options::parse(&args("--rate -1")).is_err());
        assert!(Options::parse(&args("--users")).is_err());
        assert!(Options::parse(&args("--speed 3")).is_err());
    }

    #[test]
    fn percentiles_are_nearest_ranks() {
        let samples: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 0.5), Duration::from_millis(501));
        assert_eq!(percentile(&samples, 0.999), Duration::from_millis(999));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
