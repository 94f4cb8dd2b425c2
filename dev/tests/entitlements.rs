//! Entitlements, metered limits, the server API and access events, through the local
//! stack's HTTP routes (the demo catalogue: a free tier of 20 `api_calls`, a `monthly`
//! pass with 1000 and a `pro` subscription with 10000), as a frontend and the founder's
//! backend call them.

use dev::local_server::{DEFAULT_JWT_SECRET, TestStack};
use paywall::time::{Clock, Timestamp};
use serde_json::{Value, json};

const START: &str = "2027-03-10T10:00:00Z";

struct Stack {
    base: String,
    http: reqwest::Client,
    clock: Clock,
    _running: TestStack,
}

async fn stack(name: &str) -> Stack {
    let running = TestStack::start(&format!("ent-{name}"), START, 11)
        .await
        .expect("the stack starts");
    Stack {
        base: running.base.clone(),
        http: paywall::http::client(),
        clock: running.clock.clone(),
        _running: running,
    }
}

impl Stack {
    fn user_token(&self, user: &str) -> String {
        dev::dev_jwt::mint_with(
            DEFAULT_JWT_SECRET.as_bytes(),
            user,
            Some(&format!("{user}@example.com")),
            true,
            self.clock.now().unix_seconds(),
        )
    }

    async fn server_token(&self) -> String {
        let minted: Value = self
            .http
            .get(format!(
                "{}/dev/token?server=1&name=billing-backend",
                self.base
            ))
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("json");
        minted["token"].as_str().expect("a token").to_owned()
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.expect("answered");
        let status = answer.status().as_u16();
        let headers = answer.headers().clone();
        (status, answer.json().await.unwrap_or(Value::Null), headers)
    }

