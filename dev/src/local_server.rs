//! `make dev`: the whole product on one port, with no AWS account and no Dodo keys.
//!
//! The four routes are answered by the same handler code as the Lambda binaries; only the
//! edge differs: a bearer JWT (HS256, `DEV_JWT_SECRET`) is verified here and its claims
//! handed to the handlers exactly as API Gateway's JWT authorizer would. State lives in
//! dynoxide on a SQLite file under `.local/`, so it survives a restart. Without
//! `DODO_PAYMENTS_API_KEY`, a Dodo simulator is served under `/dodo` and delivers signed
//! webhooks to `/payment/webhook` (the webhook answers at `/webhook` too, as in
//! `openapi.yaml`). Everything runs on a test clock (`/dev/clock`, [`TimeMachine`]) that
//! starts at the real time; the simulator's faults are set at `/dev/faults`. The same
//! stack, on a frozen clock, is what `simulate` drives. Every request gets an id, as API
//! Gateway gives one, and one log line. Every error this server answers itself (an
//! unknown path, a method a route does not take, a body too large) is JSON
//! `{"error": {"code", "message", "request_id"}}`, like the handlers' own.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get, post};
use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerIamDescription,
    ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequestContext,
};
use lambda_http::request::RequestContext;
use lambda_http::{Body as LambdaBody, RequestExt};
use paywall::config::{CheckoutConfig, DodoConfig, Vars};
use paywall::dodo::{DodoClient, Timeouts};
use paywall::handlers::Reconciler;
use paywall::handlers::reconcile::Limits;
use paywall::handlers::{
    CreateCheckoutHandler, PortalHandler, ServerHandler, StatusHandler, SuccessHandler,
    WebhookHandler,
};
use paywall::plan::Catalog;
use paywall::runtime::Handler;
use paywall::store::Store;
use paywall::time::{Clock, ClockWouldGoBack, Timestamp, parse_duration_seconds};
use paywall::webhook_signature::WebhookSecret;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::dodo_simulator::faults::Faults;
use crate::dodo_simulator::{DodoSimulator, WebhookTarget};
use crate::local_dynamodb::{
    DatabaseFaults, LocalDynamo, client_as, client_for, create_table_from_template_without_stream,
    template_path,
};
use crate::time_machine::TimeMachine;

pub const DEFAULT_PORT: u16 = 3000;
pub const DEFAULT_JWT_SECRET: &str = "local-dev-jwt-secret-change-me";
/// The webhook secret the simulator signs with when none is configured.
pub const DEFAULT_WEBHOOK_SECRET: &str = "whsec_cGF5d2FsbC1sb2NhbC1kZXYtd2ViaG9vay1zZWNyZXQ=";
const SIMULATOR_API_KEY: &str = "sk_local_simulator";
const TABLE: &str = "paywall-local";
/// The test clock's lead over the wall clock, kept across restarts.
const CLOCK_FILE: &str = "clock.json";
const DEMO_PAGE: &str = include_str!("../static/index.html");
const MAX_BODY: usize = 1024 * 1024;

pub type ServerError = Box<dyn std::error::Error + Send + Sync>;

/// The demo catalogue `make dev` sells when none is configured: a 30-day pass and a
/// monthly subscription, so that both can be watched through time, with features, limits
/// and a free tier to show entitlements.
pub(crate) const DEMO_PLANS: &str = r#"{
 "free": {"features": ["basic"], "limits": {"api_calls": 20}},
 "monthly": {"product_id": "pdt_local_demo", "kind": "pass", "days": 30, "price": "$19",
             "features": ["basic", "export"], "limits": {"api_calls": 1000}},
 "starter": {"product_id": "pdt_local_starter", "kind": "subscription", "price": "$9/month",
             "trial_days": 7, "features": ["basic", "export"], "limits": {"api_calls": 5000}},
 "pro": {"product_id": "pdt_local_pro", "kind": "subscription", "price": "$49/month",
         "features": ["basic", "export", "priority_support"], "limits": {"api_calls": 10000, "seats": 5}},
 "team": {"product_id": "pdt_local_team", "kind": "subscription", "price": "$99/month",
          "trial": {"days": 14, "card": false},
          "features": ["basic", "export", "priority_support", "sso"], "limits": {"api_calls": 50000, "seats": 25}}}"#;

struct App {
    status: StatusHandler,
    server: ServerHandler,
    store: Store,
    create_checkout: CreateCheckoutHandler,
    success: SuccessHandler,
    portal: PortalHandler,
    webhook: WebhookHandler,
    jwt_secret: Vec<u8>,
    /// API Gateway's IAM authorization on `/server/`: the one principal this stack knows.
    sigv4: crate::sigv4::Verifier,
    clock: Clock,
    machine: Arc<TimeMachine>,
    simulator: Option<DodoSimulator>,
    /// The EventBridge stand-in delivering to `ACCESS_EVENTS_WEBHOOK_URL`, if set.
    webhook_bus: Option<crate::local_stream::LocalEventBus>,
    /// The DynamoDB operations failing on purpose (`/dev/database`).
    database_faults: DatabaseFaults,
}

/// What the server tells the person who started it.
pub struct Started {
    pub base_url: String,
    pub simulator: bool,
    pub jwt_secret_is_default: bool,
    /// Where the state (dynoxide's SQLite file) is kept.
    pub state_dir: PathBuf,
    /// Access events are also POSTed to `ACCESS_EVENTS_WEBHOOK_URL`.
    pub access_events_webhook: bool,
}

/// The template's `AccessEventsWebhookUrl`, locally: where the EventBridge stand-in
/// delivers each access event (as an API destination would), and the secret it sends in
/// the `X-Paywall-Webhook-Secret` header.
#[derive(Clone)]
pub struct AccessEventsWebhook {
    pub url: String,
    pub secret: SecretString,
    /// The rule target's retry policy (the template's: 24 h, 185 retries).
    pub retry: crate::local_stream::RetryPolicy,
}

