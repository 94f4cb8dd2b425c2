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
    let portal = PortalHandler::new(
        world.store_as("portal"),
        world.dodo_client(),
        common::catalog(),
    );
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
    // An unverified address makes no customer of ours (M2): Dodo's page made a new one,
    // never the first account's.
    assert_eq!(bound_customer(&world, "second-account").await, None);
    let first_stored = world.sim().payment(&first_payment).expect("payment");
    assert_eq!(first_stored["customer"]["customer_id"], json!(first));
    let second_stored = world.sim().payment(&second_payment).expect("payment");
    assert_ne!(
        second_stored["customer"]["customer_id"],
        json!(first),
        "one customer each"
    );

    // The second account has no portal of ours; the first opens its own payments only.
    let portal = PortalHandler::new(
        world.store_as("portal"),
        world.dodo_client(),
        common::catalog(),
    );
    let (status, _) = read(
        portal
            .handle(as_user(
                "POST",
                "/payment/portal",
                "second-account",
                None,
                false,
                None,
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
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
    // Its customer is bound to "owner", but its e-mail is not the owner's verified one:
    // an e-mail-only flow Dodo attached by address (M2). Neither account gets it.
    assert_eq!(answer["outcome"], "unmatched");
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

/// Issue 17, M2: a Dodo customer is made only from a verified e-mail. Mallory's token
/// claims the victim's address, unverified: her checkout opens without a customer, so
/// nothing at Dodo carries that address for her. And a payment that reached a customer
/// bound to someone through an e-mail-only flow (no link of ours) is theirs only if their
/// verified e-mail is the payment's: otherwise it goes to the verified owner of that
/// address, never to the customer's holder.
#[tokio::test]
async fn an_unverified_email_claim_creates_no_customer_and_captures_no_payment() {
    let world = World::new().await;
    let (status, body) = read(
        world
            .create_checkout()
            .handle(as_user(
                "POST",
                "/payment/create-checkout-session",
                "eve",
                Some("victim@example.com"),
                false,
                None,
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(bound_customer(&world, "eve").await, None);
    assert!(
        world
            .sim()
            .customers_with_email("victim@example.com")
            .is_empty(),
        "no customer was made from an address the caller has not proved"
    );

    // Mallory, verified as herself, gets her own customer; the victim (verified) pays
    // through a payment link typed with her own address, and Dodo attaches it to
    // Mallory's customer (as if its e-mail had been the victim's).
    let checkout_of = |who: &str, email: &str| {
        as_user(
            "POST",
            "/payment/create-checkout-session",
            who,
            Some(email),
            true,
            None,
        )
    };
    for (who, email) in [
        ("mallory", "mallory@example.com"),
        ("victim", "victim@example.com"),
    ] {
        let (status, body) = read(
            world
                .create_checkout()
                .handle(checkout_of(who, email))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let mallorys = bound_customer(&world, "mallory").await.expect("bound");
    let payment = paywall::dodo::Payment::from_json(&json!({
        "payment_id": "pay_link", "status": "succeeded", "total_amount": 1900, "currency": "USD",
        "customer": {"customer_id": mallorys, "email": "victim@example.com", "name": "v"},
        "metadata": {}, "product_cart": [{"product_id": PRODUCT, "quantity": 1}],
    }))
    .expect("payment");
    let owner = paywall::purchase::owner_of(
        &world.store,
        &payment,
        paywall::purchase::Linking::AllowEmail,
    )
    .await
    .expect("read");
    assert_ne!(
        owner,
        Some(user("mallory")),
        "the customer's holder is not its payer"
    );
    let strict =
        paywall::purchase::owner_of(&world.store, &payment, paywall::purchase::Linking::Strict)
            .await
            .expect("read");
    assert_eq!(
        strict, None,
        "a claim (success call) links nothing by e-mail"
    );

    // Mallory's own e-mail-only payment, attached to her customer, is still hers.
    let own = paywall::dodo::Payment::from_json(&json!({
        "payment_id": "pay_own", "status": "succeeded", "total_amount": 1900, "currency": "USD",
        "customer": {"customer_id": mallorys, "email": "Mallory@example.com", "name": "m"},
        "metadata": {}, "product_cart": [{"product_id": PRODUCT, "quantity": 1}],
    }))
    .expect("payment");
    let owner = paywall::purchase::owner_of(&world.store, &own, paywall::purchase::Linking::Strict)
        .await
        .expect("read");
    assert_eq!(owner, Some(user("mallory")));
}
