//! What the integration tests share: a world of real components (dynoxide over loopback
//! with the table from template.yaml, the Dodo simulator over HTTP, real HMAC keys) and
//! Lambda events built from the fixture files.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use dev::dodo_simulator::{DodoSimulator, RunningSimulator, WebhookTarget};
use dev::local_dynamodb::{LocalDynamo, create_table_from_template, template_path};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use paywall::config::DodoConfig;
use paywall::dodo::{DodoClient, Timeouts};
use paywall::handlers::{CreateCheckoutHandler, StatusHandler, SuccessHandler, WebhookHandler};
use paywall::ids::ProductId;
use paywall::plan::{Catalog, Plan};
use paywall::store::Store;
use paywall::webhook_signature::WebhookSecret;
use secrecy::SecretString;
use serde_json::{Value, json};

pub const TABLE: &str = "paywall-test";
pub const API_KEY: &str = "sk_test_local";
pub const PRODUCT: &str = "pdt_paywall";
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const SUCCESS_URL: &str = "https://app.example.com/dashboard?payment=success";

pub struct World {
    pub dynamo: LocalDynamo,
    pub store: Store,
    pub dodo: RunningSimulator,
}

/// The table from `template.yaml`, without its stream (which the embedded engine keeps
/// growing with every write, slowing the tests that write much; only the tests of the
/// stream itself need it: [`store_with_stream_on`]).
pub async fn store_on(dynamo: &LocalDynamo) -> Store {
    let client = dynamo.client();
    dev::local_dynamodb::create_table_from_template_without_stream(
        &client,
        &template_path(),
        TABLE,
    )
    .await
    .expect("table from template.yaml");
    Store::new(client, TABLE)
}

/// The table from `template.yaml`, stream included.
#[allow(dead_code)]
pub async fn store_with_stream_on(dynamo: &LocalDynamo) -> Store {
    let client = dynamo.client();
    create_table_from_template(&client, &template_path(), TABLE)
        .await
        .expect("table from template.yaml");
    Store::new(client, TABLE)
}

impl World {
    pub async fn new() -> Self {
        Self::build(false).await
    }

    /// A world whose table has its stream (the tests of access events' delivery).
    #[allow(dead_code)]
    pub async fn with_stream() -> Self {
        Self::build(true).await
    }

    async fn build(stream: bool) -> Self {
        let dynamo = LocalDynamo::in_memory().await.expect("dynoxide");
        let store = if stream {
            store_with_stream_on(&dynamo).await
        } else {
            store_on(&dynamo).await
        };
        let dodo = DodoSimulator::start(Some(API_KEY.to_owned()))
            .await
            .expect("simulator");
        Self {
            dynamo,
            store,
            dodo,
        }
    }

    /// The table as the function `binary` reaches it: signed as its role, so that every
    /// call is held to that role's policy in template.yaml (dev::iam). `self.store` is the
    /// tests' own, an administrator's.
    pub fn store_as(&self, binary: &str) -> Store {
        Store::new(self.dynamo.client_as(binary), TABLE)
    }

    pub fn sim(&self) -> &DodoSimulator {
        &self.dodo.simulator
    }

    pub fn dodo_client(&self) -> DodoClient {
        dodo_client_for(&self.dodo.url)
    }

    pub fn status(&self) -> StatusHandler {
        StatusHandler::new(self.store_as("status"), catalog())
    }

    pub fn create_checkout(&self) -> CreateCheckoutHandler {
        CreateCheckoutHandler::new(
            self.store_as("create-checkout"),
            self.dodo_client(),
            catalog(),
            paywall::config::CheckoutConfig {
                success_url: SUCCESS_URL.to_owned(),
            },
        )
    }

    pub fn success(&self) -> SuccessHandler {
        SuccessHandler::new(self.store_as("success"), self.dodo_client(), catalog())
    }

    pub fn webhook(&self) -> WebhookHandler {
        WebhookHandler::new(self.store_as("webhook"), secret(), catalog())
    }

