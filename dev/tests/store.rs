//! The DynamoDB store, through the real `aws-sdk-dynamodb`, against dynoxide served on
//! loopback, with the table created from template.yaml.

mod common;

use common::{TABLE, store_on};
use dev::local_dynamodb::{LocalDynamo, create_table_from_template, template_path};
use paywall::ids::{Email, UserId};
use paywall::store::{Grant, GrantOutcome, GrantSource, PendingCheckout, Store};
use paywall::time::Timestamp;

fn user(id: &str) -> UserId {
    UserId::parse(id).expect("valid")
}

fn grant(user_id: &str, payment_id: &str) -> Grant {
    Grant {
        user_id: user(user_id),
        payment_id: payment_id.to_owned(),
        plan: "monthly".to_owned(),
        days: 30,
        source: GrantSource::Webhook,
    }
}

async fn fresh_store() -> (LocalDynamo, Store) {
    let dynamo = LocalDynamo::in_memory().await.expect("dynoxide");
    let store = store_on(&dynamo).await;
    (dynamo, store)
}

#[tokio::test]
async fn the_table_matches_template_yaml() {
    let (dynamo, _store) = fresh_store().await;
    let table = dynamo
        .client()
        .describe_table()
        .table_name(TABLE)
        .send()
        .await
        .expect("describe")
        .table
        .expect("table");
    let keys: Vec<_> = table
        .key_schema()
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_owned(),
                k.key_type().as_str().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [("pk".into(), "HASH".into()), ("sk".into(), "RANGE".into())]
    );
    let indexes: Vec<_> = table
        .global_secondary_indexes()
        .iter()
        .filter_map(|i| i.index_name())
        .collect();
    assert_eq!(indexes, ["email-index", "due-index"]);
    let ttl = dynamo
        .client()
        .describe_time_to_live()
        .table_name(TABLE)
        .send()
        .await
        .expect("ttl")
        .time_to_live_description
        .and_then(|d| d.attribute_name)
        .expect("ttl attribute");
    assert_eq!(ttl, "expires_at");

    // Creating it again (a restart of the local server) is not an error.
    create_table_from_template(&dynamo.client(), &template_path(), TABLE)
        .await
        .expect("idempotent");
}

#[tokio::test]
async fn an_unknown_user_has_no_record() {
    let (_dynamo, store) = fresh_store().await;
    assert_eq!(store.get_user(&user("nobody")).await.expect("read"), None);
}