impl std::fmt::Debug for AccessEventsWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessEventsWebhook")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl AccessEventsWebhook {
    pub fn new(url: &str, secret: &str) -> Self {
        Self {
            url: url.to_owned(),
            secret: SecretString::from(secret),
            retry: crate::local_stream::RetryPolicy::default(),
        }
    }

    /// From `ACCESS_EVENTS_WEBHOOK_URL` and `ACCESS_EVENTS_WEBHOOK_SECRET` (both or
    /// neither); errors name the variable, never show the secret.
    pub fn from_vars(
        url: Option<String>,
        secret: Option<String>,
    ) -> Result<Option<Self>, ServerError> {
        match (url, secret) {
            (None, None) => Ok(None),
            (Some(_), None) => Err("ACCESS_EVENTS_WEBHOOK_SECRET is required with \
                 ACCESS_EVENTS_WEBHOOK_URL (the value the webhook receives in \
                 X-Paywall-Webhook-Secret)"
                .into()),
            (None, Some(_)) => Err("ACCESS_EVENTS_WEBHOOK_SECRET is set but \
                 ACCESS_EVENTS_WEBHOOK_URL is not: set the URL that receives the events"
                .into()),
            (Some(url), Some(secret)) => {
                let parsed = reqwest::Url::parse(&url)
                    .map_err(|e| format!("ACCESS_EVENTS_WEBHOOK_URL is not a URL ({e})"))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                    return Err(
                        "ACCESS_EVENTS_WEBHOOK_URL must be an http:// or https:// URL \
                         (deployed, the template takes https:// only)"
                            .into(),
                    );
                }
                // The connection's ApiKeyValue: 1 to 512 characters, no control characters.
                if secret.trim().is_empty()
                    || secret.chars().count() > 512
                    || secret.chars().any(char::is_control)
                {
                    return Err("ACCESS_EVENTS_WEBHOOK_SECRET must be 1 to 512 characters \
                         without control characters"
                        .into());
                }
                Ok(Some(Self::new(&url, &secret)))
            }
        }
    }
}

fn env(name: &str) -> Option<String> {
    Vars::process().optional(name)
}

/// How to start the local stack.
pub struct Settings {
    /// 0: any free port.
    pub port: u16,
    pub state_dir: PathBuf,
    /// The stack's clock: `make dev` runs a test clock that starts at the real time and
    /// flows with it; `simulate` freezes one between its steps.
    pub clock: Clock,
    /// Seeds the simulator's faults (else they are drawn from the system's randomness).
    pub seed: Option<u64>,
    /// Reads nothing from the environment but the catalogue (the `simulate` command).
    pub isolated: bool,
    /// Deliver access events to a webhook, as the template's API destination does.
    pub access_events_webhook: Option<AccessEventsWebhook>,
}

impl Settings {
    /// `make dev`'s: `PORT`, `PAYWALL_STATE_DIR`, a running test clock from now.
    pub fn from_env() -> Result<Self, ServerError> {
        let port: u16 = match env("PORT") {
            Some(raw) => raw
                .parse()
                .map_err(|_| format!("PORT is not a port number: {raw}"))?,
            None => DEFAULT_PORT,
        };
        let state_dir =
            PathBuf::from(env("PAYWALL_STATE_DIR").unwrap_or_else(|| ".local".to_owned()));
        // Where the clock was moved to before a restart: the state was written in that
        // time, and the clock never goes back.
        let ahead_ms = std::fs::read_to_string(state_dir.join(CLOCK_FILE))
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|saved| saved["ahead_of_wall_clock_ms"].as_i64())
            .unwrap_or(0)
            .max(0);
        Ok(Self {
            port,
            state_dir,
            clock: Clock::test(Clock::system().now_millis().saturating_add(ahead_ms), true),
            seed: None,
            isolated: false,
            access_events_webhook: AccessEventsWebhook::from_vars(
                env("ACCESS_EVENTS_WEBHOOK_URL"),
                env("ACCESS_EVENTS_WEBHOOK_SECRET"),
            )?,
        })
    }
}

/// The whole product on one port: handlers, the embedded DynamoDB engine, the Dodo
/// simulator (unless a real key is given) and the test clock that moves them.
pub struct LocalStack {
    pub base_url: String,
    pub simulator: Option<DodoSimulator>,
    pub machine: Arc<TimeMachine>,
    pub store: Store,
    /// What the stack sells.
    pub catalog: Catalog,
    pub jwt_secret_is_default: bool,
    pub state_dir: PathBuf,
    /// The EventBridge stand-in and its API destination, with a webhook configured.
    pub access_events: Option<Arc<AccessEventsPump>>,
    dynamo: tokio::sync::Mutex<LocalDynamo>,
    /// Where the engine listens (a restart binds the same address).
    dynamo_address: String,
    /// What the engine fails on purpose; a restarted engine keeps it.
    database_faults: DatabaseFaults,
    listener: Mutex<Option<tokio::net::TcpListener>>,
    router: Mutex<Option<Router>>,
}

impl LocalStack {
    pub async fn start(settings: Settings) -> Result<Arc<Self>, ServerError> {
        let Settings {
            port,
            state_dir,
            clock,
            seed,
            isolated,
            access_events_webhook,
        } = settings;
        // `simulate` reads only the catalogue from the environment: never a real Dodo
        // key, a port or a secret meant for `make dev`.
        let env = |name: &str| match name {
            "PLANS" | "DODO_PRODUCT_ID" | "PLAN_DURATION_DAYS" => env(name),
            _ if isolated => None,
            _ => env(name),
        };
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;

        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
        let base_url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());

        let dynamo = LocalDynamo::on_disk(&state_dir.join("paywall.db"), "127.0.0.1:0").await?;
        let database_faults = dynamo.faults();
        let dynamo_address = dynamo.endpoint().trim_start_matches("http://").to_owned();
        let client = client_for(dynamo.endpoint());
        create_table_from_template_without_stream(&client, &template_path(), TABLE).await?;
        let store = Store::new(client, TABLE);
        // Each function reaches the table as its own role, held to its policy in
        // template.yaml as AWS would hold it (dev::iam); `store` is the /dev routes'.
        // A simulation runs months of every user's requests on a compressed clock: the
        // budget for users' Dodo calls (a rate in real time) does not apply to it.
        let budget = if isolated {
            paywall::store::DodoBudget::per_minute(1_000_000)
        } else {
            paywall::store::DodoBudget::default()
        };
        let store_as = |binary: &str| {
            Store::new(client_as(dynamo.endpoint(), binary), TABLE).with_dodo_budget(budget)
        };

