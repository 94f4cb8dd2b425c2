//! The four built binaries, run as Lambda runs them (a local Runtime API, Lambda's
//! environment, API Gateway v2 and Function URL events), against dynoxide over loopback
//! and the Dodo stand-in over HTTP. `make test` builds the binaries first.

mod common;

use std::time::Duration;

use common::*;
use dev::dodo_simulator::DodoSimulator;
use dev::fixtures::{api_gateway_event, function_url_event};
use dev::lambda_harness::RunningFunction;
use dev::local_dynamodb::LocalDynamo;
use serde_json::{Value, json};

fn config(dynamo: &LocalDynamo, dodo_url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TABLE_NAME", TABLE.to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB", dynamo.endpoint().to_owned()),
        ("DODO_PAYMENTS_API_KEY", API_KEY.to_owned()),
        ("DODO_PAYMENTS_BASE_URL", dodo_url.to_owned()),
        ("DODO_PAYMENTS_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ("DODO_PRODUCT_ID", PRODUCT.to_owned()),
        ("DODO_SUCCESS_URL", SUCCESS_URL.to_owned()),
        ("ENV", "development".to_owned()),
    ]
}

/// Standard Webhooks headers signing `body` as delivery `id`, now, with the test secret.
fn signed_headers(id: &str, body: &str) -> [(&'static str, String); 3] {
    let now = paywall::time::Clock::system().now().unix_seconds();
    [
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", now.to_string()),
        ("webhook-signature", secret().sign(id, now, body.as_bytes())),
    ]
}

/// `(statusCode, parsed body)` of an API Gateway v2 / Function URL response.
fn answer(response: Value) -> (u64, Value) {
    let status = response["statusCode"].as_u64().unwrap_or_default();
    let body = response["body"]
        .as_str()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_end_to_end_through_the_binaries() {
    let dynamo = LocalDynamo::in_memory().await.expect("dynoxide");
    let _store = store_on(&dynamo).await;
    let dodo = DodoSimulator::start(Some(API_KEY.into()))
        .await
        .expect("sim");
    let env = config(&dynamo, &dodo.url);

    let status = RunningFunction::spawn(&common::lambda_binary("status"), &env)
        .await
        .expect("status");
    let checkout = RunningFunction::spawn(&common::lambda_binary("create-checkout"), &env)
        .await
        .expect("checkout");
    let success = RunningFunction::spawn(&common::lambda_binary("success"), &env)
        .await
        .expect("success");
    let webhook = RunningFunction::spawn(&common::lambda_binary("webhook"), &env)
        .await
        .expect("webhook");

    let alice = Some(("user-alice", Some("alice@example.com")));
    let (code, body) = answer(
        status
            .invoke(api_gateway_event("GET", "/payment/status", alice, None))
            .await
            .expect("invoked"),
    );
    assert_eq!(
        (code, body["has_paid"].clone()),
        (200, json!(false)),
        "{body}"
    );

    // Claims that are not strings (numbers, booleans, lists) still identify the caller.
    let mut typed = api_gateway_event("GET", "/payment/status", alice, None);
    let claims = &mut typed["requestContext"]["authorizer"]["jwt"]["claims"];
    claims["iat"] = json!(1_700_000_000);
    claims["email_verified"] = json!(true);
    claims["cognito:groups"] = json!(["buyers"]);
    let (code, body) = answer(status.invoke(typed).await.expect("invoked"));
    assert_eq!(
        (code, body["status"].clone()),
        (200, json!("none")),
        "{body}"
    );

    // Something that is not an HTTP event at all is a 400, not a crashed invocation.
    let (code, body) = answer(
        status
            .invoke(json!({"hello": "world"}))
            .await
            .expect("invoked"),
    );
    assert_eq!(
        (code, body["error"]["code"].clone()),
        (400, json!("invalid_request")),
        "{body}"
    );

    let (code, body) = answer(
        checkout
            .invoke(api_gateway_event(
                "POST",
                "/payment/create-checkout-session",
                alice,
                Some(r#"{"plan":"monthly"}"#),
            ))
            .await
            .expect("invoked"),
    );
    assert_eq!(code, 200, "{body}");
    let checkout_url = body["checkout_url"].as_str().expect("url").to_owned();
    let session_id = body["session_id"].as_str().expect("session").to_owned();

    // The buyer pays on the hosted page (a form POST, as the Pay button sends).
    let redirect = paywall::http::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(&checkout_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("outcome=succeeded")
        .send()
        .await
        .expect("paid");
    assert_eq!(redirect.status(), 303);
    let location = redirect.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(location.starts_with(SUCCESS_URL), "{location}");
    let payment_id = location
        .split("payment_id=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .expect("payment_id in the return URL")
        .to_owned();
    let payment = dodo.simulator.payment(&payment_id).expect("payment");
    assert_eq!(payment["checkout_session_id"], session_id.as_str());

    // Dodo's webhook reaches the Function URL.
    let event = payment_event("payment.succeeded", &payment);
    let headers = signed_headers("msg_e2e", &event);
    let (code, body) = answer(
        webhook
            .invoke(function_url_event(event.as_bytes(), &headers, false))
            .await
            .expect("invoked"),
    );
    assert_eq!(
        (code, body["outcome"].clone()),
        (200, json!("granted")),
        "{body}"
    );

    // The frontend confirms after the redirect: already granted, answered as success.
    let (code, body) = answer(
        success
            .invoke(api_gateway_event(
                "POST",
                "/payment/success",
                alice,
                Some(&json!({"payment_id": payment_id}).to_string()),
            ))
            .await
            .expect("invoked"),
    );
    assert_eq!(
        (code, body["status"].clone()),
        (200, json!("success")),
        "{body}"
    );

    let (code, body) = answer(
        status
            .invoke(api_gateway_event("GET", "/payment/status", alice, None))
            .await
            .expect("invoked"),
    );
    assert_eq!(code, 200);
    assert_eq!(body["has_paid"], true, "{body}");
    assert_eq!(body["subscription_plan"], "monthly");

    // Bob can neither see nor claim Alice's payment.
    let bob = Some(("user-bob", None));
    let (code, _) = answer(
        success
            .invoke(api_gateway_event(
                "POST",
                "/payment/success",
                bob,
                Some(&json!({"payment_id": payment_id}).to_string()),
            ))
            .await
            .expect("invoked"),
    );
    assert_eq!(code, 403);

    // No claims at all: 401 from every API function.
    for function in [&status, &checkout, &success] {
        let (code, body) = answer(
            function
                .invoke(api_gateway_event(
                    "POST",
                    "/payment/anything",
                    None,
                    Some("{}"),
                ))
                .await
                .expect("invoked"),
        );
        assert_eq!(code, 401, "{body}");
    }
}

#[tokio::test]
async fn a_missing_or_malformed_variable_stops_the_start_and_names_it() {
    let dynamo = LocalDynamo::in_memory().await.expect("dynoxide");
    let full = config(&dynamo, "http://127.0.0.1:9");
    let cases = [
        ("status", "TABLE_NAME", None),
        ("create-checkout", "DODO_SUCCESS_URL", None),
        ("create-checkout", "DODO_PRODUCT_ID", None),
        ("success", "DODO_PAYMENTS_API_KEY", None),
        ("webhook", "DODO_PAYMENTS_WEBHOOK_SECRET", None),
        ("webhook", "DODO_PAYMENTS_WEBHOOK_SECRET", Some("whsec_")),
        ("success", "ENV", Some("staging")),
        ("create-checkout", "PLAN_DURATION_DAYS", Some("thirty")),
    ];
    for (name, variable, value) in cases {
        let env: Vec<_> = full
            .iter()
            .filter(|(key, _)| *key != variable)
            .cloned()
            .chain(value.map(|v| (variable, v.to_owned())))
            .collect();
        let function = RunningFunction::spawn(&common::lambda_binary(name), &env)
            .await
            .expect("spawned");
        let (code, stderr) = function
            .exit(Duration::from_secs(10))
            .await
            .expect("the start fails instead of serving");
        assert_eq!(code, 1, "{name} without {variable}: {stderr}");
        assert!(stderr.contains(variable), "{name}: {stderr}");
    }
}

#[tokio::test]
async fn the_portal_and_the_scheduled_reconcile_run_as_lambda_runs_them() {
    let dynamo = LocalDynamo::in_memory().await.expect("dynoxide");
    let _store = store_on(&dynamo).await;
    let dodo = DodoSimulator::start(Some(API_KEY.into()))
        .await
        .expect("sim");
    let env = config(&dynamo, &dodo.url);

    let portal = RunningFunction::spawn(&common::lambda_binary("portal"), &env)
        .await
        .expect("portal");
    let (code, body) = answer(
        portal
            .invoke(api_gateway_event(
                "POST",
                "/payment/portal",
                Some(("nobody", None)),
                None,
            ))
            .await
            .expect("invoked"),
    );
    assert_eq!(
        (code, body["error"]["code"].clone()),
        (404, json!("no_customer")),
        "{body}"
    );

    let reconcile = RunningFunction::spawn(&common::lambda_binary("reconcile"), &env)
        .await
        .expect("reconcile");
    let scheduled = json!({
        "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event", "source": "aws.events", "account": "123456789012",
        "time": "2026-11-26T21:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/reconcile"], "detail": {}
    });
    let summary = reconcile.invoke(scheduled).await.expect("invoked");
    assert_eq!(summary["checked"], 0, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["left_behind"], 0);
}

/// The server API and the stream publisher, as Lambda runs them: a SigV4-authorized usage
/// call and a grant through `server` (an end user's JWT refused), then the stream's new
/// records through `access-events` to a local EventBridge.
#[tokio::test]
async fn the_server_api_and_the_access_event_publisher_run_as_lambda_runs_them() {
    let dynamo = LocalDynamo::in_memory().await.expect("dynoxide");
    let _store = store_with_stream_on(&dynamo).await;
    let dodo = DodoSimulator::start(Some(API_KEY.into()))
        .await
        .expect("sim");
    let bus = dev::local_stream::LocalEventBus::default();
    let mut env = config(&dynamo, &dodo.url);
    env.push((
        "PLANS",
        json!({"monthly": {"product_id": PRODUCT, "kind": "pass", "days": 30,
                           "limits": {"api_calls": 5}}})
        .to_string(),
    ));
    env.push((
        "AWS_ENDPOINT_URL_EVENTBRIDGE",
        bus.start().await.expect("bus"),
    ));

    let server = RunningFunction::spawn(&common::lambda_binary("server"), &env)
        .await
        .expect("server");
    let arn = Some("arn:aws:iam::123456789012:user/backend");
    let (code, body) = answer(
        server
            .invoke(dev::fixtures::server_event(
                "POST",
                "/server/users/zoe/grants",
                arn,
                Some(r#"{"plan":"monthly","days":10,"reason":"beta"}"#),
            ))
            .await
            .expect("invoked"),
    );
    assert_eq!(code, 200, "{body}");
    let usage = r#"{"user_id":"zoe","feature":"api_calls","amount":2,"idempotency_key":"k"}"#;
    let (code, body) = answer(
        server
            .invoke(dev::fixtures::server_event(
                "POST",
                "/server/usage",
                arn,
                Some(usage),
            ))
            .await
            .expect("invoked"),
    );
    assert_eq!(
        (code, body),
        (200, json!({"allowed": true, "remaining": 3}))
    );
    let (code, _) = answer(
        server
            .invoke(api_gateway_event(
                "POST",
                "/server/usage",
                Some(("zoe", None)),
                Some(usage),
            ))
            .await
            .expect("invoked"),
    );
    assert_eq!(code, 403, "an end user's token is refused");

    let mut stream = dev::local_stream::LocalStream::open(dynamo.endpoint(), TABLE)
        .await
        .expect("stream");
    let batch = stream.next_batch().await.expect("records");
    let publisher = RunningFunction::spawn(&common::lambda_binary("access-events"), &env)
        .await
        .expect("access-events");
    let answer = publisher.invoke(batch).await.expect("invoked");
    assert_eq!(answer, json!({"batchItemFailures": []}));
    let entries = bus.entries();
    assert_eq!(entries.len(), 1, "one change of access: the comp");
    let detail: Value =
        serde_json::from_str(entries[0]["Detail"].as_str().expect("detail")).expect("JSON");
    assert_eq!(
        (detail["user_id"].clone(), detail["change"].clone()),
        (json!("zoe"), json!("comp_granted"))
    );
    assert_eq!(bus.unsigned_calls(), 0);
}

/// The stack's `secrets-manager` mode: neither secret is in the environment, only its
/// id; each binary reads its secret once at cold start from a (local, signature-checking)
/// Secrets Manager, and then works with it: Dodo takes the key, the webhook's signature
/// checks out. A secret that is not there stops the start and says which variable.
#[tokio::test]
async fn in_secrets_manager_mode_the_binaries_read_their_secrets_at_cold_start() {
    let dynamo = LocalDynamo::in_memory().await.expect("dynoxide");
    let _store = store_on(&dynamo).await;
    let dodo = DodoSimulator::start(Some(API_KEY.into()))
        .await
        .expect("sim");
    let manager = dev::local_secrets::LocalSecretsManager::default();
    manager.put("dodo-paywall/api-key", API_KEY);
    manager.put("dodo-paywall/webhook-secret", WEBHOOK_SECRET);
    let manager_url = manager.start().await.expect("secrets manager");
    let mut env: Vec<(&str, String)> = config(&dynamo, &dodo.url)
        .into_iter()
        .filter(|(name, _)| {
            !name.starts_with("DODO_PAYMENTS_") || *name == "DODO_PAYMENTS_BASE_URL"
        })
        .collect();
    env.push(("AWS_ENDPOINT_URL_SECRETS_MANAGER", manager_url));
    env.push((
        "DODO_PAYMENTS_API_KEY_SECRET_ID",
        "dodo-paywall/api-key".into(),
    ));
    env.push((
        "DODO_PAYMENTS_WEBHOOK_SECRET_ID",
        "dodo-paywall/webhook-secret".into(),
    ));

    let checkout = RunningFunction::spawn(&common::lambda_binary("create-checkout"), &env)
        .await
        .expect("checkout");
    let bob = Some(("user-bob", Some("bob@example.com")));
    let (code, body) = answer(
        checkout
            .invoke(api_gateway_event(
                "POST",
                "/payment/create-checkout-session",
                bob,
                Some("{}"),
            ))
            .await
            .expect("invoked"),
    );
    assert_eq!(
        code, 200,
        "Dodo took the key read from Secrets Manager: {body}"
    );

    let webhook = RunningFunction::spawn(&common::lambda_binary("webhook"), &env)
        .await
        .expect("webhook");
    let event = json!({"business_id": "bus_1", "type": "payment.failed",
        "timestamp": paywall::time::Clock::system().now().to_rfc3339(),
        "data": {"payload_type": "Payment", "payment_id": "pay_sm", "status": "failed",
                 "metadata": {"user_id": "user-bob"}}})
    .to_string();
    let headers = signed_headers("msg_sm", &event);
    let (code, body) = answer(
        webhook
            .invoke(function_url_event(event.as_bytes(), &headers, false))
            .await
            .expect("invoked"),
    );
    assert_eq!(
        code, 200,
        "the signature checked out with the secret read: {body}"
    );
    assert_eq!((manager.calls(), manager.refused()), (2, 0));

    // Every other function that holds the key reads it at cold start too (each role's
    // GetSecretValue is then proven used, see dev::iam) and works with it: Dodo answers
    // the success call's look-up (a 404 for an id it does not know, not a 401 for a bad
    // key), the portal answers, and a reconcile run fails nothing.
    let success = RunningFunction::spawn(&common::lambda_binary("success"), &env)
        .await
        .expect("success");
    let (code, body) = answer(
        success
            .invoke(api_gateway_event(
                "POST",
                "/payment/success",
                bob,
                Some(r#"{"payment_id":"pay_nobody_knows"}"#),
            ))
            .await
            .expect("invoked"),
    );
    assert_eq!(
        code, 404,
        "Dodo took the key and knows no such payment: {body}"
    );
    let portal = RunningFunction::spawn(&common::lambda_binary("portal"), &env)
        .await
        .expect("portal");
    let (code, body) = answer(
        portal
            .invoke(api_gateway_event("POST", "/payment/portal", bob, None))
            .await
            .expect("invoked"),
    );
    assert!(code == 200 || code == 404, "{code}: {body}");
    let reconcile = RunningFunction::spawn(&common::lambda_binary("reconcile"), &env)
        .await
        .expect("reconcile");
    let summary = reconcile
        .invoke(json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}))
        .await
        .expect("invoked");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(manager.calls(), 5, "each function read its secret once");

    // A secret id other than the one the template lets the role read: the start fails,
    // naming the variable and AWS's error (the role's policy names one secret).
    let mut wrong = env.clone();
    wrong.retain(|(name, _)| *name != "DODO_PAYMENTS_API_KEY_SECRET_ID");
    wrong.push(("DODO_PAYMENTS_API_KEY_SECRET_ID", "paywall/nothing".into()));
    let stderr = failed_start("success", &wrong).await;
    assert!(
        stderr.contains("DODO_PAYMENTS_API_KEY_SECRET_ID")
            && stderr.contains("AccessDeniedException"),
        "{stderr}"
    );
    assert!(!stderr.contains(API_KEY), "{stderr}");

    // Signed with other credentials: the stand-in checks the signature, as AWS does.
    let mut forged = env.clone();
    forged.push(("AWS_SECRET_ACCESS_KEY", "not-the-key".into()));
    let stderr = failed_start("portal", &forged).await;
    assert!(stderr.contains("IncompleteSignatureException"), "{stderr}");
    assert_eq!(manager.calls(), 5, "no secret answered to a forged call");

    // A key stored as the console's JSON key/value pairs: the start fails and says so,
    // instead of sending the JSON to Dodo as the key.
    manager.put(
        "dodo-paywall/api-key",
        r#"{"DODO_PAYMENTS_API_KEY": "sk_in_json_value"}"#,
    );
    let stderr = failed_start("create-checkout", &env).await;
    assert!(
        stderr.contains("DODO_PAYMENTS_API_KEY_SECRET_ID") && stderr.contains("plain text"),
        "{stderr}"
    );
    assert!(!stderr.contains("sk_in_json_value"), "{stderr}");
}

/// Starts `function` with `env`, waits for the start to fail with exit status 1, and
/// returns what it printed.
async fn failed_start(function: &str, env: &[(&str, String)]) -> String {
    let failed = RunningFunction::spawn(&common::lambda_binary(function), env)
        .await
        .expect(function);
    let (code, stderr) = failed
        .exit(Duration::from_secs(10))
        .await
        .expect("the start fails instead of serving");
    assert_eq!(code, 1, "{function}: {stderr}");
    stderr
}

/// A delivery that fails after it was verified (the store refuses the grant's write) is
/// answered 503, for Dodo to send it again, and the one line logged names the delivery
/// (its `webhook-id` and event type) so that support can match it to Dodo's delivery
/// log; it carries neither the payload nor the secret (issue 20 review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_fails_after_verification_names_its_delivery_in_the_log() {
    let world = World::new().await;
    let mut env = config(&world.dynamo, &world.dodo.url);
    env.push(("AWS_LAMBDA_LOG_LEVEL", "INFO".to_owned()));
    let mut webhook = RunningFunction::spawn_keeping_log(&common::lambda_binary("webhook"), &env)
        .await
        .expect("webhook");
    let payment = world.dodo_payment("pay_logged", "succeeded", Some("user-lee"), None);
    let event = payment_event("payment.succeeded", &payment);
    let headers = signed_headers("msg_fails_after_verify", &event);
    world.dynamo.fail("TransactWriteItems");
    let (code, body) = answer(
        webhook
            .invoke(function_url_event(event.as_bytes(), &headers, false))
            .await
            .expect("invoked"),
    );
    assert_eq!(code, 503, "{body}");
    let log = webhook.take_log_text().await;
    let failed: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("request failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{log}");
    assert!(
        failed[0].contains("webhook_id msg_fails_after_verify, payment.succeeded"),
        "{log}"
    );
    for private in ["buyer@example.com", WEBHOOK_SECRET, "product_cart"] {
        assert!(!log.contains(private), "{private} in the log: {log}");
    }

    // Dodo sends it again once the store is back: granted, once.
    world.dynamo.heal();
    let (code, body) = answer(
        webhook
            .invoke(function_url_event(event.as_bytes(), &headers, false))
            .await
            .expect("invoked"),
    );
    assert_eq!(
        (code, body["outcome"].clone()),
        (200, json!("granted")),
        "{body}"
    );
}