#[tokio::test]
async fn a_checkout_is_pending_and_linked_to_its_user() {
    let (_dynamo, store) = fresh_store().await;
    let now = paywall::time::Clock::system().now();
    let email = Email::parse("Alice@Example.com").expect("valid");
    store
        .record_checkout(
            &user("alice"),
            Some(&email),
            &PendingCheckout {
                session_id: "cks_1".into(),
                checkout_url: None,
                plan: "monthly".into(),
                created_at: now,
            },
        )
        .await
        .expect("recorded");
    let record = store
        .get_user(&user("alice"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        record.pending_checkout.map(|c| c.session_id),
        Some("cks_1".into())
    );
    assert_eq!(record.paid_until, None);
    assert_eq!(record.email.as_deref(), Some("alice@example.com"));
    assert_eq!(
        store.checkout_owner("cks_1").await.expect("read"),
        Some(user("alice"))
    );
    assert_eq!(store.checkout_owner("cks_other").await.expect("read"), None);
    assert_eq!(
        store.users_by_email(&email).await.expect("query"),
        vec![user("alice")]
    );
}

#[tokio::test]
async fn a_payment_grants_exactly_once() {
    let (_dynamo, store) = fresh_store().await;
    let now = Timestamp::from_unix_seconds(1_800_000_000);
    let first = store
        .apply_grant(&grant("alice", "pay_1"), now)
        .await
        .expect("grant");
    let GrantOutcome::Applied(record) = first else {
        panic!("first grant must apply, got {first:?}");
    };
    assert_eq!(record.paid_until, Some(now.plus_days(30)));

    let again = store
        .apply_grant(&grant("alice", "pay_1"), now.plus_days(1))
        .await
        .expect("grant");
    assert_eq!(
        again,
        GrantOutcome::AlreadyApplied {
            owner: user("alice")
        }
    );
    let stored = store
        .get_user(&user("alice"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(stored.paid_until, Some(now.plus_days(30)));
    assert_eq!(stored.last_payment_id.as_deref(), Some("pay_1"));

    // The same payment can never be granted to someone else either.
    let stolen = store
        .apply_grant(&grant("mallory", "pay_1"), now)
        .await
        .expect("grant");
    assert_eq!(
        stolen,
        GrantOutcome::AlreadyApplied {
            owner: user("alice")
        }
    );
    assert_eq!(store.get_user(&user("mallory")).await.expect("read"), None);
}

#[tokio::test]
async fn a_new_payment_extends_from_the_later_of_now_and_the_expiry() {
    let (_dynamo, store) = fresh_store().await;
    let t0 = Timestamp::from_unix_seconds(1_800_000_000);
    store
        .apply_grant(&grant("alice", "pay_1"), t0)
        .await
        .expect("grant");
    // Re-bought ten days in: the twenty days left are kept.
    let t10 = t0.plus_days(10);
    store
        .apply_grant(&grant("alice", "pay_2"), t10)
        .await
        .expect("grant");
    let record = store
        .get_user(&user("alice"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(record.paid_until, Some(t0.plus_days(60)));
    assert_eq!(record.payment_date, Some(t10));

    // Re-bought after it lapsed: thirty days from now.
    let t100 = t0.plus_days(100);
    store
        .apply_grant(&grant("alice", "pay_3"), t100)
        .await
        .expect("grant");
    let record = store
        .get_user(&user("alice"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(record.paid_until, Some(t100.plus_days(30)));
}

#[tokio::test]
async fn a_grant_clears_the_pending_checkout() {
    let (_dynamo, store) = fresh_store().await;
    let now = paywall::time::Clock::system().now();
    store
        .record_checkout(
            &user("alice"),
            None,
            &PendingCheckout {
                session_id: "cks_1".into(),
                checkout_url: None,
                plan: "monthly".into(),
                created_at: now,
            },
        )
        .await
        .expect("recorded");
    store
        .apply_grant(&grant("alice", "pay_1"), now)
        .await
        .expect("grant");
    let record = store
        .get_user(&user("alice"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(record.pending_checkout, None);
    assert_eq!(record.paid_until, Some(now.plus_days(30)));
    // The session link stays, so late deliveries still find their owner.
    assert_eq!(
        store.checkout_owner("cks_1").await.expect("read"),
        Some(user("alice"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_different_payments_all_count() {
    let (_dynamo, store) = fresh_store().await;
    let now = Timestamp::from_unix_seconds(1_800_000_000);
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .apply_grant(&grant("alice", &format!("pay_{i}")), now)
                    .await
            })
        })
        .collect();
    for task in tasks {
        let outcome = task.await.expect("joined").expect("granted");
        assert!(matches!(outcome, GrantOutcome::Applied(_)), "{outcome:?}");
    }
    let record = store
        .get_user(&user("alice"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(record.paid_until, Some(now.plus_days(6 * 30)));
    assert_eq!(record.version, 6);
}

#[tokio::test]
async fn an_outage_is_an_error_not_an_answer() {
    let (mut dynamo, store) = fresh_store().await;
    dynamo.shut_down().await;
    let err = store.get_user(&user("alice")).await.expect_err("no engine");
    assert!(
        matches!(err, paywall::store::StoreError::Unavailable(_)),
        "{err}"
    );
    let err = store
        .apply_grant(
            &grant("alice", "pay_1"),
            paywall::time::Clock::system().now(),
        )
        .await
        .expect_err("no engine");
    assert!(
        matches!(err, paywall::store::StoreError::Unavailable(_)),
        "{err}"
    );
}

/// Issue 17, L6: a usage call that computed its period just before a boundary, meeting a
/// counter already in the next period, does not put the counter back (which reset it for
/// the next caller, and again): it is refused for a retry, and the counter stays.
#[tokio::test]
async fn a_usage_call_from_an_older_period_never_puts_the_counter_back() {
    let (_dynamo, store) = fresh_store().await;
    let user = paywall::ids::UserId::parse("meter").expect("valid");
    let clock = paywall::time::Clock::system();
    let call = |key: &'static str, period: &'static str| paywall::store::UsageRequest {
        user: &user,
        limit: "api_calls",
        amount: 3,
        idempotency_key: key,
        period,
        allowed: 10,
    };
    let newer = store
        .consume_usage(&call("k1", "free:2000"), None, &clock)
        .await;
    assert!(newer.is_ok_and(|answer| answer.allowed && answer.remaining == 7));
    let stale = store
        .consume_usage(&call("k2", "free:1000"), None, &clock)
        .await;
    assert!(stale.is_err(), "a stale period is refused for a retry");
    let again = store
        .consume_usage(&call("k3", "free:2000"), None, &clock)
        .await
        .expect("counted");
    assert_eq!(
        again.remaining, 4,
        "the counter kept the newer period's use"
    );
}

/// The same boundary, in flight: a call decided a millisecond before its period ends
/// (on a counter it read then), loses its race to a call of the next period, and
/// decides again after the end. It must see that its period has ended (the clock is
/// read again for every attempt), not put the counter back to the old period.
#[tokio::test]
async fn a_usage_call_that_crosses_its_period_end_in_flight_never_puts_the_counter_back() {
    let (_dynamo, store) = fresh_store().await;
    let user = paywall::ids::UserId::parse("boundary").expect("valid");
    let call = |key: &'static str, period: &'static str| paywall::store::UsageRequest {
        user: &user,
        limit: "api_calls",
        amount: 3,
        idempotency_key: key,
        period,
        allowed: 10,
    };
    // The next period's call got there first.
    let later = paywall::time::Clock::test(1_000_500, false);
    store
        .consume_usage(&call("next", "free:2000"), None, &later)
        .await
        .expect("counted in the next period");
    // This call read the counter before that (none yet), decides on it a millisecond
    // before the end of its period `free:1000` (the clock flows at the wall's pace from
    // there, and nothing awaits before the first decision), and loses; its next attempt
    // comes at least a millisecond later (the back-off), after the end.
    let clock = paywall::time::Clock::test(999_999, true);
    let stale = store
        .consume_usage(&call("late", "free:1000"), None, &clock)
        .await;
    assert!(
        stale.is_err(),
        "a call whose period ended while it was in flight is refused for a retry: {stale:?}"
    );
    let again = store
        .consume_usage(&call("after", "free:2000"), None, &later)
        .await
        .expect("counted");
    assert_eq!(again.remaining, 4, "the next period's use was kept");
}
