//! The test clock and what moving it does, through the local stack's HTTP routes: the
//! simulator's renewals, declined cards and retries, cancellations at period end, passes
//! running out, lost webhooks repaired by the hourly reconcile, and faults on demand.

use dev::dodo_simulator::RETRY_AFTER_FAILURE;
use paywall::subscription::RENEWAL_GRACE_SECONDS;
use paywall::time::{Clock, SECONDS_PER_DAY, Timestamp};
use serde_json::{Value, json};

#[path = "common/clock_stack.rs"]
mod clock_stack;
use clock_stack::*;

const START: &str = "2027-01-15T10:00:00Z";

#[tokio::test]
async fn the_clock_reads_moves_forward_only_and_refuses_nonsense() {
    let s = stack("moves").await;
    let read = s.get_json("/dev/clock").await;
    assert_eq!(read["now"], START);
    let moved = s.advance("2d").await;
    assert_eq!(moved["now"], "2027-01-17T10:00:00Z");
    // 48 whole hours passed: reconcile ran at each.
    assert_eq!(moved["reconcile_runs"], 48);
    let moved = s
        .post("/dev/clock", json!({"to": "2027-02-01T00:00:00Z"}))
        .await;
    assert_eq!(moved.1["now"], "2027-02-01T00:00:00Z");
    for bad in [
        json!({"to": "2027-01-01T00:00:00Z"}),
        json!({"advance": "-1d"}),
        json!({"advance": "1w"}),
        json!({"advance": "1d", "to": "2028-01-01T00:00:00Z"}),
        json!({"later": true}),
        json!("1d"),
    ] {
        let (status, body) = s.post("/dev/clock", bad.clone()).await;
        assert_eq!(status, 400, "{bad} → {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    }
    assert_eq!(s.clock.now().to_rfc3339(), "2027-02-01T00:00:00Z");
}

#[tokio::test]
async fn a_pass_runs_out_and_a_subscription_renews_every_month() {
    let s = stack("renews").await;
    s.buy("pass-buyer", "monthly", "outcome=succeeded").await;
    s.buy("subscriber", "pro", "outcome=succeeded").await;
    let pass = s.status("pass-buyer").await;
    assert_eq!(pass["has_paid"], true);
    assert_eq!(
        at(&pass["plan_expires_at"]) - at(&json!(START)),
        30 * SECONDS_PER_DAY
    );
    let subscribed = s.status("subscriber").await;
    assert_eq!(subscribed["plan"], "pro");
    assert_eq!(
        subscribed["plan_expires_at"],
        json!(
            Timestamp::parse_rfc3339("2027-02-15T10:00:00Z")
                .expect("time")
                .plus_seconds(RENEWAL_GRACE_SECONDS)
                .to_rfc3339()
        )
    );

    s.advance("30d").await;
    s.advance("1s").await;
    assert_eq!(
        s.status("pass-buyer").await["has_paid"],
        false,
        "the pass ran out"
    );

    // Three calendar months on: three renewals, each a payment and a webhook pair.
    s.post("/dev/clock", json!({"to": "2027-04-16T00:00:00Z"}))
        .await;
    let renewed = s.status("subscriber").await;
    assert_eq!(renewed["has_paid"], true, "{renewed}");
    assert_eq!(
        renewed["plan_expires_at"],
        json!(
            Timestamp::parse_rfc3339("2027-05-15T10:00:00Z")
                .expect("time")
                .plus_seconds(RENEWAL_GRACE_SECONDS)
                .to_rfc3339()
        )
    );
    assert_eq!(s.events("subscription.renewed"), 3);
    assert_eq!(s.events("payment.succeeded"), 2 + 3);
}

#[tokio::test]
async fn a_card_declined_at_renewal_goes_on_hold_is_retried_on_dodos_schedule_and_stays_on_hold() {
    let s = stack("declined").await;
    s.buy("unlucky", "pro", "outcome=succeeded&renewal=fails")
        .await;
    assert_eq!(s.status("unlucky").await["has_paid"], true);
    s.post("/dev/clock", json!({"to": "2027-02-15T10:00:01Z"}))
        .await;
    let held = s.status("unlucky").await;
    assert_eq!(
        (held["has_paid"].clone(), held["status"].clone()),
        (json!(false), json!("on_hold")),
        "{held}"
    );
    assert_eq!(s.events("subscription.on_hold"), 1);
    assert_eq!(s.events("payment.failed"), 1);
    // Dodo's retries: five more declined charges within the recovery window, then none.
    let last_retry = RETRY_AFTER_FAILURE[RETRY_AFTER_FAILURE.len() - 1];
    s.advance(&format!("{}s", last_retry)).await;
    assert_eq!(s.events("payment.failed"), 1 + RETRY_AFTER_FAILURE.len());
    s.advance("60d").await;
    assert_eq!(s.events("payment.failed"), 1 + RETRY_AFTER_FAILURE.len());
    let still = s.status("unlucky").await;
    assert_eq!(still["status"], "on_hold", "{still}");

    // A new card in the portal charges it at once: active again, a new period from now.
    let subscription = s.sim().subscriptions().pop().expect("the subscription");
    let id = subscription["subscription_id"].as_str().expect("id");
    assert!(s.sim().new_card(id, true).await);
    let back = s.status("unlucky").await;
    assert_eq!(back["has_paid"], true, "{back}");
    assert_eq!(
        at(&back["plan_expires_at"]),
        dev::dodo_simulator::add_months(s.clock.now().unix_seconds(), 1) + RENEWAL_GRACE_SECONDS
    );
}

#[tokio::test]
async fn a_cancellation_takes_effect_at_period_end() {
    let s = stack("cancels").await;
    s.buy("leaver", "pro", "outcome=succeeded").await;
    let id = s.sim().subscriptions()[0]["subscription_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let patched = s
        .http
        .patch(format!("{}/dodo/subscriptions/{id}", s.base))
        .bearer_auth("sk_local_simulator")
        .json(&json!({"cancel_at_next_billing_date": true}))
        .send()
        .await
        .expect("answered");
    assert_eq!(patched.status().as_u16(), 200);
    let leaving = s.status("leaver").await;
    assert_eq!(leaving["cancel_at_period_end"], true);
    assert_eq!(leaving["plan_expires_at"], "2027-02-15T10:00:00Z");
    // The customer portal says so too, and leads back to the app.
    let customer = s.sim().subscriptions()[0]
        .pointer("/customer/customer_id")
        .and_then(Value::as_str)
        .expect("customer")
        .to_owned();
    let portal = s
        .http
        .get(format!("{}/dodo/portal/{customer}", s.base))
        .send()
        .await
        .expect("answered")
        .text()
        .await
        .expect("html");
    assert!(portal.contains("cancels at period end"), "{portal}");
    assert!(!portal.contains("next charge"), "{portal}");
    assert!(
        portal.contains(&format!("href=\"{}/\"", s.base)),
        "{portal}"
    );
    s.post("/dev/clock", json!({"to": "2027-02-15T09:59:59Z"}))
        .await;
    assert_eq!(s.status("leaver").await["has_paid"], true);
    s.post("/dev/clock", json!({"to": "2027-02-15T10:00:00Z"}))
        .await;
    let gone = s.status("leaver").await;
    assert_eq!(
        (gone["has_paid"].clone(), gone["status"].clone()),
        (json!(false), json!("cancelled")),
        "{gone}"
    );
    assert_eq!(s.events("subscription.cancelled"), 1);
    assert_eq!(
        s.events("subscription.renewed"),
        0,
        "no charge after a cancellation"
    );
}

#[tokio::test]
async fn lost_webhooks_are_repaired_by_the_hourly_reconcile_on_the_clock() {
    let s = stack("lost").await;
    s.buy("renewer", "pro", "outcome=succeeded").await;
    let pass = s.buy("refunded", "monthly", "outcome=succeeded").await;
    // From now on every webhook is lost.
    let delivered_before = s.sim().deliveries().len();
    let (status, faults) = s.post("/dev/faults", json!({"drop_webhooks": 1.0})).await;
    assert_eq!((status, faults["drop_webhooks"].clone()), (200, json!(1.0)));

    // A refund whose webhook is lost: the next run reads Dodo's refunds and takes the
    // pass's days back.
    let refund = s
        .http
        .post(format!("{}/dodo/refunds", s.base))
        .bearer_auth("sk_local_simulator")
        .json(&json!({"payment_id": pass}))
        .send()
        .await
        .expect("answered");
    assert_eq!(refund.status().as_u16(), 200);
    assert_eq!(
        s.status("refunded").await["has_paid"],
        true,
        "not heard of yet"
    );
    s.advance("1h").await;
    assert_eq!(
        s.status("refunded").await["has_paid"],
        false,
        "repaired within the hour"
    );

    // The renewal's webhooks are lost; the reconcile run of the renewal's hour (after
    // Dodo's charge at that same moment) stores the new period.
    s.post("/dev/clock", json!({"to": "2027-02-15T09:59:59Z"}))
        .await;
    assert_eq!(
        s.status("renewer").await["plan_expires_at"],
        "2027-02-16T10:00:00Z"
    );
    s.post("/dev/clock", json!({"to": "2027-02-15T10:00:00Z"}))
        .await;
    assert_eq!(
        s.events("subscription.renewed"),
        1,
        "renewed, its webhook lost"
    );
    let repaired = s.status("renewer").await;
    assert_eq!(
        repaired["plan_expires_at"], "2027-03-16T10:00:00Z",
        "{repaired}"
    );
    let since_then = s.sim().deliveries().split_off(delivered_before);
    assert!(since_then.len() >= 3, "{since_then:?}");
    assert!(
        since_then.iter().all(|d| d.dropped),
        "every webhook since was lost"
    );
}

#[tokio::test]
async fn faults_are_set_shown_validated_and_reset() {
    let s = stack("faults").await;
    for bad in [
        json!({"drop_webhooks": 2}),
        json!({"delay_webhooks": "soon"}),
        json!({"unknown": 1}),
        json!([]),
    ] {
        let (status, body) = s.post("/dev/faults", bad.clone()).await;
        assert_eq!(status, 400, "{bad} → {body}");
    }
    let (status, set) = s
        .post(
            "/dev/faults",
            json!({"duplicate_webhooks": 1.0, "delay_webhooks": "2h", "reorder_webhooks": true}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(set["delay_webhooks"], "2h");
    let shown: Value = s
        .http
        .get(format!("{}/dev/faults", s.base))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert_eq!(shown, set);

    // Delayed two hours, then sent twice: the paywall applies it once.
    let token = s.token("late");
    let session: Value = s
        .http
        .post(format!("{}/payment/create-checkout-session", s.base))
        .bearer_auth(&token)
        .json(&json!({"plan": "pro"}))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    let url = session["checkout_url"].as_str().expect("url");
    s.http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("outcome=succeeded")
        .send()
        .await
        .expect("answered");
    assert!(
        s.sim().deliveries().is_empty(),
        "nothing sent before the delay"
    );
    assert_eq!(s.status("late").await["has_paid"], false);
    s.advance("2h").await;
    assert_eq!(s.status("late").await["has_paid"], true);
    let sent = s.sim().deliveries();
    // Two events, each delivered and then repeated with the same id, newest first.
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert_eq!(sent[0].webhook_id, sent[1].webhook_id);
    assert_eq!(sent[0].event_type, "payment.succeeded");
    assert_eq!(sent[2].event_type, "subscription.active");
    assert!(sent.iter().all(|d| d.status == 200));

    let (_, reset) = s.post("/dev/faults", json!({})).await;
    assert_eq!(reset["drop_webhooks"], 0.0);
    assert_eq!(reset["delay_webhooks"], Value::Null);
}

#[tokio::test]
async fn a_move_beyond_ten_years_or_of_any_size_is_a_400_and_never_a_panic() {
    let s = stack("too-far").await;
    for bad in [
        json!({"advance": "1000000000000d"}),
        json!({"advance": "99999999999d"}),
        json!({"advance": "9223372036854775807s"}),
        json!({"advance": "3654d"}),
        json!({"to": "9999-01-01T00:00:00Z"}),
        json!({"to": "2037-01-16T10:00:00Z"}),
    ] {
        let (status, body) = s.post("/dev/clock", bad.clone()).await;
        assert_eq!(status, 400, "{bad} → {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("ten years")),
            "{body}"
        );
    }
    // Nothing moved, and the server still answers.
    assert_eq!(s.clock.now().to_rfc3339(), START);
    let (status, _) = s.post("/dev/clock", json!({"advance": "1h"})).await;
    assert_eq!(status, 200);
}

/// The trigger command, pointed at the local server after its clock moved, signs with
/// the server's virtual time (read from `GET /dev/clock`): the webhook takes it.
#[tokio::test]
async fn the_trigger_signs_with_the_local_servers_clock_after_it_moved() {
    let s = stack("trigger").await;
    s.advance("31d").await;
    let args = |extra: &[&str]| -> Vec<String> {
        [
            "payment.succeeded",
            "--user-id",
            "triggered",
            "--url",
            &format!("{}/payment/webhook", s.base),
        ]
        .iter()
        .chain(extra)
        .map(|a| a.to_string())
        .collect()
    };
    let trigger = dev::trigger::Trigger::parse(&args(&[])).expect("options");
    let (status, body) = trigger.send().await.expect("sent");
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.status("triggered").await["has_paid"], true);

    // An explicit --timestamp wins: the wall clock's time is a month behind this clock.
    let wall = Clock::system().now().unix_seconds().to_string();
    let stale =
        dev::trigger::Trigger::parse(&args(&["--timestamp", &wall, "--payment-id", "pay_stale"]))
            .expect("options");
    let (status, body) = stale.send().await.expect("sent");
    assert_eq!(status, 401, "{body}");

    // An event the paywall ignores (the README's harmless check of a deployed URL).
    let payout = dev::trigger::Trigger::parse(
        &[
            "payout.success",
            "--url",
            &format!("{}/payment/webhook", s.base),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>(),
    )
    .expect("options");
    let (status, body) = payout.send().await.expect("sent");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ignored"), "{body}");
}
