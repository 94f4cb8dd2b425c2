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
    /// What it printed on stdout: the banner, then its log.
    output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
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
    let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            let ready = line.starts_with("Ready.");
            output.lock().expect("output").push(line);
            if ready {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "the server printed its URLs and Ready.");
    let kept = std::sync::Arc::clone(&output);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            kept.lock().expect("output").push(line);
        }
    });
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        output,
    }
}

impl Server {
    fn printed(&self) -> Vec<String> {
        self.output.lock().expect("output").clone()
    }

    async fn clock(&self) -> (String, i64) {
        let clock: Value = http()
            .get(format!("{}/dev/clock", self.base))
            .send()
            .await
            .expect("clock")
            .json()
            .await
            .expect("json");
        let now = clock["now"].as_str().expect("now").to_owned();
        let seconds = paywall::time::Timestamp::parse_rfc3339(&now)
            .expect("RFC 3339")
            .unix_seconds();
        (now, seconds)
    }

    /// Asks for a clock move and gives up after `patience`, as a closed tab or a Ctrl-C
    /// on curl does.
    async fn abandon_move(&self, advance: &str, patience: Duration) {
        let answer = http()
            .post(format!("{}/dev/clock", self.base))
            .json(&serde_json::json!({ "advance": advance }))
            .timeout(patience)
            .send()
            .await;
        assert!(
            answer.is_err(),
            "the {advance} move answered within {patience:?}"
        );
    }

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

/// The banner names every route; the log has a line per request and says why the webhook
/// refused an event (and never prints a token).
#[tokio::test]
async fn the_banner_lists_every_route_and_the_log_has_each_request() {
    let state = std::env::temp_dir().join(format!("paywall-dev-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let server = start(free_port(), &state).await;
    let banner = server.printed().join("\n");
    for route in [
        "/payment/status",
        "/payment/entitlements",
        "/payment/create-checkout-session",
        "/payment/success",
        "/payment/portal",
        "/payment/webhook",
        "/server/usage",
        "/server/users/",
        "/dev/token",
        "/dev/clock",
        "/dev/faults",
        "/dev/database",
        "/dev/events",
        "/dodo",
    ] {
        assert!(
            banner.contains(route),
            "the banner lacks {route}:\n{banner}"
        );
    }
    let buyer = token(&server, "logged").await;
    status(&server, &buyer).await;
    let refused = http()
        .post(format!("{}/payment/webhook", server.base))
        .header("webhook-id", "msg_x")
        .header("webhook-timestamp", "1")
        .header("webhook-signature", "v1,AAAA")
        .body("{}")
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status(), 401);
    // The log is written as the requests are answered; give it a moment.
    let mut log = String::new();
    for _ in 0..50 {
        log = server.printed().join("\n");
        if log.contains("POST /payment/webhook 401") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(log.contains("GET /payment/status 200"), "{log}");
    assert!(log.contains("GET /dev/token 200"), "{log}");
    assert!(log.contains("POST /payment/webhook 401"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("webhook refused") && l.contains("reason")),
        "{log}"
    );
    assert!(!log.contains(&buyer), "a token was logged");

    // DynamoDB faults on demand: a name DynamoDB does not have changes nothing; a failing
    // read is a 503 the caller may retry; healed, the read answers again.
    let database = format!("{}/dev/database", server.base);
    let set = |body: Value| {
        let database = database.clone();
        async move {
            let answer = http()
                .post(&database)
                .json(&body)
                .send()
                .await
                .expect("answered");
            (
                answer.status().as_u16(),
                answer.json::<Value>().await.expect("json"),
            )
        }
    };
    let (code, refused) = set(serde_json::json!({"failing": ["Query", "Scanner"]})).await;
    assert_eq!(code, 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Scanner")
    );
    let unchanged: Value = http()
        .get(&database)
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert_eq!(
        unchanged["failing"],
        serde_json::json!([]),
        "a refused set changes nothing"
    );
    let (code, now) = set(serde_json::json!({"failing": ["Query"]})).await;
    assert_eq!(
        (code, now["failing"].clone()),
        (200, serde_json::json!(["Query"]))
    );
    let failed = http()
        .get(format!("{}/payment/status", server.base))
        .bearer_auth(&buyer)
        .send()
        .await
        .expect("answered");
    assert_eq!(failed.status(), 503);
    let (code, healed) = set(serde_json::json!({})).await;
    assert_eq!(
        (code, healed["failing"].clone()),
        (200, serde_json::json!([]))
    );
    assert_eq!(status(&server, &buyer).await["status"], "none");
    assert_eq!(server.interrupt().await, 0);
    let _ = std::fs::remove_dir_all(&state);
}

/// A clock move the client abandons carries on to its end, and its position is saved as
/// it goes: neither an abandoned move nor a Ctrl-C in the middle of one takes the clock
/// back after a restart.
#[tokio::test]
async fn an_abandoned_clock_move_finishes_and_a_restart_never_takes_the_clock_back() {
    let state = std::env::temp_dir().join(format!("paywall-dev-clock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let port = free_port();
    let server = start(port, &state).await;
    let (_, started) = server.clock().await;

    // Given up on at once: the move still ends 10 days on.
    server.abandon_move("10d", Duration::from_millis(100)).await;
    let target = started + 10 * 86_400;
    let mut now = started;
    for _ in 0..600 {
        now = server.clock().await.1;
        if now >= target {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        now >= target,
        "the abandoned move stopped at {now}, short of {target}"
    );

    // Given up on, then Ctrl-C in the middle of the year: the clock is where it got to.
    server
        .abandon_move("365d", Duration::from_millis(100))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (seen, seen_seconds) = server.clock().await;
    assert!(
        seen_seconds < target + 365 * 86_400,
        "the year went by too fast to test"
    );
    assert_eq!(
        server.interrupt().await,
        0,
        "Ctrl-C is a clean stop mid-move"
    );

    let server = start(port, &state).await;
    let (after, after_seconds) = server.clock().await;
    assert!(
        after_seconds >= seen_seconds,
        "the clock went back from {seen} to {after} across a restart"
    );
    assert_eq!(server.interrupt().await, 0);
    let _ = std::fs::remove_dir_all(&state);
}
