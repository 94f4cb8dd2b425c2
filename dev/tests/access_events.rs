//! Access events from the change that writes them to EventBridge: the handlers write each
//! event in the transaction of its change; the table's stream (read from the local
//! engine, as Lambda reads it) carries it to the `access-events` publisher, which sends it
//! SigV4-signed over HTTP to a local EventBridge stand-in. Partial failures are retried
//! from the first failed record, as Lambda does with `ReportBatchItemFailures`.

mod common;

use common::*;
use dev::local_stream::{LocalEventBus, LocalStream};
use paywall::config::Vars;
use paywall::eventbridge::EventBridgeClient;
use paywall::handlers::{AccessEventPublisher, ServerHandler};
use paywall::runtime::Handler;
use serde_json::{Value, json};

async fn publisher(bus_url: &str) -> AccessEventPublisher {
    let lookup = |name: &str| match name {
        "TABLE_NAME" => Some(TABLE.to_owned()),
        "AWS_REGION" => Some("eu-west-1".to_owned()),
        "AWS_ACCESS_KEY_ID" => Some("AKIDLOCAL".to_owned()),
        "AWS_SECRET_ACCESS_KEY" => Some("local-secret".to_owned()),
        "ACCESS_EVENT_BUS" => Some("paywall-events".to_owned()),
        "AWS_ENDPOINT_URL_EVENTBRIDGE" => Some(bus_url.to_owned()),
        _ => None,
    };
    AccessEventPublisher::new(EventBridgeClient::from_vars(&Vars::new(&lookup)).expect("config"))
}

fn grant(user: &str, plan: &str) -> lambda_http::Request {
    let event = dev::fixtures::server_event(
        "POST",
        &format!("/server/users/{user}/grants"),
        Some("arn:aws:iam::123456789012:user/backend"),
        Some(&json!({"plan": plan, "days": 3, "reason": "support"}).to_string()),
    );
    lambda_http::request::from_str(&event.to_string()).expect("an event")
}

fn details(entries: &[Value]) -> Vec<Value> {
    entries
        .iter()
        .map(|e| {
            assert_eq!(e["Source"], "paywall");
            assert_eq!(e["DetailType"], "Access Changed");
            assert_eq!(e["EventBusName"], "paywall-events");
            serde_json::from_str(e["Detail"].as_str().expect("detail text")).expect("JSON")
        })
        .collect()
}

#[tokio::test]
async fn each_stored_change_reaches_eventbridge_once_and_failures_are_retried() {
    let world = World::with_stream().await;
    let bus = LocalEventBus::default();
    let publisher = publisher(&bus.start().await.expect("bus")).await;
    let mut stream = LocalStream::open(world.dynamo.endpoint(), TABLE)
        .await
        .expect("the table has a stream");

    // A pass bought (webhook) and a comp (server): two changes, two events; a duplicate
    // delivery changes nothing and adds none.
    let payment = world.dodo_payment("pay_1", "succeeded", Some("alice"), None);
    let body = payment_event("payment.succeeded", &payment);
    let now = paywall::time::Clock::system().now().unix_seconds();
    for _ in 0..2 {
        let (status, _) = read(
            world
                .webhook()
                .handle(signed_webhook(&body, "msg_1", now))
                .await,
        )
        .await;
        assert_eq!(status.as_u16(), 200);
    }
    let server = ServerHandler::new(world.store_as("server"), catalog_with_subscription());
    let (status, answer) = read(server.handle(grant("bob", "pro")).await).await;
    assert_eq!(status.as_u16(), 200, "{answer}");

    let batch = stream.next_batch().await.expect("records");
    let records = batch["Records"].as_array().expect("records").len();
    assert!(
        records > 2,
        "the stream carries every write, not only events: {records}"
    );
    assert_eq!(
        publisher.publish(&batch).await,
        json!({"batchItemFailures": []})
    );
    let published = details(&bus.entries());
    assert_eq!(bus.unsigned_calls(), 0);
    let summary: Vec<(&str, &str, &str)> = published
        .iter()
        .map(|d| {
            (
                d["user_id"].as_str().expect("user"),
                d["change"].as_str().expect("change"),
                d["cause"].as_str().expect("cause"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("alice", "granted", "msg_1"),
            ("bob", "comp_granted", "server")
        ]
    );
    assert_eq!(published[0]["after"]["source"], "pass");
    assert_eq!(published[1]["after"]["source"], "grant");

    // EventBridge refuses an entry: the batch reports it, Lambda retries from there, and
    // the event arrives (at least once).
    let (status, _) = read(server.handle(grant("carol", "monthly")).await).await;
    assert_eq!(status.as_u16(), 200);
    let batch = stream.next_batch().await.expect("records");
    bus.refuse_next(1);
    let answer = publisher.publish(&batch).await;
    let failed = answer["batchItemFailures"][0]["itemIdentifier"]
        .as_str()
        .expect("the failed record is named")
        .to_owned();
    assert_eq!(bus.entries().len(), 2, "nothing new taken");
    let retry: Vec<Value> = batch["Records"]
        .as_array()
        .expect("records")
        .iter()
        .skip_while(|r| r["dynamodb"]["SequenceNumber"] != failed)
        .cloned()
        .collect();
    assert_eq!(
        publisher.publish(&json!({"Records": retry})).await,
        json!({"batchItemFailures": []})
    );
    let published = details(&bus.entries());
    assert_eq!(published.len(), 3);
    assert_eq!(published[2]["user_id"], "carol");
    assert_eq!(published[2]["change"], "comp_granted");

    // EventBridge unreachable: the whole batch is retried, nothing is lost.
    let (status, _) = read(server.handle(grant("dan", "monthly")).await).await;
    assert_eq!(status.as_u16(), 200);
    let batch = stream.next_batch().await.expect("records");
    let unreachable = publisher_unreachable().await;
    let answer = unreachable.publish(&batch).await;
    assert!(
        answer["batchItemFailures"][0]["itemIdentifier"].is_string(),
        "{answer}"
    );
    assert_eq!(
        publisher.publish(&batch).await,
        json!({"batchItemFailures": []})
    );
    assert_eq!(details(&bus.entries())[3]["user_id"], "dan");
}

async fn publisher_unreachable() -> AccessEventPublisher {
    // A port nothing listens on.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("port");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    publisher(&url).await
}
