//! `make dev`: the whole product on one port, with no AWS account and no Dodo keys.
//!
//! The four routes are answered by the same handler code as the Lambda binaries; only the
//! edge differs: a bearer JWT (HS256, `DEV_JWT_SECRET`) is verified here and its claims
//! handed to the handlers exactly as API Gateway's JWT authorizer would. State lives in
//! dynoxide on a SQLite file under `.local/`, so it survives a restart. Without
//! `DODO_PAYMENTS_API_KEY`, a Dodo simulator is served under `/dodo` and delivers signed
//! webhooks to `/payment/webhook` (the webhook answers at `/webhook` too, as in
//! `openapi.yaml`). Every error this server answers itself (an unknown path, a method a
//! route does not take, a body too large) is JSON `{"error": {"code", "message"}}`, like
//! the handlers' own.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get, post};
use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription,
    ApiGatewayV2httpRequestContext,
};
use lambda_http::request::RequestContext;
use lambda_http::{Body as LambdaBody, RequestExt};
use paywall::config::{CheckoutConfig, DodoConfig, Vars};
use paywall::dodo::DodoClient;
use paywall::handlers::{
    CreateCheckoutHandler, PortalHandler, StatusHandler, SuccessHandler, WebhookHandler,
};
use paywall::plan::Catalog;
use paywall::runtime::Handler;
use paywall::store::Store;
use paywall::webhook_signature::WebhookSecret;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use crate::dodo_simulator::{DodoSimulator, WebhookTarget};
use crate::local_dynamodb::{LocalDynamo, client_for, create_table_from_template, template_path};

pub const DEFAULT_PORT: u16 = 3000;
pub const DEFAULT_JWT_SECRET: &str = "local-dev-jwt-secret-change-me";
/// The webhook secret the simulator signs with when none is configured.
pub const DEFAULT_WEBHOOK_SECRET: &str = "whsec_cGF5d2FsbC1sb2NhbC1kZXYtd2ViaG9vay1zZWNyZXQ=";
const SIMULATOR_API_KEY: &str = "sk_local_simulator";
const SIMULATOR_PRODUCT: &str = "pdt_local_demo";
const TABLE: &str = "paywall-local";
const DEMO_PAGE: &str = include_str!("../static/index.html");
const MAX_BODY: usize = 1024 * 1024;

pub type ServerError = Box<dyn std::error::Error + Send + Sync>;

struct App {
    status: StatusHandler,
    create_checkout: CreateCheckoutHandler,
    success: SuccessHandler,
    portal: PortalHandler,
    webhook: WebhookHandler,
    jwt_secret: Vec<u8>,
}

/// What the server tells the person who started it.
pub struct Started {
    pub base_url: String,
    pub simulator: bool,
    pub jwt_secret_is_default: bool,
    /// Where the state (dynoxide's SQLite file) is kept.
    pub state_dir: PathBuf,
}

fn env(name: &str) -> Option<String> {
    Vars::process().optional(name)
}

