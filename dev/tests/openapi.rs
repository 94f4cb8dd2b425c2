//! What the handlers answer conforms to `openapi.yaml`, route by route and status by
//! status, so the document cannot drift from the code.

mod common;

use std::time::Duration;

use common::*;
use dev::dodo_simulator::Fault;
use lambda_http::{Body, Request, Response};
use paywall::runtime::Handler;
use serde_json::{Value, json};

struct Spec(Value);

impl Spec {
    fn load() -> Self {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml"))
            .expect("openapi.yaml");
        let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("YAML");
        Self(serde_json::to_value(yaml).expect("JSON-compatible"))
    }

    fn resolve<'a>(&'a self, mut node: &'a Value) -> &'a Value {
        while let Some(reference) = node.get("$ref").and_then(Value::as_str) {
            let pointer = reference.trim_start_matches('#');
            node = self
                .0
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling {reference}"));
        }
        node
    }

    /// Asserts that `body`, answered with `status` by `method path`, is documented and
    /// valid against the documented schema.
    fn check(&self, method: &str, path: &str, status: u16, body: &Value) {
        let operation = &self.0["paths"][path][method];
        assert!(
            operation.is_object(),
            "{method} {path} is not in openapi.yaml"
        );
        let response = operation["responses"]
            .get(status.to_string())
            .map(|r| self.resolve(r))
            .unwrap_or_else(|| {
                panic!("{method} {path} answered {status}, which openapi.yaml does not document")
            });
        let mut schema = response["content"]["application/json"]["schema"].clone();
        assert!(
            !schema.is_null(),
            "{method} {path} {status} has no JSON schema"
        );
        // Let `#/components/...` references resolve inside the schema.
        schema["components"] = self.0["components"].clone();
        let validator = jsonschema::draft202012::new(&schema).expect("a valid schema");
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status}: {body}\n{errors:#?}"
        );
    }
}

async fn answer(response: Response<Body>) -> (u16, Value) {
    let (status, body) = read(response).await;
    (status.as_u16(), body)
}

async fn api<H: Handler>(
    handler: &H,
    method: &str,
    path: &str,
    user: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let claims = user.map(|u| (u, Some("buyer@example.com")));
    answer(handler.handle(api_event(method, path, claims, body)).await).await
}

