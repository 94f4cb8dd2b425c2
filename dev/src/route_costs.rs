//! What each request costs: for every route, webhook event type and scheduled run, the
//! AWS calls a function makes (DynamoDB by operation, with the read and write request
//! units DynamoDB on demand would bill; EventBridge; Secrets Manager), its Dodo calls, its
//! estimated billed duration at 128 MB, and the bytes it logs at the template's level.
//!
//! Each route is measured on the Lambda binaries as Lambda runs them (one process per
//! route, through the Runtime API emulator), against the metering front of the local
//! engine ([`LocalDynamo::in_memory_metered`]), the Dodo simulator, the local EventBridge
//! and Secrets Manager. The bench (`lambda-bench`) prints the table and writes
//! `dev/cost/measured.toml` (read by `cargo run -p dev -- cost`); the test
//! `dev/tests/route_costs.rs` holds the committed calls and units to what the code does.
//!
//! Calls and units are exact: every request of a route makes the same calls (this module
//! says so when one does not). Durations are estimates (see [`billed_ms`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::dodo_simulator::{DodoSimulator, RunningSimulator};
use crate::fixtures::{api_gateway_event, function_url_event, server_event};
use crate::lambda_harness::RunningFunction;
use crate::local_dynamodb::{
    LocalDynamo, UnitsFrom, create_table_from_template_without_stream, template_path,
};
use crate::local_secrets::LocalSecretsManager;
use crate::local_stream::LocalEventBus;
use paywall::time::Clock;
use paywall::webhook_signature::WebhookSecret;

/// The memory the figures are given for (the smallest Lambda size).
pub const MEMORY_MB: u32 = 128;
/// Lambda gives a function CPU in proportion to its memory: one vCPU at 1,769 MB.
pub const MB_PER_VCPU: f64 = 1769.0;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const API_KEY: &str = "sk_costs";
const PASS: &str = "pdt_costs_pass";
const SUBSCRIPTION: &str = "pdt_costs_subscription";
const TABLE: &str = "costs";

/// One thing a founder pays for per occurrence: `key` in `measured.toml`, the function
/// that serves it, and whether it comes through the HTTP API (the webhook is a function
/// URL; the stream and the schedule invoke their functions directly).
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub key: &'static str,
    pub function: &'static str,
    pub via_api_gateway: bool,
    /// What is measured, for the table.
    pub what: &'static str,
}

/// The Dodo call not counted in `dodo_calls`: reconcile's disputes list, made by one run
/// in six (see `Counters`).
const PERIODIC_DODO_CALL: &str = "GET /disputes";

/// In the order they are measured: each route's users are those an earlier route left
/// in the state it needs (a paid user reads entitlements, a buyer opens the portal, a
/// subscription is renewed after it was activated). The reconcile run comes first, on an
/// empty table: the hourly run when nothing is due.
pub const ROUTES: [Route; 16] = [
    Route {
        key: "reconcile_run",
        function: "reconcile",
        via_api_gateway: false,
        what: "hourly run, nothing due",
    },
    Route {
        key: "webhook_payment_succeeded",
        function: "webhook",
        via_api_gateway: false,
        what: "payment.succeeded for a pass: granted",
    },
    Route {
        key: "status",
        function: "status",
        via_api_gateway: true,
        what: "GET /payment/status, paid user",
    },
    Route {
        key: "entitlements",
        function: "status",
        via_api_gateway: true,
        what: "GET /payment/entitlements, paid user",
    },
    Route {
        key: "plans",
        function: "status",
        via_api_gateway: true,
        what: "GET /payment/plans",
    },
    Route {
        key: "usage",
        function: "server",
        via_api_gateway: true,
        what: "POST /server/usage, new idempotency key",
    },
    Route {
        key: "usage_replay",
        function: "server",
        via_api_gateway: true,
        what: "POST /server/usage, repeated key",
    },
    Route {
        key: "create_checkout",
        function: "create-checkout",
        via_api_gateway: true,
        what: "POST /payment/create-checkout-session",
    },
    Route {
        key: "portal",
        function: "portal",
        via_api_gateway: true,
        what: "POST /payment/portal, a buyer",
    },
    Route {
        key: "success",
        function: "success",
        via_api_gateway: true,
        what: "POST /payment/success, a buyer: granted",
    },
    Route {
        key: "webhook_subscription_active",
        function: "webhook",
        via_api_gateway: false,
        what: "subscription.active, new subscription",
    },
    Route {
        key: "webhook_subscription_renewed",
        function: "webhook",
        via_api_gateway: false,
        what: "subscription.renewed",
    },
    Route {
        key: "portal_trial",
        function: "portal",
        via_api_gateway: true,
        what: "POST /payment/trial, card-less trial started",
    },
    Route {
        key: "portal_cancel",
        function: "portal",
        via_api_gateway: true,
        what: "POST /payment/cancel, a subscriber",
    },
    Route {
        key: "portal_resume",
        function: "portal",
        via_api_gateway: true,
        what: "POST /payment/resume, after the cancel",
    },
    Route {
        key: "access_events_batch",
        function: "access-events",
        via_api_gateway: false,
        what: "stream batch of one access event",
    },
];

