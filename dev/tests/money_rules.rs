//! Money rules fail closed, in one place: a payment buys only what its own `product_cart`
//! says, matched against the catalogue, whichever path brings it (the webhook, the
//! success call, reconcile). A subscription follows its product.

mod common;

use common::*;
use lambda_http::http::StatusCode;
use paywall::handlers::WebhookHandler;
use paywall::handlers::reconcile::{Limits, Reconciler};
use paywall::ids::{ProductId, UserId};
use paywall::plan::{Catalog, Plan};
use paywall::runtime::Handler;
use paywall::time::{SECONDS_PER_DAY, Timestamp};
use serde_json::{Value, json};

fn user(id: &str) -> UserId {
    UserId::parse(id).expect("valid")
}

async fn has_paid(world: &World, who: &str) -> Value {
    let account = world.store.get_account(&user(who)).await.expect("read");
    serde_json::to_value(paywall::access::AccessView::of(
        &account,
        &catalog(),
        paywall::time::Clock::system().now(),
    ))
    .expect("json")
}

async fn deliver_to(webhook: &WebhookHandler, body: &str, id: &str) -> Value {
    let (status, answer) = read(
        webhook
            .handle(signed_webhook(
                body,
                id,
                paywall::time::Clock::system().now().unix_seconds(),
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

/// A payment of `who`'s checkout that buys what `cart` says (and a flag or two).
fn payment_buying(world: &World, id: &str, who: &str, session: &str, cart: Value) -> Value {
    let mut payment = world.dodo_payment(id, "succeeded", Some(who), Some(session));
    payment["product_cart"] = cart;
    world.sim().put_payment(payment.clone());
    payment
}

#[tokio::test]
async fn payments_that_buy_nothing_we_sell_grant_nothing_on_any_path() {
    let world = World::new().await;
    let webhook = world.webhook();
    let cases = [
        ("empty-cart", json!([]), false),
        ("no-cart", Value::Null, false),
        (
            "other-product",
            json!([{"product_id": "pdt_ebook", "quantity": 1}]),
            false,
        ),
        (
            "card-update",
            json!([{"product_id": PRODUCT, "quantity": 1}]),
            true,
        ),
    ];
    for (who, cart, card_update) in cases {
        let session = world
            .open_checkout(who, &format!("{who}@example.com"))
            .await;
        let id = format!("pay_{}", who.replace('-', "_"));
        let mut payment = payment_buying(&world, &id, who, &session, cart.clone());
        if cart.is_null() {
            payment
                .as_object_mut()
                .expect("object")
                .remove("product_cart");
        }
        payment["is_update_payment_method"] = json!(card_update);
        world.sim().put_payment(payment.clone());

        // The webhook: acknowledged, nothing granted.
        let answer = deliver_to(
            &webhook,
            &payment_event("payment.succeeded", &payment),
            &format!("msg_{who}"),
        )
        .await;
        assert_eq!(answer["outcome"], "ignored", "{who}: {answer}");
        // The success call: 422, nothing granted.
        let (status, body) = read(
            world
                .success()
                .handle(api_event(
                    "POST",
                    "/payment/success",
                    Some((who, None)),
                    Some(&json!({ "payment_id": id }).to_string()),
                ))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{who}: {body}");
        assert_eq!(body["error"]["code"], "payment_not_for_this_product");
        // Reconcile, finding it paid in the checkout: the checkout is done, no grant.
        world.sim().set_checkout_payment(&session, &id);
        let summary = Reconciler::new(
            world.store_as("reconcile"),
            world.dodo_client(),
            catalog(),
            Limits {
                min_call_interval: std::time::Duration::ZERO,
                ..Limits::default()
            },
        )
        .run(paywall::time::Clock::system().now().plus_seconds(2 * 3600))
        .await;
        assert_eq!(
            (summary.payments_granted, summary.checkouts_closed),
            (0, 1),
            "{who}: {summary:?}"
        );
        let view = has_paid(&world, who).await;
        assert_eq!(view["has_paid"], false, "{who}: {view}");
        assert!(
            world
                .store
                .payment_grant(&id)
                .await
                .expect("read")
                .is_none(),
            "{who}: no grant mark"
        );
    }
}

#[tokio::test]
async fn our_metadata_never_buys_anything_the_cart_does() {
    let world = World::new().await;
    let session = world.open_checkout("cart-decides", "cd@example.com").await;
    // The metadata names our plan, the cart two of our passes: two passes' days.
    let payment = payment_buying(
        &world,
        "pay_two",
        "cart-decides",
        &session,
        json!([{"product_id": PRODUCT, "quantity": 2}]),
    );
    let answer = deliver_to(
        &world.webhook(),
        &payment_event("payment.succeeded", &payment),
        "msg_two",
    )
    .await;
    assert_eq!(answer["outcome"], "granted");
    let grant = world
        .store
        .payment_grant("pay_two")
        .await
        .expect("read")
        .expect("granted");
    assert_eq!(grant.days, 60);
}

fn two_subscription_plans() -> Catalog {
    let product = |id: &str| ProductId::parse(id).expect("valid");
    let subscription = |name: &str, id: &str| Plan::subscription(name, product(id));
    Catalog::of(vec![
        subscription("pro", PRO),
        subscription("team", "pdt_team"),
    ])
    .expect("plans")
}

fn subscription_event(
    event_type: &str,
    product: &str,
    at: Timestamp,
    next_billing: Timestamp,
) -> String {
    json!({
        "business_id": "bus_1", "type": event_type, "timestamp": at.to_rfc3339(),
        "data": {
            "payload_type": "Subscription", "subscription_id": "sub_moves", "status": "active",
            "product_id": product, "next_billing_date": next_billing.to_rfc3339(),
            "cancel_at_next_billing_date": false,
            "metadata": {"user_id": "mover", "plan": "pro"},
        },
    })
    .to_string()
}

#[tokio::test]
async fn a_subscription_follows_its_product() {
    let world = World::new().await;
    let webhook = WebhookHandler::new(
        world.store_as("webhook"),
        secret(),
        two_subscription_plans(),
    );
    let now = paywall::time::Clock::system().now();
    let period_end = now.plus_days(10);
    deliver_to(
        &webhook,
        &subscription_event(
            "subscription.active",
            PRO,
            now.plus_seconds(-60),
            period_end,
        ),
        "msg_m1",
    )
    .await;
    assert_eq!(has_paid(&world, "mover").await["plan"], "pro");

    // Moved to another plan we sell: it switches plan.
    deliver_to(
        &webhook,
        &subscription_event(
            "subscription.plan_changed",
            "pdt_team",
            now.plus_seconds(-30),
            period_end,
        ),
        "msg_m2",
    )
    .await;
    let view = has_paid(&world, "mover").await;
    assert_eq!(
        (view["plan"].clone(), view["has_paid"].clone()),
        (json!("team"), json!(true))
    );

    // Moved to a product we do not sell, renewed there far ahead: access stops at the
    // end of the period already paid on ours, not at Dodo's next billing date.
    deliver_to(
        &webhook,
        &subscription_event(
            "subscription.plan_changed",
            "pdt_not_ours",
            now,
            now.plus_days(400),
        ),
        "msg_m3",
    )
    .await;
    let account = world.store.get_account(&user("mover")).await.expect("read");
    let record = &account.subscriptions[0];
    assert!(!record.sold);
    assert_eq!(record.access_until(), Some(period_end));
    let after = paywall::access::AccessView::of(
        &account,
        &two_subscription_plans(),
        period_end.plus_seconds(1),
    );
    assert!(!after.has_paid, "{after:?}");
    let before = paywall::access::AccessView::of(
        &account,
        &two_subscription_plans(),
        period_end.plus_seconds(-SECONDS_PER_DAY),
    );
    assert!(
        before.has_paid,
        "the period paid on our product still counts"
    );
}

/// A cheap pass (`basic`) and a dear one (`premium`), 30 days each.
fn two_pass_plans() -> Catalog {
    let pass = |name: &str, id: &str, price: &str, calls: u64| {
        let mut plan = Plan::pass(name, ProductId::parse(id).expect("valid"), 30);
        plan.price = Some(price.to_owned());
        plan.allowance.limits = [("api_calls".to_owned(), calls)].into();
        plan
    };
    Catalog::of(vec![
        pass("basic", "pdt_basic", "$5", 100),
        pass("premium", "pdt_premium", "$50", 100_000),
    ])
    .expect("plans")
}

fn pass_payment(id: &str, who: &str, product: &str) -> String {
    json!({
        "business_id": "bus_1", "type": "payment.succeeded",
        "timestamp": paywall::time::Clock::system().now().to_rfc3339(),
        "data": {
            "payload_type": "Payment", "payment_id": id, "status": "succeeded",
            "metadata": {"user_id": who},
            "product_cart": [{"product_id": product, "quantity": 1}],
            "total_amount": 500, "currency": "USD",
        },
    })
    .to_string()
}

fn full_refund(id: &str) -> String {
    json!({
        "business_id": "bus_1", "type": "refund.succeeded",
        "timestamp": paywall::time::Clock::system().now().to_rfc3339(),
        "data": {"payload_type": "Refund", "refund_id": format!("ref_{id}"), "payment_id": id,
                 "is_partial": false, "amount": 5000, "currency": "USD", "status": "succeeded"},
    })
    .to_string()
}

/// Issue 17, M1: a pass of one plan never relabels time paid on another. Three `basic`
/// passes then one `premium`: `premium` speaks for its own 30 days, `basic`'s 90 days are
/// still `basic`'s; refunding `premium` takes back only its own days and leaves `basic`
/// as it was. (Before: `premium` labelled all 120 days, and kept them after its refund.)
#[tokio::test]
async fn a_pass_of_another_plan_never_relabels_time_paid_on_a_plan() {
    let world = World::new().await;
    let catalog = two_pass_plans();
    let webhook = WebhookHandler::new(world.store_as("webhook"), secret(), catalog.clone());
    let now = paywall::time::Clock::system().now();
    for i in 0..3 {
        let answer = deliver_to(
            &webhook,
            &pass_payment(&format!("pay_basic_{i}"), "stacker", "pdt_basic"),
            &format!("msg_basic_{i}"),
        )
        .await;
        assert_eq!(answer["outcome"], "granted", "{answer}");
    }
    deliver_to(
        &webhook,
        &pass_payment("pay_premium", "stacker", "pdt_premium"),
        "msg_premium",
    )
    .await;

    let standing = |account: &paywall::store::Account, at: Timestamp| {
        paywall::entitlements::Entitlements::of(account, &catalog, at)
    };
    let day = |n: i64| now.plus_seconds(n * SECONDS_PER_DAY);
    let account = world
        .store
        .get_account(&user("stacker"))
        .await
        .expect("read");
    let on_day_10 = standing(&account, day(10));
    assert_eq!(
        on_day_10.plan.as_deref(),
        Some("premium"),
        "the best plan that runs"
    );
    assert_eq!(on_day_10.limits["api_calls"].limit, 100_000);
    let on_day_45 = standing(&account, day(45));
    assert_eq!(
        on_day_45.plan.as_deref(),
        Some("basic"),
        "premium's own 30 days are over; basic's 90 are basic's"
    );
    assert_eq!(on_day_45.limits["api_calls"].limit, 100);
    let basic_until = on_day_45.valid_until.expect("basic runs");
    assert!(
        (basic_until.unix_seconds() - day(90).unix_seconds()).abs() < 60,
        "basic keeps exactly its 90 days: {basic_until:?}"
    );
    assert_eq!(
        standing(&account, day(91)).plan,
        None,
        "nothing is left after"
    );
    let view = paywall::access::AccessView::of(&account, &catalog, day(10));
    assert_eq!(
        (view.plan.as_deref(), view.plan_expires_at),
        (
            Some("premium"),
            Some(now.plus_days(30).max(view.plan_expires_at.expect("end")))
        )
    );

    // The premium pass is refunded: only its own days go; basic is as it was.
    deliver_to(&webhook, &full_refund("pay_premium"), "msg_refund").await;
    let account = world
        .store
        .get_account(&user("stacker"))
        .await
        .expect("read");
    let after = standing(&account, day(10));
    assert_eq!(after.plan.as_deref(), Some("basic"), "{after:?}");
    assert_eq!(after.valid_until, Some(basic_until));
    assert_eq!(after.limits["api_calls"].limit, 100);

    // The other way round: a premium holder who buys a basic pass keeps premium.
    deliver_to(
        &webhook,
        &pass_payment("pay_premium_2", "upgrader", "pdt_premium"),
        "msg_p2",
    )
    .await;
    deliver_to(
        &webhook,
        &pass_payment("pay_basic_2", "upgrader", "pdt_basic"),
        "msg_b2",
    )
    .await;
    let account = world
        .store
        .get_account(&user("upgrader"))
        .await
        .expect("read");
    assert_eq!(standing(&account, day(1)).plan.as_deref(), Some("premium"));
    assert_eq!(
        standing(&account, day(31)).plan,
        None,
        "both ran side by side"
    );
}
