//! Reconcile at scale: 10,000 subscribers renew in the same hour and every renewal
//! webhook is lost. The hourly schedule must repair them all before their access ends
//! (the renewal grace), within its Dodo call budget. Prints runs, Dodo calls and time.

mod common;

use std::time::{Duration, Instant};

use common::*;
use paywall::access::AccessView;
use paywall::handlers::reconcile::{Limits, Reconciler};
use paywall::ids::UserId;
use paywall::subscription::{RENEWAL_GRACE_SECONDS, Subscription};
use paywall::time::Timestamp;
use serde_json::{Value, json};

const SUBSCRIBERS: usize = 10_000;

fn subscription_json(i: usize, next_billing: Timestamp) -> Value {
    json!({
        "subscription_id": format!("sub_{i:05}"), "status": "active", "product_id": PRO,
        "next_billing_date": next_billing.to_rfc3339(), "cancel_at_next_billing_date": false,
        "metadata": {"user_id": format!("subscriber-{i:05}"), "plan": "pro"},
        "customer": {"customer_id": format!("cus_{i:05}"), "email": format!("s{i}@example.com")},
        "created_at": Timestamp::from_unix_seconds(1_700_000_000 + i as i64).to_rfc3339(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_lost_renewals_are_repaired_by_the_hourly_schedule_before_access_ends() {
    let world = World::new().await;
    let now = paywall::time::Clock::system().now();
    let renews_at = now.plus_seconds(3600);
    let renewed_until = renews_at.plus_days(30);

    // What the webhooks told us a month ago: active until the renewal.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let store = world.store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (worker..SUBSCRIBERS).step_by(8) {
                let seen =
                    Subscription::from_json(&subscription_json(i, renews_at)).expect("valid");
                let user = UserId::parse(&format!("subscriber-{i:05}")).expect("valid");
                store
                    .apply_subscription(&user, &seen, Some("pro"), 1)
                    .await
                    .expect("stored");
            }
        }));
    }
    for task in tasks {
        task.await.expect("joined");
    }
    let seeded = started.elapsed();
    // Dodo renewed every one of them; every subscription.renewed webhook was lost.
    for i in 0..SUBSCRIBERS {
        world
            .sim()
            .put_subscription(subscription_json(i, renewed_until));
    }

    let limits = Limits {
        // The production budget, without spreading the calls over real minutes.
        min_call_interval: Duration::ZERO,
        ..Limits::default()
    };
    // Dodo's production timeouts (the tests' short ones are for failure tests).
    let dodo = paywall::dodo::DodoClient::new(&paywall::config::DodoConfig {
        api_key: secrecy::SecretString::from(API_KEY),
        base_url: world.dodo.url.clone(),
    })
    .expect("client");
    let reconciler = Reconciler::new(
        world.store_as("reconcile"),
        dodo,
        catalog_with_subscription(),
        limits,
    );
    let access_ends = renews_at.plus_seconds(RENEWAL_GRACE_SECONDS);
    let mut run_at = renews_at.plus_seconds(5 * 60);
    let mut runs_with_work = 0;
    let mut calls = 0;
    let mut repaired = 0;
    let mut run_time = Duration::ZERO;
    while run_at < access_ends {
        let started = Instant::now();
        let summary = reconciler.run(run_at).await;
        run_time += started.elapsed();
        if summary.due > 0 {
            runs_with_work += 1;
        }
        calls += summary.dodo_calls;
        repaired += summary.subscriptions_refreshed;
        assert_eq!(summary.failed, 0, "{summary:?}");
        if summary.due == 0 {
            break;
        }
        run_at = run_at.plus_seconds(3600);
    }
    println!(
        "reconcile at scale: {SUBSCRIBERS} lost renewals, {runs_with_work} hourly run(s) with work, \
         {calls} Dodo calls, {repaired} repaired, {:.1} s in runs (seeding {:.1} s); \
         paced at {} ms a call in AWS: {:.0} s of calls",
        run_time.as_secs_f64(),
        seeded.as_secs_f64(),
        Limits::default().min_call_interval.as_millis(),
        f64::from(calls) * Limits::default().min_call_interval.as_secs_f64(),
    );
    assert_eq!(repaired as usize, SUBSCRIBERS);
    assert!(calls <= 2 * (SUBSCRIBERS / 100) as u32 + 2, "{calls} calls");

    // Every subscriber still has access just before the grace would have run out, and
    // it now runs to the renewed period.
    let check_at = access_ends.plus_seconds(-60);
    for i in (0..SUBSCRIBERS).step_by(97).chain([SUBSCRIBERS - 1]) {
        let user = UserId::parse(&format!("subscriber-{i:05}")).expect("valid");
        let account = world.store.get_account(&user).await.expect("read");
        let view = AccessView::of(&account, &catalog_with_subscription(), check_at);
        assert!(view.has_paid, "subscriber {i}: {view:?}");
        assert_eq!(
            view.plan_expires_at,
            Some(renewed_until.plus_seconds(RENEWAL_GRACE_SECONDS))
        );
    }
    // And nothing is left due.
    let left = world
        .store
        .due_for_reconcile(access_ends)
        .await
        .expect("read");
    assert!(left.is_empty(), "{} left due", left.len());
}