        let jwt_secret = env("DEV_JWT_SECRET");
        let jwt_secret_is_default = jwt_secret.is_none();
        let jwt_secret = jwt_secret.unwrap_or_else(|| DEFAULT_JWT_SECRET.to_owned());
        let webhook_secret_text = env("DODO_PAYMENTS_WEBHOOK_SECRET")
            .unwrap_or_else(|| DEFAULT_WEBHOOK_SECRET.to_owned());
        let webhook_secret = WebhookSecret::parse(&webhook_secret_text)
            .map_err(|e| format!("DODO_PAYMENTS_WEBHOOK_SECRET: {e}"))?;

        // Real Dodo (test mode) when a key is given: real time too. Otherwise the
        // simulator on this port, on the test clock.
        let simulator = match env("DODO_PAYMENTS_API_KEY") {
            Some(_) => None,
            // A simulation starts afresh and keeps nothing.
            None if isolated => Some(DodoSimulator::new(
                format!("{base_url}/dodo"),
                Some(SIMULATOR_API_KEY.into()),
            )),
            // Its records are kept beside the paywall's, so that a restart loses neither.
            None => Some(DodoSimulator::with_state_file(
                format!("{base_url}/dodo"),
                Some(SIMULATOR_API_KEY.into()),
                &state_dir.join("dodo-simulator.json"),
            )?),
        };
        let clock = if simulator.is_some() {
            clock
        } else {
            Clock::system()
        };
        let (dodo_config, catalog) = match &simulator {
            None => (
                DodoConfig::from_vars(&Vars::new(&env))?,
                Catalog::from_vars(&Vars::new(&env))?,
            ),
            Some(simulator) => {
                simulator.set_clock(clock.clone());
                if let Some(seed) = seed {
                    simulator.seed(seed);
                }
                simulator.set_webhook(Some(WebhookTarget {
                    url: format!("{base_url}/payment/webhook"),
                    secret: Arc::new(WebhookSecret::parse(&webhook_secret_text)?),
                    time_compression: 60,
                }));
                // The simulator sells anything: without a catalogue, the demo one.
                let configured = env("PLANS").is_some()
                    || env("DODO_PRODUCT_ID").is_some()
                    || Catalog::has_built_in_plans();
                let with_demo_plans = |name: &str| match name {
                    "PLANS" if !configured => Some(DEMO_PLANS.to_owned()),
                    _ => env(name),
                };
                let catalog = Catalog::from_vars(&Vars::new(&with_demo_plans))?;
                simulator.set_subscription_products(
                    catalog
                        .plans()
                        .iter()
                        .filter(|plan| plan.is_subscription())
                        .map(|plan| plan.product_id.as_str().to_owned()),
                );
                // Each product costs what the catalogue's `price` says (else the default).
                simulator.set_product_prices(catalog.plans().iter().filter_map(|plan| {
                    let cents = i64::try_from(plan.price_amount()?).ok()?;
                    Some((plan.product_id.as_str().to_owned(), cents))
                }));
                (
                    DodoConfig {
                        api_key: SecretString::from(SIMULATOR_API_KEY),
                        base_url: format!("{base_url}/dodo"),
                    },
                    catalog,
                )
            }
        };
        // A simulation's time is virtual: Dodo's retried calls need not wait real time.
        let dodo = if isolated {
            DodoClient::with_timeouts(
                &dodo_config,
                Timeouts {
                    retry_backoff: std::time::Duration::from_millis(5),
                    ..Timeouts::default()
                },
            )?
        } else {
            DodoClient::new(&dodo_config)?
        };
        let checkout = CheckoutConfig {
            success_url: env("DODO_SUCCESS_URL").unwrap_or_else(|| format!("{base_url}/")),
        };
        // The hourly reconcile, on the test clock. Unpaced: the simulator has no rate limit.
        let reconciler = simulator.as_ref().map(|_| {
            Reconciler::new(
                store_as("reconcile"),
                dodo.clone(),
                catalog.clone(),
                Limits {
                    min_call_interval: std::time::Duration::ZERO,
                    // A simulation repairs one at a time, so that a seed replays exactly.
                    repair_concurrency: if isolated { 1 } else { 16 },
                    ..Limits::default()
                },
            )
            .with_clock(clock.clone())
        });
        let mut machine = TimeMachine::new(clock.clone(), simulator.clone(), reconciler);
        if !isolated {
            machine = machine.with_clock_file(state_dir.join(CLOCK_FILE));
        }
        let machine = Arc::new(machine);

        let region = env("AWS_REGION").unwrap_or_else(|| "us-east-1".to_owned());
        let access_events = match access_events_webhook {
            None => None,
            Some(webhook) => Some(Arc::new(
                AccessEventsPump::start(webhook, clock.clone(), &region, store.clone()).await?,
            )),
        };

