//! The Dodo client over real HTTP against the local Dodo stand-in: success, Dodo's error
//! bodies, server errors, timeouts, and payloads with fields and values we do not know.

mod common;

use std::time::{Duration, Instant};

use common::{API_KEY, PRODUCT, dodo_client_for};
use dev::dodo_simulator::{DodoSimulator, Fault};
use paywall::dodo::{CartLine, CheckoutCustomer, CheckoutRequest, DodoError, PaymentStatus};
use paywall::ids::{PaymentId, ProductId};
use serde_json::json;
use std::collections::BTreeMap;

fn checkout_request() -> CheckoutRequest<'static> {
    CheckoutRequest {
        product_cart: vec![CartLine {
            product_id: PRODUCT,
            quantity: 1,
        }],
        customer: None,
        return_url: "https://app.example.com/back",
        feature_flags: None,
        metadata: BTreeMap::from([("user_id", "u1".to_owned())]),
        subscription_data: None,
    }
}

fn pay(id: &str) -> PaymentId {
    PaymentId::parse(id).expect("valid")
}

#[tokio::test]
async fn creates_a_checkout_session() {
    let dodo = DodoSimulator::start(Some(API_KEY.into()))
        .await
        .expect("sim");
    let client = dodo_client_for(&dodo.url);
    let customer = client
        .create_customer("alice@example.com", "alice")
        .await
        .expect("customer");
    assert!(customer.starts_with("cus_"));
    let mut request = checkout_request();
    request.customer = Some(CheckoutCustomer {
        customer_id: &customer,
    });
    let session = client.create_checkout(&request).await.expect("created");
    assert!(session.session_id.starts_with("cks_"));
    assert!(session.checkout_url.ends_with(&session.session_id));
    let sent = dodo
        .simulator
        .checkout_request(&session.session_id)
        .expect("recorded");
    assert_eq!(
        sent["product_cart"],
        json!([{"product_id": PRODUCT, "quantity": 1}])
    );
    assert_eq!(sent["customer"], json!({"customer_id": customer}));
    assert_eq!(sent["metadata"], json!({"user_id": "u1"}));
}

#[tokio::test]
async fn a_wrong_key_is_dodos_401() {
    let dodo = DodoSimulator::start(Some("another_key".into()))
        .await
        .expect("sim");
    let err = dodo_client_for(&dodo.url)
        .create_checkout(&checkout_request())
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, DodoError::Api { status: 401, code, .. } if code == "UNAUTHORIZED"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_4xx_carries_dodos_code_and_is_not_retried() {
    let dodo = DodoSimulator::start(Some(API_KEY.into()))
        .await
        .expect("sim");
    dodo.simulator.set_fault(Some(Fault::Error {
        status: 422,
        code: "UNSUPPORTED_COUNTRY".into(),
        message: "Country AI currently not supported".into(),
    }));
    let err = dodo_client_for(&dodo.url)
        .get_payment(&pay("pay_1"))
        .await
        .expect_err("refused");
    let DodoError::Api {
        status,
        code,
        message,
    } = err
    else {
        panic!("expected Dodo's error, got {err:?}");
    };
    assert_eq!((status, code.as_str()), (422, "UNSUPPORTED_COUNTRY"));
    assert_eq!(message, "Country AI currently not supported");
    assert_eq!(dodo.simulator.api_calls().len(), 1);
}

#[tokio::test]
async fn a_missing_payment_is_not_found() {
    let dodo = DodoSimulator::start(Some(API_KEY.into()))
        .await
        .expect("sim");
    let err = dodo_client_for(&dodo.url)
        .get_payment(&pay("pay_missing"))
        .await
        .expect_err("missing");
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test]
async fn a_5xx_read_is_retried_once_then_reported() {
    let dodo = DodoSimulator::start(Some(API_KEY.into()))
        .await
        .expect("sim");
    dodo.simulator.set_fault(Some(Fault::Error {
        status: 503,
        code: "INTERNAL_SERVER_ERROR".into(),
        message: "Something went wrong :(".into(),
    }));
    let err = dodo_client_for(&dodo.url)
        .get_payment(&pay("pay_1"))
        .await
        .expect_err("failing");
    assert!(matches!(err, DodoError::Api { status: 503, .. }), "{err:?}");
    assert_eq!(
        dodo.simulator.api_calls(),
        ["GET /payments/pay_1", "GET /payments/pay_1"]
    );
}

#[tokio::test]
async fn a_5xx_write_is_not_retried() {
    let dodo = DodoSimulator::start(Some(API_KEY.into()))
        .await
        .expect("sim");
    dodo.simulator.set_fault(Some(Fault::Error {
        status: 500,
        code: "INTERNAL_SERVER_ERROR".into(),
        message: "Something went wrong :(".into(),
    }));
    let err = dodo_client_for(&dodo.url)
        .create_checkout(&checkout_request())
        .await
        .expect_err("failing");
    assert!(matches!(err, DodoError::Api { status: 500, .. }), "{err:?}");
    // The request may have reached Dodo: a blind retry could open a second session.
    assert_eq!(dodo.simulator.api_calls(), ["POST /checkouts"]);
}

#[tokio::test]
async fn a_slow_dodo_times_out_within_the_bound() {
    let dodo = DodoSimulator::start(Some(API_KEY.into()))
        .await
        .expect("sim");
    dodo.simulator
        .set_fault(Some(Fault::Delay(Duration::from_secs(5))));
    let client = dodo_client_for(&dodo.url);
    let started = Instant::now();
    let err = client
        .create_checkout(&checkout_request())
        .await
        .expect_err("too slow");
    assert!(matches!(err, DodoError::Timeout), "{err:?}");
    // One 700 ms attempt for a write; far below the 5 s the server would take.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let err = client
        .get_payment(&pay("pay_1"))
        .await
        .expect_err("too slow");
    assert!(matches!(err, DodoError::Timeout), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_dodo_is_unavailable() {
    // A port nobody listens on: bind, note it, and close it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let err = dodo_client_for(&url)
        .get_payment(&pay("pay_1"))
        .await
        .expect_err("nobody there");
    assert!(matches!(err, DodoError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn unknown_fields_and_enum_values_are_accepted() {
    let dodo = DodoSimulator::start(Some(API_KEY.into()))
        .await
        .expect("sim");
    dodo.simulator.put_payment(json!({
        "payment_id": "pay_new",
        "status": "awaiting_quantum_settlement",
        "metadata": {"user_id": "u1", "credits": 12},
        "customer": {"customer_id": "cus_1", "email": "a@example.com", "loyalty": {"tier": "gold"}},
        "payment_provider": "a_provider_added_last_week",
        "service_periods": [{"start": "2026-01-01T00:00:00Z"}],
        "includes_usage": true,
        "total_amount": 1900
    }));
    let payment = dodo_client_for(&dodo.url)
        .get_payment(&pay("pay_new"))
        .await
        .expect("lenient");
    assert_eq!(
        payment.status,
        PaymentStatus::Unknown("awaiting_quantum_settlement".into())
    );
    assert_eq!(
        payment.metadata.get("credits").map(String::as_str),
        Some("12")
    );
}

#[tokio::test]
async fn a_product_price_is_read() {
    let dodo = DodoSimulator::start(Some(API_KEY.into()))
        .await
        .expect("sim");
    let product = dodo_client_for(&dodo.url)
        .get_product(&ProductId::parse(PRODUCT).expect("valid"))
        .await
        .expect("product");
    assert_eq!(
        paywall::dodo::display_price(&product).as_deref(),
        Some("$19.00")
    );
}
