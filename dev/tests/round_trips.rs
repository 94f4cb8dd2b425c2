//! DynamoDB round trips and capacity units, measured by the metering front of the local
//! engine ([`LocalDynamo::in_memory_metered`]): first the meter itself against calls
//! whose cost DynamoDB documents, then the product's hot routes through the real Lambda
//! binaries.

mod common;

use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnConsumedCapacity, TransactWriteItem};
use common::*;
use dev::local_dynamodb::{LocalDynamo, MeteredCall, UnitsFrom};

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