#[tokio::test]
async fn every_answer_conforms_to_openapi_yaml() {
    let spec = Spec::load();
    let world = World::new().await;
    let mut seen = Vec::new();
    let mut check = |method: &str, path: &str, (status, body): (u16, Value)| {
        spec.check(method, path, status, &body);
        seen.push(format!("{method} {path} {status}"));
    };

    // status
    let status = world.status();
    check(
        "get",
        "/payment/status",
        api(&status, "GET", "/payment/status", Some("u1"), None).await,
    );
    check(
        "get",
        "/payment/status",
        api(&status, "GET", "/payment/status", None, None).await,
    );

    // create-checkout
    let checkout = world.create_checkout();
    let path = "/payment/create-checkout-session";
    check(
        "post",
        path,
        api(
            &checkout,
            "POST",
            path,
            Some("u1"),
            Some(r#"{"plan":"monthly"}"#),
        )
        .await,
    );
    check(
        "post",
        path,
        api(
            &checkout,
            "POST",
            path,
            Some("u1"),
            Some(r#"{"plan":"gold"}"#),
        )
        .await,
    );
    check("post", path, api(&checkout, "POST", path, None, None).await);
    world.sim().set_fault(Some(Fault::Error {
        status: 422,
        code: "INVALID_REQUEST_BODY".into(),
        message: "bad".into(),
    }));
    check(
        "post",
        path,
        api(&checkout, "POST", path, Some("u3"), None).await,
    );
    world
        .sim()
        .set_fault(Some(Fault::Delay(Duration::from_secs(3))));
    check(
        "post",
        path,
        api(&checkout, "POST", path, Some("u4"), None).await,
    );
    world.sim().set_fault(None);

    // success
    let success = world.success();
    let path = "/payment/success";
    returning_buyer(&world, "u1").await;
    world.dodo_payment("pay_ok", "succeeded", Some("u1"), None);
    world.dodo_payment("pay_proc", "processing", Some("u1"), None);
    world.dodo_payment("pay_fail", "failed", Some("u1"), None);
    let mut other = world.dodo_payment("pay_other", "succeeded", Some("u1"), None);
    other["product_cart"] = json!([{"product_id": "pdt_ebook", "quantity": 1}]);
    world.sim().put_payment(other);
    for (user, body) in [
        (Some("u1"), r#"{"payment_id":"pay_ok"}"#),
        (Some("u1"), r#"{"payment_id":"pay_proc"}"#),
        (Some("u1"), r#"{"payment_id":"pay_fail"}"#),
        (Some("u2"), r#"{"payment_id":"pay_ok"}"#),
        (Some("u1"), r#"{"payment_id":"pay_missing"}"#),
        (Some("u1"), r#"{"payment_id":"pay_other"}"#),
        (Some("u1"), r#"{}"#),
        (None, r#"{"payment_id":"pay_ok"}"#),
    ] {
        check(
            "post",
            path,
            api(&success, "POST", path, user, Some(body)).await,
        );
    }
    world.sim().set_fault(Some(Fault::Error {
        status: 500,
        code: "INTERNAL_SERVER_ERROR".into(),
        message: "x".into(),
    }));
    check(
        "post",
        path,
        api(
            &success,
            "POST",
            path,
            Some("u1"),
            Some(r#"{"payment_id":"pay_ok"}"#),
        )
        .await,
    );
    world
        .sim()
        .set_fault(Some(Fault::Delay(Duration::from_secs(3))));
    check(
        "post",
        path,
        api(
            &success,
            "POST",
            path,
            Some("u1"),
            Some(r#"{"payment_id":"pay_ok"}"#),
        )
        .await,
    );
    world.sim().set_fault(None);

    // portal
    let portal = paywall::handlers::PortalHandler::new(
        world.store_as("portal"),
        world.dodo_client(),
        common::catalog(),
    );
    check(
        "post",
        "/payment/portal",
        api(&portal, "POST", "/payment/portal", Some("nobody"), None).await,
    );
    check(
        "post",
        "/payment/portal",
        api(&portal, "POST", "/payment/portal", Some("u1"), None).await,
    );
    check(
        "post",
        "/payment/portal",
        api(&portal, "POST", "/payment/portal", None, None).await,
    );

    // webhook
    let webhook = world.webhook();
    let payment = world.dodo_payment("pay_hook", "succeeded", Some("u3"), None);
    let event = payment_event("payment.succeeded", &payment);
    let now = paywall::time::Clock::system().now().unix_seconds();
    let deliver = |body: &str, id: &str| -> Request { signed_webhook(body, id, now) };
    check(
        "post",
        "/webhook",
        answer(webhook.handle(deliver(&event, "msg_1")).await).await,
    );
    check(
        "post",
        "/webhook",
        answer(webhook.handle(deliver(&event, "msg_1")).await).await,
    );
    check(
        "post",
        "/webhook",
        answer(webhook.handle(deliver("{}", "msg_2")).await).await,
    );
    check(
        "post",
        "/webhook",
        answer(
            webhook
                .handle(function_url_event(event.as_bytes(), &[], false))
                .await,
        )
        .await,
    );
    let get =
        lambda_http::request::from_str(&dev::fixtures::function_url_method("GET").to_string())
            .expect("event");
    check("post", "/webhook", answer(webhook.handle(get).await).await);

    for expected in [
        "get /payment/status 200",
        "get /payment/status 401",
        "post /payment/create-checkout-session 200",
        "post /payment/create-checkout-session 400",
        "post /payment/create-checkout-session 502",
        "post /payment/create-checkout-session 504",
        "post /payment/success 200",
        "post /payment/success 202",
        "post /payment/success 402",
        "post /payment/success 403",
        "post /payment/success 404",
        "post /payment/success 422",
        "post /webhook 200",
        "post /webhook 400",
        "post /webhook 401",
        "post /payment/portal 200",
        "post /payment/portal 404",
    ] {
        assert!(
            seen.iter().any(|s| s == expected),
            "{expected} was not exercised: {seen:#?}"
        );
    }
}

/// The entitlements route and the server API answer as documented, including to an end
/// user's token on a server route.
#[tokio::test]
async fn entitlements_and_server_answers_conform_to_openapi_yaml() {
    use paywall::handlers::ServerHandler;
    use paywall::plan::{Allowance, Catalog, Plan};
    let spec = Spec::load();
    let world = World::new().await;
    let mut pro = Plan::subscription("pro", paywall::ids::ProductId::parse(PRO).expect("id"));
    pro.allowance.features = vec!["export".into()];
    pro.allowance.limits.insert("api_calls".into(), 3);
    let catalog = Catalog::of(vec![pro])
        .expect("plans")
        .with_free_tier(Allowance {
            features: vec!["basic".into()],
            limits: [("api_calls".to_owned(), 1)].into(),
        });
    let status = paywall::handlers::StatusHandler::new(world.store_as("status"), catalog.clone());
    let entitlements = api(&status, "GET", "/payment/entitlements", Some("u1"), None).await;
    assert_eq!(entitlements.1["plan"], "free");
    spec.check(
        "get",
        "/payment/entitlements",
        entitlements.0,
        &entitlements.1,
    );
    let unauthorized = api(&status, "GET", "/payment/entitlements", None, None).await;
    spec.check(
        "get",
        "/payment/entitlements",
        unauthorized.0,
        &unauthorized.1,
    );

    let server = ServerHandler::new(world.store_as("server"), catalog);
    let arn = "arn:aws:iam::123456789012:user/backend";
    let call = |method: &'static str,
                path: &'static str,
                identity: Option<&'static str>,
                body: Option<&'static str>| {
        let server = &server;
        async move {
            let event = dev::fixtures::server_event(method, path, identity, body);
            let request = lambda_http::request::from_str(&event.to_string()).expect("an event");
            answer(server.handle(request).await).await
        }
    };
    let usage = r#"{"user_id":"u1","feature":"api_calls","amount":1,"idempotency_key":"k1"}"#;
    let mut seen = Vec::new();
    for (method, path, spec_path, identity, body, expected) in [
        (
            "POST",
            "/server/usage",
            "/server/usage",
            Some(arn),
            Some(usage),
            200,
        ),
        (
            "POST",
            "/server/usage",
            "/server/usage",
            Some(arn),
            Some(usage),
            200,
        ),
        (
            "POST",
            "/server/usage",
            "/server/usage",
            Some(arn),
            Some(r#"{"user_id":"u1","feature":"api_calls","amount":2,"idempotency_key":"k1"}"#),
            409,
        ),
        (
            "POST",
            "/server/usage",
            "/server/usage",
            Some(arn),
            Some(r#"{"user_id":"u1"}"#),
            400,
        ),
        (
            "POST",
            "/server/usage",
            "/server/usage",
            None,
            Some(usage),
            403,
        ),
        (
            "POST",
            "/server/users/u1/grants",
            "/server/users/{user_id}/grants",
            Some(arn),
            Some(r#"{"plan":"pro","days":7,"reason":"beta tester"}"#),
            200,
        ),
        (
            "POST",
            "/server/users/u1/grants",
            "/server/users/{user_id}/grants",
            Some(arn),
            Some(r#"{"plan":"gold","days":7,"reason":"x"}"#),
            400,
        ),
        (
            "GET",
            "/server/users/u1?limit=1",
            "/server/users/{user_id}",
            Some(arn),
            None,
            200,
        ),
        (
            "GET",
            "/server/users/u1?limit=0",
            "/server/users/{user_id}",
            Some(arn),
            None,
            400,
        ),
        (
            "DELETE",
            "/server/users/u1/grants",
            "/server/users/{user_id}/grants",
            Some(arn),
            None,
            200,
        ),
        (
            "DELETE",
            "/server/users/u1/grants",
            "/server/users/{user_id}/grants",
            Some(arn),
            None,
            404,
        ),
        (
            "GET",
            "/server/users/u1",
            "/server/users/{user_id}",
            None,
            None,
            403,
        ),
    ] {
        let (status, body) = call(method, path, identity, body).await;
        assert_eq!(status, expected, "{method} {path}: {body}");
        spec.check(&method.to_lowercase(), spec_path, status, &body);
        seen.push(format!("{method} {path} {status}"));
    }
    // An end user's JWT on a server route is refused, and documented so.
    let user_token = api(&server, "POST", "/server/usage", Some("u1"), Some(usage)).await;
    assert_eq!(user_token.0, 403);
    spec.check("post", "/server/usage", user_token.0, &user_token.1);
    assert_eq!(seen.len(), 12);
}

#[path = "common/clock_stack.rs"]
mod clock_stack;

/// The self-service routes (issue 18) on the local stack, each answer checked against
/// the document: the plan listing, trials, plan changes with their preview, a scheduled
/// change dropped, cancel and resume, and their refusals.
#[tokio::test]
async fn the_self_service_routes_conform_to_openapi_yaml() {
    use reqwest::Method;
    let spec = Spec::load();
    let s = clock_stack::stack("openapi-self-service").await;
    let mut seen = Vec::new();
    let mut check = |method: &Method, path: &str, (status, body): (u16, Value)| {
        spec.check(&method.as_str().to_lowercase(), path, status, &body);
        seen.push(format!("{method} {path} {status}"));
        (status, body)
    };
    let plans = s
        .http
        .get(format!("{}/payment/plans", s.base))
        .send()
        .await
        .expect("answered");
    let status = plans.status().as_u16();
    check(
        &Method::GET,
        "/payment/plans",
        (status, plans.json().await.expect("json")),
    );

    let post = Method::POST;
    let delete = Method::DELETE;
    for (method, path, user, body, expected) in [
        (
            &post,
            "/payment/trial",
            "t1",
            Some(json!({"plan": "team"})),
            201,
        ),
        (
            &post,
            "/payment/trial",
            "t1",
            Some(json!({"plan": "team"})),
            409,
        ),
        (
            &post,
            "/payment/trial",
            "t1",
            Some(json!({"plan": "nope"})),
            400,
        ),
        (
            &post,
            "/payment/trial",
            "t1",
            Some(json!({"plan": "team", "x": 1})),
            400,
        ),
        (
            &post,
            "/payment/change-plan",
            "t1",
            Some(json!({"plan": "pro"})),
            409,
        ),
        (
            &post,
            "/payment/change-plan",
            "t1",
            Some(json!({"plan": "monthly"})),
            400,
        ),
        (&delete, "/payment/change-plan", "t1", None, 409),
        (&post, "/payment/cancel", "t1", None, 409),
        (&post, "/payment/resume", "t1", None, 409),
    ] {
        let answer = s.call(method.clone(), path, user, body).await;
        assert_eq!(answer.0, expected, "{method} {path}: {}", answer.1);
        check(method, path, answer);
    }
    let unverified = s
        .http
        .post(format!("{}/payment/trial", s.base))
        .bearer_auth(s.token_with("t2", "t2@example.com", false))
        .json(&json!({"plan": "team"}))
        .send()
        .await
        .expect("answered");
    let status = unverified.status().as_u16();
    assert_eq!(status, 403);
    check(
        &post,
        "/payment/trial",
        (status, unverified.json().await.expect("json")),
    );

    s.buy("sub", "pro", "outcome=succeeded").await;
    s.advance("3d").await;
    for (method, path, body) in [
        (
            &post,
            "/payment/change-plan",
            Some(json!({"plan": "team", "preview": true})),
        ),
        (&post, "/payment/change-plan", Some(json!({"plan": "team"}))),
        (&post, "/payment/change-plan", Some(json!({"plan": "pro"}))),
        (&delete, "/payment/change-plan", None),
        (&post, "/payment/cancel", None),
        (&post, "/payment/resume", None),
    ] {
        let answer = s.call(method.clone(), path, "sub", body).await;
        assert_eq!(answer.0, 200, "{method} {path}: {}", answer.1);
        check(method, path, answer);
    }
    let unauthenticated = s
        .http
        .post(format!("{}/payment/cancel", s.base))
        .send()
        .await
        .expect("answered");
    let status = unauthenticated.status().as_u16();
    check(
        &post,
        "/payment/cancel",
        (status, unauthenticated.json().await.expect("json")),
    );
    assert_eq!(seen.len(), 18);
}
