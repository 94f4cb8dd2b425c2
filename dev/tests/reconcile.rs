//! The reconcile run repairs what lost webhooks leave wrong, against dynoxide and the
//! Dodo stand-in: a lost renewal, a lost `payment.succeeded`, an abandoned checkout, a
//! subscription moved to a product we do not sell; it is idempotent, counts every Dodo
//! call against its budget, defers what fails, and says when it left work behind.

mod common;

use std::time::Duration;

use common::*;
use paywall::config::CheckoutConfig;
use paywall::handlers::reconcile::{Limits, Reconciler};
use paywall::handlers::{CreateCheckoutHandler, SuccessHandler};
use paywall::ids::UserId;
use paywall::subscription::{RENEWAL_GRACE_SECONDS, Subscription};
use paywall::time::{SECONDS_PER_DAY, Timestamp};
use serde_json::{Value, json};

/// Every run reads a page of Dodo's recent payments, one of its refunds and one of its
/// disputes (lost webhooks).
const CLAIM_LISTS: u32 = 3;

fn user(id: &str) -> UserId {
    UserId::parse(id).expect("valid")
}

fn subscription_json(id: &str, owner: &str, next_billing: Timestamp) -> Value {
    json!({
        "subscription_id": id, "status": "active", "product_id": PRO,
        "next_billing_date": next_billing.to_rfc3339(), "cancel_at_next_billing_date": false,
        "metadata": {"user_id": owner, "plan": "pro"},
        "customer": {"customer_id": format!("cus_{owner}"), "email": format!("{owner}@example.com")},
        "created_at": paywall::time::Clock::system().now().to_rfc3339(),
    })
}

/// The production limits without the pacing between calls (which only spreads a run's
/// calls over real minutes).
fn unpaced() -> Limits {
    Limits {
        min_call_interval: Duration::ZERO,
        disputes_every_hours: 1,
        ..Limits::default()
    }
}

fn reconciler(world: &World, limits: Limits) -> Reconciler {
    Reconciler::new(
        world.store_as("reconcile"),
        world.dodo_client(),
        catalog_with_subscription(),
        limits,
    )
}

async fn view(world: &World, who: &str, now: Timestamp) -> Value {
    let account = world.store.get_account(&user(who)).await.expect("read");
    serde_json::to_value(paywall::access::AccessView::of(
        &account,
        &catalog_with_subscription(),
        now,
    ))
    .expect("json")
}

/// A subscription as the last webhook we saw left it.
async fn seen(world: &World, id: &str, owner: &str, next_billing: Timestamp) {
    let seen = Subscription::from_json(&subscription_json(id, owner, next_billing)).expect("valid");
    world
        .store
        .apply_subscription(&user(owner), &seen, Some("pro"), 1)
        .await
        .expect("stored");
}