/// Runs until `shutdown` resolves. `on_ready` is called once the port is bound and the
/// table exists.
pub async fn run(
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&Started),
) -> Result<(), ServerError> {
    let port: u16 = match env("PORT") {
        Some(raw) => raw
            .parse()
            .map_err(|_| format!("PORT is not a port number: {raw}"))?,
        None => DEFAULT_PORT,
    };
    let state_dir = PathBuf::from(env("PAYWALL_STATE_DIR").unwrap_or_else(|| ".local".to_owned()));
    std::fs::create_dir_all(&state_dir)
        .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    let base_url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());

    let mut dynamo = LocalDynamo::on_disk(&state_dir.join("paywall.db"), "127.0.0.1:0").await?;
    let client = client_for(dynamo.endpoint());
    create_table_from_template(&client, &template_path(), TABLE).await?;
    let store = Store::new(client, TABLE);

    let jwt_secret = env("DEV_JWT_SECRET");
    let jwt_secret_is_default = jwt_secret.is_none();
    let jwt_secret = jwt_secret.unwrap_or_else(|| DEFAULT_JWT_SECRET.to_owned());
    let webhook_secret_text =
        env("DODO_PAYMENTS_WEBHOOK_SECRET").unwrap_or_else(|| DEFAULT_WEBHOOK_SECRET.to_owned());
    let webhook_secret = WebhookSecret::parse(&webhook_secret_text)
        .map_err(|e| format!("DODO_PAYMENTS_WEBHOOK_SECRET: {e}"))?;

    // Real Dodo (test mode) when a key is given; otherwise the simulator on this port.
    let simulator = match env("DODO_PAYMENTS_API_KEY") {
        Some(_) => None,
        // Its records are kept beside the paywall's, so that a restart loses neither.
        None => Some(DodoSimulator::with_state_file(
            format!("{base_url}/dodo"),
            Some(SIMULATOR_API_KEY.into()),
            &state_dir.join("dodo-simulator.json"),
        )?),
    };
    let (dodo_config, catalog) = match &simulator {
        None => (
            DodoConfig::from_vars(&Vars::process())?,
            Catalog::from_vars(&Vars::process())?,
        ),
        Some(simulator) => {
            simulator.set_webhook(Some(WebhookTarget {
                url: format!("{base_url}/payment/webhook"),
                secret: Arc::new(WebhookSecret::parse(&webhook_secret_text)?),
                time_compression: 60,
            }));
            // The simulator sells any product: without one configured, a demo product.
            let with_demo_product = |name: &str| match name {
                "DODO_PRODUCT_ID" => env(name).or_else(|| Some(SIMULATOR_PRODUCT.to_owned())),
                _ => env(name),
            };
            (
                DodoConfig {
                    api_key: SecretString::from(SIMULATOR_API_KEY),
                    base_url: format!("{base_url}/dodo"),
                },
                Catalog::from_vars(&Vars::new(&with_demo_product))?,
            )
        }
    };
    let dodo = DodoClient::new(&dodo_config)?;
    let checkout = CheckoutConfig {
        success_url: env("DODO_SUCCESS_URL").unwrap_or_else(|| format!("{base_url}/")),
    };

    let app = Arc::new(App {
        status: StatusHandler::new(store.clone()),
        create_checkout: CreateCheckoutHandler::new(
            store.clone(),
            dodo.clone(),
            catalog.clone(),
            checkout,
        ),
        success: SuccessHandler::new(store.clone(), dodo.clone(), catalog.clone()),
        portal: PortalHandler::new(store.clone(), dodo),
        webhook: WebhookHandler::new(store, webhook_secret, catalog),
        jwt_secret: jwt_secret.into_bytes(),
    });

    let mut router = Router::new()
        .route("/", get(|| async { Html(DEMO_PAGE) }))
        .route("/dev/token", get(mint_token))
        .route("/payment/status", get(status))
        .route("/payment/create-checkout-session", post(create_checkout))
        .route("/payment/success", post(success))
        .route("/payment/portal", post(portal))
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
    let router = router.layer(middleware::from_fn(cors));

    on_ready(&Started {
        base_url,
        simulator: simulator.is_some(),
        jwt_secret_is_default,
        state_dir: state_dir.clone(),
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    dynamo.shut_down().await;
    Ok(())
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
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

/// Local frontends on other ports may call the API (API Gateway's CORS does this in AWS).
async fn cors(request: Request, next: Next) -> Response {
    let preflight = request.method() == Method::OPTIONS;
    let mut response = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    response
}

#[derive(Deserialize)]
struct TokenQuery {
    sub: Option<String>,
    email: Option<String>,
    /// `false` mints a token whose e-mail is not verified (default `true`).
    email_verified: Option<bool>,
}

async fn mint_token(State(app): State<Arc<App>>, Query(query): Query<TokenQuery>) -> Response {
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
        paywall::time::Clock::system().now().unix_seconds(),
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

/// Verifies the bearer token, then hands the request to `handler` with the claims where
/// API Gateway puts them (`requestContext.authorizer.jwt.claims`).
async fn authorized<H: Handler>(app: &App, handler: &H, request: Request) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let Some(token) = token else {
        return unauthorized();
    };
    let Ok(claims) = crate::dev_jwt::verify(
        &app.jwt_secret,
        token.trim(),
        paywall::time::Clock::system().now().unix_seconds(),
    ) else {
        return unauthorized();
    };
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
    if let Some(context) = context {
        lambda_request = lambda_request.with_request_context(context);
    }
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

async fn create_checkout(State(app): State<Arc<App>>, request: Request) -> Response {
    authorized(&app, &app.create_checkout, request).await
}

async fn success(State(app): State<Arc<App>>, request: Request) -> Response {
    authorized(&app, &app.success, request).await
}

async fn portal(State(app): State<Arc<App>>, request: Request) -> Response {
    authorized(&app, &app.portal, request).await
}

/// The webhook is public, like the Function URL (`AuthType: NONE`): its signature is
/// its authentication.
async fn webhook(State(app): State<Arc<App>>, request: Request) -> Response {
    call(&app.webhook, request, None).await
}