/// What one request of a route costs (the `[routes.<key>]` table of `measured.toml`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RouteCost {
    pub function: String,
    pub via_api_gateway: bool,
    /// DynamoDB round trips by operation.
    pub dynamodb_calls: BTreeMap<String, u32>,
    pub read_units: f64,
    pub write_units: f64,
    /// `engine` (every call's units from the engine's `ConsumedCapacity`) or `rules`
    /// (some computed by DynamoDB's rules: an answer that carries none).
    pub units_from: String,
    /// Other AWS calls by `service:Action`, per request.
    pub other_aws_calls: BTreeMap<String, u32>,
    /// AWS calls the function makes once per cold start when its secrets are in Secrets
    /// Manager (the stack's `secrets-manager` mode); none in the default mode.
    #[serde(default)]
    pub cold_start_aws_calls: BTreeMap<String, u32>,
    pub dodo_calls: u32,
    pub billed_ms: BilledMs,
    /// Medians of the measured invocations: time to the answer, and CPU time used.
    #[serde(default)]
    pub wall_ms: f64,
    #[serde(default)]
    pub cpu_ms: f64,
    pub log_bytes_per_1000: u64,
    #[serde(default)]
    pub log_lines_per_1000: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct BilledMs {
    pub arm64: u64,
    pub x86_64: u64,
}

/// The whole `measured.toml`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Measured {
    pub measured_on: String,
    pub machine: String,
    pub memory_mb: u32,
    pub routes: BTreeMap<String, RouteCost>,
}

/// One invocation, as measured.
#[derive(Clone, Debug, PartialEq)]
struct Calls {
    dynamodb: BTreeMap<String, u32>,
    read_units: f64,
    write_units: f64,
    from_rules: bool,
    other_aws: BTreeMap<String, u32>,
    dodo: u32,
}

/// Lambda's billed duration at `memory_mb`, estimated from a local invocation: the time
/// spent waiting (`wall - cpu`) is the same on Lambda, while the CPU work gets only
/// `memory_mb / 1769` of a vCPU and so takes `1769 / memory_mb` times as long; Lambda
/// bills per started millisecond. It assumes this machine's core is as fast as
/// Lambda's, and the same figure stands for arm64 and x86_64 (only x86_64 was measured).
pub fn billed_ms(wall: Duration, cpu: Duration, memory_mb: u32) -> u64 {
    let cpu = cpu.min(wall).as_secs_f64();
    let waiting = wall.as_secs_f64() - cpu;
    let stretched = cpu * (MB_PER_VCPU / f64::from(memory_mb)).max(1.0);
    ((waiting + stretched) * 1000.0).ceil() as u64
}

/// What the numbers were measured on.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cores} cores, {}", std::env::consts::ARCH)
}

/// Whether `response` is the answer expected (`expected`: the HTTP status, or 0 for an
/// answer that is not HTTP: a stream batch with no failures, a reconcile run with nothing
/// failed or left behind); `Err` says what went wrong.
pub fn check_answer(response: &Value, expected: u64) -> Result<(), String> {
    let status = response["statusCode"].as_u64().unwrap_or_default();
    let batch_failed = response["batchItemFailures"]
        .as_array()
        .is_some_and(|failures| !failures.is_empty());
    let run_failed = ["failed", "left_behind"]
        .iter()
        .any(|field| response[field].as_u64().is_some_and(|n| n > 0));
    if status != expected || batch_failed || run_failed {
        return Err(format!(
            "answered {status}: {}",
            if expected == 0 {
                response
            } else {
                &response["body"]
            }
        ));
    }
    Ok(())
}

