//! Errors are JSON, everywhere the local server answers (`make dev`'s binary, on a free
//! port with its own state folder): the API's own shape `{"error": {"code", "message"}}`
//! for an unknown path, a method a route does not take, a body too large and a framework
//! rejection; Dodo's shape `{"code", "message"}` under the simulator's `/dodo`. And the
//! webhook answers at `/webhook` (openapi.yaml's path) as well as `/payment/webhook`.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

struct Server {
    child: Child,
    base: String,
    state: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

async fn start(name: &str) -> Server {
    let state =
        std::env::temp_dir().join(format!("paywall-dev-errors-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dev"))
        .arg("serve")
        .env("PORT", port.to_string())
        .env("PAYWALL_STATE_DIR", &state)
        .env_remove("DODO_PAYMENTS_API_KEY")
        .env_remove("DEV_JWT_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the dev server starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("Ready.") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "the server printed Ready.");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        state,
    }
}

fn http() -> reqwest::Client {
    paywall::http::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn token(server: &Server) -> String {
    let answer: Value = http()
        .get(format!(
            "{}/dev/token?sub=errors&email=errors@example.com",
            server.base
        ))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    answer["token"].as_str().expect("token").to_owned()
}

/// The answer has `status`, says it is JSON, and is the API's error shape with `code`.
/// Returns the response's headers for further checks.
async fn assert_api_error(
    response: reqwest::Response,
    status: u16,
    code: &str,
) -> reqwest::header::HeaderMap {
    let what = format!("{} {}", response.status(), response.url());
    assert_eq!(response.status().as_u16(), status, "{what}");
    let headers = response.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{what}: content-type {content_type:?}"
    );
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
    // As the book promises: the request id, the one API Gateway's header carries.
    let request_id = body["error"]["request_id"].as_str().unwrap_or_default();
    assert!(!request_id.is_empty(), "{what}: no request_id in {body}");
    assert_eq!(
        headers.get("apigw-requestid").and_then(|v| v.to_str().ok()),
        Some(request_id),
        "{what}"
    );
    headers
}

fn allow(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_local_servers_own_errors_are_json() {
    let server = start("api").await;
    let token = token(&server).await;

    // An unknown path, with any method.
    for (method, path) in [
        (reqwest::Method::GET, "/no/such/path"),
        (reqwest::Method::POST, "/payment/nothing"),
    ] {
        let response = http()
            .request(method, format!("{}{path}", server.base))
            .send()
            .await
            .expect("answer");
        assert_api_error(response, 404, "not_found").await;
    }

    // A method an API route does not take: 405 with the methods it does take.
    let response = http()
        .get(format!("{}/payment/create-checkout-session", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("answer");
    let headers = assert_api_error(response, 405, "method_not_allowed").await;
    assert_eq!(allow(&headers), "POST");
    let response = http()
        .delete(format!("{}/payment/status", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("answer");
    let headers = assert_api_error(response, 405, "method_not_allowed").await;
    assert!(allow(&headers).contains("GET"), "{headers:?}");

    // A body over the 1 MiB limit, on an API route and on the webhook.
    let too_large = vec![b' '; 1024 * 1024 + 1];
    let response = http()
        .post(format!("{}/payment/success", server.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(too_large.clone())
        .send()
        .await
        .expect("answer");
    assert_api_error(response, 413, "payload_too_large").await;
    let response = http()
        .post(format!("{}/webhook", server.base))
        .header("content-type", "application/json")
        .body(too_large)
        .send()
        .await
        .expect("answer");
    assert_api_error(response, 413, "payload_too_large").await;

    // A request the framework refuses before any handler sees it (a query string that
    // does not parse) gets the same shape.
    let response = http()
        .get(format!("{}/dev/token?sub=a&sub=b", server.base))
        .send()
        .await
        .expect("answer");
    assert_api_error(response, 400, "invalid_request").await;

    // The handlers' own errors keep their codes.
    let response = http()
        .post(format!("{}/payment/success", server.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("answer");
    assert_api_error(response, 400, "invalid_request").await;
}

#[tokio::test]
async fn the_webhook_answers_at_webhook_and_at_payment_webhook() {
    let server = start("webhook").await;
    for path in ["/webhook", "/payment/webhook"] {
        // Unsigned: the webhook handler itself refuses it (not a 404 from the router).
        let response = http()
            .post(format!("{}{path}", server.base))
            .header("content-type", "application/json")
            .body(r#"{"type": "payment.succeeded", "data": {}}"#)
            .send()
            .await
            .expect("answer");
        assert_api_error(response, 401, "invalid_signature").await;
    }
}

/// The simulator answers as Dodo does, `{"code", "message"}`, also when the checkout
/// page's form cannot be read at all.
#[tokio::test]
async fn the_simulators_errors_are_dodos_json() {
    let server = start("simulator").await;
    let token = token(&server).await;
    let checkout: Value = http()
        .post(format!("{}/payment/create-checkout-session", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("checkout")
        .json()
        .await
        .expect("json");
    let url = checkout["checkout_url"].as_str().expect("checkout_url");

    for (content_type, body) in [
        // No `outcome` field.
        ("application/x-www-form-urlencoded", "nothing=here"),
        // `outcome` twice.
        (
            "application/x-www-form-urlencoded",
            "outcome=succeeded&outcome=failed",
        ),
        // Not a form at all.
        ("application/json", r#"{"outcome": "succeeded"}"#),
    ] {
        let response = http()
            .post(url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("answer");
        let status = response.status();
        let what = format!("{status} for {content_type} {body:?}");
        assert!(status.is_client_error(), "{what}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("application/json"),
            "{what}: content-type {content_type:?}"
        );
        let answer: Value = response.json().await.expect("a JSON body");
        assert!(answer["code"].is_string(), "{what}: {answer}");
        assert!(answer["message"].is_string(), "{what}: {answer}");
    }
}

/// What a newcomer met: a token for another issuer or audience, a made-up audit cursor,
/// and the free plan named where only a plan for sale (or a grantable one) fits.
#[tokio::test]
async fn wrong_tokens_cursors_and_the_free_plan_are_refused_plainly() {
    let server = start("newcomer").await;
    let now = paywall::time::Clock::system().now().unix_seconds() + 60;
    let secret = dev::local_server::DEFAULT_JWT_SECRET.as_bytes();
    for (iss, aud) in [
        ("evil", dev::dev_jwt::ISSUER),
        (dev::dev_jwt::ISSUER, "other"),
    ] {
        let forged = dev::dev_jwt::sign(
            secret,
            &serde_json::json!({"sub": "mallory", "iss": iss, "aud": aud,
                                "iat": now, "exp": now + 3600, "email": "m@example.com"}),
        );
        let response = http()
            .get(format!("{}/payment/status", server.base))
            .bearer_auth(&forged)
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 401, "iss {iss}, aud {aud}");
    }

    let token = token(&server).await;
    let response = http()
        .post(format!("{}/payment/create-checkout-session", server.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"plan": "free"}))
        .send()
        .await
        .expect("answer");
    let body: Value = response.json().await.expect("json");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("not for sale"), "{body}");

    let server_token: Value = http()
        .get(format!("{}/dev/token?server=1", server.base))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let server_token = server_token["token"].as_str().expect("token").to_owned();
    let response = http()
        .post(format!("{}/server/users/errors/grants", server.base))
        .bearer_auth(&server_token)
        .json(&serde_json::json!({"plan": "free", "days": 3, "reason": "test"}))
        .send()
        .await
        .expect("answer");
    let body: Value = response.json().await.expect("json");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("not grantable"), "{body}");

    for cursor in ["zzz", "1:LOG%23x"] {
        let response = http()
            .get(format!(
                "{}/server/users/errors?cursor={cursor}",
                server.base
            ))
            .bearer_auth(&server_token)
            .send()
            .await
            .expect("answer");
        assert_api_error(response, 400, "invalid_request").await;
    }
    let response = http()
        .get(format!("{}/server/users/errors", server.base))
        .bearer_auth(&server_token)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
}

/// Issue 17, L11: only this machine may use the local server. A page elsewhere gets no
/// CORS answer (it cannot read `/dev/token`), a local frontend on another port does, and
/// a request for another host name (DNS rebinding) is refused.
#[tokio::test]
async fn only_this_machine_may_use_the_local_server() {
    let server = start("origin").await;
    let http = paywall::http::client();
    let token_url = format!("{}/dev/token?sub=alice&server=1", server.base);
    let evil = http
        .get(&token_url)
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("answered");
    assert!(
        evil.headers().get("access-control-allow-origin").is_none(),
        "a page from elsewhere may not read the answer"
    );
    let local = http
        .get(&token_url)
        .header("origin", "http://localhost:5173")
        .send()
        .await
        .expect("answered");
    assert_eq!(
        local
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("http://localhost:5173")
    );
    let rebound = http
        .get(&token_url)
        .header("host", "evil.example:80")
        .send()
        .await
        .expect("answered");
    assert_eq!(rebound.status().as_u16(), 403);
    let body: Value = rebound.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "forbidden_host");
}