#[tokio::test]
async fn a_lost_renewal_is_repaired_before_access_ends() {
    let world = World::new().await;
    let now = paywall::time::Clock::system().now();
    let renews_at = now.plus_seconds(7200);
    seen(&world, "sub_r", "renewer", renews_at).await;
    // Dodo renewed it, but the subscription.renewed webhook never arrived.
    world
        .sim()
        .put_subscription(subscription_json("sub_r", "renewer", now.plus_days(30)));

    // Before the renewal nothing is due: no Dodo call.
    let early = reconciler(&world, unpaced()).run(now).await;
    assert_eq!((early.due, early.dodo_calls), (0, CLAIM_LISTS), "{early:?}");

    // The first hourly run after the renewal repairs it, inside the renewal grace.
    let run_at = renews_at.plus_seconds(1800);
    let summary = reconciler(&world, unpaced()).run(run_at).await;
    assert_eq!(summary.subscriptions_refreshed, 1, "{summary:?}");
    assert!(summary.complete(), "{summary:?}");
    let after = view(
        &world,
        "renewer",
        renews_at.plus_seconds(RENEWAL_GRACE_SECONDS + 60),
    )
    .await;
    assert_eq!(after["has_paid"], true, "{after}");
    assert_eq!(
        after["plan_expires_at"],
        now.plus_days(30)
            .plus_seconds(RENEWAL_GRACE_SECONDS)
            .to_rfc3339()
    );

    // Renewed far ahead: no longer due, so the next run asks Dodo nothing about it
    // (only its lists of payments, refunds and disputes).
    let calls = world.sim().api_calls().len();
    let again = reconciler(&world, unpaced())
        .run(run_at.plus_seconds(3600))
        .await;
    assert_eq!(
        (again.checked, world.sim().api_calls().len()),
        (0, calls + CLAIM_LISTS as usize),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_renewal_not_charged_yet_is_deferred_and_one_that_failed_ends_access() {
    let world = World::new().await;
    let now = paywall::time::Clock::system().now();
    seen(&world, "sub_late", "late", now).await;
    world
        .sim()
        .put_subscription(subscription_json("sub_late", "late", now));
    // Dodo has not charged it yet: nothing new, checked again an hour later, not sooner.
    let first = reconciler(&world, unpaced())
        .run(now.plus_seconds(60))
        .await;
    assert_eq!((first.unchanged, first.failed), (1, 0), "{first:?}");
    let soon = reconciler(&world, unpaced())
        .run(now.plus_seconds(120))
        .await;
    assert_eq!(soon.due, 0, "{soon:?}");
    assert_eq!(
        view(&world, "late", now.plus_seconds(120)).await["has_paid"],
        true
    );

    // The renewal failed and the on_hold webhook was lost: the next run ends access.
    let mut held = subscription_json("sub_late", "late", now);
    held["status"] = json!("on_hold");
    world.sim().put_subscription(held);
    let second = reconciler(&world, unpaced())
        .run(now.plus_seconds(3700))
        .await;
    assert_eq!(second.subscriptions_refreshed, 1, "{second:?}");
    let after = view(&world, "late", now.plus_seconds(3700)).await;
    assert_eq!(
        (after["has_paid"].clone(), after["status"].clone()),
        (json!(false), json!("on_hold"))
    );
}

/// A launch-day burst of sales: more than the default budget for users' Dodo calls.
fn sales_day_budget() -> paywall::store::DodoBudget {
    paywall::store::DodoBudget::per_minute(10_000)
}

async fn open_checkout_at(world: &World, who: &str, plan: &str, at: Timestamp) -> Value {
    let handler = CreateCheckoutHandler::new(
        world
            .store_as("create-checkout")
            .with_dodo_budget(sales_day_budget()),
        world.dodo_client(),
        catalog_with_subscription(),
        CheckoutConfig {
            success_url: SUCCESS_URL.to_owned(),
        },
    );
    let request = api_event(
        "POST",
        "/payment/create-checkout-session",
        Some((who, Some(&format!("{who}@example.com")))),
        Some(&json!({ "plan": plan }).to_string()),
    );
    let response = handler.respond(&request, at).await.expect("opened");
    let (_, body) = read(response).await;
    body
}

#[tokio::test]
async fn a_lost_payment_webhook_is_repaired_and_a_rerun_changes_nothing() {
    let world = World::new().await;
    let now = paywall::time::Clock::system().now();
    let url = open_checkout_at(
        &world,
        "lost-webhook",
        "monthly",
        now.plus_seconds(-2 * 3600),
    )
    .await["checkout_url"]
        .as_str()
        .expect("url")
        .to_owned();
    // Paid on Dodo's page; no webhook target, so payment.succeeded is lost.
    let paid = paywall::http::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("outcome=succeeded")
        .send()
        .await
        .expect("paid");
    assert_eq!(paid.status(), 303);
    assert_eq!(view(&world, "lost-webhook", now).await["has_paid"], false);

    let summary = reconciler(&world, unpaced()).run(now).await;
    assert_eq!(summary.payments_granted, 1, "{summary:?}");
    let after = view(&world, "lost-webhook", now).await;
    assert_eq!(after["has_paid"], true, "{after}");
    let expiry = after["plan_expires_at"].clone();

    let again = reconciler(&world, unpaced()).run(now).await;
    assert_eq!(again.checked, 0, "{again:?}");
    assert_eq!(
        view(&world, "lost-webhook", now).await["plan_expires_at"],
        expiry
    );
}

/// A pass paid after reconcile stopped asking about its checkout, its `payment.succeeded`
/// lost: only Dodo's list of payments shows it. Dodo lists payments without their
/// `product_cart` (SDK `PaymentListResponse`), so reconcile reads what it bought from the
/// payment itself.
#[tokio::test]
async fn a_lost_pass_payment_seen_only_in_dodos_list_is_granted_from_the_payment_itself() {
    let world = World::new().await;
    let now = paywall::time::Clock::system().now();
    let url = open_checkout_at(
        &world,
        "paid-late",
        "monthly",
        now.plus_seconds(-3 * SECONDS_PER_DAY),
    )
    .await["checkout_url"]
        .as_str()
        .expect("url")
        .to_owned();
    let dropped = reconciler(&world, unpaced()).run(now).await;
    assert_eq!(dropped.checkouts_abandoned, 1, "{dropped:?}");
    // Paid on Dodo's page after all; no webhook target, so payment.succeeded is lost.
    let paid = paywall::http::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("outcome=succeeded")
        .send()
        .await
        .expect("paid");
    assert_eq!(paid.status(), 303);

    let summary = reconciler(&world, unpaced())
        .run(now.plus_seconds(3600))
        .await;
    assert_eq!(summary.payments_granted, 1, "{summary:?}");
    assert!(summary.complete(), "{summary:?}");
    let after = view(&world, "paid-late", now.plus_seconds(3600)).await;
    assert_eq!(after["has_paid"], true, "{after}");
    // Applied once: the next run lists it again and changes nothing.
    let again = reconciler(&world, unpaced())
        .run(now.plus_seconds(7200))
        .await;
    assert_eq!(again.payments_granted, 0, "{again:?}");
}

#[tokio::test]
async fn a_recent_checkout_waits_an_unpaid_one_backs_off_and_an_abandoned_one_is_dropped() {
    let world = World::new().await;
    let now = paywall::time::Clock::system().now();
    open_checkout_at(&world, "just-opened", "monthly", now.plus_seconds(-600)).await;
    open_checkout_at(&world, "unpaid", "monthly", now.plus_seconds(-2 * 3600)).await;
    open_checkout_at(
        &world,
        "walked-away",
        "monthly",
        now.plus_seconds(-3 * SECONDS_PER_DAY),
    )
    .await;
    let summary = reconciler(&world, unpaced()).run(now).await;
    assert_eq!(summary.due, 2, "{summary:?}");
    assert_eq!(summary.checkouts_abandoned, 1, "{summary:?}");
    assert_eq!(summary.unchanged, 1, "{summary:?}");
    assert_eq!(summary.payments_granted, 0);
    let walked_away = view(&world, "walked-away", now).await;
    assert_eq!(walked_away["has_paid"], false);
    // W4: dropped, it no longer shows as pending.
    assert_eq!(
        (
            walked_away["status"].clone(),
            walked_away["subscription_plan"].clone()
        ),
        (json!("none"), json!("none")),
        "{walked_away}"
    );
    // Dropped from the checks; the unpaid one waits an hour; the recent one is pending.
    let again = reconciler(&world, unpaced())
        .run(now.plus_seconds(60))
        .await;
    assert_eq!(again.due, 0, "{again:?}");
    assert_eq!(view(&world, "just-opened", now).await["status"], "pending");
    let later = reconciler(&world, unpaced())
        .run(now.plus_seconds(3700))
        .await;
    assert_eq!(later.due, 2, "the unpaid one and the recent one: {later:?}");
}

#[tokio::test]
async fn every_dodo_call_counts_and_a_run_that_leaves_work_behind_says_so() {
    let world = World::new().await;
    let now = paywall::time::Clock::system().now();
    for i in 0..10 {
        let id = format!("sub_b{i}");
        let owner = format!("budget-{i}");
        seen(&world, &id, &owner, now).await;
        world
            .sim()
            .put_subscription(subscription_json(&id, &owner, now.plus_days(30)));
    }
    let limits = Limits {
        max_dodo_calls: 6,
        list_from: 1000,
        ..unpaced()
    };
    let run_at = now.plus_seconds(60);
    let summary = reconciler(&world, limits).run(run_at).await;
    assert_eq!(summary.dodo_calls, 6, "{summary:?}");
    // Half the calls are kept for the lists of payments, refunds and disputes, which
    // are read however many items are due (M4: before, the items took every call and
    // lost refunds went unread); seven subscriptions wait.
    assert_eq!(summary.list_pages, CLAIM_LISTS, "{summary:?}");
    assert_eq!(summary.subscriptions_refreshed, 3, "{summary:?}");
    assert_eq!(summary.left_behind, 7, "{summary:?}");
    assert!(!summary.complete(), "a run that leaves work behind fails");
    assert_eq!(world.sim().api_calls().len() as u32, summary.dodo_calls);
    // The next run, with room for the rest and its lists, finishes.
    let next = reconciler(
        &world,
        Limits {
            max_dodo_calls: 2 * 7,
            ..limits
        },
    )
    .run(run_at.plus_seconds(3600))
    .await;
    assert_eq!(
        (next.subscriptions_refreshed, next.left_behind),
        (7, 0),
        "{next:?}"
    );
    assert!(next.complete());
}

#[tokio::test]
async fn an_item_that_fails_backs_off_and_does_not_starve_the_others() {
    let world = World::new().await;
    let now = paywall::time::Clock::system().now();
    // Dodo answers something unreadable for this one (no status), due first.
    seen(&world, "sub_odd", "odd", now.plus_seconds(-600)).await;
    let mut odd = subscription_json("sub_odd", "odd", now.plus_days(30));
    odd.as_object_mut().expect("object").remove("status");
    world.sim().put_subscription(odd);
    // Dodo does not know this one at all (404).
    seen(&world, "sub_gone", "gone", now.plus_seconds(-300)).await;
    for i in 0..3 {
        let owner = format!("fine-{i}");
        seen(&world, &format!("sub_f{i}"), &owner, now).await;
        world.sim().put_subscription(subscription_json(
            &format!("sub_f{i}"),
            &owner,
            now.plus_days(30),
        ));
    }
    let limits = Limits {
        list_from: 1000,
        ..unpaced()
    };
    let run_at = now.plus_seconds(60);
    let summary = reconciler(&world, limits).run(run_at).await;
    assert_eq!(
        (
            summary.failed,
            summary.dropped,
            summary.subscriptions_refreshed
        ),
        (2, 1, 3),
        "{summary:?}"
    );
    assert!(
        !summary.complete(),
        "a run with errors fails, so the alarm fires"
    );
    // The unknown one is gone from the index; the unreadable one is deferred: the next
    // hourly run does not spend a call on either…
    let next = reconciler(&world, limits)
        .run(run_at.plus_seconds(1800))
        .await;
    assert_eq!((next.due, next.dodo_calls), (0, CLAIM_LISTS), "{next:?}");
    // …the one after its back-off asks about the unreadable one again, then waits twice
    // as long.
    let later = reconciler(&world, limits)
        .run(run_at.plus_seconds(3700))
        .await;
    assert_eq!((later.due, later.failed), (1, 1), "{later:?}");
    let sooner = reconciler(&world, limits)
        .run(run_at.plus_seconds(3700 + 3700))
        .await;
    assert_eq!(sooner.due, 0, "backed off two hours: {sooner:?}");
    let then = reconciler(&world, limits)
        .run(run_at.plus_seconds(3700 + 7300))
        .await;
    assert_eq!(then.due, 1, "{then:?}");
    // Ten checks without a result, and it is dropped for good, not failed every run.
    let mut at = run_at.plus_seconds(3700 + 7300);
    let mut dropped = 0;
    for _ in 0..10 {
        at = at.plus_seconds(SECONDS_PER_DAY + 60);
        dropped += reconciler(&world, limits).run(at).await.dropped;
    }
    assert_eq!(dropped, 1);
    let after = reconciler(&world, limits).run(at.plus_days(2)).await;
    assert_eq!(after.due, 0, "{after:?}");
}

#[tokio::test]
async fn a_subscription_moved_to_a_product_we_do_not_sell_stops_at_the_end_of_its_paid_period() {
    let world = World::new().await;
    let now = paywall::time::Clock::system().now();
    seen(&world, "sub_moved", "mover", now).await;
    // On Dodo it was moved to another product and renewed there; the webhook was lost.
    let mut moved = subscription_json("sub_moved", "mover", now.plus_days(30));
    moved["product_id"] = json!("pdt_something_else");
    world.sim().put_subscription(moved);
    let summary = reconciler(&world, unpaced())
        .run(now.plus_seconds(60))
        .await;
    assert_eq!(summary.subscriptions_refreshed, 1, "{summary:?}");
    // Paid through `now` on our product: no access after it, and no longer checked.
    let after = view(&world, "mover", now.plus_seconds(120)).await;
    assert_eq!(after["has_paid"], false, "{after}");
    let again = reconciler(&world, unpaced()).run(now.plus_days(31)).await;
    assert_eq!(again.due, 0, "{again:?}");
    assert_eq!(
        view(&world, "mover", now.plus_days(31)).await["has_paid"],
        false
    );
}

/// Thirty-five users buy the subscription through `create-checkout` and the success call,
/// as a frontend does; a month later Dodo renews them all and every renewal webhook is
/// lost. The checkouts must have left the due index (they were completed), so the first
/// hourly run after the renewals spends its budget on the renewals, lists them in one
/// call, and every user keeps access.
#[tokio::test]
async fn thirty_five_subscription_sales_then_a_month_of_lost_renewals() {
    let world = World::new().await;
    let now = paywall::time::Clock::system().now();
    let renews_at = now.plus_days(30);
    let success = SuccessHandler::new(
        world
            .store_as("success")
            .with_dodo_budget(sales_day_budget()),
        world.dodo_client(),
        catalog_with_subscription(),
    );
    let buyers: Vec<String> = (0..35).map(|i| format!("buyer-{i}")).collect();
    for (i, who) in buyers.iter().enumerate() {
        let session = open_checkout_at(&world, who, "pro", now).await;
        let session_id = session["session_id"].as_str().expect("session");
        let customer = world.sim().checkout_customer(session_id).expect("customer");
        let subscription_id = format!("sub_sale{i}");
        let mut subscription = subscription_json(&subscription_id, who, renews_at);
        subscription["customer"]["customer_id"] = json!(customer);
        world.sim().put_subscription(subscription);
        let payment_id = format!("pay_sale{i}");
        world.sim().put_payment(json!({
            "payment_id": payment_id, "status": "succeeded",
            "metadata": {"user_id": who, "plan": "pro"},
            "customer": {"customer_id": customer, "email": format!("{who}@example.com")},
            "checkout_session_id": session_id, "subscription_id": subscription_id,
            "created_at": now.to_rfc3339(),
        }));
        let request = api_event(
            "POST",
            "/payment/success",
            Some((who, Some(&format!("{who}@example.com")))),
            Some(&json!({ "payment_id": payment_id }).to_string()),
        );
        let (status, body) = read(success.respond(&request, now).await.expect("answered")).await;
        assert_eq!(status, 200, "{body}");
    }
    // No checkout is left pending: an hour later nothing is due.
    let quiet = reconciler(&world, unpaced())
        .run(now.plus_seconds(2 * 3600))
        .await;
    assert_eq!((quiet.due, quiet.dodo_calls), (0, CLAIM_LISTS), "{quiet:?}");

    // A month on, Dodo renews every subscription; every renewal webhook is lost.
    for (i, who) in buyers.iter().enumerate() {
        let mut renewed = world
            .sim()
            .subscription(&format!("sub_sale{i}"))
            .expect("known");
        renewed["next_billing_date"] = json!(renews_at.plus_days(30).to_rfc3339());
        assert_eq!(renewed["metadata"]["user_id"], json!(who));
        world.sim().put_subscription(renewed);
    }
    let calls_before = world.sim().api_calls().len();
    let run = reconciler(
        &world,
        Limits {
            disputes_every_hours: 1,
            ..Limits::default()
        },
    )
    .run(renews_at.plus_seconds(600))
    .await;
    assert_eq!(run.due, 35, "{run:?}");
    assert_eq!(run.subscriptions_refreshed, 35, "{run:?}");
    // One page of subscriptions, and the sweep's pages of payments, refunds, disputes.
    assert_eq!(
        (run.list_pages, run.dodo_calls),
        (1 + CLAIM_LISTS, 1 + CLAIM_LISTS),
        "{run:?}"
    );
    assert!(run.complete(), "{run:?}");
    assert_eq!(
        world.sim().api_calls().len() - calls_before,
        1 + CLAIM_LISTS as usize
    );
    let end_of_grace = renews_at.plus_seconds(RENEWAL_GRACE_SECONDS + 60);
    for who in &buyers {
        let access = view(&world, who, end_of_grace).await;
        assert_eq!(access["has_paid"], true, "{who}: {access}");
    }
}

/// The buyer paid a subscription and closed the tab; the payment's webhook arrived, but
/// every delivery of `subscription.active` was lost. Reconcile asks Dodo an hour later.
#[tokio::test]
async fn a_paid_subscription_whose_activation_was_lost_is_repaired() {
    let world = World::new().await;
    let now = paywall::time::Clock::system().now();
    let webhook = paywall::handlers::WebhookHandler::new(
        world.store_as("webhook"),
        secret(),
        catalog_with_subscription(),
    );
    let session = open_checkout_at(&world, "closed-tab", "pro", now).await;
    let session_id = session["session_id"].as_str().expect("session");
    world.sim().put_subscription(subscription_json(
        "sub_tab",
        "closed-tab",
        now.plus_days(30),
    ));
    // As Dodo sends a subscription's payment: no product_cart.
    let payment = json!({
        "payment_id": "pay_tab", "status": "succeeded", "subscription_id": "sub_tab",
        "metadata": {"user_id": "closed-tab", "plan": "pro"},
        "customer": {"customer_id": "cus_tab", "email": "closed-tab@example.com"},
        "checkout_session_id": session_id, "created_at": now.to_rfc3339(),
    });
    let (status, answer) = read(
        paywall::runtime::Handler::handle(
            &webhook,
            signed_webhook(
                &payment_event("payment.succeeded", &payment),
                "msg_tab",
                paywall::time::Clock::system().now().unix_seconds(),
            ),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "subscription_payment");
    let before = view(&world, "closed-tab", now.plus_seconds(60)).await;
    assert_eq!(before["has_paid"], false, "{before}");

    let summary = reconciler(&world, unpaced())
        .run(now.plus_seconds(3700))
        .await;
    assert_eq!(summary.subscriptions_refreshed, 1, "{summary:?}");
    let after = view(&world, "closed-tab", now.plus_seconds(3700)).await;
    assert_eq!(
        (after["has_paid"].clone(), after["plan"].clone()),
        (json!(true), json!("pro")),
        "{after}"
    );
}
