//! Access events to any HTTPS endpoint (the template's `AccessEventsWebhookUrl`): the
//! local stack with `ACCESS_EVENTS_WEBHOOK_URL` set carries each access event through the
//! `access-events` publisher to the EventBridge stand-in, which POSTs it to a real HTTP
//! receiver here as an API destination does — the event envelope, the secret header —
//! retries what EventBridge retries (5xx…) on the stack's test clock, and dead-letters
//! what it does not (a 400) or what is still failing when the event's age runs out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use dev::local_server::{AccessEventsWebhook, DEFAULT_JWT_SECRET, TestStack};
use dev::local_stream::{ApiDestination, LocalEventBus, RetryPolicy};
use paywall::time::Clock;
use serde_json::{Value, json};

const SECRET: &str = "whk-test-7f3a9c1e5b";
const START: &str = "2027-05-03T09:00:00Z";

/// Every request the receiver got: its headers and JSON body.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(HeaderMap, Value)>>>);

impl Received {
    fn all(&self) -> Vec<(HeaderMap, Value)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn for_user(&self, user: &str) -> Vec<(HeaderMap, Value)> {
        self.all()
            .into_iter()
            .filter(|(_, body)| body["detail"]["user_id"] == user)
            .collect()
    }
}

/// A receiver that answers by the event's user: `alice` 200; `bob` 500 twice, then 200;
/// `carol` always 503; `dave` 400; `frank` 503 after 300 ms the first time, then 200;
/// `gina` 401; anyone else 200. Each request is recorded before it is answered.
async fn receiver() -> (String, Received) {
    let received = Received::default();
    let state = received.clone();
    let app = axum::Router::new().route(
        "/hooks/paywall",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let state = state.clone();
            async move {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let user = body["detail"]["user_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let seen = {
                    let mut all = state.0.lock().unwrap_or_else(|p| p.into_inner());
                    all.push((headers, body));
                    all.iter()
                        .filter(|(_, b)| b["detail"]["user_id"] == user.as_str())
                        .count()
                };
                match user.as_str() {
                    "bob" if seen <= 2 => StatusCode::INTERNAL_SERVER_ERROR,
                    "carol" => StatusCode::SERVICE_UNAVAILABLE,
                    "dave" => StatusCode::BAD_REQUEST,
                    "frank" if seen == 1 => {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                    "gina" => StatusCode::UNAUTHORIZED,
                    _ => StatusCode::OK,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!(
        "http://{}/hooks/paywall",
        listener.local_addr().expect("address")
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, received)
}

/// Waits (real time, up to 10 s) until `done`.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

struct Local {
    base: String,
    http: reqwest::Client,
    clock: Clock,
    _running: TestStack,
}

impl Local {
    async fn grant(&self, user: &str) {
        let token = dev::dev_jwt::mint_server(
            DEFAULT_JWT_SECRET.as_bytes(),
            "arn:aws:iam::000000000000:user/local",
            self.clock.now().unix_seconds(),
        );
        let answer = self
            .http
            .post(format!("{}/server/users/{user}/grants", self.base))
            .bearer_auth(token)
            .json(&json!({"plan": "monthly", "days": 30, "reason": "support"}))
            .send()
            .await
            .expect("answered");
        assert_eq!(answer.status(), 200);
    }

    /// Buys the monthly pass on the simulator's page, confirmed on the success route.
    async fn buy(&self, user: &str) {
        let token = dev::dev_jwt::mint_with(
            DEFAULT_JWT_SECRET.as_bytes(),
            user,
            Some(&format!("{user}@example.com")),
            true,
            self.clock.now().unix_seconds(),
        );
        let session: Value = self
            .http
            .post(format!("{}/payment/create-checkout-session", self.base))
            .bearer_auth(&token)
            .json(&json!({"plan": "monthly"}))
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("json");
        let paid = self
            .http
            .post(session["checkout_url"].as_str().expect("a checkout url"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("outcome=succeeded")
            .send()
            .await
            .expect("answered");
        assert_eq!(paid.status(), 303);
        let location = paid.headers()["location"]
            .to_str()
            .expect("text")
            .to_owned();
        let payment_id = location
            .split(['?', '&'])
            .find_map(|pair| pair.strip_prefix("payment_id="))
            .expect("a payment id");
        let confirmed = self
            .http
            .post(format!("{}/payment/success", self.base))
            .bearer_auth(&token)
            .json(&json!({"payment_id": payment_id}))
            .send()
            .await
            .expect("answered");
        assert_eq!(confirmed.status(), 200);
    }

    async fn advance(&self, by: &str) {
        let answer = self
            .http
            .post(format!("{}/dev/clock", self.base))
            .json(&json!({"advance": by}))
            .send()
            .await
            .expect("answered");
        assert_eq!(answer.status(), 200);
    }

    async fn deliveries(&self) -> Value {
        self.http
            .get(format!("{}/dev/events/webhook", self.base))
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("json")
    }
}

#[tokio::test]
async fn access_events_reach_the_webhook_as_an_api_destination_delivers_them() {
    let (url, received) = receiver().await;
    let running = TestStack::start_with(
        "webhook",
        START,
        5,
        Some(AccessEventsWebhook::new(&url, SECRET)),
    )
    .await
    .expect("the stack starts");
    let local = Local {
        base: running.base.clone(),
        http: paywall::http::client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        clock: running.clock.clone(),
        _running: running,
    };

    // A purchase and a grant: each change of access is one delivery, with the secret
    // header and the EventBridge envelope around the access event.
    local.buy("erin").await;
    local.grant("alice").await;
    until("erin's and alice's events", || {
        !received.for_user("erin").is_empty() && !received.for_user("alice").is_empty()
    })
    .await;
    let (headers, event) = received.for_user("alice").remove(0);
    assert_eq!(headers["x-paywall-webhook-secret"], SECRET);
    assert_eq!(headers["content-type"], "application/json; charset=utf-8");
    assert_eq!(headers["user-agent"], "Amazon/EventBridge/ApiDestinations");
    let keys: Vec<&str> = event
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys.iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        [
            "version",
            "id",
            "detail-type",
            "source",
            "account",
            "time",
            "region",
            "resources",
            "detail"
        ]
        .into()
    );
    assert_eq!(event["version"], "0");
    assert_eq!(event["source"], "paywall");
    assert_eq!(event["detail-type"], "Access Changed");
    assert_eq!(event["account"], "000000000000");
    assert_eq!(event["region"], "us-east-1");
    assert_eq!(event["resources"], json!([]));
    assert_eq!(
        event["time"], START,
        "the bus's time: the stack's test clock"
    );
    let id = event["id"].as_str().expect("an id");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(&id[14..15], "4", "version 4: {id}");
    assert_eq!(event["detail"]["change"], "comp_granted");
    assert_eq!(event["detail"]["cause"], "server");
    assert!(
        event["detail"]["event_id"]
            .as_str()
            .expect("event id")
            .starts_with("evt_")
    );
    let (_, bought) = received.for_user("erin").remove(0);
    assert_eq!(bought["detail"]["change"], "granted");
    assert_eq!(bought["detail"]["after"]["source"], "pass");
    assert_eq!(received.for_user("erin").len(), 1, "one change, one event");

    // 500s are retried on the test clock's back-off (1 s, then 2 s…), with the same
    // event; a 400 is dead-lettered at once, never retried.
    local.grant("bob").await;
    local.grant("carol").await;
    local.grant("dave").await;
    until("first attempts", || {
        !received.for_user("bob").is_empty()
            && !received.for_user("carol").is_empty()
            && !received.for_user("dave").is_empty()
    })
    .await;
    let mut dead = Value::Null;
    for _ in 0..100 {
        dead = local.deliveries().await;
        if dead["dead_letters"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let letters = dead["dead_letters"].as_array().expect("a list");
    assert_eq!(letters.len(), 1, "{dead}");
    assert_eq!(letters[0]["event"]["detail"]["user_id"], "dave");
    assert_eq!(letters[0]["attempts"], 1);
    assert_eq!(letters[0]["last_status"], 400);
    assert_eq!(letters[0]["exhausted_retry_condition"], Value::Null);
    assert_eq!(
        received.for_user("bob").len(),
        1,
        "no retry before the clock moves"
    );

    local.advance("1s").await;
    until("bob's second attempt", || {
        received.for_user("bob").len() == 2
    })
    .await;
    local.advance("2s").await;
    until("bob's third attempt", || {
        received.for_user("bob").len() == 3
    })
    .await;
    let bob = received.for_user("bob");
    assert!(
        bob.iter().all(|(_, e)| e["id"] == bob[0].1["id"]),
        "retries carry the same event"
    );
    until("carol's retries", || received.for_user("carol").len() >= 3).await;

    // Carol's endpoint never recovers: once the event is older than a day
    // (MaximumEventAgeInSeconds), it is dead-lettered, not tried again.
    local.advance("25h").await;
    let mut answer = Value::Null;
    for _ in 0..250 {
        answer = local.deliveries().await;
        if answer["dead_letters"]
            .as_array()
            .is_some_and(|d| d.len() == 2)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let carol = &answer["dead_letters"][1];
    assert_eq!(carol["event"]["detail"]["user_id"], "carol", "{answer}");
    assert_eq!(
        carol["exhausted_retry_condition"],
        "MaximumEventAgeInSeconds"
    );
    // The last real failure, not a made-up one.
    assert_eq!(carol["last_status"], 503, "{carol}");
    assert_eq!(carol["error"], "the endpoint answered 503", "{carol}");
    assert_eq!(answer["connection"], json!({"state": "AUTHORIZED"}));
    assert!(
        carol["attempts"].as_u64().expect("attempts") >= 3,
        "{carol}"
    );
    assert_eq!(answer["pending"], 0, "{answer}");
    let attempts = received.for_user("carol").len();
    local.advance("1h").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        received.for_user("carol").len(),
        attempts,
        "never tried again"
    );
    assert_eq!(received.for_user("dave").len(), 1, "a 400 is never retried");
    // alice, erin and bob delivered.
    assert_eq!(answer["delivered"], 3, "{answer}");
    // The secret went only into the header.
    assert!(!answer.to_string().contains(SECRET));
}

/// A client of the bus at `bus_url`, as the `access-events` function makes it.
fn events_client(bus_url: &str) -> paywall::eventbridge::EventBridgeClient {
    let lookup = |name: &str| match name {
        "TABLE_NAME" => Some("unused".to_owned()),
        "AWS_REGION" => Some("us-east-1".to_owned()),
        "AWS_ACCESS_KEY_ID" => Some("admin".to_owned()),
        "AWS_SECRET_ACCESS_KEY" => Some("local".to_owned()),
        "AWS_ENDPOINT_URL_EVENTBRIDGE" => Some(bus_url.to_owned()),
        _ => None,
    };
    paywall::eventbridge::EventBridgeClient::from_vars(&paywall::config::Vars::new(&lookup))
        .expect("client")
}

/// Publishes one access event per user, in one call.
async fn publish(events: &paywall::eventbridge::EventBridgeClient, users: &[&str]) {
    let entries: Vec<_> = users
        .iter()
        .map(|user| paywall::eventbridge::Entry {
            source: "paywall".into(),
            detail_type: "Access Changed".into(),
            detail: json!({ "user_id": user }).to_string(),
        })
        .collect();
    let taken = events.put_events(&entries).await.expect("published");
    assert!(taken.iter().all(|t| *t), "{taken:?}");
}

/// The back-off counts from the failed attempt's start: a clock moved while the endpoint
/// was still answering does not push the retry further away.
#[tokio::test]
async fn a_retry_is_timed_from_the_start_of_the_failed_attempt() {
    let (url, received) = receiver().await;
    let clock = Clock::test(1_800_000_000_000, false);
    let bus = LocalEventBus::with_api_destination(ApiDestination::new(
        &url,
        SECRET.into(),
        clock.clone(),
    ));
    let bus_url = bus.start().await.expect("bus");
    publish(&events_client(&bus_url), &["frank"]).await;
    // The receiver has the request but answers (503) only 300 ms later: the clock moves
    // by the first back-off in between.
    until("the first attempt", || received.all().len() == 1).await;
    clock
        .advance_to(clock.now_millis() + 1000)
        .expect("forward");
    until(
        "the retry, due a second after the first attempt started",
        || received.all().len() == 2,
    )
    .await;
    until("the delivery", || bus.delivered().len() == 1).await;
    assert!(bus.dead_letters().is_empty());
}

/// A 401 de-authorizes the API-key connection, as in EventBridge: that event and every
/// later one (a pending retry, a new event) is dead-lettered with the reason and never
/// reaches the endpoint again, until the bus is made again (the server restarted).
#[tokio::test]
async fn a_401_deauthorizes_the_connection_until_the_bus_is_made_again() {
    let (url, received) = receiver().await;
    let clock = Clock::test(1_800_000_000_000, false);
    let destination = ApiDestination::new(&url, SECRET.into(), clock.clone());
    let bus = LocalEventBus::with_api_destination(destination.clone());
    let bus_url = bus.start().await.expect("bus");
    let events = events_client(&bus_url);
    assert_eq!(bus.connection(), json!({"state": "AUTHORIZED"}));

    // bob's first attempt fails (500, a retry due in 1 s); then gina's is refused with 401.
    publish(&events, &["bob", "gina"]).await;
    until("gina's dead letter", || bus.dead_letters().len() == 1).await;
    let gina = &bus.dead_letters()[0];
    assert_eq!(gina["event"]["detail"]["user_id"], "gina");
    assert_eq!(gina["last_status"], 401);
    assert_eq!(gina["attempts"], 1);
    let error = gina["error"].as_str().expect("an error");
    assert!(error.contains("DEAUTHORIZED"), "{error}");
    let connection = bus.connection();
    assert_eq!(connection["state"], "DEAUTHORIZED", "{connection}");
    assert!(
        connection["reason"]
            .as_str()
            .expect("a reason")
            .contains("401"),
        "{connection}"
    );

    // bob's retry and a new event for alice (whom the endpoint would take): dead-lettered,
    // not sent.
    clock
        .advance_to(clock.now_millis() + 1000)
        .expect("forward");
    publish(&events, &["alice"]).await;
    until("bob's and alice's dead letters", || {
        bus.dead_letters().len() == 3
    })
    .await;
    for letter in &bus.dead_letters()[1..] {
        let error = letter["error"].as_str().expect("an error");
        assert!(
            error.contains("DEAUTHORIZED") && error.contains("401"),
            "{letter}"
        );
        assert_eq!(letter["last_status"], Value::Null, "no request: {letter}");
        assert_eq!(letter["exhausted_retry_condition"], Value::Null);
    }
    assert_eq!(received.for_user("bob").len(), 1, "the retry was not sent");
    assert!(received.for_user("alice").is_empty(), "nothing sent");
    assert!(bus.delivered().is_empty());
    assert_eq!(bus.pending(), 0);
    clock
        .advance_to(clock.now_millis() + 3_600_000)
        .expect("forward");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(received.all().len(), 2, "nothing sent after the 401");

    // A bus made again (the server restarted) has its connection authorized again.
    let again = LocalEventBus::with_api_destination(destination);
    let again_url = again.start().await.expect("bus");
    publish(&events_client(&again_url), &["alice"]).await;
    until("alice's delivery", || again.delivered().len() == 1).await;
    assert_eq!(received.for_user("alice").len(), 1);
    assert_eq!(again.connection(), json!({"state": "AUTHORIZED"}));
}

/// `MaximumRetryAttempts` runs out before the age does: the event is dead-lettered after
/// the first attempt and that many retries, each after its back-off on the clock.
#[tokio::test]
async fn retries_stop_at_the_maximum_attempts() {
    let (url, received) = receiver().await;
    let clock = Clock::test(1_800_000_000_000, false);
    let mut destination = ApiDestination::new(&url, SECRET.into(), clock.clone());
    destination.retry = RetryPolicy {
        maximum_retry_attempts: 2,
        ..RetryPolicy::default()
    };
    let bus = LocalEventBus::with_api_destination(destination);
    let bus_url = bus.start().await.expect("bus");
    let events = events_client(&bus_url);
    let taken = events
        .put_events(&[
            paywall::eventbridge::Entry {
                source: "paywall".into(),
                detail_type: "Access Changed".into(),
                detail: json!({"user_id": "carol"}).to_string(),
            },
            // Not a JSON object: refused by the bus (MalformedDetail), never delivered.
            paywall::eventbridge::Entry {
                source: "paywall".into(),
                detail_type: "Access Changed".into(),
                detail: "[1]".into(),
            },
        ])
        .await
        .expect("published");
    assert_eq!(taken, [true, false]);
    until("the first attempt", || received.all().len() == 1).await;
    for (retry, wait_ms) in [(1, 1000), (2, 2000)] {
        // Not due a millisecond early.
        clock
            .advance_to(clock.now_millis() + wait_ms - 1)
            .expect("forward");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            received.all().len(),
            retry,
            "retry {retry} waits its back-off"
        );
        clock.advance_to(clock.now_millis() + 1).expect("forward");
        until("the retry", || received.all().len() == retry + 1).await;
    }
    until("the dead letter", || bus.dead_letters().len() == 1).await;
    let letter = &bus.dead_letters()[0];
    assert_eq!(letter["attempts"], 3);
    assert_eq!(letter["last_status"], 503);
    assert_eq!(letter["exhausted_retry_condition"], "MaximumRetryAttempts");
    clock
        .advance_to(clock.now_millis() + 3_600_000)
        .expect("forward");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(received.all().len(), 3);
    assert!(bus.delivered().is_empty());
}

#[test]
fn the_webhook_settings_are_both_or_neither_and_checked() {
    let check = |url: Option<&str>, secret: Option<&str>| {
        AccessEventsWebhook::from_vars(url.map(str::to_owned), secret.map(str::to_owned))
            .map(|w| w.is_some())
            .map_err(|e| e.to_string())
    };
    assert_eq!(check(None, None), Ok(false));
    assert_eq!(
        check(Some("https://example.com/hook"), Some("s3cret")),
        Ok(true)
    );
    for (url, secret, names) in [
        (
            Some("https://example.com/hook"),
            None,
            "ACCESS_EVENTS_WEBHOOK_SECRET",
        ),
        (None, Some("s3cret"), "ACCESS_EVENTS_WEBHOOK_URL"),
        (
            Some("ftp://example.com"),
            Some("s3cret"),
            "ACCESS_EVENTS_WEBHOOK_URL",
        ),
        (
            Some("not a url"),
            Some("s3cret"),
            "ACCESS_EVENTS_WEBHOOK_URL",
        ),
        (
            Some("https://example.com/hook"),
            Some("a\nb"),
            "ACCESS_EVENTS_WEBHOOK_SECRET",
        ),
        (
            Some("https://example.com/hook"),
            Some(" "),
            "ACCESS_EVENTS_WEBHOOK_SECRET",
        ),
    ] {
        let error = check(url, secret).expect_err("refused");
        assert!(error.contains(names), "{error}");
        assert!(
            !error.contains("s3cret"),
            "the secret is never shown: {error}"
        );
    }
}