        let app = Arc::new(App {
            status: StatusHandler::new(store_as("status"), catalog.clone())
                .with_clock(clock.clone()),
            server: ServerHandler::new(store_as("server"), catalog.clone())
                .with_clock(clock.clone()),
            store: store.clone(),
            create_checkout: CreateCheckoutHandler::new(
                store_as("create-checkout"),
                dodo.clone(),
                catalog.clone(),
                checkout,
            )
            .with_clock(clock.clone()),
            success: SuccessHandler::new(store_as("success"), dodo.clone(), catalog.clone())
                .with_clock(clock.clone()),
            portal: PortalHandler::new(store_as("portal"), dodo, catalog.clone())
                .with_clock(clock.clone()),
            webhook: WebhookHandler::new(store_as("webhook"), webhook_secret, catalog.clone())
                .with_clock(clock.clone()),
            jwt_secret: jwt_secret.into_bytes(),
            // The one IAM principal the local stack knows: this process's own credentials
            // (`make dev` exports `local` / `local`), in its region.
            sigv4: crate::sigv4::Verifier::new(
                &region,
                &env("AWS_ACCESS_KEY_ID").unwrap_or_else(|| "local".to_owned()),
                SecretString::from(
                    env("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|| "local".to_owned()),
                ),
            ),
            clock,
            machine: Arc::clone(&machine),
            simulator: simulator.clone(),
            webhook_bus: access_events.as_ref().map(|pump| pump.bus.clone()),
            database_faults: database_faults.clone(),
        });

        let mut router = Router::new()
            .route("/", get(|| async { Html(DEMO_PAGE) }))
            .route("/docs", get(crate::book::docs))
            .route("/docs/", get(crate::book::docs))
            .route("/docs/{*rest}", get(crate::book::docs))
            .route("/openapi.yaml", get(crate::book::openapi))
            .route("/dev/token", get(mint_token))
            .route("/dev/clock", get(read_clock).post(move_clock))
            .route("/dev/faults", get(read_faults).post(set_faults))
            .route(
                "/dev/database",
                get(read_database_faults).post(set_database_faults),
            )
            .route("/dev/events", get(list_access_events))
            .route("/dev/events/webhook", get(webhook_deliveries))
            .route("/payment/status", get(status))
            .route("/payment/entitlements", get(status))
            .route("/payment/plans", get(plans))
            .route("/server", any(server))
            .route("/server/{*rest}", any(server))
            .route("/payment/create-checkout-session", post(create_checkout))
            .route("/payment/success", post(success))
            .route("/payment/portal", post(portal))
            .route("/payment/trial", post(portal))
            .route("/payment/change-plan", post(portal).delete(portal))
            .route("/payment/cancel", post(portal))
            .route("/payment/resume", post(portal))
            .route("/payment/webhook", any(webhook))
            .route("/payment/webhook/{*rest}", any(webhook))
            .route("/webhook", any(webhook))
            .route("/webhook/{*rest}", any(webhook))
            .with_state(Arc::clone(&app))
            // After every route: it applies to the routes added so far. The simulator's
            // routes below answer in Dodo's own error shape.
            .method_not_allowed_fallback(method_not_allowed)
            .fallback(not_found)
            .layer(middleware::from_fn(json_errors));
        if let Some(simulator) = &simulator {
            router = router.nest("/dodo", simulator.router());
        }
        let router = router
            .layer(middleware::from_fn(cors))
            .layer(middleware::from_fn(request_id_and_log));

        Ok(Arc::new(Self {
            base_url,
            simulator,
            machine,
            store,
            catalog,
            jwt_secret_is_default,
            state_dir,
            access_events,
            dynamo: tokio::sync::Mutex::new(dynamo),
            dynamo_address,
            database_faults,
            listener: Mutex::new(Some(listener)),
            router: Mutex::new(Some(router)),
        }))
    }

