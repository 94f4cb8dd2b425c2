//! DynamoDB round trips and capacity units, measured by the metering front of the local
//! engine ([`LocalDynamo::in_memory_metered`]): first the meter itself against calls
//! whose cost DynamoDB documents, then the product's hot routes through the real Lambda
//! binaries. Each round trip is latency on the route and a billed request: the
//! entitlement reads are one query, a usage call at most two round trips (the account
//! query, then one transaction). `make test` builds the binaries first.

mod common;

use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnConsumedCapacity, TransactWriteItem};
use common::*;
use dev::fixtures::{api_gateway_event, server_event};
use dev::lambda_harness::RunningFunction;
use dev::local_dynamodb::{LocalDynamo, MeteredCall, UnitsFrom};
use paywall::store::{Grant, GrantSource};
use serde_json::{Value, json};

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

/// `(operation, read units, write units, units from, status)` of each call.
fn summary(calls: &[MeteredCall]) -> Vec<(&str, f64, f64, UnitsFrom, u16)> {
    calls
        .iter()
        .map(|c| {
            (
                c.operation.as_str(),
                c.read_units,
                c.write_units,
                c.units_from,
                c.status,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meter_counts_every_call_with_the_units_dynamodb_bills() {
    let dynamo = LocalDynamo::in_memory_metered().await.expect("dynoxide");
    let _store = store_on(&dynamo).await;
    let client = dynamo.client_as("server");
    dynamo.take_calls();

    // 1.5 KB: two write units, one read unit.
    let big = "x".repeat(1500);
    let item = |sk: &str| {
        [("pk", s("USER#meter")), ("sk", s(sk)), ("data", s(&big))]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<std::collections::HashMap<_, _>>()
    };
    let put = client
        .put_item()
        .table_name(TABLE)
        .set_item(Some(item("USAGE#a")))
        .send()
        .await
        .expect("put");
    // The caller did not ask for capacity: the answer carries none, as DynamoDB's would.
    assert_eq!(put.consumed_capacity, None);
    let got = client
        .get_item()
        .table_name(TABLE)
        .key("pk", s("USER#meter"))
        .key("sk", s("USAGE#a"))
        .consistent_read(true)
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .send()
        .await
        .expect("get");
    // A caller that asked gets it.
    assert_eq!(
        got.consumed_capacity.and_then(|c| c.capacity_units),
        Some(1.0)
    );
    // A conditional put that fails: no capacity in the answer, billed all the same.
    let failed = client
        .put_item()
        .table_name(TABLE)
        .set_item(Some(item("USAGE#a")))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await;
    assert!(failed.is_err());
    // A cancelled transaction: both items charged, transactionally.
    let member = |sk: &str| {
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(TABLE)
                    .set_item(Some(item(sk)))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()
                    .expect("put"),
            )
            .build()
    };
    let cancelled = client
        .transact_write_items()
        .transact_items(member("USAGE#b"))
        .transact_items(member("USAGE#a"))
        .send()
        .await;
    assert!(cancelled.is_err());

    let calls = dynamo.take_calls();
    assert!(calls.iter().all(|c| c.function == "server"), "{calls:?}");
    assert_eq!(
        summary(&calls),
        vec![
            ("PutItem", 0.0, 2.0, UnitsFrom::Engine, 200),
            ("GetItem", 1.0, 0.0, UnitsFrom::Engine, 200),
            ("PutItem", 0.0, 2.0, UnitsFrom::Rules, 400),
            ("TransactWriteItems", 0.0, 8.0, UnitsFrom::Rules, 400),
        ]
    );
    assert!(dynamo.take_calls().is_empty(), "taken calls are gone");

    // An engine that does not meter records nothing.
    let plain = LocalDynamo::in_memory().await.expect("dynoxide");
    let _store = store_on(&plain).await;
    assert!(plain.take_calls().is_empty());
}

/// One invocation of `function` and the DynamoDB calls it made: `(status, body,
/// headers, calls)`.
async fn metered(
    dynamo: &LocalDynamo,
    function: &RunningFunction,
    name: &str,
    event: Value,
) -> (u64, Value, Value, Vec<MeteredCall>) {
    dynamo.take_calls();
    let response = function.invoke(event).await.expect("invoked");
    let calls = dynamo.take_calls();
    assert!(
        calls.iter().all(|call| call.function == name),
        "only {name}'s role called: {calls:?}"
    );
    let status = response["statusCode"].as_u64().unwrap_or_default();
    let body = response["body"]
        .as_str()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null);
    (status, body, response["headers"].clone(), calls)
}

/// `Query 1 RRU 0 WRU (engine) 200, …`: what the assertion messages show.
fn seen(calls: &[MeteredCall]) -> String {
    calls
        .iter()
        .map(|c| {
            format!(
                "{} {} RRU {} WRU ({:?}) {}",
                c.operation, c.read_units, c.write_units, c.units_from, c.status
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn operations(calls: &[MeteredCall]) -> Vec<&str> {
    calls.iter().map(|c| c.operation.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hot_routes_make_one_or_two_dynamodb_round_trips() {
    let dynamo = LocalDynamo::in_memory_metered().await.expect("dynoxide");
    let store = store_on(&dynamo).await;
    let env = vec![
        ("TABLE_NAME", TABLE.to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB", dynamo.endpoint().to_owned()),
        ("DODO_PAYMENTS_API_KEY", API_KEY.to_owned()),
        // Never called on these routes.
        ("DODO_PAYMENTS_BASE_URL", "http://127.0.0.1:9".to_owned()),
        ("DODO_PAYMENTS_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ("DODO_PRODUCT_ID", PRODUCT.to_owned()),
        ("DODO_SUCCESS_URL", SUCCESS_URL.to_owned()),
        ("ENV", "development".to_owned()),
        (
            "PLANS",
            json!({"free": {"limits": {"api_calls": 3}},
                   "monthly": {"product_id": PRODUCT, "kind": "pass", "days": 30,
                               "limits": {"api_calls": 100}}})
            .to_string(),
        ),
    ];
    let status = RunningFunction::spawn(&common::lambda_binary("status"), &env)
        .await
        .expect("status");
    let server = RunningFunction::spawn(&common::lambda_binary("server"), &env)
        .await
        .expect("server");
    // A paying user: a pass bought with a payment (granted as the webhook grants it).
    store
        .apply_grant(
            &Grant {
                user_id: paywall::ids::UserId::parse("payer").expect("valid"),
                payment_id: "pay_round_trips".to_owned(),
                plan: "monthly".to_owned(),
                days: 30,
                source: GrantSource::Webhook,
            },
            paywall::time::Clock::system().now(),
        )
        .await
        .expect("granted");

    // The entitlement reads: one strongly consistent query of the user's partition.
    for path in ["/payment/entitlements", "/payment/status"] {
        let payer = Some(("payer", Some("payer@example.com")));
        let (code, body, _, calls) = metered(
            &dynamo,
            &status,
            "status",
            api_gateway_event("GET", path, payer, None),
        )
        .await;
        assert_eq!(code, 200, "{path}: {body}");
        assert_eq!(
            operations(&calls),
            vec!["Query"],
            "GET {path}: exactly one DynamoDB round trip, a Query; seen: {}",
            seen(&calls)
        );
    }

    let arn = Some("arn:aws:iam::123456789012:user/backend");
    let usage = |user: &str, amount: u64, key: &str| {
        server_event(
            "POST",
            "/server/usage",
            arn,
            Some(
                &json!({"user_id": user, "feature": "api_calls", "amount": amount,
                        "idempotency_key": key})
                .to_string(),
            ),
        )
    };
    let cases = [
        (
            "a first call",
            usage("freya", 2, "k1"),
            json!({"allowed": true, "remaining": 1}),
            false,
        ),
        (
            "a replayed key",
            usage("freya", 2, "k1"),
            json!({"allowed": true, "remaining": 1}),
            true,
        ),
        (
            "a call over the limit",
            usage("freya", 2, "k2"),
            json!({"allowed": false, "remaining": 1}),
            false,
        ),
        (
            "a user with a paid plan",
            usage("payer", 5, "k1"),
            json!({"allowed": true, "remaining": 95}),
            false,
        ),
    ];
    let mut report = Vec::new();
    for (case, event, expected, replayed) in cases {
        let (code, body, headers, calls) = metered(&dynamo, &server, "server", event).await;
        assert_eq!((code, &body), (200, &expected), "{case}");
        assert_eq!(
            headers["idempotent-replayed"] == "true",
            replayed,
            "{case}: {headers}"
        );
        assert!(
            calls.len() <= 2,
            "POST /server/usage, {case}: at most 2 DynamoDB round trips; seen {}: {}",
            calls.len(),
            seen(&calls)
        );
        assert_eq!(
            calls.first().map(|c| c.operation.as_str()),
            Some("Query"),
            "{case}: the account first; seen: {}",
            seen(&calls)
        );
        report.push(format!("{case}: {}", seen(&calls)));
    }
    // The same key for another request: refused, in the same two round trips.
    let (code, body, _, calls) = metered(&dynamo, &server, "server", usage("freya", 1, "k1")).await;
    assert_eq!(code, 409, "{body}");
    assert!(calls.len() <= 2, "a reused key: {}", seen(&calls));
    report.push(format!("a reused key: {}", seen(&calls)));
    // What `--nocapture` shows, for the book's figures.
    eprintln!("POST /server/usage:\n  {}", report.join("\n  "));
}
