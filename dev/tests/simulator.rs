//! The Dodo simulator's webhook deliveries: signed as Dodo signs them, retried on
//! non-2xx on Dodo's schedule (compressed), with the same `webhook-id` each time.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use dev::dodo_simulator::{DodoSimulator, WebhookTarget};
use paywall::webhook_signature::{SignedHeaders, WebhookSecret, verify};
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Default)]
struct Seen {
    answers_left_failing: u32,
    deliveries: Vec<(String, bool, Value)>,
}

#[tokio::test]
async fn deliveries_are_signed_and_retried_until_accepted() {
    let seen = Arc::new(Mutex::new(Seen {
        answers_left_failing: 2,
        ..Seen::default()
    }));
    let endpoint_seen = Arc::clone(&seen);
    let endpoint = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let seen = Arc::clone(&endpoint_seen);
            async move {
                let secret = WebhookSecret::parse(SECRET).expect("secret");
                let valid = verify(
                    &secret,
                    SignedHeaders::from_http(&headers),
                    &body,
                    paywall::time::Clock::system().now().unix_seconds(),
                )
                .is_ok();
                let id = headers["webhook-id"]
                    .to_str()
                    .unwrap_or_default()
                    .to_owned();
                let event: Value = serde_json::from_slice(&body).unwrap_or_default();
                let mut seen = seen.lock().expect("lock");
                seen.deliveries.push((id, valid, event));
                if seen.answers_left_failing > 0 {
                    seen.answers_left_failing -= 1;
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook_url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, endpoint).await });

    let dodo = DodoSimulator::start(None).await.expect("sim");
    dodo.simulator.set_webhook(Some(WebhookTarget {
        url: hook_url,
        secret: Arc::new(WebhookSecret::parse(SECRET).expect("secret")),
        // 5 s -> 1.4 ms, 5 min -> 83 ms.
        time_compression: 3600,
    }));
    dodo.simulator
        .deliver(
            "payment.succeeded",
            json!({"payment_id": "pay_1", "status": "succeeded"}),
        )
        .await;

    let mut waited = 0;
    while dodo.simulator.deliveries().len() < 3 && waited < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        waited += 1;
    }
    let attempts: Vec<(u32, u16)> = dodo
        .simulator
        .deliveries()
        .iter()
        .map(|d| (d.attempt, d.status))
        .collect();
    assert_eq!(attempts, [(1, 500), (2, 500), (3, 200)]);

    let seen = seen.lock().expect("lock");
    assert!(
        seen.deliveries.iter().all(|(_, valid, _)| *valid),
        "every attempt is signed"
    );
    let ids: Vec<&String> = seen.deliveries.iter().map(|(id, _, _)| id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one webhook-id across retries"
    );
    let event = &seen.deliveries[0].2;
    assert_eq!(event["type"], "payment.succeeded");
    // Dodo's SDK models the event's `data` as the object alone: no `payload_type`.
    assert_eq!(event["data"].get("payload_type"), None);
    assert_eq!(event["data"]["payment_id"], "pay_1");
}