    /// Serves until `shutdown` resolves; a running test clock's due work is done every
    /// second meanwhile (renewals and reconcile runs that real time reaches).
    pub async fn serve(
        self: &Arc<Self>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or("the stack is already serving")?;
        let router = self
            .router
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or("the stack is already serving")?;
        let ticker = {
            let machine = Arc::clone(&self.machine);
            tokio::spawn(async move {
                if !machine.can_move() {
                    return;
                }
                let mut every_second = tokio::time::interval(std::time::Duration::from_secs(1));
                loop {
                    every_second.tick().await;
                    machine.catch_up().await;
                }
            })
        };
        let pump = self.access_events.as_ref().map(|pump| {
            let pump = Arc::clone(pump);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    pump.publish_new().await;
                }
            })
        });
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
        ticker.abort();
        if let Some(pump) = pump {
            pump.abort();
        }
        self.dynamo.lock().await.shut_down().await;
        served?;
        Ok(())
    }

    /// The DynamoDB operations that fail on purpose (`TransactWriteItems`, ...: see
    /// [`DatabaseFaults`]): one step of a handler failing, where [`Self::stop_database`]
    /// fails them all. `POST /dev/database` sets them over HTTP.
    pub fn database_faults(&self) -> &DatabaseFaults {
        &self.database_faults
    }

    /// Stops the DynamoDB engine (an outage): every read and write fails until
    /// [`Self::start_database`].
    pub async fn stop_database(&self) {
        self.dynamo.lock().await.shut_down().await;
    }

    /// Restarts the engine on the same file between requests. dynoxide remembers every
    /// transaction's idempotency token for ten minutes of wall time and scans them all on
    /// each transaction, so a simulation that writes a year in a few minutes slows down
    /// quadratically without this; DynamoDB itself keeps no such list per caller.
    pub async fn recycle_database(&self) -> Result<(), ServerError> {
        self.stop_database().await;
        self.start_database().await
    }

    /// Starts the engine again on the same file and address.
    pub async fn start_database(&self) -> Result<(), ServerError> {
        let mut dynamo = self.dynamo.lock().await;
        let mut last_error = None;
        // The address may take a moment to be free again.
        for _ in 0..50 {
            match LocalDynamo::on_disk_with_faults(
                &self.state_dir.join("paywall.db"),
                &self.dynamo_address,
                self.database_faults.clone(),
            )
            .await
            {
                Ok(restarted) => {
                    *dynamo = restarted;
                    return Ok(());
                }
                Err(err) => {
                    last_error = Some(err);
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
        Err(format!(
            "cannot restart the DynamoDB engine: {}",
            last_error.map(|e| e.to_string()).unwrap_or_default()
        )
        .into())
    }
}

/// Runs `make dev` until `shutdown` resolves. `on_ready` is called once the port is
/// bound and the table exists.
pub async fn run(
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&Started),
) -> Result<(), ServerError> {
    let stack = LocalStack::start(Settings::from_env()?).await?;
    on_ready(&Started {
        base_url: stack.base_url.clone(),
        simulator: stack.simulator.is_some(),
        jwt_secret_is_default: stack.jwt_secret_is_default,
        state_dir: stack.state_dir.clone(),
        access_events_webhook: stack.access_events.is_some(),
    });
    stack.serve(shutdown).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockMove {
    advance: Option<String>,
    to: Option<String>,
}

fn clock_answer(app: &App) -> Response {
    let machine = &app.machine;
    let next_renewal = app.simulator.as_ref().and_then(|s| s.next_renewal_millis());
    axum::Json(json!({
        "now": app.clock.now().to_rfc3339(),
        "test_clock": machine.can_move(),
        "next_renewal": next_renewal.map(|ms| Timestamp::from_unix_seconds(ms.div_euclid(1000)).to_rfc3339()),
        "next_reconcile": machine.can_move().then(|| Timestamp::from_unix_seconds(machine.next_reconcile_millis().div_euclid(1000)).to_rfc3339()),
        "reconcile_runs": machine.reconcile_runs(),
    }))
    .into_response()
}

/// `GET /dev/clock`: `{"now": RFC 3339, ...}`.
async fn read_clock(State(app): State<Arc<App>>) -> Response {
    clock_answer(&app)
}

/// The furthest one `POST /dev/clock` moves: ten years (with their leap days).
pub const MAX_CLOCK_MOVE_DAYS: i64 = 3653;

/// `POST /dev/clock` `{"advance": "30d"}` or `{"to": RFC 3339}`: answers once everything
/// due in between has happened. The move runs in its own task: a client that gives up
/// (a closed tab, a Ctrl-C on curl) does not stop it halfway, and the clock's position
/// is saved as it moves (see [`TimeMachine`]), so a restart never takes it back.
async fn move_clock(State(app): State<Arc<App>>, body: axum::body::Bytes) -> Response {
    if !app.machine.can_move() {
        return error(
            StatusCode::CONFLICT,
            "clock_not_movable",
            "the clock moves only with the Dodo simulator (DODO_PAYMENTS_API_KEY is set)",
        );
    }
    let bad = |message: &str| error(StatusCode::BAD_REQUEST, "invalid_request", message);
    let Ok(request) = serde_json::from_slice::<ClockMove>(&body) else {
        return bad(r#"send {"advance": "<N>d|h|m|s"} or {"to": "<RFC 3339>"}"#);
    };
    let now_ms = app.clock.now_millis();
    let too_far = || {
        bad(&format!(
            "the clock moves at most ten years ({MAX_CLOCK_MOVE_DAYS} days) at a time"
        ))
    };
    let target_ms = match (request.advance.as_deref(), request.to.as_deref()) {
        (Some(advance), None) => match parse_duration_seconds(advance) {
            Some(seconds) => match seconds
                .checked_mul(1000)
                .and_then(|ms| now_ms.checked_add(ms))
            {
                Some(target) => target,
                None => return too_far(),
            },
            None => return bad("advance must look like 30d, 12h, 15m or 45s"),
        },
        (None, Some(to)) => match Timestamp::parse_rfc3339(to) {
            Some(at) => match at.unix_seconds().checked_mul(1000) {
                Some(target) => target,
                None => return too_far(),
            },
            None => return bad("to must be an RFC 3339 time"),
        },
        _ => return bad(r#"send exactly one of "advance" and "to""#),
    };
    if target_ms.saturating_sub(now_ms)
        > MAX_CLOCK_MOVE_DAYS * paywall::time::SECONDS_PER_DAY * 1000
    {
        return too_far();
    }
    let machine = Arc::clone(&app.machine);
    let moving = tokio::spawn(async move { machine.advance_to(target_ms).await });
    match moving.await {
        Ok(Ok(_)) => clock_answer(&app),
        Ok(Err(ClockWouldGoBack { now_millis })) => bad(&format!(
            "the clock only moves forward; it is {}",
            Timestamp::from_unix_seconds(now_millis.div_euclid(1000)).to_rfc3339()
        )),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the clock move failed; the clock stopped where it was saved",
        ),
    }
}

async fn read_faults(State(app): State<Arc<App>>) -> Response {
    match &app.simulator {
        Some(simulator) => axum::Json(simulator.faults()).into_response(),
        None => error(
            StatusCode::CONFLICT,
            "no_simulator",
            "faults apply to the Dodo simulator (DODO_PAYMENTS_API_KEY is set)",
        ),
    }
}

/// `POST /dev/faults`: the simulator's faults from now on; `{}` resets them.
async fn set_faults(State(app): State<Arc<App>>, body: axum::body::Bytes) -> Response {
    let Some(simulator) = &app.simulator else {
        return error(
            StatusCode::CONFLICT,
            "no_simulator",
            "faults apply to the Dodo simulator (DODO_PAYMENTS_API_KEY is set)",
        );
    };
    let is_object = serde_json::from_slice::<Value>(&body).is_ok_and(|v| v.is_object());
    if !is_object {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send a JSON object of faults, {} for none",
        );
    }
    let faults = match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => faults,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("not a set of faults: {err}"),
            );
        }
    };
    if let Err(message) = faults.validate() {
        return error(StatusCode::BAD_REQUEST, "invalid_request", &message);
    }
    simulator.set_faults(faults);
    axum::Json(simulator.faults()).into_response()
}

/// `GET /dev/database`: `{"failing": [...]}`, the DynamoDB operations failing on purpose.
async fn read_database_faults(State(app): State<Arc<App>>) -> Response {
    axum::Json(json!({"failing": app.database_faults.failing()})).into_response()
}

/// `POST /dev/database {"failing": ["TransactWriteItems"]}`: from now on those DynamoDB
/// operations fail (DynamoDB's `InternalServerError`, which the functions' SDK retries,
/// then gives up on), until `{"failing": []}` (or `{}`): to see what an app shows when a
/// write fails after Dodo acted (`503 changed_not_stored`), say.
async fn set_database_faults(State(app): State<Arc<App>>, body: axum::body::Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Asked {
        #[serde(default)]
        failing: Vec<String>,
    }
    let asked = match serde_json::from_slice::<Asked>(&body) {
        Ok(asked) => asked,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("send {{\"failing\": [\"TransactWriteItems\", ...]}}, [] for none: {err}"),
            );
        }
    };
    // Checked whole before any is set: a bad name changes nothing.
    let check = DatabaseFaults::default();
    for operation in &asked.failing {
        if let Err(message) = check.fail(operation) {
            return error(StatusCode::BAD_REQUEST, "invalid_request", &message);
        }
    }
    app.database_faults.heal();
    for operation in &asked.failing {
        let _ = app.database_faults.fail(operation);
    }
    read_database_faults(State(app)).await
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut error = json!({"code": code, "message": message});
    if let Some(id) = current_request_id() {
        error["request_id"] = json!(id);
    }
    (status, axum::Json(json!({ "error": error }))).into_response()
}