/// The local stack the routes run against.
struct Stack {
    dynamo: LocalDynamo,
    dodo: RunningSimulator,
    bus: LocalEventBus,
    secrets: LocalSecretsManager,
    secret: WebhookSecret,
    config: Vec<(&'static str, String)>,
    secrets_url: String,
    clock: Clock,
}

impl Stack {
    async fn start() -> Result<Self, String> {
        let dynamo = LocalDynamo::in_memory_metered()
            .await
            .map_err(|e| e.to_string())?;
        // Without the stream, as the bench: DynamoDB's stream costs a write nothing.
        create_table_from_template_without_stream(&dynamo.client(), &template_path(), TABLE)
            .await
            .map_err(|e| e.to_string())?;
        dynamo.take_calls();
        let dodo = DodoSimulator::start(Some(API_KEY.into()))
            .await
            .map_err(|e| e.to_string())?;
        let bus = LocalEventBus::default();
        let bus_url = bus.start().await.map_err(|e| e.to_string())?;
        let secrets = LocalSecretsManager::default();
        secrets.put("dodo-paywall/api-key", API_KEY);
        secrets.put("dodo-paywall/webhook-secret", SECRET);
        let secrets_url = secrets.start().await.map_err(|e| e.to_string())?;
        // A pass, a subscription and a pass with a card-less trial: every route has a
        // plan to act on.
        let plans = json!({
            "free": {"features": ["basic"], "limits": {"api_calls": 100}},
            "monthly": {"product_id": PASS, "kind": "pass", "days": 30,
                        "features": ["basic", "export"], "limits": {"api_calls": 10000}},
            "pro": {"product_id": SUBSCRIPTION, "kind": "subscription",
                    "features": ["basic", "export"], "limits": {"api_calls": 100000}},
            "starter": {"product_id": "pdt_costs_starter", "kind": "pass", "days": 30,
                        "trial": {"days": 7, "card": false}, "features": ["basic"]},
        });
        let config = vec![
            ("TABLE_NAME", TABLE.to_owned()),
            ("AWS_ENDPOINT_URL_DYNAMODB", dynamo.endpoint().to_owned()),
            ("DODO_PAYMENTS_API_KEY", API_KEY.to_owned()),
            ("DODO_PAYMENTS_BASE_URL", dodo.url.clone()),
            ("DODO_PAYMENTS_WEBHOOK_SECRET", SECRET.to_owned()),
            ("DODO_PRODUCT_ID", PASS.to_owned()),
            (
                "DODO_SUCCESS_URL",
                "https://app.example.com/back".to_owned(),
            ),
            ("AWS_ENDPOINT_URL_EVENTBRIDGE", bus_url),
            ("PLANS", plans.to_string()),
            // The template's log level and format: what CloudWatch Logs ingests.
            ("AWS_LAMBDA_LOG_LEVEL", "INFO".to_owned()),
            // A few hundred Dodo-calling requests in seconds, all from this stack: the
            // shared budget (50 a minute by default) would answer most 503 busy.
            ("DODO_USER_CALLS_PER_MINUTE", "10000".to_owned()),
        ];
        Ok(Self {
            dynamo,
            dodo,
            bus,
            secrets,
            secret: WebhookSecret::parse(SECRET).map_err(|e| e.to_string())?,
            config,
            secrets_url,
            clock: Clock::system(),
        })
    }

    /// The configuration of the stack's `secrets-manager` mode: each secret read from
    /// Secrets Manager at cold start, not set.
    fn secrets_mode(&self) -> Vec<(&'static str, String)> {
        let mut config = self.config.clone();
        config.retain(|(name, _)| {
            !matches!(
                *name,
                "DODO_PAYMENTS_API_KEY" | "DODO_PAYMENTS_WEBHOOK_SECRET"
            )
        });
        config.extend([
            (
                "DODO_PAYMENTS_API_KEY_SECRET_ID",
                "dodo-paywall/api-key".to_owned(),
            ),
            (
                "DODO_PAYMENTS_WEBHOOK_SECRET_ID",
                "dodo-paywall/webhook-secret".to_owned(),
            ),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", self.secrets_url.clone()),
        ]);
        config
    }