    async fn entitlements(&self, user: &str) -> Value {
        let (status, body, _) = self
            .call(
                reqwest::Method::GET,
                "/payment/entitlements",
                Some(&self.user_token(user)),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn usage(&self, token: &str, body: Value) -> (u16, Value, bool) {
        let (status, answer, headers) = self
            .call(
                reqwest::Method::POST,
                "/server/usage",
                Some(token),
                Some(body),
            )
            .await;
        (status, answer, headers.contains_key("idempotent-replayed"))
    }

    /// Buys the pass through the simulator's page and the success route.
    async fn buy_pass(&self, user: &str) -> String {
        self.buy(user, "monthly", "outcome=succeeded").await
    }

    /// Buys `plan` with the simulator's card `form`, confirmed on the success route; the
    /// payment id.
    async fn buy(&self, user: &str, plan: &str, form: &str) -> String {
        let token = self.user_token(user);
        let (status, session, _) = self
            .call(
                reqwest::Method::POST,
                "/payment/create-checkout-session",
                Some(&token),
                Some(json!({"plan": plan})),
            )
            .await;
        assert_eq!(status, 200, "{session}");
        let paid = paywall::http::client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
            .post(session["checkout_url"].as_str().expect("url"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned())
            .send()
            .await
            .expect("answered");
        let location = paid.headers()["location"]
            .to_str()
            .expect("text")
            .to_owned();
        let payment_id = location
            .split(['?', '&'])
            .find_map(|pair| pair.strip_prefix("payment_id="))
            .expect("a payment id")
            .to_owned();
        let (status, body, _) = self
            .call(
                reqwest::Method::POST,
                "/payment/success",
                Some(&token),
                Some(json!({"payment_id": payment_id})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        payment_id
    }

    async fn advance(&self, to: &str) {
        let (status, body, _) = self
            .call(
                reqwest::Method::POST,
                "/dev/clock",
                None,
                Some(json!({"to": to})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// The changes published for `user`, oldest first, with their causes.
    async fn changes(&self, user: &str) -> Vec<(String, String)> {
        let mut events = self.events(user).await;
        events.reverse();
        events
            .iter()
            .map(|e| {
                let detail = &e["detail"];
                let cause = detail["cause"].as_str().expect("a cause");
                // A Dodo delivery id names the webhook that caused it; a purchase is
                // applied by whichever comes first, its webhook or the success call.
                let cause = if cause.starts_with("msg_") {
                    "webhook"
                } else {
                    cause
                };
                (
                    detail["change"].as_str().expect("a change").to_owned(),
                    cause.to_owned(),
                )
            })
            .collect()
    }

    async fn events(&self, user: &str) -> Vec<Value> {
        let (status, body, _) = self
            .call(
                reqwest::Method::GET,
                &if user.is_empty() {
                    "/dev/events".to_owned()
                } else {
                    format!("/dev/events?user_id={user}")
                },
                None,
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["events"].as_array().expect("a list").clone()
    }
}

#[tokio::test]
async fn entitlements_follow_what_was_paid_and_status_keeps_its_fields() {
    let s = stack("follow").await;
    let free = s.entitlements("ana").await;
    assert_eq!(free["plan"], "free");
    assert_eq!(free["source"], Value::Null);
    assert_eq!(free["valid_until"], Value::Null);
    assert_eq!(free["features"], json!(["basic"]));
    assert_eq!(
        free["limits"]["api_calls"],
        json!({"limit": 20, "used": 0, "remaining": 20, "resets_at": "2027-04-01T00:00:00Z"})
    );

    s.buy_pass("ana").await;
    let paid = s.entitlements("ana").await;
    assert_eq!(paid["plan"], "monthly");
    assert_eq!(paid["source"], "pass");
    assert_eq!(paid["valid_until"], "2027-04-09T10:00:00Z");
    assert_eq!(paid["features"], json!(["basic", "export"]));
    assert_eq!(paid["limits"]["api_calls"]["limit"], 1000);
    assert_eq!(
        paid["limits"]["api_calls"]["resets_at"],
        "2027-04-09T10:00:00Z"
    );
    let (_, status, _) = s
        .call(
            reqwest::Method::GET,
            "/payment/status",
            Some(&s.user_token("ana")),
            None,
        )
        .await;
    assert_eq!(status["has_paid"], true);
    assert_eq!(status["subscription_plan"], "monthly");
    assert_eq!(status["plan_expires_at"], paid["valid_until"]);

    // The purchase was published once, as `granted`.
    let events = s.events("ana").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail-type"], "Access Changed");
    assert_eq!(events[0]["detail"]["change"], "granted");
    assert_eq!(events[0]["detail"]["before"]["plan"], "free");
    assert_eq!(events[0]["detail"]["after"]["plan"], "monthly");
}

#[tokio::test]
async fn concurrent_usage_never_takes_more_than_the_limit_and_keys_replay() {
    let s = stack("usage").await;
    let server = s.server_token().await;
    let calls = (0..40).map(|i| {
        let s = &s;
        let server = server.clone();
        async move {
            s.usage(
                &server,
                json!({"user_id": "bo", "feature": "api_calls", "amount": 1,
                       "idempotency_key": format!("call-{i}")}),
            )
            .await
        }
    });
    let answers = futures_join_all(calls).await;
    let mut remaining: Vec<u64> = Vec::new();
    for (status, answer, _) in &answers {
        assert_eq!(*status, 200, "{answer}");
        if answer["allowed"] == true {
            remaining.push(answer["remaining"].as_u64().expect("a number"));
        } else {
            assert_eq!(answer["remaining"], 0, "{answer}");
        }
    }
    remaining.sort_unstable();
    assert_eq!(remaining, (0..20).collect::<Vec<u64>>(), "each unit once");
    let after = s.entitlements("bo").await;
    assert_eq!(after["limits"]["api_calls"]["used"], 20);
    assert_eq!(after["limits"]["api_calls"]["remaining"], 0);

    // A repeated key answers as the first call did and consumes nothing more.
    let first = answers[0].1.clone();
    let (status, again, replayed) = s
        .usage(
            &server,
            json!({"user_id": "bo", "feature": "api_calls", "amount": 1, "idempotency_key": "call-0"}),
        )
        .await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(again, first);
    // The same key for another request is refused, and consumes nothing.
    let (status, refused, _) = s
        .usage(
            &server,
            json!({"user_id": "bo", "feature": "api_calls", "amount": 5, "idempotency_key": "call-0"}),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "idempotency_key_reused");

    // A limit the plan does not have is never allowed; bad input changes nothing.
    let (_, none, _) = s
        .usage(
            &server,
            json!({"user_id": "bo", "feature": "seats", "amount": 1, "idempotency_key": "s-1"}),
        )
        .await;
    assert_eq!(none, json!({"allowed": false, "remaining": 0}));
    for bad in [
        json!({"user_id": "bo", "feature": "api_calls", "amount": 0, "idempotency_key": "b"}),
        json!({"user_id": "bo", "feature": "api_calls", "amount": 1.5, "idempotency_key": "b"}),
        json!({"user_id": "bo", "feature": "api_calls", "amount": 1}),
        json!({"user_id": "", "feature": "api_calls", "amount": 1, "idempotency_key": "b"}),
        json!({"user_id": "bo", "feature": "api_calls", "amount": 1, "idempotency_key": "b", "extra": 1}),
    ] {
        let (status, answer, _) = s.usage(&server, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request");
    }
    assert_eq!(
        s.entitlements("bo").await["limits"]["api_calls"]["used"],
        20
    );

    // A new period (the free tier's is the calendar month) starts from zero.
    let (status, _, _) = s
        .call(
            reqwest::Method::POST,
            "/dev/clock",
            None,
            Some(json!({"to": "2027-04-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, 200);
    let next = s.entitlements("bo").await;
    let server = s.server_token().await;
    assert_eq!(next["limits"]["api_calls"]["used"], 0);
    assert_eq!(
        next["limits"]["api_calls"]["resets_at"],
        "2027-05-01T00:00:00Z"
    );
    let (_, allowed, _) = s
        .usage(
            &server,
            json!({"user_id": "bo", "feature": "api_calls", "amount": 20, "idempotency_key": "april"}),
        )
        .await;
    assert_eq!(allowed, json!({"allowed": true, "remaining": 0}));
}

async fn futures_join_all<F: std::future::Future>(
    calls: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for call in calls {
        set.push(call);
    }
    let mut outputs = Vec::with_capacity(set.len());
    // Poll them together: a hand-rolled join_all (no `futures` crate for one test).
    let mut pinned: Vec<_> = set.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, future) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(output) => done[i] = Some(output),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.extend(done.into_iter().flatten());
    outputs
}

#[tokio::test]
async fn the_server_routes_take_server_tokens_only() {
    let s = stack("auth").await;
    let user = s.user_token("cy");
    let server = s.server_token().await;
    let usage =
        json!({"user_id": "cy", "feature": "api_calls", "amount": 1, "idempotency_key": "k"});
    for token in [None, Some(user.as_str()), Some("not-a-token")] {
        let (status, answer, _) = s
            .call(
                reqwest::Method::POST,
                "/server/usage",
                token,
                Some(usage.clone()),
            )
            .await;
        assert_eq!(status, 403, "{token:?}: {answer}");
        let (status, _, _) = s
            .call(reqwest::Method::GET, "/server/users/cy", token, None)
            .await;
        assert_eq!(status, 403);
    }
    // Nothing was consumed by the refused calls.
    assert_eq!(s.entitlements("cy").await["limits"]["api_calls"]["used"], 0);
    // A server token is nobody's user token.
    let (status, _, _) = s
        .call(reqwest::Method::GET, "/payment/status", Some(&server), None)
        .await;
    assert_eq!(status, 401);
    let (status, answer, _) = s
        .call(reqwest::Method::GET, "/server/nothing", Some(&server), None)
        .await;
    assert_eq!(status, 404, "{answer}");
}

#[tokio::test]
async fn grants_are_given_taken_back_audited_and_published() {
    let s = stack("grants").await;
    let server = s.server_token().await;
    let grants = "/server/users/dee/grants";
    for bad in [
        json!({"plan": "platinum", "days": 10, "reason": "x"}),
        json!({"plan": "pro", "days": 0, "reason": "x"}),
        json!({"plan": "pro", "days": 10}),
    ] {
        let (status, answer, _) = s
            .call(
                reqwest::Method::POST,
                grants,
                Some(&server),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {answer}");
    }
    let (status, given, _) = s
        .call(
            reqwest::Method::POST,
            grants,
            Some(&server),
            Some(json!({"plan": "pro", "days": 10, "reason": "outage make-good"})),
        )
        .await;
    assert_eq!(status, 200, "{given}");
    let entitled = s.entitlements("dee").await;
    assert_eq!(entitled["plan"], "pro");
    assert_eq!(entitled["source"], "grant");
    assert_eq!(entitled["valid_until"], "2027-03-20T10:00:00Z");
    assert_eq!(entitled["limits"]["seats"]["limit"], 5);
    let (_, status, _) = s
        .call(
            reqwest::Method::GET,
            "/payment/status",
            Some(&s.user_token("dee")),
            None,
        )
        .await;
    assert_eq!(
        (status["has_paid"].clone(), status["plan"].clone()),
        (json!(true), json!("pro"))
    );

    let (status, _, _) = s
        .call(
            reqwest::Method::POST,
            "/dev/clock",
            None,
            Some(json!({"advance": "1h"})),
        )
        .await;
    assert_eq!(status, 200);
    let server = s.server_token().await;
    let (status, taken, _) = s
        .call(
            reqwest::Method::DELETE,
            grants,
            Some(&server),
            Some(json!({"reason": "granted by mistake"})),
        )
        .await;
    assert_eq!(status, 200, "{taken}");
    assert_eq!(s.entitlements("dee").await["plan"], "free");
    let (status, _, _) = s
        .call(reqwest::Method::DELETE, grants, Some(&server), None)
        .await;
    assert_eq!(status, 404, "nothing left to take back");

    // The user's page: newest first, paginated, each action with reason and identity.
    let (status, page, _) = s
        .call(
            reqwest::Method::GET,
            "/server/users/dee?limit=1",
            Some(&server),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["entitlements"]["plan"], "free");
    assert_eq!(page["grant"], Value::Null);
    let first = &page["audit"]["entries"][0];
    assert_eq!(first["event_type"], "server.grant_revoked");
    assert_eq!(first["reason"], "granted by mistake");
    assert_eq!(
        first["actor"],
        "arn:aws:iam::000000000000:user/billing-backend"
    );
    let cursor = page["audit"]["next_cursor"].as_str().expect("a next page");
    let (_, next, _) = s
        .call(
            reqwest::Method::GET,
            &format!("/server/users/dee?limit=1&cursor={cursor}"),
            Some(&server),
            None,
        )
        .await;
    assert_eq!(next["audit"]["entries"][0]["event_type"], "server.grant");
    assert_eq!(next["audit"]["entries"][0]["reason"], "outage make-good");
    assert_eq!(next["audit"]["next_cursor"], Value::Null);

    let events = s.events("dee").await;
    let changes: Vec<&str> = events
        .iter()
        .map(|e| e["detail"]["change"].as_str().expect("a change"))
        .collect();
    assert_eq!(changes, ["comp_revoked", "comp_granted"], "newest first");
    assert!(events.iter().all(|e| e["detail"]["cause"] == "server"));
    assert_eq!(events[1]["detail"]["after"]["source"], "grant");
}

#[tokio::test]
async fn every_change_of_access_is_published_once_with_its_cause() {
    let s = stack("events").await;
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    };
    // A pass: granted at purchase, expired within the hour after it ran out.
    let pass = s.buy_pass("eve").await;
    // A subscription that renews; one whose renewal is declined; one refunded.
    s.buy("gus", "pro", "outcome=succeeded").await;
    s.buy("fay", "pro", "outcome=succeeded&renewal=fails").await;
    let refunded = s.buy("hal", "monthly", "outcome=succeeded").await;
    // Events of one second have no order between them (neither has EventBridge): the
    // refund comes later.
    s.advance("2027-03-10T10:10:00Z").await;
    let refund = s
        .http
        .post(format!("{}/dodo/refunds", s.base))
        .bearer_auth("sk_local_simulator")
        .json(&json!({"payment_id": refunded}))
        .send()
        .await
        .expect("answered");
    assert_eq!(refund.status().as_u16(), 200);
    s.advance("2027-03-10T10:30:00Z").await;
    let purchase = |changes: Vec<(String, String)>| -> Vec<(String, String)> {
        changes
            .into_iter()
            .map(|(change, cause)| match (change.as_str(), cause.as_str()) {
                ("granted", "webhook" | "success") => (change, "purchase".to_owned()),
                _ => (change, cause),
            })
            .collect()
    };
    assert_eq!(
        purchase(s.changes("hal").await),
        pairs(&[("granted", "purchase"), ("revoked", "webhook")])
    );

    s.advance("2027-04-10T12:00:00Z").await;
    let eve = s.events("eve").await;
    assert_eq!(
        purchase(s.changes("eve").await),
        pairs(&[("granted", "purchase"), ("expired", "expiry")])
    );
    // Within the hour after access ended (2027-04-09T10:00:00Z).
    let expired_at = Timestamp::parse_rfc3339(eve[0]["detail"]["at"].as_str().expect("at"))
        .expect("a time")
        .unix_seconds();
    let ended = Timestamp::parse_rfc3339("2027-04-09T10:00:00Z")
        .expect("a time")
        .unix_seconds();
    assert!((ended..=ended + 3600).contains(&expired_at), "{eve:?}");
    assert_eq!(eve[0]["detail"]["after"]["plan"], "free");
    assert_eq!(eve[0]["detail"]["before"]["plan"], "monthly");
    let _ = pass;

    assert_eq!(
        purchase(s.changes("gus").await),
        pairs(&[("granted", "purchase"), ("renewed", "webhook")])
    );
    assert_eq!(
        purchase(s.changes("fay").await),
        pairs(&[("granted", "purchase"), ("on_hold", "webhook")])
    );
    // Nothing else: every event id once.
    let all = s.events("").await;
    let mut ids: Vec<&str> = all
        .iter()
        .map(|e| e["detail"]["event_id"].as_str().expect("an id"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all.len());
}
