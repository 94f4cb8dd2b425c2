//! The subscription lifecycle users drive from the app (issue 18), through the local
//! stack's HTTP routes on the test clock: the public plan listing, card-less trials once
//! per person, Dodo's trials with a card, plan changes (upgrade now, downgrade at the
//! renewal, a scheduled change cancelled), and cancel / resume.

#[path = "common/clock_stack.rs"]
mod clock_stack;

use clock_stack::*;
use paywall::time::{SECONDS_PER_DAY, Timestamp};
use reqwest::Method;
use serde_json::{Value, json};

fn start() -> i64 {
    at(&json!(START_AT))
}

#[tokio::test]
async fn the_plans_are_listed_publicly_from_the_catalogue() {
    let s = stack("plans").await;
    let answer = s
        .http
        .get(format!("{}/payment/plans", s.base))
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status().as_u16(), 200, "no token needed");
    assert_eq!(
        answer.headers()["cache-control"].to_str().expect("text"),
        "public, max-age=60"
    );
    let listing: Value = answer.json().await.expect("json");
    let names: Vec<&str> = listing["plans"]
        .as_array()
        .expect("plans")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["starter", "monthly", "pro", "team"],
        "cheapest first"
    );
    let team = &listing["plans"][3];
    assert_eq!(team["trial"], json!({"days": 14, "card": false}));
    assert_eq!(team["price_amount"], 9900);
    assert_eq!(team["interval"], "month");
    assert_eq!(
        listing["plans"][0]["trial"],
        json!({"days": 7, "card": true})
    );
    assert_eq!(listing["plans"][1]["days"], 30);
    assert_eq!(listing["free"]["limits"]["api_calls"], 20);
    assert!(
        !listing.to_string().contains("pdt_"),
        "no product id leaves the catalogue: {listing}"
    );
}

