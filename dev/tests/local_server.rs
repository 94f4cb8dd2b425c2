//! `make dev`'s server, run as a person runs it (the `dev` binary on a free port with its
//! own state folder), checked over HTTP: a token, a checkout, the simulator's page paid or
//! declined by form POST, the status; state kept across a restart; Ctrl-C stops it.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

struct Server {
    child: Child,
    base: String,
}

async fn start(port: u16, state: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dev"))
        .arg("serve")
        .env("PORT", port.to_string())
        .env("PAYWALL_STATE_DIR", state)
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
    assert_eq!(ready, Ok(true), "the server printed its URLs and Ready.");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

impl Server {
    async fn interrupt(mut self) -> i32 {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status();
        assert!(sent.is_ok_and(|s| s.success()));
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("stops promptly on Ctrl-C")
            .expect("exit status");
        status.code().unwrap_or(-1)
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn http() -> reqwest::Client {
    paywall::http::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn token(server: &Server, sub: &str) -> String {
    let answer: Value = http()
        .get(format!(
            "{}/dev/token?sub={sub}&email={sub}@example.com",
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

async fn status(server: &Server, token: &str) -> Value {
    http()
        .get(format!("{}/payment/status", server.base))
        .bearer_auth(token)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json")
}

/// Opens a checkout and submits the simulator's page with `outcome`.
async fn buy(server: &Server, token: &str, outcome: &str) -> reqwest::Response {
    let checkout: Value = http()
        .post(format!("{}/payment/create-checkout-session", server.base))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("checkout")
        .json()
        .await
        .expect("json");
    let url = checkout["checkout_url"].as_str().expect("checkout_url");
    assert!(
        url.starts_with(&format!("{}/dodo/checkout/cks_", server.base)),
        "{url}"
    );
    http()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("outcome={outcome}"))
        .send()
        .await
        .expect("paid")
}

#[tokio::test]
async fn a_purchase_over_http_then_a_restart_then_ctrl_c() {
    let state = std::env::temp_dir().join(format!("paywall-dev-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let port = free_port();
    let server = start(port, &state).await;

    let unauthenticated = http()
        .get(format!("{}/payment/status", server.base))
        .send()
        .await
        .expect("answer");
    assert_eq!(unauthenticated.status(), 401);
    let forged = http()
        .get(format!("{}/payment/status", server.base))
        .bearer_auth("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.AAAA")
        .send()
        .await
        .expect("answer");
    assert_eq!(forged.status(), 401);

    let page = http()
        .get(format!("{}/", server.base))
        .send()
        .await
        .expect("page");
    assert!(
        page.text()
            .await
            .expect("html")
            .contains("/payment/create-checkout-session")
    );

    let buyer = token(&server, "http-buyer").await;
    assert_eq!(status(&server, &buyer).await["has_paid"], false);
    let paid = buy(&server, &buyer, "succeeded").await;
    assert_eq!(paid.status(), 303);
    let location = paid.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(
        location.contains("payment_id=pay_") && location.contains("status=succeeded"),
        "{location}"
    );
    let view = status(&server, &buyer).await;
    assert_eq!(view["has_paid"], true, "{view}");
    assert_eq!(view["subscription_plan"], "monthly");

    let decliner = token(&server, "http-decliner").await;
    let declined = buy(&server, &decliner, "failed").await;
    assert_eq!(declined.status(), 303);
    let view = status(&server, &decliner).await;
    assert_eq!(view["has_paid"], false, "{view}");
    assert_eq!(view["subscription_plan"], "pending_monthly");

    // A signed event from the trigger command, as it would be sent to a deployed URL.
    let triggered = Command::new(env!("CARGO_BIN_EXE_dev"))
        .args([
            "trigger",
            "payment.succeeded",
            "--user-id",
            "http-triggered",
        ])
        .args(["--url", &format!("{}/payment/webhook", server.base)])
        .env_remove("DODO_PAYMENTS_WEBHOOK_SECRET")
        .env_remove("DODO_PRODUCT_ID")
        .output()
        .await
        .expect("trigger runs");
    assert!(
        triggered.status.success(),
        "{}",
        String::from_utf8_lossy(&triggered.stderr)
    );
    assert!(String::from_utf8_lossy(&triggered.stdout).contains("answered 200"));
    let triggered_user = token(&server, "http-triggered").await;
    assert_eq!(status(&server, &triggered_user).await["has_paid"], true);

    // The same event signed with another secret is refused.
    let forged = Command::new(env!("CARGO_BIN_EXE_dev"))
        .args(["trigger", "payment.succeeded", "--user-id", "http-forger"])
        .args(["--url", &format!("{}/payment/webhook", server.base)])
        .args(["--secret", "whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA=="])
        .output()
        .await
        .expect("trigger runs");
    assert!(!forged.status.success());
    assert!(String::from_utf8_lossy(&forged.stdout).contains("answered 401"));

    // A checkout opened before the restart and paid after it.
    let later = token(&server, "http-later").await;
    let open: Value = http()
        .post(format!("{}/payment/create-checkout-session", server.base))
        .bearer_auth(&later)
        .send()
        .await
        .expect("checkout")
        .json()
        .await
        .expect("json");
    let later_url = open["checkout_url"].as_str().expect("url").to_owned();
    let payment_id = location
        .split("payment_id=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .expect("payment id")
        .to_owned();

    assert_eq!(server.interrupt().await, 0, "Ctrl-C is a clean stop");

    let server = start(port, &state).await;
    let buyer = token(&server, "http-buyer").await;
    assert_eq!(
        status(&server, &buyer).await["has_paid"],
        true,
        "state survives a restart"
    );
    // The simulator's state survives too: the payment can be confirmed again…
    let confirmed = http()
        .post(format!("{}/payment/success", server.base))
        .bearer_auth(&buyer)
        .json(&serde_json::json!({ "payment_id": payment_id }))
        .send()
        .await
        .expect("confirmed");
    assert_eq!(confirmed.status(), 200, "{:?}", confirmed.text().await);
    // …and the checkout opened before the restart can still be paid.
    let paid_later = http()
        .post(&later_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("outcome=succeeded")
        .send()
        .await
        .expect("paid");
    assert_eq!(paid_later.status(), 303);
    let later = token(&server, "http-later").await;
    assert_eq!(status(&server, &later).await["has_paid"], true);
    assert_eq!(server.interrupt().await, 0);
    let _ = std::fs::remove_dir_all(&state);
}
