//! A user's Dodo customer is created by and bound to that user. Dodo attaches a checkout
//! that names only an e-mail to the existing customer with that e-mail (its documented
//! default, which the simulator models), so two accounts sharing an e-mail must still end
//! with two customers, two portals, and each only their own payments.

mod common;

use std::sync::Arc;

use common::*;
use lambda_http::http::StatusCode;
use paywall::handlers::PortalHandler;
use paywall::ids::UserId;
use paywall::runtime::Handler;
use serde_json::{Value, json};

const SHARED_EMAIL: &str = "shared@example.com";

fn user(id: &str) -> UserId {
    UserId::parse(id).expect("valid")
}

/// A request as API Gateway hands it over after verifying a token with these claims.
fn as_user(
    method: &str,
    path: &str,
    sub: &str,
    email: Option<&str>,
    verified: bool,
    body: Option<&str>,
) -> lambda_http::Request {
    let mut event = dev::fixtures::api_gateway_event(method, path, Some((sub, email)), body);
    event["requestContext"]["authorizer"]["jwt"]["claims"]["email_verified"] =
        json!(if verified { "true" } else { "false" });
    lambda_http::request::from_str(&event.to_string()).expect("event")
}

async fn bound_customer(world: &World, who: &str) -> Option<String> {
    world
        .store
        .get_user(&user(who))
        .await
        .expect("read")
        .and_then(|p| p.customer_id)
}

