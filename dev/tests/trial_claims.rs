//! One trial per person, against the store on the local engine: only a verified address
//! stands for a person (issue 18 review, finding 1).

mod common;

use common::store_on;
use dev::local_dynamodb::LocalDynamo;
use paywall::ids::UserId;
use paywall::subscription::Subscription;
use serde_json::json;

fn user(id: &str) -> UserId {
    UserId::parse(id).expect("valid")
}

/// Mallory's checkout named no customer of ours, so Dodo's page took whatever address
/// she typed: the victim's. Storing her trial subscription must not use up the trial of
/// the person who proved that address.
#[tokio::test]
async fn an_address_typed_on_dodos_page_uses_up_no_one_elses_trial() {
    let dynamo = LocalDynamo::in_memory().await.expect("dynoxide");
    let store = store_on(&dynamo).await;
    let now = paywall::time::Clock::system().now();
    let sub = Subscription::from_json(&json!({
        "subscription_id": "sub_m", "status": "active", "product_id": "pdt_starter",
        "next_billing_date": now.plus_days(7).to_rfc3339(), "cancel_at_next_billing_date": false,
        "metadata": {"user_id": "mallory", "plan": "starter"},
        "customer": {"customer_id": "cus_new", "email": "Victim+x@gmail.com"},
        "created_at": now.to_rfc3339(),
        "trial_period_days": 7,
    }))
    .expect("valid");
    let victim = user("victim");
    let victim_may = || store.trial_available("starter", &victim, Some("victim@gmail.com"));
    assert!(victim_may().await.expect("read"), "before");
    store
        .apply_subscription(
            &user("mallory"),
            &sub,
            Some("starter"),
            now.unix_seconds() * 1000,
        )
        .await
        .expect("stored");
    assert!(
        victim_may().await.expect("read"),
        "the victim's trial was used up by an address Mallory typed"
    );
    assert!(
        !store
            .trial_available("starter", &user("mallory"), None)
            .await
            .expect("read"),
        "Mallory herself had it"
    );
}
