//! The four handlers, driven by API Gateway v2 and Function URL events (from fixture
//! files), against dynoxide and the Dodo stand-in over real HTTP.

mod common;

use std::time::Duration;

use common::*;
use dev::dodo_simulator::Fault;
use lambda_http::http::StatusCode;
use paywall::ids::UserId;
use paywall::runtime::Handler;
use paywall::time::Timestamp;
use serde_json::{Value, json};

const ALICE: &str = "user-alice";
const BOB: &str = "user-bob";

async fn status_of(world: &World, user: &str) -> Value {
    let (status, body) = read(
        world
            .status()
            .handle(api_event(
                "GET",
                "/payment/status",
                Some((user, None)),
                None,
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn claim(world: &World, user: &str, payment_id: &str) -> (StatusCode, Value) {
    let body = json!({"payment_id": payment_id}).to_string();
    read(
        world
            .success()
            .handle(api_event(
                "POST",
                "/payment/success",
                Some((user, None)),
                Some(&body),
            ))
            .await,
    )
    .await
}

async fn deliver(world: &World, body: &str) -> (StatusCode, Value) {
    let id = format!(
        "msg_{}",
        paywall::time::Clock::system().now().unix_seconds()
    );
    read(
        world
            .webhook()
            .handle(signed_webhook(
                body,
                &id,
                paywall::time::Clock::system().now().unix_seconds(),
            ))
            .await,
    )
    .await
}

fn user(id: &str) -> UserId {
    UserId::parse(id).expect("valid")
}

// ---- identity ------------------------------------------------------------------------

#[tokio::test]
async fn no_claims_is_401_on_every_api_route() {
    let world = World::new().await;
    let cases = [
        read(
            world
                .status()
                .handle(api_event("GET", "/payment/status", None, None))
                .await,
        )
        .await,
        read(
            world
                .create_checkout()
                .handle(api_event(
                    "POST",
                    "/payment/create-checkout-session",
                    None,
                    Some("{}"),
                ))
                .await,
        )
        .await,
        read(
            world
                .success()
                .handle(api_event(
                    "POST",
                    "/payment/success",
                    None,
                    Some(r#"{"payment_id":"pay_1"}"#),
                ))
                .await,
        )
        .await,
    ];
    for (status, body) in cases {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    assert!(world.sim().api_calls().is_empty(), "nothing reached Dodo");
}

// ---- status --------------------------------------------------------------------------

#[tokio::test]
async fn an_unknown_user_is_none_not_an_error() {
    let world = World::new().await;
    let body = status_of(&world, "someone-new").await;
    assert_eq!(
        body,
        json!({
            "has_paid": false, "payment_date": null, "subscription_plan": "none",
            "plan_expires_at": null, "status": "none", "plan": null, "dodo_payment_id": null,
            "cancel_at_period_end": false, "subscription_id": null,
            "trial_ends_at": null, "scheduled_change": null
        })
    );
}

#[tokio::test]
async fn has_paid_is_derived_from_the_expiry_at_read_time() {
    let world = World::new().await;
    let long_ago = Timestamp::from_unix_seconds(
        paywall::time::Clock::system().now().unix_seconds() - 40 * 86_400,
    );
    world
        .store
        .apply_grant(
            &paywall::store::Grant {
                user_id: user(ALICE),
                payment_id: "pay_old".into(),
                plan: "monthly".into(),
                days: 30,
                source: paywall::store::GrantSource::Webhook,
            },
            long_ago,
        )
        .await
        .expect("grant");
    let body = status_of(&world, ALICE).await;
    assert_eq!(body["has_paid"], false, "{body}");
    assert_eq!(body["subscription_plan"], "monthly");
    assert_eq!(body["status"], "expired");
    assert_eq!(body["plan_expires_at"], long_ago.plus_days(30).to_rfc3339());
}

// ---- create-checkout -----------------------------------------------------------------

#[tokio::test]
async fn a_checkout_is_opened_for_the_caller_and_stored_as_pending() {
    let world = World::new().await;
    let body = json!({"plan": "monthly", "datafast_visitor_id": "dfv_123"}).to_string();
    let (status, answer) = read(
        world
            .create_checkout()
            .handle(api_event(
                "POST",
                "/payment/create-checkout-session",
                Some((ALICE, Some("Alice@Example.com"))),
                Some(&body),
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["plan"], "monthly");
    assert_eq!(answer["price"], "$19.00");
    let session_id = answer["session_id"].as_str().expect("session id");
    assert_eq!(
        answer["checkout_url"],
        format!("{}/checkout/{session_id}", world.dodo.url)
    );

    let sent = world
        .sim()
        .checkout_request(session_id)
        .expect("sent to Dodo");
    assert_eq!(
        sent["product_cart"],
        json!([{"product_id": PRODUCT, "quantity": 1}])
    );
    // The checkout names the customer the paywall created for Alice and bound to her,
    // never only an e-mail (which Dodo would attach to anyone's customer).
    let bound = world
        .store
        .get_user(&user(ALICE))
        .await
        .expect("read")
        .and_then(|p| p.customer_id)
        .expect("a customer bound to Alice");
    assert_eq!(sent["customer"], json!({ "customer_id": bound }));
    assert_eq!(
        world.sim().customer(&bound).expect("created")["email"],
        "alice@example.com"
    );
    assert_eq!(sent["return_url"], SUCCESS_URL);
    assert_eq!(
        sent["metadata"],
        json!({"user_id": ALICE, "plan": "monthly", "datafast_visitor_id": "dfv_123"})
    );
    assert!(
        sent.get("billing").is_none(),
        "Dodo's page collects the address"
    );

    let view = status_of(&world, ALICE).await;
    assert_eq!(view["subscription_plan"], "pending_monthly");
    assert_eq!(view["status"], "pending");
    assert_eq!(view["has_paid"], false);
}

#[tokio::test]
async fn an_empty_body_buys_the_default_plan() {
    let world = World::new().await;
    let (status, answer) = read(
        world
            .create_checkout()
            .handle(api_event(
                "POST",
                "/payment/create-checkout-session",
                Some((ALICE, None)),
                None,
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["plan"], "monthly");
    let sent = world
        .sim()
        .checkout_request(answer["session_id"].as_str().expect("id"))
        .expect("sent");
    assert!(
        sent.get("customer").is_none(),
        "no e-mail claim: Dodo's page asks"
    );
}

#[tokio::test]
async fn bad_checkout_input_is_400_and_changes_nothing() {
    let world = World::new().await;
    for (body, code) in [
        (r#"{"plan": "lifetime"}"#, "unknown_plan"),
        (r#"{"plan": 7}"#, "invalid_request"),
        ("not json", "invalid_request"),
    ] {
        let (status, answer) = read(
            world
                .create_checkout()
                .handle(api_event(
                    "POST",
                    "/payment/create-checkout-session",
                    Some((ALICE, None)),
                    Some(body),
                ))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code);
    }
    assert!(world.sim().api_calls().is_empty());
    assert_eq!(status_of(&world, ALICE).await["subscription_plan"], "none");
}

#[tokio::test]
async fn a_dodo_refusal_is_502_with_dodos_code_and_nothing_stored() {
    let world = World::new().await;
    world.sim().set_fault(Some(Fault::Error {
        status: 422,
        code: "PRODUCT_IS_DELETED".into(),
        message: "Product was deleted".into(),
    }));
    let (status, answer) = read(
        world
            .create_checkout()
            .handle(api_event(
                "POST",
                "/payment/create-checkout-session",
                Some((ALICE, None)),
                None,
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{answer}");
    assert_eq!(answer["error"]["code"], "dodo_error");
    assert_eq!(answer["error"]["dodo_code"], "PRODUCT_IS_DELETED");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("PRODUCT_IS_DELETED")
    );
    assert_eq!(
        world.store.get_user(&user(ALICE)).await.expect("read"),
        None
    );
}

#[tokio::test]
async fn a_dodo_timeout_is_504_and_nothing_stored() {
    let world = World::new().await;
    world
        .sim()
        .set_fault(Some(Fault::Delay(Duration::from_secs(3))));
    let (status, answer) = read(
        world
            .create_checkout()
            .handle(api_event(
                "POST",
                "/payment/create-checkout-session",
                Some((ALICE, None)),
                None,
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{answer}");
    assert_eq!(answer["error"]["code"], "dodo_timeout");
    assert_eq!(
        world.store.get_user(&user(ALICE)).await.expect("read"),
        None
    );
}

// ---- success -------------------------------------------------------------------------

#[tokio::test]
async fn a_succeeded_payment_of_the_callers_grants_access() {
    let world = World::new().await;
    let session = world.open_checkout(ALICE, "alice@example.com").await;
    world.dodo_payment("pay_a1", "succeeded", Some(ALICE), Some(&session));
    let before = paywall::time::Clock::system().now();
    let (status, body) = claim(&world, ALICE, "pay_a1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["has_paid"], true);
    assert_eq!(body["subscription_plan"], "monthly");
    let expires = Timestamp::parse_rfc3339(body["plan_expires_at"].as_str().expect("expiry"))
        .expect("rfc3339");
    assert!(
        expires >= before.plus_days(30)
            && expires <= paywall::time::Clock::system().now().plus_days(30)
    );

    let view = status_of(&world, ALICE).await;
    assert_eq!(view["has_paid"], true);
    assert_eq!(view["dodo_payment_id"], "pay_a1");

    // Asking again is answered the same and grants nothing more.
    let (status, again) = claim(&world, ALICE, "pay_a1").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["plan_expires_at"], body["plan_expires_at"]);
}

#[tokio::test]
async fn the_callers_session_links_a_payment_without_metadata() {
    let world = World::new().await;
    let session = world.open_checkout(ALICE, "alice@example.com").await;
    world.dodo_payment("pay_a2", "succeeded", None, Some(&session));
    let (status, body) = claim(&world, ALICE, "pay_a2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["has_paid"], true);
}

#[tokio::test]
async fn another_users_payment_is_403_and_grants_nothing() {
    let world = World::new().await;
    // A buyer returning from checkout has one open (success asks Dodo only then).
    world.open_checkout(BOB, "bob@example.com").await;
    let alices_session = world.open_checkout(ALICE, "alice@example.com").await;
    world.dodo_payment("pay_meta", "succeeded", Some(ALICE), Some(&alices_session));
    world.dodo_payment("pay_sess", "succeeded", None, Some(&alices_session));
    world.dodo_payment("pay_none", "succeeded", None, None);
    for payment in ["pay_meta", "pay_sess", "pay_none"] {
        let (status, body) = claim(&world, BOB, payment).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{payment}: {body}");
        assert_eq!(body["error"]["code"], "payment_not_yours");
    }
    assert_eq!(status_of(&world, BOB).await["has_paid"], false);
    assert_eq!(status_of(&world, ALICE).await["has_paid"], false);
}

#[tokio::test]
async fn an_unknown_payment_is_404() {
    let world = World::new().await;
    let (status, body) = claim(&world, ALICE, "pay_nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "payment_not_found");
}

#[tokio::test]
async fn a_processing_payment_is_202_pending() {
    let world = World::new().await;
    // A buyer returning from checkout has one open (success asks Dodo only then).
    world.open_checkout(ALICE, "alice@example.com").await;
    world.dodo_payment("pay_proc", "processing", Some(ALICE), None);
    let (status, body) = claim(&world, ALICE, "pay_proc").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "pending");
    assert_eq!(status_of(&world, ALICE).await["has_paid"], false);
}

#[tokio::test]
async fn failed_or_cancelled_payments_are_4xx_and_grant_nothing() {
    let world = World::new().await;
    // A buyer returning from checkout has one open (success asks Dodo only then).
    world.open_checkout(ALICE, "alice@example.com").await;
    world.dodo_payment("pay_fail", "failed", Some(ALICE), None);
    world.dodo_payment("pay_cncl", "cancelled", Some(ALICE), None);
    for (payment, code) in [
        ("pay_fail", "payment_failed"),
        ("pay_cncl", "payment_cancelled"),
    ] {
        let (status, body) = claim(&world, ALICE, payment).await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
        assert_eq!(body["error"]["code"], code);
    }
    assert_eq!(status_of(&world, ALICE).await["has_paid"], false);
}

#[tokio::test]
async fn a_payment_for_another_product_grants_nothing() {
    let world = World::new().await;
    // A buyer returning from checkout has one open (success asks Dodo only then).
    world.open_checkout(ALICE, "alice@example.com").await;
    let mut payment = world.dodo_payment("pay_other", "succeeded", Some(ALICE), None);
    payment["product_cart"] = json!([{"product_id": "pdt_ebook", "quantity": 1}]);
    world.sim().put_payment(payment);
    let (status, body) = claim(&world, ALICE, "pay_other").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(status_of(&world, ALICE).await["has_paid"], false);
}

#[tokio::test]
async fn bad_success_input_is_400() {
    let world = World::new().await;
    for body in [
        r#"{}"#,
        r#"{"payment_id": "../payments/x"}"#,
        r#"{"payment_id": 5}"#,
        "[]",
    ] {
        let (status, answer) = read(
            world
                .success()
                .handle(api_event(
                    "POST",
                    "/payment/success",
                    Some((ALICE, None)),
                    Some(body),
                ))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
    }
    assert!(world.sim().api_calls().is_empty());
}

#[tokio::test]
async fn the_original_paymentid_spelling_is_accepted() {
    let world = World::new().await;
    // A buyer returning from checkout has one open (success asks Dodo only then).
    world.open_checkout(ALICE, "alice@example.com").await;
    world.dodo_payment("pay_camel", "succeeded", Some(ALICE), None);
    let (status, body) = read(
        world
            .success()
            .handle(api_event(
                "POST",
                "/payment/success",
                Some((ALICE, None)),
                Some(r#"{"paymentId": "pay_camel"}"#),
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn dodo_down_during_success_is_5xx_and_grants_nothing() {
    let world = World::new().await;
    // A buyer returning from checkout has one open (success asks Dodo only then).
    world.open_checkout(ALICE, "alice@example.com").await;
    world.dodo_payment("pay_a", "succeeded", Some(ALICE), None);
    world.sim().set_fault(Some(Fault::Error {
        status: 500,
        code: "INTERNAL_SERVER_ERROR".into(),
        message: "Something went wrong :(".into(),
    }));
    let (status, _) = claim(&world, ALICE, "pay_a").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    world
        .sim()
        .set_fault(Some(Fault::Delay(Duration::from_secs(3))));
    let (status, _) = claim(&world, ALICE, "pay_a").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let profile = world
        .store
        .get_user(&user(ALICE))
        .await
        .expect("read")
        .expect("the checkout she opened");
    assert!(
        profile.passes.is_empty() && profile.last_payment_id.is_none(),
        "{profile:?}"
    );
}

// ---- webhook -------------------------------------------------------------------------

#[tokio::test]
async fn a_signed_payment_succeeded_grants_access() {
    let world = World::new().await;
    let session = world.open_checkout(ALICE, "alice@example.com").await;
    let payment = world.dodo_payment("pay_w1", "succeeded", Some(ALICE), Some(&session));
    let (status, body) = deliver(&world, &payment_event("payment.succeeded", &payment)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["outcome"], "granted");
    let view = status_of(&world, ALICE).await;
    assert_eq!(view["has_paid"], true);
    assert_eq!(view["subscription_plan"], "monthly");

    // Dodo's retry of the same delivery, and a fresh delivery of the same payment.
    let (status, body) = deliver(&world, &payment_event("payment.succeeded", &payment)).await;
    assert_eq!(
        (status, body["outcome"].clone()),
        (StatusCode::OK, json!("duplicate"))
    );
    assert_eq!(
        status_of(&world, ALICE).await["plan_expires_at"],
        view["plan_expires_at"]
    );
}

#[tokio::test]
async fn the_webhook_links_by_session_then_by_bound_customer_never_by_anothers_email() {
    let world = World::new().await;
    let session = world.open_checkout(ALICE, "alice@example.com").await;
    let by_session = world.dodo_payment("pay_s", "succeeded", None, Some(&session));
    let (status, body) = deliver(&world, &payment_event("payment.succeeded", &by_session)).await;
    assert_eq!(
        (status, body["outcome"].clone()),
        (StatusCode::OK, json!("granted"))
    );

    world.open_checkout(BOB, "Bob@Example.com").await;
    let bobs = world
        .store
        .get_user(&user(BOB))
        .await
        .expect("read")
        .and_then(|p| p.customer_id)
        .expect("bound");
    // Bob's e-mail on a customer that is not his: linked to nobody, kept for support.
    let mut by_email = world.dodo_payment("pay_e", "succeeded", None, None);
    by_email["customer"]["email"] = json!("bob@example.COM");
    let (status, body) = deliver(&world, &payment_event("payment.succeeded", &by_email)).await;
    assert_eq!(
        (status, body["outcome"].clone()),
        (StatusCode::OK, json!("unmatched"))
    );
    assert_eq!(status_of(&world, BOB).await["has_paid"], false);
    // His own customer, without any metadata of ours: his.
    let mut by_customer = world.dodo_payment("pay_c", "succeeded", None, None);
    by_customer["customer"] = json!({"customer_id": bobs, "email": "bob@example.com"});
    let (status, body) = deliver(&world, &payment_event("payment.succeeded", &by_customer)).await;
    assert_eq!(
        (status, body["outcome"].clone()),
        (StatusCode::OK, json!("granted"))
    );
    assert_eq!(status_of(&world, BOB).await["has_paid"], true);
}

#[tokio::test]
async fn an_unlinkable_payment_is_kept_not_granted() {
    let world = World::new().await;
    let mut payment = world.dodo_payment("pay_orphan", "succeeded", None, None);
    payment["customer"]["email"] = json!("stranger@example.com");
    let (status, body) = deliver(&world, &payment_event("payment.succeeded", &payment)).await;
    assert_eq!(
        (status, body["outcome"].clone()),
        (StatusCode::OK, json!("unmatched"))
    );
    let kept = world
        .dynamo
        .client()
        .get_item()
        .table_name(TABLE)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("PAYMENT#pay_orphan".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("UNMATCHED".into()),
        )
        .send()
        .await
        .expect("read")
        .item;
    assert!(kept.is_some(), "the unmatched payment is kept for support");
}

#[tokio::test]
async fn other_event_types_are_acknowledged_and_change_nothing() {
    let world = World::new().await;
    let payment = world.dodo_payment("pay_x", "failed", Some(ALICE), None);
    for event_type in [
        "payment.failed",
        "payment.processing",
        "payout.success",
        "brand.new_event",
    ] {
        let (status, body) = deliver(&world, &payment_event(event_type, &payment)).await;
        assert_eq!(status, StatusCode::OK, "{event_type}: {body}");
        assert_eq!(body["status"], "ok");
    }
    assert_eq!(
        world.store.get_user(&user(ALICE)).await.expect("read"),
        None
    );
}

#[tokio::test]
async fn forged_and_replayed_deliveries_are_401_and_change_nothing() {
    let world = World::new().await;
    let payment = world.dodo_payment("pay_f", "succeeded", Some(ALICE), None);
    let body = payment_event("payment.succeeded", &payment);
    let now = paywall::time::Clock::system().now().unix_seconds();
    let good = secret().sign("msg_1", now, body.as_bytes());
    let other_secret = paywall::webhook_signature::WebhookSecret::parse(
        "whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA==",
    )
    .expect("valid");
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no headers", vec![]),
        (
            "bare v1,",
            vec![
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", now.to_string()),
                ("webhook-signature", "v1,".into()),
            ],
        ),
        (
            "truncated",
            vec![
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", now.to_string()),
                ("webhook-signature", good[..20].to_owned()),
            ],
        ),
        (
            "wrong secret",
            vec![
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", now.to_string()),
                (
                    "webhook-signature",
                    other_secret.sign("msg_1", now, body.as_bytes()),
                ),
            ],
        ),
        (
            "another id",
            vec![
                ("webhook-id", "msg_2".into()),
                ("webhook-timestamp", now.to_string()),
                ("webhook-signature", good.clone()),
            ],
        ),
        (
            "replayed an hour later",
            vec![
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", (now - 3600).to_string()),
                (
                    "webhook-signature",
                    secret().sign("msg_1", now - 3600, body.as_bytes()),
                ),
            ],
        ),
        (
            "from the future",
            vec![
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", (now + 3600).to_string()),
                (
                    "webhook-signature",
                    secret().sign("msg_1", now + 3600, body.as_bytes()),
                ),
            ],
        ),
    ];
    for (name, headers) in cases {
        let (status, answer) = read(
            world
                .webhook()
                .handle(function_url_event(body.as_bytes(), &headers, false))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_signature");
    }
    // A body changed after signing.
    let tampered = body.replace(ALICE, BOB);
    let (status, _) = read(
        world
            .webhook()
            .handle(function_url_event(
                tampered.as_bytes(),
                &[
                    ("webhook-id", "msg_1".into()),
                    ("webhook-timestamp", now.to_string()),
                    ("webhook-signature", good),
                ],
                false,
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        world.store.get_user(&user(ALICE)).await.expect("read"),
        None
    );
    assert_eq!(world.store.get_user(&user(BOB)).await.expect("read"), None);
}

#[tokio::test]
async fn a_base64_encoded_body_is_verified_on_its_decoded_bytes() {
    let world = World::new().await;
    let payment = world.dodo_payment("pay_b64", "succeeded", Some(ALICE), None);
    let body = payment_event("payment.succeeded", &payment);
    let now = paywall::time::Clock::system().now().unix_seconds();
    let headers = [
        ("webhook-id", "msg_b64".to_owned()),
        ("webhook-timestamp", now.to_string()),
        (
            "webhook-signature",
            secret().sign("msg_b64", now, body.as_bytes()),
        ),
    ];
    let (status, answer) = read(
        world
            .webhook()
            .handle(function_url_event(body.as_bytes(), &headers, true))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["outcome"], "granted");
}

#[tokio::test]
async fn a_malformed_signed_event_is_400() {
    let world = World::new().await;
    for body in [
        "not json",
        r#"{"data": {}}"#,
        r#"{"type": "payment.succeeded", "data": {"status": "succeeded"}}"#,
    ] {
        let (status, answer) = deliver(&world, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "malformed_event");
    }
}

#[tokio::test]
async fn a_store_outage_is_503_then_the_retry_grants_once() {
    let dir = std::env::temp_dir().join(format!("paywall-outage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("state.db");
    let _ = std::fs::remove_file(&file);

    let mut dynamo = dev::local_dynamodb::LocalDynamo::on_disk(&file, "127.0.0.1:0")
        .await
        .expect("dynoxide");
    let address = dynamo.endpoint().trim_start_matches("http://").to_owned();
    let store = store_on(&dynamo).await;
    let world = World::new().await;
    let webhook = paywall::handlers::WebhookHandler::new(store.clone(), secret(), catalog());
    let payment = world.dodo_payment("pay_outage", "succeeded", Some(ALICE), None);
    let body = payment_event("payment.succeeded", &payment);

    dynamo.shut_down().await;
    let now = paywall::time::Clock::system().now().unix_seconds();
    let (status, answer) = read(webhook.handle(signed_webhook(&body, "msg_o", now)).await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    // What the caller needs (a stable code, a plain message, the request id to quote),
    // never the SDK's error, the endpoint or the table.
    let (status, answer) = read(
        paywall::handlers::StatusHandler::new(store.clone(), common::catalog())
            .handle(api_event(
                "GET",
                "/payment/status",
                Some((ALICE, None)),
                None,
            ))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"]["code"], "store_unavailable");
    assert_eq!(answer["error"]["request_id"], "O4x9ajQnoAMEVbw=");
    let text = answer.to_string();
    for internal in [
        "dispatch",
        "tcp",
        "127.0.0.1",
        "io error",
        TABLE,
        "nothing was changed",
    ] {
        assert!(!text.contains(internal), "{internal} leaked: {text}");
    }

    // The engine comes back on the same file and port; Dodo retries the delivery.
    let _dynamo = dev::local_dynamodb::LocalDynamo::on_disk(&file, &address)
        .await
        .expect("dynoxide again");
    assert_eq!(
        store.get_user(&user(ALICE)).await.expect("read"),
        None,
        "nothing was half-written"
    );
    let (status, answer) = read(webhook.handle(signed_webhook(&body, "msg_o", now)).await).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["outcome"], "granted");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_non_post_webhook_is_405() {
    let world = World::new().await;
    let event = dev::fixtures::function_url_method("GET");
    let request = lambda_http::request::from_str(&event.to_string()).expect("event");
    let (status, _) = read(world.webhook().handle(request).await).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

// ---- portal --------------------------------------------------------------------------

#[tokio::test]
async fn the_portal_opens_for_the_callers_own_customer_only() {
    let world = World::new().await;
    let portal = paywall::handlers::PortalHandler::new(
        world.store_as("portal"),
        world.dodo_client(),
        common::catalog(),
    );
    let call = |user: &'static str| {
        let portal = &portal;
        async move {
            read(
                portal
                    .handle(api_event(
                        "POST",
                        "/payment/portal",
                        Some((user, None)),
                        None,
                    ))
                    .await,
            )
            .await
        }
    };
    let (status, body) = call(ALICE).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no checkout yet: {body}");
    assert_eq!(body["error"]["code"], "no_customer");

    // Her first checkout creates her customer; a payment naming another customer
    // (cus_1) never rebinds her.
    world.open_checkout(ALICE, "alice@example.com").await;
    let hers = world
        .store
        .get_user(&user(ALICE))
        .await
        .expect("read")
        .and_then(|p| p.customer_id)
        .expect("bound");
    let payment = world.dodo_payment("pay_portal", "succeeded", Some(ALICE), None);
    let (status, _) = deliver(&world, &payment_event("payment.succeeded", &payment)).await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = call(ALICE).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let link = body["portal_url"].as_str().expect("portal_url");
    assert!(link.ends_with(&format!("/portal/{hers}")), "{link}");
    assert!(
        world
            .sim()
            .api_calls()
            .contains(&format!("POST /customers/{hers}/customer-portal/session"))
    );

    // Bob, who never opened a checkout, gets no portal, and certainly not Alice's.
    let (status, _) = call(BOB).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = read(
        portal
            .handle(api_event("POST", "/payment/portal", None, None))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn applied_deliveries_are_kept_in_the_users_audit_trail() {
    let world = World::new().await;
    let payment = world.dodo_payment("pay_audit", "succeeded", Some(ALICE), None);
    let event = payment_event("payment.succeeded", &payment);
    let now = paywall::time::Clock::system().now().unix_seconds();
    for id in ["msg_first", "msg_first", "msg_second"] {
        let (status, _) = read(
            world
                .webhook()
                .handle(signed_webhook(&event, id, now))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let trail = world.store.audit_trail(&user(ALICE)).await.expect("read");
    let seen: Vec<(&str, &str, &str)> = trail
        .iter()
        .map(|e| {
            (
                e.webhook_id.as_str(),
                e.event_type.as_str(),
                e.effect.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen.len(),
        2,
        "one entry per delivery, retries included: {seen:?}"
    );
    assert!(
        seen.contains(&("msg_first", "payment.succeeded", "granted")),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("msg_second", "payment.succeeded", "duplicate")),
        "{seen:?}"
    );
    assert!(trail.iter().all(|e| e.object_id == "pay_audit"));
    // The trail never shows up in the status.
    assert_eq!(status_of(&world, ALICE).await["has_paid"], true);
}