/// Opens a checkout as `who`, pays it on the simulator's page, and confirms it with the
/// success call, as the frontend does. Returns the payment id.
async fn buy(world: &World, who: &str, verified: bool) -> String {
    let (status, checkout) = read(
        world
            .create_checkout()
            .handle(as_user(
                "POST",
                "/payment/create-checkout-session",
                who,
                Some(SHARED_EMAIL),
                verified,
                None,
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{checkout}");
    let paid = paywall::http::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(checkout["checkout_url"].as_str().expect("url"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("outcome=succeeded")
        .send()
        .await
        .expect("paid");
    let location = paid
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("redirect")
        .to_owned();
    let payment_id = location
        .split("payment_id=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .expect("payment_id")
        .to_owned();
    let (status, body) = read(
        world
            .success()
            .handle(as_user(
                "POST",
                "/payment/success",
                who,
                Some(SHARED_EMAIL),
                verified,
                Some(&json!({ "payment_id": payment_id }).to_string()),
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    payment_id
}

async fn portal_page(world: &World, who: &str) -> (String, String) {
    let portal = PortalHandler::new(world.store.clone(), world.dodo_client());
    let (status, body) = read(
        portal
            .handle(as_user(
                "POST",
                "/payment/portal",
                who,
                Some(SHARED_EMAIL),
                true,
                None,
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let link = body["portal_url"].as_str().expect("portal_url").to_owned();
    let page = paywall::http::client()
        .get(&link)
        .send()
        .await
        .expect("portal page")
        .text()
        .await
        .expect("html");
    (link, page)
}

#[tokio::test]
async fn the_simulator_attaches_an_email_only_checkout_to_the_existing_customer_as_dodo_does() {
    let world = World::new().await;
    let client = world.dodo_client();
    let first = client
        .create_customer(SHARED_EMAIL, "first")
        .await
        .expect("created");
    let http = paywall::http::client();
    let open = |flags: Value| {
        let http = http.clone();
        let url = format!("{}/checkouts", world.dodo.url);
        async move {
            let answer: Value = http
                .post(url)
                .bearer_auth(API_KEY)
                .json(&json!({
                    "product_cart": [{"product_id": PRODUCT, "quantity": 1}],
                    "customer": {"email": SHARED_EMAIL, "name": "second"},
                    "feature_flags": flags,
                }))
                .send()
                .await
                .expect("sent")
                .json()
                .await
                .expect("json");
            answer["session_id"].as_str().expect("session").to_owned()
        }
    };
    let attached = open(json!({})).await;
    assert_eq!(
        world.sim().checkout_customer(&attached),
        Some(first.clone())
    );
    let separate = open(json!({"always_create_new_customer": true})).await;
    let other = world.sim().checkout_customer(&separate).expect("customer");
    assert_ne!(other, first);
}

#[tokio::test]
async fn two_accounts_sharing_an_email_get_two_customers_and_two_portals() {
    let world = World::new().await;
    // A verified account, and a second one with the same (unverified) address: another
    // identity provider, or a changed Cognito e-mail.
    let first_payment = buy(&world, "first-account", true).await;
    let second_payment = buy(&world, "second-account", false).await;

    let first = bound_customer(&world, "first-account")
        .await
        .expect("bound");
    let second = bound_customer(&world, "second-account")
        .await
        .expect("bound");
    assert_ne!(first, second, "one customer each");
    assert_eq!(world.sim().customers_with_email(SHARED_EMAIL).len(), 2);
    // Each payment was made by its buyer's own customer.
    for (payment, customer) in [(&first_payment, &first), (&second_payment, &second)] {
        let stored = world.sim().payment(payment).expect("payment");
        assert_eq!(stored["customer"]["customer_id"], json!(customer));
    }

    // Each portal opens its own customer, with its own payments only.
    let (link, page) = portal_page(&world, "second-account").await;
    assert!(link.ends_with(&format!("/portal/{second}")), "{link}");
    assert!(page.contains(&second_payment), "{page}");
    assert!(
        !page.contains(&first_payment),
        "the first account's payment leaked: {page}"
    );
    let (link, page) = portal_page(&world, "first-account").await;
    assert!(link.ends_with(&format!("/portal/{first}")), "{link}");
    assert!(page.contains(&first_payment) && !page.contains(&second_payment));

    // Both have what they paid for, and nothing was rebound.
    for who in ["first-account", "second-account"] {
        let (_, status) = read(
            world
                .status()
                .handle(as_user("GET", "/payment/status", who, None, false, None))
                .await,
        )
        .await;
        assert_eq!(status["has_paid"], true, "{who}: {status}");
    }
    assert_eq!(bound_customer(&world, "first-account").await, Some(first));
}

#[tokio::test]
async fn a_payment_never_rebinds_a_customer_and_an_unverified_email_links_nothing() {
    let world = World::new().await;
    let paid = buy(&world, "owner", true).await;
    let owners = bound_customer(&world, "owner").await.expect("bound");
    // The unverified account opens a checkout: its profile keeps no e-mail.
    let (status, _) = read(
        world
            .create_checkout()
            .handle(as_user(
                "POST",
                "/payment/create-checkout-session",
                "unverified",
                Some("someone@example.com"),
                false,
                None,
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let profile = world
        .store
        .get_user(&user("unverified"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(profile.email, None);

    // A payment with only that e-mail (no metadata, no session, someone else's
    // customer): linked to nobody, kept for support.
    let mut stray = world.dodo_payment("pay_stray", "succeeded", None, None);
    stray["customer"] = json!({"customer_id": owners, "email": "someone@example.com"});
    world.sim().put_payment(stray.clone());
    let (status, answer) = read(
        world
            .webhook()
            .handle(signed_webhook(
                &payment_event("payment.succeeded", &stray),
                "msg_stray",
                paywall::time::Clock::system().now().unix_seconds(),
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Its customer is bound to "owner", so it is the owner's: never "unverified"'s.
    assert_eq!(answer["outcome"], "granted");
    let (_, view) = read(
        world
            .status()
            .handle(as_user(
                "GET",
                "/payment/status",
                "unverified",
                None,
                false,
                None,
            ))
            .await,
    )
    .await;
    assert_eq!(view["has_paid"], false, "{view}");
    assert_eq!(bound_customer(&world, "owner").await, Some(owners));
    assert!(!paid.is_empty());
}

#[tokio::test]
async fn a_double_click_on_a_first_checkout_binds_one_customer_and_opens_one_session() {
    let world = World::new().await;
    let handler = Arc::new(world.create_checkout());
    let mut clicks = Vec::new();
    for _ in 0..2 {
        let handler = Arc::clone(&handler);
        clicks.push(tokio::spawn(async move {
            read(
                handler
                    .handle(as_user(
                        "POST",
                        "/payment/create-checkout-session",
                        "double-click",
                        Some("dc@example.com"),
                        true,
                        None,
                    ))
                    .await,
            )
            .await
        }));
    }
    let mut sessions = Vec::new();
    for click in clicks {
        let (status, body) = click.await.expect("joined");
        assert_eq!(status, StatusCode::OK, "{body}");
        sessions.push(body["session_id"].clone());
    }
    assert_eq!(
        sessions[0], sessions[1],
        "the same session, handed out twice"
    );
    let calls = world.sim().api_calls();
    let count = |call: &str| calls.iter().filter(|c| c.as_str() == call).count();
    assert_eq!(count("POST /checkouts"), 1, "{calls:?}");
    assert_eq!(count("POST /customers"), 1, "{calls:?}");
    assert_eq!(world.sim().customers_with_email("dc@example.com").len(), 1);
}

#[tokio::test]
async fn concurrent_bindings_end_with_one_customer() {
    let world = World::new().await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = world.store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .bind_customer(&user("racer"), &format!("cus_race{i}"))
                .await
                .expect("bound")
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        winners.push(task.await.expect("joined"));
    }
    winners.dedup();
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(
        bound_customer(&world, "racer").await,
        Some(winners[0].clone())
    );
    let owner = world.store.customer_owner(&winners[0]).await.expect("read");
    assert_eq!(owner, Some(user("racer")));
}