tokio::task_local! {
    /// The id of the request being answered, as API Gateway's `requestContext.requestId`.
    static REQUEST_ID: String;
}

/// The id of the request being answered (inside [`request_id_and_log`]).
fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// A new request id: 16 hex digits, unique in practice (API Gateway's are opaque too).
fn new_request_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}", RandomState::new().hash_one(n))
}

/// Every request gets an id, as API Gateway gives one (`requestContext.requestId`, the
/// `apigw-requestid` header): the handlers put it in their error bodies, and so do this
/// server's own errors. Then one log line per request: method, path (never the query,
/// a header or a body), status and time taken.
async fn request_id_and_log(request: Request, next: Next) -> Response {
    let id = new_request_id();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let mut response = REQUEST_ID.scope(id.clone(), next.run(request)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("apigw-requestid", value);
    }
    tracing::info!(
        target: "dev::access",
        "{method} {path} {} {}ms",
        response.status().as_u16(),
        started.elapsed().as_millis()
    );
    response
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// axum keeps the `Allow` header it computes for the route.
async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// The last line of "errors are JSON": an error answered by the framework rather than a
/// handler (an extractor's rejection, say) gets the same shape, with its status and
/// headers kept.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let detail = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .filter(|text| !text.is_empty());
    let code = match status {
        StatusCode::BAD_REQUEST => "invalid_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
        _ if status.is_server_error() => "internal_error",
        _ => "invalid_request",
    };
    let message = detail.unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_lowercase()
    });
    let rebuilt = error(status, code, &message);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let (_, body) = rebuilt.into_parts();
    Response::from_parts(parts, body)
}

/// Whether `host` (a `Host` header or an origin's host and port) names this machine's
/// loopback interface.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    matches!(name, "127.0.0.1" | "localhost" | "[::1]")
}

/// Only this machine may use the local server (L11): a request whose `Host` is not a
/// loopback name (a DNS-rebinding page) is refused, and only local frontends on other
/// ports get CORS (API Gateway's CORS does this in AWS) — never a page from elsewhere,
/// which could otherwise mint tokens at `/dev/token` and drive the stack.
async fn cors(request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !is_loopback_host(host) {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"error": {"code": "forbidden_host",
                "message": "the local server answers only to 127.0.0.1, localhost or [::1]"}})),
        )
            .into_response();
    }
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|origin| origin.strip_prefix("http://").is_some_and(is_loopback_host))
        .and_then(|origin| HeaderValue::from_str(origin).ok());
    let preflight = request.method() == Method::OPTIONS;
    let mut response = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let Some(origin) = origin else {
        return response;
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::VARY, HeaderValue::from_static("origin"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, if-none-match"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("etag, retry-after"),
    );
    response
}

#[derive(Deserialize)]
struct TokenQuery {
    sub: Option<String>,
    email: Option<String>,
    /// `false` mints a token whose e-mail is not verified (default `true`).
    email_verified: Option<bool>,
    /// `1` mints a server token: the founder's backend on `/server/` routes, standing
    /// for an IAM-signed request (`name` names its IAM user).
    server: Option<String>,
    name: Option<String>,
}

async fn mint_token(State(app): State<Arc<App>>, Query(query): Query<TokenQuery>) -> Response {
    if query
        .server
        .as_deref()
        .is_some_and(|s| s == "1" || s == "true")
    {
        let name = query
            .name
            .filter(|n| {
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
            })
            .unwrap_or_else(|| "local-backend".to_owned());
        let arn = format!("arn:aws:iam::000000000000:user/{name}");
        let token =
            crate::dev_jwt::mint_server(&app.jwt_secret, &arn, app.clock.now().unix_seconds());
        return axum::Json(json!({"token": token, "identity": arn})).into_response();
    }
    let Some(sub) = query.sub.filter(|s| !s.trim().is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"code": "invalid_request", "message": "sub is required"}})),
        )
            .into_response();
    };
    let email = query.email.filter(|e| !e.trim().is_empty());
    let token = crate::dev_jwt::mint_with(
        &app.jwt_secret,
        &sub,
        email.as_deref(),
        query.email_verified.unwrap_or(true),
        app.clock.now().unix_seconds(),
    );
    axum::Json(json!({"token": token})).into_response()
}

/// As API Gateway's JWT authorizer answers a missing or invalid token.
fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"message": "Unauthorized"})),
    )
        .into_response()
}

/// The request's `Authorization: Bearer` token.
fn bearer_token(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
}

/// Verifies the bearer token, then hands the request to `handler` with the claims where
/// API Gateway puts them (`requestContext.authorizer.jwt.claims`).
async fn authorized<H: Handler>(app: &App, handler: &H, request: Request) -> Response {
    let Some(token) = bearer_token(&request) else {
        return unauthorized();
    };
    let Ok(claims) = crate::dev_jwt::verify(
        &app.jwt_secret,
        token.trim(),
        app.clock.now().unix_seconds(),
    ) else {
        return unauthorized();
    };
    // A server token is no user's: end-user routes refuse it.
    if claims.get("token_use").map(String::as_str) == Some(crate::dev_jwt::SERVER_TOKEN_USE) {
        return unauthorized();
    }
    let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
    jwt.claims = claims;
    let mut authorizer = ApiGatewayRequestAuthorizer::default();
    authorizer.jwt = Some(jwt);
    let mut context = ApiGatewayV2httpRequestContext::default();
    context.authorizer = Some(authorizer);
    call(
        handler,
        request,
        Some(RequestContext::ApiGatewayV2(context)),
    )
    .await
}