    /// Opens a checkout for `user` through the handler and returns its session id.
    pub async fn open_checkout(&self, user: &str, email: &str) -> String {
        use paywall::runtime::Handler;
        let response = self
            .create_checkout()
            .handle(api_event(
                "POST",
                "/payment/create-checkout-session",
                Some((user, Some(email))),
                Some("{}"),
            ))
            .await;
        let (status, body) = read(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["session_id"].as_str().expect("session_id").to_owned()
    }

    /// A payment as Dodo would hold it after `user` paid `session` (or without any link).
    pub fn dodo_payment(
        &self,
        payment_id: &str,
        status: &str,
        user: Option<&str>,
        session: Option<&str>,
    ) -> Value {
        let mut metadata = json!({});
        if let Some(user) = user {
            metadata = json!({"user_id": user, "plan": "monthly"});
        }
        let payment = json!({
            "payment_id": payment_id,
            "business_id": "bus_1",
            "status": status,
            "total_amount": 1900,
            "currency": "USD",
            "customer": {"customer_id": "cus_1", "email": "buyer@example.com", "name": "buyer"},
            "metadata": metadata,
            "checkout_session_id": session,
            "subscription_id": null,
            "product_cart": [{"product_id": PRODUCT, "quantity": 1}],
            "created_at": paywall::time::Clock::system().now().to_rfc3339(),
        });
        self.sim().put_payment(payment.clone());
        payment
    }

    pub fn webhook_target(&self, url: &str) -> WebhookTarget {
        WebhookTarget {
            url: url.to_owned(),
            secret: Arc::new(secret()),
            time_compression: 3600,
        }
    }
}

pub fn dodo_client_for(url: &str) -> DodoClient {
    DodoClient::with_timeouts(
        &DodoConfig {
            api_key: SecretString::from(API_KEY),
            base_url: url.to_owned(),
        },
        Timeouts {
            connect: Duration::from_millis(500),
            request: Duration::from_millis(700),
            retry_backoff: Duration::from_millis(20),
        },
    )
    .expect("client")
}

pub fn catalog() -> Catalog {
    Catalog::single(Plan::pass(
        "monthly",
        ProductId::parse(PRODUCT).expect("valid"),
        30,
    ))
}

pub const PRO: &str = "pdt_pro";

/// The `monthly` pass and a `pro` subscription.
pub fn catalog_with_subscription() -> Catalog {
    let pass = Plan::pass("monthly", ProductId::parse(PRODUCT).expect("valid"), 30);
    let pro = Plan::subscription("pro", ProductId::parse(PRO).expect("valid"));
    Catalog::of(vec![pass, pro]).expect("plans")
}

pub fn secret() -> WebhookSecret {
    WebhookSecret::parse(WEBHOOK_SECRET).expect("valid")
}

/// An API Gateway v2 event (from the fixture) as lambda_http hands it to a handler.
pub fn api_event(
    method: &str,
    path: &str,
    claims: Option<(&str, Option<&str>)>,
    body: Option<&str>,
) -> Request {
    let event = dev::fixtures::api_gateway_event(method, path, claims, body);
    lambda_http::request::from_str(&event.to_string()).expect("a valid API Gateway v2 event")
}

/// A Function URL event (from the fixture) as lambda_http hands it to a handler.
pub fn function_url_event(body: &[u8], headers: &[(&str, String)], base64: bool) -> Request {
    let event = dev::fixtures::function_url_event(body, headers, base64);
    lambda_http::request::from_str(&event.to_string()).expect("a valid Function URL event")
}

/// A Function URL event for a webhook, signed as Dodo signs it.
pub fn signed_webhook(body: &str, webhook_id: &str, timestamp: i64) -> Request {
    let signature = secret().sign(webhook_id, timestamp, body.as_bytes());
    function_url_event(
        body.as_bytes(),
        &[
            ("webhook-id", webhook_id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ],
        false,
    )
}

pub fn payment_event(event_type: &str, payment: &Value) -> String {
    let mut data = payment.clone();
    data["payload_type"] = json!("Payment");
    json!({
        "business_id": "bus_1",
        "type": event_type,
        "timestamp": paywall::time::Clock::system().now().to_rfc3339(),
        "data": data,
    })
    .to_string()
}

pub async fn read(response: Response<Body>) -> (StatusCode, Value) {
    let status = response.status();
    let body = match response.body() {
        Body::Empty => Value::Null,
        Body::Text(text) => serde_json::from_str(text).expect("JSON body"),
        Body::Binary(bytes) => serde_json::from_slice(bytes).expect("JSON body"),
        _ => Value::Null,
    };
    (status, body)
}

/// Records an open checkout for `user`, as create-checkout leaves it (two hours old, so
/// never handed out again): what a buyer returning to `/payment/success` has.
pub async fn returning_buyer(world: &World, user: &str) {
    world
        .store
        .record_checkout(
            &paywall::ids::UserId::parse(user).expect("valid"),
            None,
            &paywall::store::PendingCheckout {
                session_id: format!("cks_{}", user.replace('-', "_")),
                plan: "monthly".into(),
                created_at: paywall::time::Clock::system().now().plus_seconds(-2 * 3600),
                checkout_url: None,
            },
        )
        .await
        .expect("recorded");
}

/// A function's debug binary, as `cargo build --bins` left it (or `PAYWALL_BIN_DIR`).
pub fn lambda_binary(name: &str) -> std::path::PathBuf {
    let path = dev::lambda_harness::binary_dir("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`, which `make test` runs)",
        path.display()
    );
    path
}
