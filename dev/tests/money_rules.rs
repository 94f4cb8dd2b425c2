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
            world.store.clone(),
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
    let webhook = WebhookHandler::new(world.store.clone(), secret(), two_subscription_plans());
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
    let after = paywall::access::AccessView::of(&account, period_end.plus_seconds(1));
    assert!(!after.has_paid, "{after:?}");
    let before =
        paywall::access::AccessView::of(&account, period_end.plus_seconds(-SECONDS_PER_DAY));
    assert!(
        before.has_paid,
        "the period paid on our product still counts"
    );
}