/// Converts between axum's request/response and lambda_http's, around one handler call.
async fn call<H: Handler>(
    handler: &H,
    request: Request,
    context: Option<RequestContext>,
) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than 1 MiB",
        );
    };
    let body = if bytes.is_empty() {
        LambdaBody::Empty
    } else {
        LambdaBody::Binary(bytes.to_vec())
    };
    let mut lambda_request = lambda_http::http::Request::from_parts(parts, body);
    // As API Gateway (and a Function URL) hands every request its id.
    let mut context = context
        .unwrap_or_else(|| RequestContext::ApiGatewayV2(ApiGatewayV2httpRequestContext::default()));
    #[allow(irrefutable_let_patterns, unreachable_patterns)]
    if let RequestContext::ApiGatewayV2(ref mut context) = context {
        context.request_id = current_request_id();
    }
    lambda_request = lambda_request.with_request_context(context);
    let response = handler.handle(lambda_request).await;
    let (parts, body) = response.into_parts();
    let body = match body {
        LambdaBody::Empty => AxumBody::empty(),
        LambdaBody::Text(text) => AxumBody::from(text),
        LambdaBody::Binary(bytes) => AxumBody::from(bytes),
        _ => AxumBody::empty(),
    };
    Response::from_parts(parts, body)
}

async fn status(State(app): State<Arc<App>>, request: Request) -> Response {
    authorized(&app, &app.status, request).await
}

/// `GET /payment/plans` is public (no authorizer in the template): no token needed.
async fn plans(State(app): State<Arc<App>>, request: Request) -> Response {
    call(&app.status, request, None).await
}

async fn create_checkout(State(app): State<Arc<App>>, request: Request) -> Response {
    authorized(&app, &app.create_checkout, request).await
}

async fn success(State(app): State<Arc<App>>, request: Request) -> Response {
    authorized(&app, &app.success, request).await
}

async fn portal(State(app): State<Arc<App>>, request: Request) -> Response {
    authorized(&app, &app.portal, request).await
}

/// As API Gateway answers a request its IAM authorization refuses.
fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({"message": "Forbidden"})),
    )
        .into_response()
}

/// `/server/`: API Gateway's IAM authorization. A SigV4-signed request (header or
/// presigned query) is verified as API Gateway verifies it (see [`crate::sigv4`]) against
/// this process's own AWS credentials, on the real wall clock; else a server token from
/// `GET /dev/token?server=1` stands in for a signature. The identity is handed over where
/// API Gateway puts the signer's (`requestContext.authorizer.iam`). An end user's token is
/// refused (403), as is a request with neither.
async fn server(State(app): State<Arc<App>>, request: Request) -> Response {
    if crate::sigv4::is_signed(request.headers(), request.uri()) {
        return signed_server_call(&app, request).await;
    }
    let claims = bearer_token(&request).and_then(|token| {
        crate::dev_jwt::verify(
            &app.jwt_secret,
            token.trim(),
            app.clock.now().unix_seconds(),
        )
        .ok()
    });
    let Some(claims) = claims.filter(|c| {
        c.get("token_use").map(String::as_str) == Some(crate::dev_jwt::SERVER_TOKEN_USE)
    }) else {
        return forbidden();
    };
    let mut iam = ApiGatewayRequestAuthorizerIamDescription::default();
    iam.user_arn = claims.get("sub").cloned();
    iam.account_id = Some(crate::sigv4::LOCAL_ACCOUNT.to_owned());
    call(&app.server, request, Some(iam_context(iam))).await
}

fn iam_context(iam: ApiGatewayRequestAuthorizerIamDescription) -> RequestContext {
    let mut authorizer = ApiGatewayRequestAuthorizer::default();
    authorizer.iam = Some(iam);
    let mut context = ApiGatewayV2httpRequestContext::default();
    context.authorizer = Some(authorizer);
    RequestContext::ApiGatewayV2(context)
}

/// A SigV4-signed `/server/` call: the body is read to check its hash, then handed on.
async fn signed_server_call(app: &App, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than 1 MiB",
        );
    };
    let verified = app.sigv4.verify(
        &parts.method,
        &parts.uri,
        &parts.headers,
        &bytes,
        // Signers sign with the real time, whatever the test clock says.
        std::time::SystemTime::now(),
    );
    match verified {
        Ok(caller) => {
            let mut iam = ApiGatewayRequestAuthorizerIamDescription::default();
            iam.user_arn = Some(caller.user_arn);
            iam.account_id = Some(caller.account_id);
            iam.access_key = Some(caller.access_key);
            let request = Request::from_parts(parts, AxumBody::from(bytes));
            call(&app.server, request, Some(iam_context(iam))).await
        }
        Err(rejection) => {
            use crate::sigv4::Rejection;
            // The kind only: never the header, the signature or the key.
            let kind = match rejection {
                Rejection::Incomplete(_) => "IncompleteSignatureException",
                Rejection::UnknownAccessKey => "UnrecognizedClientException",
                Rejection::SignatureMismatch
                | Rejection::WrongScope(_)
                | Rejection::Expired { .. }
                | Rejection::NotYetCurrent { .. } => "InvalidSignatureException",
            };
            tracing::info!(target: "dev::access", kind, "SigV4 signature refused");
            let mut response = (
                StatusCode::FORBIDDEN,
                axum::Json(json!({"message": rejection.message()})),
            )
                .into_response();
            response
                .headers_mut()
                .insert("x-amzn-errortype", HeaderValue::from_static(kind));
            response
        }
    }
}

/// What would have been published to EventBridge, newest first (`?user_id=` filters).
async fn list_access_events(
    State(app): State<Arc<App>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match app.store.all_access_events().await {
        Ok(events) => {
            let listed: Vec<serde_json::Value> = events
                .into_iter()
                .filter(|e| query.get("user_id").is_none_or(|u| e.user.as_str() == u))
                .map(|e| {
                    json!({
                        "source": paywall::access_events::EVENT_SOURCE,
                        "detail-type": paywall::access_events::EVENT_DETAIL_TYPE,
                        "detail": serde_json::from_str::<serde_json::Value>(&e.detail)
                            .unwrap_or_default(),
                    })
                })
                .collect();
            axum::Json(json!({ "events": listed })).into_response()
        }
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the local DynamoDB engine is unavailable; please retry",
        ),
    }
}