    /// A signed webhook delivery of `event_type` carrying `data`, occurred at `at_ms`.
    fn webhook(&self, id: &str, event_type: &str, at_ms: i64, data: Value) -> Value {
        let occurred = paywall::time::Timestamp::from_unix_seconds(at_ms.div_euclid(1000))
            .to_rfc3339()
            .trim_end_matches('Z')
            .to_owned();
        let body = json!({
            "business_id": "bus_costs", "type": event_type,
            "timestamp": format!("{occurred}.{:03}Z", at_ms.rem_euclid(1000)),
            "data": data,
        })
        .to_string();
        let now = self.clock.now().unix_seconds();
        let headers = [
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", now.to_string()),
            (
                "webhook-signature",
                self.secret.sign(id, now, body.as_bytes()),
            ),
        ];
        function_url_event(body.as_bytes(), &headers, false)
    }

    /// A subscription to the `pro` plan as Dodo sends and stores it, renewed `renewals`
    /// times.
    fn subscription(&self, i: usize, renewals: i64, cancel: bool) -> Value {
        let now = self.clock.now().unix_seconds();
        let day = paywall::time::SECONDS_PER_DAY;
        let iso = |s: i64| paywall::time::Timestamp::from_unix_seconds(s).to_rfc3339();
        json!({
            "payload_type": "Subscription", "subscription_id": format!("sub_costs_{i:06}"),
            "status": "active", "product_id": SUBSCRIPTION, "quantity": 1,
            "next_billing_date": iso(now + (20 + 30 * renewals) * day),
            "previous_billing_date": iso(now - 10 * day), "past_due_ends_at": null,
            "cancel_at_next_billing_date": cancel,
            "metadata": {"user_id": format!("cost-subscriber-{i:06}"), "plan": "pro"},
            "customer": {"customer_id": format!("cus_costs_{i:06}"),
                         "email": format!("subscriber{i:06}@example.com")},
            "recurring_pre_tax_amount": 4900, "currency": "USD",
        })
    }