#[tokio::test]
async fn a_cardless_trial_runs_its_days_once_per_person_and_ends_with_its_event() {
    let s = stack("cardless").await;
    let (status, body) = s
        .call(
            Method::POST,
            "/payment/trial",
            "ann",
            Some(json!({"plan": "team"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "trialing");
    assert_eq!(body["has_paid"], true);
    assert_eq!(body["plan"], "team");
    assert_eq!(at(&body["trial_ends_at"]), start() + 14 * SECONDS_PER_DAY);
    let (_, entitlements) = s
        .call(Method::GET, "/payment/entitlements", "ann", None)
        .await;
    assert_eq!(entitlements["source"], "trial");
    assert!(
        entitlements["features"]
            .as_array()
            .expect("features")
            .contains(&json!("sso")),
        "{entitlements}"
    );
    assert_eq!(entitlements["limits"]["seats"]["limit"], 25);

    // Once per person: the same user, another account with the same Gmail mailbox, an
    // unverified address, a plan without a card-less trial.
    let again = s
        .call(
            Method::POST,
            "/payment/trial",
            "ann",
            Some(json!({"plan": "team"})),
        )
        .await;
    assert_eq!(
        (again.0, again.1["error"]["code"].clone()),
        (409, json!("trial_used"))
    );
    let twin = |user: &str, email: &str, verified: bool| {
        s.http
            .post(format!("{}/payment/trial", s.base))
            .bearer_auth(s.token_with(user, email, verified))
            .json(&json!({"plan": "team"}))
            .send()
    };
    let first = twin("gmail-1", "Ann.Smith+work@gmail.com", true)
        .await
        .expect("answered");
    assert_eq!(first.status().as_u16(), 201);
    let second = twin("gmail-2", "annsmith@googlemail.com", true)
        .await
        .expect("answered");
    assert_eq!(
        second.status().as_u16(),
        409,
        "the same mailbox is the same person"
    );
    let unverified = twin("nobody", "new@example.com", false)
        .await
        .expect("answered");
    assert_eq!(unverified.status().as_u16(), 403);
    let (status, body) = s
        .call(
            Method::POST,
            "/payment/trial",
            "bob",
            Some(json!({"plan": "pro"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("trial_not_offered"))
    );

    // It ends on time, through the hourly expiry sweep, with its event.
    s.post("/dev/clock", json!({"to": "2027-01-29T09:59:59Z"}))
        .await;
    assert_eq!(s.status("ann").await["status"], "trialing");
    s.advance("2h").await;
    let ended = s.status("ann").await;
    assert_eq!(ended["has_paid"], false, "{ended}");
    assert_eq!(ended["trial_ends_at"], Value::Null);
    let changes = s.changes("ann").await;
    assert_eq!(changes, ["trial_started", "trial_ended"], "{changes:?}");
    // Ended, it is still used: no second trial.
    let later = s
        .call(
            Method::POST,
            "/payment/trial",
            "ann",
            Some(json!({"plan": "team"})),
        )
        .await;
    assert_eq!(later.0, 409);
}

#[tokio::test]
async fn buying_during_a_cardless_trial_converts_it() {
    let s = stack("converts").await;
    let (status, _) = s
        .call(
            Method::POST,
            "/payment/trial",
            "cara",
            Some(json!({"plan": "team"})),
        )
        .await;
    assert_eq!(status, 201);
    s.advance("3d").await;
    s.buy("cara", "pro", "outcome=succeeded").await;
    let paid = s.status("cara").await;
    assert_eq!(
        (paid["status"].clone(), paid["plan"].clone()),
        (json!("active"), json!("pro"))
    );
    assert_eq!(paid["trial_ends_at"], Value::Null);
    let changes = s.changes("cara").await;
    assert_eq!(changes, ["trial_started", "trial_converted"], "{changes:?}");
    // A paid plan running: a trial would mask nothing it paid for.
    let (status, body) = s
        .call(
            Method::POST,
            "/payment/trial",
            "cara",
            Some(json!({"plan": "team"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test]
async fn cancel_and_resume_from_the_app_follow_dodo_and_are_idempotent() {
    let s = stack("cancel-resume").await;
    let (status, body) = s.call(Method::POST, "/payment/cancel", "dan", None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("no_subscription"))
    );
    s.buy("dan", "pro", "outcome=succeeded").await;
    let patches = || {
        s.sim()
            .api_calls()
            .iter()
            .filter(|c| c.starts_with("PATCH "))
            .count()
    };
    let (status, body) = s.call(Method::POST, "/payment/cancel", "dan", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cancel_at_period_end"], true);
    assert_eq!(body["has_paid"], true, "access runs to the period's end");
    assert_eq!(
        s.sim().subscriptions()[0]["cancel_at_next_billing_date"],
        true
    );
    let (status, _) = s.call(Method::POST, "/payment/cancel", "dan", None).await;
    assert_eq!(status, 200);
    assert_eq!(patches(), 1, "asked again, Dodo is not called again");

    s.advance("5d").await;
    let (status, body) = s.call(Method::POST, "/payment/resume", "dan", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cancel_at_period_end"], false);
    assert_eq!(
        s.sim().subscriptions()[0]["cancel_at_next_billing_date"],
        false
    );
    let (status, _) = s.call(Method::POST, "/payment/resume", "dan", None).await;
    assert_eq!(status, 200);
    assert_eq!(patches(), 2);

    // Cancelled again, it ends at the period's end; then it is too late to resume.
    s.call(Method::POST, "/payment/cancel", "dan", None).await;
    s.post("/dev/clock", json!({"to": "2027-02-15T10:00:00Z"}))
        .await;
    let gone = s.status("dan").await;
    assert_eq!(
        (gone["has_paid"].clone(), gone["status"].clone()),
        (json!(false), json!("cancelled"))
    );
    let (status, body) = s.call(Method::POST, "/payment/resume", "dan", None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("subscription_ended"))
    );
    assert_eq!(s.events("subscription.renewed"), 0);
    let changes = s.changes("dan").await;
    assert_eq!(
        changes
            .iter()
            .filter(|c| *c == "cancellation_scheduled")
            .count(),
        2,
        "{changes:?}"
    );
    assert!(changes.contains(&"resumed".to_owned()), "{changes:?}");
}

/// The subscription Dodo has for `user` (the simulator's record).
fn subscription_of(s: &Stack, user: &str) -> Value {
    s.sim()
        .subscriptions()
        .into_iter()
        .rfind(|sub| sub["metadata"]["user_id"] == user)
        .expect("a subscription")
}

#[tokio::test]
async fn a_card_trial_runs_at_dodo_converts_at_its_first_charge_once_per_person() {
    let s = stack("card-trial").await;
    let tina = s.token_with("tina", "Tina.K+app@gmail.com", true);
    let back = s.checkout(&tina, "starter", "outcome=succeeded").await;
    assert!(
        !back.contains("payment_id="),
        "a free trial charges nothing: {back}"
    );
    assert_eq!(subscription_of(&s, "tina")["trial_period_days"], 7);
    s.advance("1h").await; // the webhook arrives
    let trialing = s.status("tina").await;
    assert_eq!(trialing["status"], "trialing", "{trialing}");
    assert_eq!(trialing["has_paid"], true);
    assert_eq!(
        at(&trialing["trial_ends_at"]),
        start() + 7 * SECONDS_PER_DAY
    );
    assert!(
        s.sim().payments().is_empty(),
        "nothing charged during the trial"
    );

    // The same mailbox under another account checks out without a trial.
    let twin = s.token_with("tina-2", "tinak@googlemail.com", true);
    s.checkout(&twin, "starter", "outcome=succeeded").await;
    assert_eq!(subscription_of(&s, "tina-2")["trial_period_days"], 0);

    // At the trial's end Dodo charges: the trial converts.
    s.post("/dev/clock", json!({"to": "2027-01-22T11:00:00Z"}))
        .await;
    let paid = s.status("tina").await;
    assert_eq!(
        (paid["status"].clone(), paid["trial_ends_at"].clone()),
        (json!("active"), Value::Null),
        "{paid}"
    );
    let charged: Vec<Value> = s
        .sim()
        .payments()
        .into_iter()
        .filter(|p| {
            p["metadata"]["user_id"] == "tina"
                || p["subscription_id"] == subscription_of(&s, "tina")["subscription_id"]
        })
        .collect();
    assert_eq!(charged.len(), 1, "{charged:?}");
    assert_eq!(charged[0]["total_amount"], 900);
    assert_eq!(
        s.changes("tina").await,
        ["trial_started", "trial_converted"]
    );
}

#[tokio::test]
async fn a_card_declined_at_the_trials_end_ends_the_trial() {
    let s = stack("trial-declined").await;
    let vic = s.token("vic");
    s.checkout(&vic, "starter", "outcome=succeeded&renewal=fails")
        .await;
    s.advance("1h").await;
    assert_eq!(s.status("vic").await["status"], "trialing");
    s.post("/dev/clock", json!({"to": "2027-01-22T11:00:00Z"}))
        .await;
    let ended = s.status("vic").await;
    assert_eq!(
        (ended["has_paid"].clone(), ended["status"].clone()),
        (json!(false), json!("on_hold")),
        "{ended}"
    );
    assert_eq!(s.changes("vic").await, ["trial_started", "trial_ended"]);
    // Had, and not converted: still this person's one trial of the plan. The subscription
    // still runs at Dodo (on hold), so a second checkout is refused anyway.
    let (status, body) = s
        .call(
            Method::POST,
            "/payment/create-checkout-session",
            "vic",
            Some(json!({"plan": "starter"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("already_subscribed"))
    );
}

#[tokio::test]
async fn an_upgrade_applies_now_prorated_and_a_downgrade_at_the_renewal() {
    let s = stack("change-plan").await;
    s.buy("uma", "pro", "outcome=succeeded").await;
    let (status, body) = s
        .call(
            Method::POST,
            "/payment/change-plan",
            "uma",
            Some(json!({"plan": "pro"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("same_plan"))
    );
    let (status, body) = s
        .call(
            Method::POST,
            "/payment/change-plan",
            "uma",
            Some(json!({"plan": "monthly"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("not_a_subscription_plan"))
    );
    let (status, body) = s
        .call(
            Method::POST,
            "/payment/change-plan",
            "nobody",
            Some(json!({"plan": "team"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("no_subscription"))
    );

    s.advance("15d").await;
    let (status, preview) = s
        .call(
            Method::POST,
            "/payment/change-plan",
            "uma",
            Some(json!({"plan": "team", "preview": true})),
        )
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(
        (
            preview["direction"].clone(),
            preview["effective_at"].clone()
        ),
        (json!("upgrade"), json!("immediately"))
    );
    let charge_now = preview["preview"]["charge_now"]
        .as_i64()
        .expect("an amount");
    // Half the period left, prorated: about half of $99 - $49.
    assert!((2000..3000).contains(&charge_now), "{preview}");
    assert_eq!(preview["preview"]["next_charge"], 9900);
    assert_eq!(
        s.status("uma").await["plan"],
        "pro",
        "a preview changes nothing"
    );

    let (status, applied) = s
        .call(
            Method::POST,
            "/payment/change-plan",
            "uma",
            Some(json!({"plan": "team"})),
        )
        .await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["applied"], true);
    assert_eq!(applied["status"]["plan"], "team", "an upgrade applies now");
    let payment_id = applied["payment_id"]
        .as_str()
        .expect("the upgrade's payment")
        .to_owned();
    let charged = s
        .sim()
        .payments()
        .into_iter()
        .find(|p| p["payment_id"] == payment_id.as_str())
        .expect("the payment");
    assert_eq!(
        charged["total_amount"], charge_now,
        "charged what the preview said"
    );
    let (_, entitlements) = s
        .call(Method::GET, "/payment/entitlements", "uma", None)
        .await;
    assert!(
        entitlements["features"]
            .as_array()
            .expect("features")
            .contains(&json!("sso"))
    );

    // A downgrade waits for the renewal, and can be taken back. Its preview charges
    // nothing now: the renewal it replaces charges the new price.
    let (status, preview) = s
        .call(
            Method::POST,
            "/payment/change-plan",
            "uma",
            Some(json!({"plan": "pro", "preview": true})),
        )
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["preview"]["charge_now"], 0, "{preview}");
    assert_eq!(preview["preview"]["amount"], 4900, "{preview}");
    let (status, scheduled) = s
        .call(
            Method::POST,
            "/payment/change-plan",
            "uma",
            Some(json!({"plan": "pro"})),
        )
        .await;
    assert_eq!(status, 200, "{scheduled}");
    assert_eq!(scheduled["effective_at"], "next_billing_date");
    assert_eq!(scheduled["status"]["plan"], "team");
    assert_eq!(scheduled["status"]["scheduled_change"]["plan"], "pro");
    let renewal = at(&scheduled["status"]["scheduled_change"]["at"]);
    assert_eq!(renewal, at(&json!("2027-02-15T10:00:00Z")));
    let (status, kept) = s
        .call(Method::DELETE, "/payment/change-plan", "uma", None)
        .await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["scheduled_change"], Value::Null);
    assert_eq!(subscription_of(&s, "uma")["scheduled_change"], Value::Null);
    let (status, _) = s
        .call(Method::DELETE, "/payment/change-plan", "uma", None)
        .await;
    assert_eq!(status, 200, "idempotent");
    let (status, _) = s
        .call(
            Method::POST,
            "/payment/change-plan",
            "uma",
            Some(json!({"plan": "pro"})),
        )
        .await;
    assert_eq!(status, 200);

    // Exactly at the renewal: the new plan, at its price.
    s.post("/dev/clock", json!({"to": "2027-02-15T09:59:59Z"}))
        .await;
    assert_eq!(s.status("uma").await["plan"], "team");
    s.post("/dev/clock", json!({"to": "2027-02-15T11:00:00Z"}))
        .await;
    let moved = s.status("uma").await;
    assert_eq!(
        (moved["plan"].clone(), moved["scheduled_change"].clone()),
        (json!("pro"), Value::Null),
        "{moved}"
    );
    let sub = subscription_of(&s, "uma");
    let last = s
        .sim()
        .payments()
        .into_iter()
        .filter(|p| p["subscription_id"] == sub["subscription_id"])
        .max_by_key(|p| p["created_at"].as_str().unwrap_or_default().to_owned())
        .expect("the renewal");
    assert_eq!(
        last["total_amount"], 4900,
        "renewed at the downgraded price"
    );
    let changes = s.changes("uma").await;
    assert_eq!(
        changes.iter().filter(|c| *c == "plan_changed").count(),
        2,
        "{changes:?}"
    );
}

/// A checkout with Dodo's trial makes no payment: when the subscription's webhook is
/// lost, the hourly reconcile finds it by our metadata and the trial starts anyway.
#[tokio::test]
async fn a_trial_whose_webhook_is_lost_is_found_by_the_hourly_reconcile() {
    let s = stack("lost-trial").await;
    let (status, _) = s.post("/dev/faults", json!({"drop_webhooks": 1.0})).await;
    assert_eq!(status, 200);
    let wes = s.token("wes");
    s.checkout(&wes, "starter", "outcome=succeeded").await;
    let waiting = s.status("wes").await;
    assert_eq!(waiting["status"], "pending", "not heard of yet: {waiting}");
    s.advance("2h").await;
    let found = s.status("wes").await;
    assert_eq!(found["status"], "trialing", "{found}");
    assert_eq!(at(&found["trial_ends_at"]), start() + 7 * SECONDS_PER_DAY);
    assert_eq!(
        found["subscription_id"],
        subscription_of(&s, "wes")["subscription_id"]
    );
}

/// The reconcile finds a lost trial among many newer subscriptions to the same plan:
/// it reads only the user's own customer's (issue 18 review, finding 3).
#[tokio::test]
async fn a_lost_trial_is_found_among_many_newer_subscriptions_to_its_plan() {
    let s = stack("lost-trial-busy").await;
    let (status, _) = s.post("/dev/faults", json!({"drop_webhooks": 1.0})).await;
    assert_eq!(status, 200);
    let wes = s.token("wes");
    s.checkout(&wes, "starter", "outcome=succeeded").await;
    let mine = subscription_of(&s, "wes");
    let created =
        Timestamp::parse_rfc3339(mine["created_at"].as_str().expect("created_at")).expect("time");
    // A busy plan: 150 other people subscribe to it within the hour.
    for i in 0..150 {
        let mut other = mine.clone();
        other["subscription_id"] = json!(format!("sub_other_{i:03}"));
        other["customer"]["customer_id"] = json!(format!("cus_other_{i:03}"));
        other["metadata"] = json!({"user_id": format!("other{i}"), "plan": "starter"});
        other["created_at"] = json!(created.plus_seconds(10 + i).to_rfc3339());
        s.sim().put_subscription(other);
    }
    s.advance("2h").await;
    let found = s.status("wes").await;
    assert_eq!(found["status"], "trialing", "{found}");
}

/// A refund of an upgrade's proration charge leaves the month another payment paid
/// (issue 18 review, finding 2): only the payment that paid the period ends it.
#[tokio::test]
async fn refunding_an_upgrade_charge_leaves_the_period_paid() {
    let s = stack("refund-upgrade").await;
    s.buy("uma", "pro", "outcome=succeeded").await;
    s.advance("15d").await;
    let (status, applied) = s
        .call(
            Method::POST,
            "/payment/change-plan",
            "uma",
            Some(json!({"plan": "team"})),
        )
        .await;
    assert_eq!(status, 200, "{applied}");
    let proration = applied["payment_id"]
        .as_str()
        .expect("a proration payment")
        .to_owned();
    s.advance("1h").await;
    let refund = s
        .http
        .post(format!("{}/dodo/refunds", s.base))
        .bearer_auth("sk_local_simulator")
        .json(&json!({"payment_id": proration}))
        .send()
        .await
        .expect("answered");
    assert_eq!(refund.status().as_u16(), 200);
    s.advance("1h").await;
    let after = s.status("uma").await;
    assert_eq!(
        after["has_paid"], true,
        "the month's $49 still paid: {after}"
    );
    // The renewal's own payment refunded: that does end the period.
    s.post("/dev/clock", json!({"to": "2027-02-15T11:00:00Z"}))
        .await;
    let renewal = s
        .sim()
        .payments()
        .into_iter()
        .filter(|p| p["subscription_id"] == applied["status"]["subscription_id"])
        .max_by_key(|p| p["created_at"].as_str().unwrap_or_default().to_owned())
        .expect("the renewal");
    let refund = s
        .http
        .post(format!("{}/dodo/refunds", s.base))
        .bearer_auth("sk_local_simulator")
        .json(&json!({"payment_id": renewal["payment_id"]}))
        .send()
        .await
        .expect("answered");
    assert_eq!(refund.status().as_u16(), 200);
    s.advance("1h").await;
    let refunded = s.status("uma").await;
    assert_eq!(
        (refunded["has_paid"].clone(), refunded["status"].clone()),
        (json!(false), json!("refunded")),
        "{refunded}"
    );
}

/// A change Dodo already made (its answer lost, say) asked for again: answered as done,
/// and Dodo is not asked to change (or charge) twice (issue 18 review, finding 4).
#[tokio::test]
async fn a_change_asked_again_after_dodo_made_it_is_not_made_twice() {
    let s = stack("change-twice").await;
    s.buy("ivy", "pro", "outcome=succeeded").await;
    s.advance("10d").await;
    let sub = subscription_of(&s, "ivy");
    let id = sub["subscription_id"].as_str().expect("id");
    // Dodo changes the plan (the portal, or our request whose answer was lost); its
    // webhooks are lost, so the paywall still stores `pro`.
    s.post("/dev/faults", json!({"drop_webhooks": 1.0})).await;
    let changed = s
        .http
        .post(format!("{}/dodo/subscriptions/{id}/change-plan", s.base))
        .bearer_auth("sk_local_simulator")
        .json(&json!({"product_id": "pdt_local_team", "quantity": 1,
                      "proration_billing_mode": "prorated_immediately"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(changed.status().as_u16(), 200);
    assert_eq!(s.status("ivy").await["plan"], "pro", "not heard of yet");
    let changes_before = s
        .sim()
        .api_calls()
        .iter()
        .filter(|c| c.contains("/change-plan"))
        .count();
    let (status, again) = s
        .call(
            Method::POST,
            "/payment/change-plan",
            "ivy",
            Some(json!({"plan": "team"})),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (again["applied"].clone(), again["payment_id"].clone()),
        (json!(true), Value::Null)
    );
    assert_eq!(again["status"]["plan"], "team", "stored as Dodo has it");
    let changes_after = s
        .sim()
        .api_calls()
        .iter()
        .filter(|c| c.contains("/change-plan"))
        .count();
    assert_eq!(
        changes_after, changes_before,
        "Dodo was not asked to change again"
    );
}

/// A founder's grant is not hidden by a trial, so its end is never read as a conversion
/// (issue 18 review, finding 5).
#[tokio::test]
async fn a_comped_user_gets_no_trial_over_their_grant() {
    let s = stack("comped-trial").await;
    let server = s.get_json("/dev/token?server=1").await;
    let granted = s
        .http
        .post(format!("{}/server/users/zoe/grants", s.base))
        .bearer_auth(server["token"].as_str().expect("a token"))
        .json(&json!({"plan": "pro", "days": 30, "reason": "beta tester"}))
        .send()
        .await
        .expect("answered");
    assert!(granted.status().is_success(), "{:?}", granted.text().await);
    let (status, body) = s
        .call(
            Method::POST,
            "/payment/trial",
            "zoe",
            Some(json!({"plan": "team"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("already_paid")),
        "{body}"
    );
}

/// The hot reads answer an `ETag` and a bodiless `304` to `If-None-Match` while nothing
/// changed, and the new body once something did (issue 19, item 6).
#[tokio::test]
async fn status_and_entitlements_revalidate_with_etags() {
    let s = stack("etags").await;
    for path in ["/payment/status", "/payment/entitlements"] {
        let read = |etag: Option<String>| {
            let mut request = s
                .http
                .get(format!("{}{path}", s.base))
                .bearer_auth(s.token("eve"));
            if let Some(etag) = etag {
                request = request.header("if-none-match", etag);
            }
            request.send()
        };
        let first = read(None).await.expect("answered");
        assert_eq!(first.status().as_u16(), 200);
        assert_eq!(first.headers()["cache-control"], "private, no-cache");
        let etag = first.headers()["etag"].to_str().expect("text").to_owned();
        let again = read(Some(etag.clone())).await.expect("answered");
        assert_eq!(again.status().as_u16(), 304, "{path}");
        assert_eq!(again.headers()["etag"].to_str().expect("text"), etag);
        assert!(again.bytes().await.expect("body").is_empty());
        // Something changed (a trial began): the new answer, with a new tag.
        if path == "/payment/status" {
            s.call(
                Method::POST,
                "/payment/trial",
                "eve",
                Some(json!({"plan": "team"})),
            )
            .await;
        } else {
            s.advance("15d").await; // the trial ended
        }
        let changed = read(Some(etag.clone())).await.expect("answered");
        assert_eq!(changed.status().as_u16(), 200, "{path}");
        assert_ne!(changed.headers()["etag"].to_str().expect("text"), etag);
    }
}

/// How many calls the simulator received whose `METHOD /path` contains `part`.
fn dodo_calls(s: &Stack, part: &str) -> usize {
    s.sim()
        .api_calls()
        .iter()
        .filter(|c| c.contains(part))
        .count()
}

/// `POST /payment/change-plan {"plan": plan}` as `user`.
async fn change_plan(s: &Stack, user: &str, plan: &str) -> (u16, Value) {
    s.call(
        Method::POST,
        "/payment/change-plan",
        user,
        Some(json!({"plan": plan})),
    )
    .await
}

/// The `user.*` entries of `user`'s audit trail: each one's event type and effect.
async fn user_actions(s: &Stack, user: &str) -> Vec<(String, String)> {
    let user = paywall::ids::UserId::parse(user).expect("user id");
    s.stack
        .store
        .audit_trail(&user)
        .await
        .expect("the trail")
        .into_iter()
        .filter(|e| e.event_type.starts_with("user."))
        .map(|e| (e.event_type, e.effect))
        .collect()
}

/// `request` sent with the store's transactions failing and Dodo's webhooks lost, so
/// that only the request and its retry can store what Dodo did: its status and answer.
/// The store is healed after it; webhooks stay lost.
async fn with_writes_failing(
    s: &Stack,
    request: impl std::future::Future<Output = (u16, Value)>,
) -> (u16, Value) {
    s.post("/dev/faults", json!({"drop_webhooks": 1.0})).await;
    s.stack
        .database_faults()
        .fail("TransactWriteItems")
        .expect("an operation");
    let answer = request.await;
    s.stack.database_faults().heal();
    answer
}

/// A change Dodo made whose storing then failed: the answer says Dodo changed it (never
/// the 503 that means "nothing changed"), nothing is stored half, and the retry stores it
/// with its one audit entry, without asking Dodo to change (or charge) again (issue 20
/// review: it answered `store_unavailable`, and the retry wrote no entry).
#[tokio::test]
async fn a_change_made_at_dodo_but_not_stored_says_so_and_the_retry_stores_it_once() {
    let s = stack("change-not-stored").await;
    s.buy("liv", "pro", "outcome=succeeded").await;
    s.advance("10d").await;
    // Its webhooks are lost: only the request and its retry can store the change.
    let changes = || dodo_calls(&s, "/change-plan");
    let (status, failed) = with_writes_failing(&s, change_plan(&s, "liv", "team")).await;
    assert_eq!(
        (status, failed["error"]["code"].clone()),
        (503, json!("changed_not_stored")),
        "{failed}"
    );
    assert_eq!(changes(), 1, "Dodo made it");
    assert_eq!(
        subscription_of(&s, "liv")["product_id"],
        "pdt_local_team",
        "on the new plan at Dodo"
    );
    assert_eq!(s.status("liv").await["plan"], "pro", "nothing stored yet");
    assert_eq!(user_actions(&s, "liv").await, Vec::new(), "no entry yet");

    let (status, retried) = change_plan(&s, "liv", "team").await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["applied"], true);
    assert_eq!(retried["status"]["plan"], "team");
    assert_eq!(changes(), 1, "Dodo was not asked to change again");
    assert_eq!(
        user_actions(&s, "liv").await,
        vec![("user.change_plan".to_owned(), "immediately".to_owned())]
    );
}

/// Cancel and resume the same way: set at Dodo, not stored, said so; the retry stores
/// it with one entry.
#[tokio::test]
async fn a_cancel_set_at_dodo_but_not_stored_says_so_and_the_retry_stores_it_once() {
    let s = stack("cancel-not-stored").await;
    s.buy("max", "pro", "outcome=succeeded").await;
    let (status, failed) =
        with_writes_failing(&s, s.call(Method::POST, "/payment/cancel", "max", None)).await;
    assert_eq!(
        (status, failed["error"]["code"].clone()),
        (503, json!("changed_not_stored")),
        "{failed}"
    );
    assert_eq!(
        s.sim().subscriptions()[0]["cancel_at_next_billing_date"],
        true
    );
    assert_eq!(s.status("max").await["cancel_at_period_end"], false);

    let (status, body) = s.call(Method::POST, "/payment/cancel", "max", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cancel_at_period_end"], true);
    assert_eq!(
        user_actions(&s, "max").await,
        vec![("user.cancel".to_owned(), "cancel_at_period_end".to_owned())]
    );
}

/// A change Dodo refused to make (the card declined under `prevent_change`) changed
/// nothing: when storing Dodo's answer then fails, it still answers `200 applied: false`,
/// never a 503 asking for a retry that would try the charge again (issue 20 review).
#[tokio::test]
async fn a_declined_change_whose_answer_is_not_stored_still_says_nothing_changed() {
    let s = stack("declined-not-stored").await;
    s.buy("ned", "pro", "outcome=succeeded&renewal=fails").await;
    s.advance("10d").await;
    let (status, answer) = with_writes_failing(&s, change_plan(&s, "ned", "team")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"], false, "{answer}");
    assert_eq!(answer["status"]["plan"], "pro");
    assert_eq!(subscription_of(&s, "ned")["product_id"], "pdt_local_pro");
    assert_eq!(dodo_calls(&s, "/change-plan"), 1);
}

/// A scheduled change dropped at Dodo whose storing failed: the retry finds it dropped at
/// Dodo and stores it, without asking Dodo to drop it again (issue 20 review).
#[tokio::test]
async fn a_drop_made_at_dodo_but_not_stored_is_stored_by_the_retry_without_a_second_drop() {
    let s = stack("drop-not-stored").await;
    s.buy("ora", "team", "outcome=succeeded").await;
    s.advance("10d").await;
    let (status, scheduled) = change_plan(&s, "ora", "pro").await;
    assert_eq!(status, 200, "{scheduled}");
    assert_eq!(scheduled["status"]["scheduled_change"]["plan"], "pro");
    let drops = || dodo_calls(&s, "DELETE /subscriptions/");
    let (status, failed) = with_writes_failing(
        &s,
        s.call(Method::DELETE, "/payment/change-plan", "ora", None),
    )
    .await;
    assert_eq!(
        (status, failed["error"]["code"].clone()),
        (503, json!("changed_not_stored")),
        "{failed}"
    );
    assert_eq!(drops(), 1);
    assert_eq!(subscription_of(&s, "ora")["scheduled_change"], Value::Null);
    assert_eq!(s.status("ora").await["scheduled_change"]["plan"], "pro");

    let (status, kept) = s
        .call(Method::DELETE, "/payment/change-plan", "ora", None)
        .await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["scheduled_change"], Value::Null);
    assert_eq!(drops(), 1, "Dodo was not asked to drop it again");
    let dropped: Vec<_> = user_actions(&s, "ora")
        .await
        .into_iter()
        .filter(|(_, effect)| effect == "scheduled_change_cancelled")
        .collect();
    assert_eq!(dropped.len(), 1, "{dropped:?}");
}

/// A downgrade scheduled at Dodo whose storing failed, then taken back: the drop reads
/// Dodo, not the store (which shows nothing scheduled), so the change Dodo would make at
/// the renewal is dropped there (issue 20 review).
#[tokio::test]
async fn a_change_scheduled_at_dodo_but_not_stored_is_dropped_at_dodo_when_taken_back() {
    let s = stack("drop-unstored").await;
    s.buy("pia", "team", "outcome=succeeded").await;
    s.advance("10d").await;
    let (status, failed) = with_writes_failing(&s, change_plan(&s, "pia", "pro")).await;
    assert_eq!(
        (status, failed["error"]["code"].clone()),
        (503, json!("changed_not_stored")),
        "{failed}"
    );
    assert_eq!(
        subscription_of(&s, "pia")["scheduled_change"]["product_id"],
        "pdt_local_pro"
    );
    assert_eq!(s.status("pia").await["scheduled_change"], Value::Null);

    let (status, kept) = s
        .call(Method::DELETE, "/payment/change-plan", "pia", None)
        .await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["scheduled_change"], Value::Null);
    assert_eq!(subscription_of(&s, "pia")["scheduled_change"], Value::Null);
    assert_eq!(dodo_calls(&s, "DELETE /subscriptions/"), 1);
}