/// `GET /dev/events/webhook`: how the deliveries to `ACCESS_EVENTS_WEBHOOK_URL` went —
/// `pending` (not yet delivered, retrying), `delivered` (count), `dead_letters` (what
/// the rule's dead-letter queue would hold, with the last status and why retries ended)
/// and `connection` (`AUTHORIZED`, or `DEAUTHORIZED` with its reason after a 401 or 407).
async fn webhook_deliveries(State(app): State<Arc<App>>) -> Response {
    match &app.webhook_bus {
        Some(bus) => axum::Json(json!({
            "pending": bus.pending(),
            "delivered": bus.delivered().len(),
            "dead_letters": bus.dead_letters(),
            "connection": bus.connection(),
        }))
        .into_response(),
        None => error(
            StatusCode::CONFLICT,
            "no_webhook",
            "no access-events webhook: set ACCESS_EVENTS_WEBHOOK_URL and ACCESS_EVENTS_WEBHOOK_SECRET",
        ),
    }
}

/// The deployed path of an access event, locally: the table's stream and the
/// `access-events` function, then EventBridge with a rule to the webhook's API
/// destination. The stream is stood in for by reading the table's new event items every
/// 200 ms (the local table has no stream: the embedded engine slows down with one), and
/// each batch goes through the function's own publisher, signed as its role (so
/// `permissions` holds its `events:PutEvents` to the template), to the EventBridge
/// stand-in, which delivers to the webhook ([`crate::local_stream::ApiDestination`]).
pub struct AccessEventsPump {
    pub bus: crate::local_stream::LocalEventBus,
    publisher: paywall::handlers::AccessEventPublisher,
    store: Store,
    /// Events already published (those stored before the start count as published: a
    /// restart does not send them again).
    published: tokio::sync::Mutex<Option<std::collections::HashSet<String>>>,
}

impl AccessEventsPump {
    async fn start(
        webhook: AccessEventsWebhook,
        clock: Clock,
        region: &str,
        store: Store,
    ) -> Result<Self, ServerError> {
        let mut destination =
            crate::local_stream::ApiDestination::new(&webhook.url, webhook.secret, clock);
        destination.retry = webhook.retry;
        destination.region = region.to_owned();
        let bus = crate::local_stream::LocalEventBus::with_api_destination(destination);
        let bus_url = bus.start().await?;
        let key = crate::iam::access_key_for("access-events");
        let lookup = |name: &str| match name {
            "TABLE_NAME" => Some(TABLE.to_owned()),
            "AWS_REGION" => Some(region.to_owned()),
            "AWS_ACCESS_KEY_ID" => Some(key.clone()),
            "AWS_SECRET_ACCESS_KEY" => Some("local".to_owned()),
            // The template's default bus.
            "ACCESS_EVENT_BUS" => Some("default".to_owned()),
            "AWS_ENDPOINT_URL_EVENTBRIDGE" => Some(bus_url.clone()),
            _ => None,
        };
        let publisher = paywall::handlers::AccessEventPublisher::new(
            paywall::eventbridge::EventBridgeClient::from_vars(&Vars::new(&lookup))?,
        );
        let pump = Self {
            bus,
            publisher,
            store,
            published: tokio::sync::Mutex::new(None),
        };
        pump.publish_new().await;
        Ok(pump)
    }

    /// Publishes the events stored since the last call, oldest first, as one stream
    /// batch; what the publisher reports failed is tried again next time.
    pub async fn publish_new(&self) {
        let mut published = self.published.lock().await;
        let Ok(mut events) = self.store.all_access_events().await else {
            return; // The engine is down (an outage test): next time.
        };
        let Some(seen) = published.as_mut() else {
            *published = Some(events.into_iter().map(|e| e.event_id).collect());
            return;
        };
        events.retain(|event| !seen.contains(&event.event_id));
        if events.is_empty() {
            return;
        }
        events.reverse();
        // The records the stream would carry for these items.
        let records: Vec<Value> = events
            .iter()
            .map(|event| {
                json!({
                    "eventName": "INSERT",
                    "eventSource": "aws:dynamodb",
                    "dynamodb": {
                        "SequenceNumber": event.event_id,
                        "NewImage": {
                            "sk": {"S": format!("{}{}", paywall::store::ACCESS_EVENT_PREFIX, event.event_id)},
                            "detail": {"S": event.detail},
                        },
                    },
                })
            })
            .collect();
        let answer = self.publisher.publish(&json!({ "Records": records })).await;
        let failed = answer["batchItemFailures"][0]["itemIdentifier"].as_str();
        for event in &events {
            if Some(event.event_id.as_str()) == failed {
                break;
            }
            seen.insert(event.event_id.clone());
        }
    }
}

/// The webhook is public, like the Function URL (`AuthType: NONE`): its signature is
/// its authentication.
async fn webhook(State(app): State<Arc<App>>, request: Request) -> Response {
    call(&app.webhook, request, None).await
}

/// The local stack as the HTTP tests use it: isolated, on a frozen test clock that starts
/// at `start`, served on a free port, its state in a fresh folder removed when dropped.
pub struct TestStack {
    pub stack: Arc<LocalStack>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub clock: Clock,
    _stop: tokio::sync::oneshot::Sender<()>,
    state: PathBuf,
}

impl TestStack {
    /// `name` tells parallel tests' state folders apart.
    pub async fn start(name: &str, start: &str, seed: u64) -> Result<Self, ServerError> {
        Self::start_with(name, start, seed, None).await
    }

    /// As [`Self::start`], with access events delivered to `webhook`.
    pub async fn start_with(
        name: &str,
        start: &str,
        seed: u64,
        webhook: Option<AccessEventsWebhook>,
    ) -> Result<Self, ServerError> {
        let state =
            std::env::temp_dir().join(format!("paywall-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        let start = Timestamp::parse_rfc3339(start).ok_or("start is not RFC 3339")?;
        let clock = Clock::test(start.unix_seconds() * 1000, false);
        let stack = LocalStack::start(Settings {
            port: 0,
            state_dir: state.clone(),
            clock: clock.clone(),
            seed: Some(seed),
            isolated: true,
            access_events_webhook: webhook,
        })
        .await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = Arc::clone(&stack);
        tokio::spawn(async move {
            let _ = serving
                .serve(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            base: stack.base_url.clone(),
            stack,
            clock,
            _stop: stop,
            state,
        })
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state);
    }
}