    /// The event for request `i` of `route` (setting up what it reads in the Dodo
    /// simulator), and the status it must answer (0: not HTTP).
    fn event(&self, route: &str, i: usize) -> (Value, u64) {
        // Ids of one width: item sizes, hence units, are the same for every request.
        let user = format!("cost-user-{i:06}");
        let email = format!("user{i:06}@example.com");
        let claims = Some((user.as_str(), Some(email.as_str())));
        let now_ms = self.clock.now_millis();
        match route {
            "reconcile_run" => (
                json!({"version": "0", "id": format!("costs-{i:06}"),
                       "detail-type": "Scheduled Event", "source": "aws.events",
                       "account": "123456789012", "time": self.clock.now().to_rfc3339(),
                       "region": "us-east-1", "resources": [], "detail": {}}),
                0,
            ),
            "webhook_payment_succeeded" => (
                self.webhook(
                    &format!("msg_costs_pay_{i:06}"),
                    "payment.succeeded",
                    now_ms,
                    json!({"payload_type": "Payment", "payment_id": format!("pay_costs_w{i:06}"),
                           "status": "succeeded", "metadata": {"user_id": user},
                           "product_cart": [{"product_id": PASS, "quantity": 1}]}),
                ),
                200,
            ),
            "status" => (
                api_gateway_event("GET", "/payment/status", claims, None),
                200,
            ),
            "entitlements" => (
                api_gateway_event("GET", "/payment/entitlements", claims, None),
                200,
            ),
            "plans" => (
                api_gateway_event("GET", "/payment/plans", claims, None),
                200,
            ),
            "usage" | "usage_replay" => {
                let body = json!({"user_id": user, "feature": "api_calls", "amount": 1,
                                  "idempotency_key": format!("costs-{i:06}")})
                .to_string();
                (
                    server_event(
                        "POST",
                        "/server/usage",
                        Some("arn:aws:iam::123456789012:user/backend"),
                        Some(&body),
                    ),
                    200,
                )
            }
            "create_checkout" | "portal" => {
                let buyer = format!("cost-buyer-{i:06}");
                let email = format!("buyer{i:06}@example.com");
                let claims = Some((buyer.as_str(), Some(email.as_str())));
                if route == "portal" {
                    (
                        api_gateway_event("POST", "/payment/portal", claims, None),
                        200,
                    )
                } else {
                    (
                        api_gateway_event(
                            "POST",
                            "/payment/create-checkout-session",
                            claims,
                            Some(r#"{"plan":"monthly"}"#),
                        ),
                        200,
                    )
                }
            }
            // The buyer whose checkout create-checkout opened comes back with its payment.
            "success" => {
                let payer = format!("cost-buyer-{i:06}");
                let email = format!("buyer{i:06}@example.com");
                let id = format!("pay_costs_s{i:06}");
                self.dodo.simulator.put_payment(json!({
                    "payment_id": id, "status": "succeeded",
                    "metadata": {"user_id": payer, "plan": "monthly"},
                    "product_cart": [{"product_id": PASS, "quantity": 1}],
                }));
                let body = json!({"payment_id": id}).to_string();
                (
                    api_gateway_event(
                        "POST",
                        "/payment/success",
                        Some((payer.as_str(), Some(email.as_str()))),
                        Some(&body),
                    ),
                    200,
                )
            }
            "webhook_subscription_active" => {
                let subscription = self.subscription(i, 0, false);
                self.dodo.simulator.put_subscription(subscription.clone());
                (
                    // In the past, as deliveries are: a change the portal stores from
                    // Dodo's answer (now) is newer than the event.
                    self.webhook(
                        &format!("msg_costs_active_{i:06}"),
                        "subscription.active",
                        now_ms - 2_000,
                        subscription,
                    ),
                    200,
                )
            }
            "webhook_subscription_renewed" => {
                let subscription = self.subscription(i, 1, false);
                self.dodo.simulator.put_subscription(subscription.clone());
                (
                    self.webhook(
                        &format!("msg_costs_renewed_{i:06}"),
                        "subscription.renewed",
                        // Later than its activation, before the portal's changes.
                        now_ms - 1_000,
                        subscription,
                    ),
                    200,
                )
            }
            "portal_trial" => {
                let trier = format!("cost-trier-{i:06}");
                let email = format!("trier{i:06}@example.com");
                (
                    api_gateway_event(
                        "POST",
                        "/payment/trial",
                        Some((trier.as_str(), Some(email.as_str()))),
                        Some(r#"{"plan":"starter"}"#),
                    ),
                    201,
                )
            }
            "portal_cancel" | "portal_resume" => {
                let subscriber = format!("cost-subscriber-{i:06}");
                let email = format!("subscriber{i:06}@example.com");
                let path = if route == "portal_cancel" {
                    "/payment/cancel"
                } else {
                    "/payment/resume"
                };
                (
                    api_gateway_event(
                        "POST",
                        path,
                        Some((subscriber.as_str(), Some(email.as_str()))),
                        None,
                    ),
                    200,
                )
            }
            "access_events_batch" => (
                json!({"Records": [{
                    "eventID": format!("e{i:06}"), "eventName": "INSERT",
                    "eventSource": "aws:dynamodb",
                    "dynamodb": {"SequenceNumber": format!("{i:06}"), "NewImage": {
                        "sk": {"S": format!("EVENT#0000000000000#evt_{i:06}")},
                        "detail": {"S": json!({"event_id": format!("evt_{i:06}"),
                                               "user_id": user}).to_string()}
                    }}
                }]}),
                0,
            ),
            other => (json!({"unknown route": other}), 0),
        }
    }

    /// Every call the stack saw since the last take, as one request's calls.
    fn take_calls(&self, before: &Counters) -> (Calls, Counters) {
        let mut calls = Calls {
            dynamodb: BTreeMap::new(),
            read_units: 0.0,
            write_units: 0.0,
            from_rules: false,
            other_aws: BTreeMap::new(),
            dodo: 0,
        };
        // The administrator's calls (empty function) are the measurement's own.
        for call in self.dynamo.take_calls() {
            if call.function.is_empty() {
                continue;
            }
            *calls.dynamodb.entry(call.operation).or_default() += 1;
            calls.read_units += call.read_units;
            calls.write_units += call.write_units;
            calls.from_rules |= call.units_from == UnitsFrom::Rules;
        }
        let after = self.counters();
        calls.dodo = (after.dodo - before.dodo) as u32;
        for (action, count) in [
            ("events:PutEvents", after.put_events - before.put_events),
            (
                "secretsmanager:GetSecretValue",
                after.get_secret_value - before.get_secret_value,
            ),
        ] {
            if count > 0 {
                calls.other_aws.insert(action.to_owned(), count as u32);
            }
        }
        (calls, after)
    }

    fn counters(&self) -> Counters {
        Counters {
            // Reconcile lists Dodo's disputes only in the runs at hours divisible by six
            // (`Limits::disputes_every_hours`): counted, the figure would depend on the
            // hour of the measurement. `dodo_calls` is a run at any other hour; the
            // book says a run at such an hour makes one call more.
            dodo: self
                .dodo
                .simulator
                .api_calls()
                .iter()
                .filter(|call| !call.starts_with(PERIODIC_DODO_CALL))
                .count(),
            put_events: self.bus.calls(),
            get_secret_value: self.secrets.calls() + self.secrets.refused(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    dodo: usize,
    put_events: usize,
    get_secret_value: usize,
}

/// How many requests of each route to measure.
#[derive(Clone, Copy, Debug)]
pub struct Runs {
    /// Requests per route (after one unmeasured request that warms the process).
    pub requests: usize,
    /// Runs of reconcile (each a whole run, its Dodo calls paced 1.5 s apart).
    pub reconcile_runs: usize,
}

/// The routes measured, and what did not hold while measuring (an unexpected answer, or
/// requests of one route that made different calls): empty when all is well.
pub struct Measurement {
    pub measured: Measured,
    pub problems: Vec<String>,
}

/// Measures every route in [`ROUTES`] on the binaries in `bin_dir`.
pub async fn measure(bin_dir: &Path, runs: Runs) -> Result<Measurement, String> {
    let stack = Stack::start().await?;
    let mut routes = BTreeMap::new();
    let mut problems = Vec::new();
    let mut cold_start_calls: BTreeMap<&str, BTreeMap<String, u32>> = BTreeMap::new();
    for route in ROUTES {
        let binary = bin_dir.join(route.function);
        if !cold_start_calls.contains_key(route.function) {
            let calls = cold_start(&stack, &binary).await?;
            cold_start_calls.insert(route.function, calls);
        }
        let requests = if route.function == "reconcile" {
            runs.reconcile_runs
        } else {
            runs.requests
        }
        .max(1);
        let mut function = RunningFunction::spawn_keeping_log(&binary, &stack.config)
            .await
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        // The first request warms the process (connections, caches): not measured.
        let mut counters = stack.counters();
        let mut per_request: Vec<Calls> = Vec::new();
        let mut walls = Vec::new();
        let mut cpus = Vec::new();
        let mut billed = Vec::new();
        let mut log = crate::lambda_harness::LogVolume::default();
        for i in 0..=requests {
            let (event, expected) = stack.event(route.key, i);
            let cpu_before = function.cpu_time().unwrap_or_default();
            let started = Instant::now();
            let response = function.invoke(event).await?;
            let wall = started.elapsed();
            if let Err(why) = check_answer(&response, expected) {
                problems.push(format!("{}: request {i} {why}", route.key));
            }
            // After the answer, the runtime posts it and polls for the next event: work
            // Lambda bills too. Give it that moment before reading the CPU time.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let cpu = function
                .cpu_time()
                .unwrap_or_default()
                .saturating_sub(cpu_before);
            let logged = function.take_log().await;
            let calls;
            (calls, counters) = stack.take_calls(&counters);
            if i == 0 {
                continue;
            }
            walls.push(wall);
            cpus.push(cpu);
            billed.push(billed_ms(wall, cpu, MEMORY_MB));
            log.bytes += logged.bytes;
            log.lines += logged.lines;
            per_request.push(calls);
        }
        // A line the reader had not been woken for yet (a loaded machine) is counted
        // still: the totals are what the process wrote.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let late = function.take_log().await;
        log.bytes += late.bytes;
        log.lines += late.lines;
        let calls = per_request.first().cloned().ok_or("no request measured")?;
        if let Some(other) = per_request.iter().find(|c| **c != calls) {
            problems.push(format!(
                "{}: requests made different calls: {calls:?} and {other:?}",
                route.key
            ));
        }
        let per_1000 = |n: u64| (n as f64 * 1000.0 / per_request.len() as f64).round() as u64;
        let billed_median = median(&mut billed);
        routes.insert(
            route.key.to_owned(),
            RouteCost {
                function: route.function.to_owned(),
                via_api_gateway: route.via_api_gateway,
                dynamodb_calls: calls.dynamodb,
                read_units: calls.read_units,
                write_units: calls.write_units,
                units_from: if calls.from_rules { "rules" } else { "engine" }.to_owned(),
                other_aws_calls: calls.other_aws,
                cold_start_aws_calls: cold_start_calls[route.function].clone(),
                dodo_calls: calls.dodo,
                billed_ms: BilledMs {
                    arm64: billed_median,
                    x86_64: billed_median,
                },
                wall_ms: median(&mut walls).as_secs_f64() * 1000.0,
                cpu_ms: median(&mut cpus).as_secs_f64() * 1000.0,
                log_bytes_per_1000: per_1000(log.bytes),
                log_lines_per_1000: per_1000(log.lines),
            },
        );
    }
    Ok(Measurement {
        measured: Measured {
            measured_on: stack.clock.now().to_rfc3339()[..10].to_owned(),
            machine: machine(),
            memory_mb: MEMORY_MB,
            routes,
        },
        problems,
    })
}

/// The AWS calls `binary` makes starting in the `secrets-manager` mode, up to its first
/// poll of the Runtime API.
async fn cold_start(stack: &Stack, binary: &Path) -> Result<BTreeMap<String, u32>, String> {
    let counters = stack.counters();
    let function = RunningFunction::spawn(binary, &stack.secrets_mode())
        .await
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    function
        .init_duration(Duration::from_secs(10))
        .await
        .ok_or_else(|| format!("{} never polled the Runtime API", binary.display()))?;
    let (calls, _) = stack.take_calls(&counters);
    let mut all = calls.other_aws;
    for (operation, count) in calls.dynamodb {
        all.insert(format!("dynamodb:{operation}"), count);
    }
    Ok(all)
}

fn median<T: Ord + Copy + Default>(values: &mut [T]) -> T {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

impl Measured {
    /// Reads a `measured.toml`.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The `measured.toml` text: the schema `cargo run -p dev -- cost` reads.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Measured by `make bench` (lambda-bench --write-measured), see dev/src/route_costs.rs.\n\
             # Calls and units are exact (dev/tests/route_costs.rs holds the code to them); durations\n\
             # are medians, billed_ms an estimate for {MEMORY_MB} MB: wall - cpu + cpu * 1769 / {MEMORY_MB},\n\
             # measured on x86_64 and given for arm64 too. Log bytes at INFO, JSON format."
        );
        let _ = writeln!(out, "measured_on = {}", quoted(&self.measured_on));
        let _ = writeln!(out, "machine = {}", quoted(&self.machine));
        let _ = writeln!(out, "memory_mb = {}", self.memory_mb);
        for (key, route) in &self.routes {
            let _ = writeln!(out, "\n[routes.{key}]");
            let _ = writeln!(out, "function = {}", quoted(&route.function));
            let _ = writeln!(out, "via_api_gateway = {}", route.via_api_gateway);
            let _ = writeln!(out, "dynamodb_calls = {}", inline(&route.dynamodb_calls));
            let _ = writeln!(out, "read_units = {:?}", route.read_units);
            let _ = writeln!(out, "write_units = {:?}", route.write_units);
            let _ = writeln!(out, "units_from = {}", quoted(&route.units_from));
            let _ = writeln!(out, "other_aws_calls = {}", inline(&route.other_aws_calls));
            let _ = writeln!(
                out,
                "cold_start_aws_calls = {}",
                inline(&route.cold_start_aws_calls)
            );
            let _ = writeln!(out, "dodo_calls = {}", route.dodo_calls);
            let _ = writeln!(
                out,
                "billed_ms = {{ arm64 = {}, x86_64 = {} }}",
                route.billed_ms.arm64, route.billed_ms.x86_64
            );
            let _ = writeln!(out, "wall_ms = {:.3}", route.wall_ms);
            let _ = writeln!(out, "cpu_ms = {:.3}", route.cpu_ms);
            let _ = writeln!(out, "log_bytes_per_1000 = {}", route.log_bytes_per_1000);
            let _ = writeln!(out, "log_lines_per_1000 = {}", route.log_lines_per_1000);
        }
        out
    }

    /// The table the bench prints, one row per route in measuring order.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| route | function | DynamoDB calls | RRU | WRU | other AWS calls | Dodo calls | billed ms (128 MB) | wall ms | CPU ms | log bytes / 1,000 | log lines / 1,000 |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for route in ROUTES {
            let Some(cost) = self.routes.get(route.key) else {
                continue;
            };
            let list = |map: &BTreeMap<String, u32>| {
                if map.is_empty() {
                    "none".to_owned()
                } else {
                    map.iter()
                        .map(|(name, n)| format!("{name} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            let rules = if cost.units_from == "rules" {
                " (rules)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {}{rules} | {}{rules} | {} | {} | {} | {:.2} | {:.2} | {} | {} |",
                route.key,
                cost.function,
                list(&cost.dynamodb_calls),
                cost.read_units,
                cost.write_units,
                list(&cost.other_aws_calls),
                cost.dodo_calls,
                cost.billed_ms.x86_64,
                cost.wall_ms,
                cost.cpu_ms,
                cost.log_bytes_per_1000,
                cost.log_lines_per_1000,
            );
        }
        out
    }

    /// Where `self` (just measured) and `committed` differ in what is exact: calls, units
    /// and Dodo calls (durations and log volume vary with the machine and the ids).
    pub fn exact_differences(&self, committed: &Measured) -> Vec<String> {
        let mut differences = Vec::new();
        let keys: std::collections::BTreeSet<&String> =
            self.routes.keys().chain(committed.routes.keys()).collect();
        for key in keys {
            match (self.routes.get(key), committed.routes.get(key)) {
                (Some(now), Some(then)) => {
                    let exact = |c: &RouteCost| {
                        (
                            c.function.clone(),
                            c.via_api_gateway,
                            c.dynamodb_calls.clone(),
                            c.read_units,
                            c.write_units,
                            c.units_from.clone(),
                            c.other_aws_calls.clone(),
                            c.cold_start_aws_calls.clone(),
                            c.dodo_calls,
                        )
                    };
                    if exact(now) != exact(then) {
                        differences.push(format!(
                            "{key}: measured {:?}, committed {:?}",
                            exact(now),
                            exact(then)
                        ));
                    }
                }
                (Some(_), None) => differences.push(format!("{key}: measured, not committed")),
                (None, Some(_)) => differences.push(format!("{key}: committed, not measured")),
                (None, None) => {}
            }
        }
        differences
    }
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

fn inline(map: &BTreeMap<String, u32>) -> String {
    if map.is_empty() {
        return "{}".to_owned();
    }
    let entries: Vec<String> = map
        .iter()
        .map(|(name, n)| {
            // Bare keys are letters, digits, `-` and `_`; `events:PutEvents` is quoted.
            if name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                format!("{name} = {n}")
            } else {
                format!("{} = {n}", quoted(name))
            }
        })
        .collect();
    format!("{{ {} }}", entries.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billed_duration_stretches_cpu_time_by_the_memory_share() {
        // 0.5 ms waiting plus 0.2 ms of CPU at 128 MB: 0.2 * 1769/128 = 2.76 ms.
        let wall = Duration::from_micros(700);
        let cpu = Duration::from_micros(200);
        assert_eq!(billed_ms(wall, cpu, 128), 4);
        // A whole vCPU or more: CPU time is not shortened.
        assert_eq!(billed_ms(wall, cpu, 3538), 1);
        // Waiting alone is billed by the started millisecond.
        assert_eq!(
            billed_ms(Duration::from_micros(1_001), Duration::ZERO, 128),
            2
        );
    }

    #[test]
    fn the_written_file_reads_back_the_same() {
        let route = RouteCost {
            function: "server".into(),
            via_api_gateway: true,
            dynamodb_calls: BTreeMap::from([("Query".into(), 1), ("TransactWriteItems".into(), 1)]),
            read_units: 1.0,
            write_units: 4.0,
            units_from: "engine".into(),
            other_aws_calls: BTreeMap::from([("events:PutEvents".into(), 1)]),
            cold_start_aws_calls: BTreeMap::new(),
            dodo_calls: 0,
            billed_ms: BilledMs {
                arm64: 3,
                x86_64: 3,
            },
            wall_ms: 0.5,
            cpu_ms: 0.125,
            log_bytes_per_1000: 0,
            log_lines_per_1000: 0,
        };
        let measured = Measured {
            measured_on: "2026-12-06".into(),
            machine: "a \"quoted\" CPU, 2 cores".into(),
            memory_mb: 128,
            routes: BTreeMap::from([("usage".into(), route)]),
        };
        let text = measured.to_toml();
        assert_eq!(Measured::parse(&text).expect("parses"), measured, "{text}");
    }
}
