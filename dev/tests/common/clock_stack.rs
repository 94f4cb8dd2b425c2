//! The local stack on a test clock, driven over HTTP as a frontend and Dodo's pages
//! would: tokens, checkouts paid on the simulator's page, the clock moved, statuses read.
#![allow(dead_code)]

use std::sync::Arc;

use dev::local_server::{DEFAULT_JWT_SECRET, LocalStack, TestStack};
use paywall::time::Clock;
use serde_json::{Value, json};

/// Seconds since the epoch of an RFC 3339 time in a JSON answer.
pub fn at(value: &Value) -> i64 {
    paywall::time::Timestamp::parse_rfc3339(value.as_str().expect("a time"))
        .expect("RFC 3339")
        .unix_seconds()
}

/// Where the clock starts.
pub const START_AT: &str = "2027-01-15T10:00:00Z";

pub struct Stack {
    pub stack: Arc<LocalStack>,
    pub base: String,
    pub http: reqwest::Client,
    pub clock: Clock,
    _running: TestStack,
}

pub async fn stack(name: &str) -> Stack {
    stack_at(name, START_AT).await
}

/// The stack with its clock at `start` (RFC 3339).
pub async fn stack_at(name: &str, start: &str) -> Stack {
    let running = TestStack::start(&format!("clock-{name}"), start, 7)
        .await
        .expect("the stack starts");
    Stack {
        stack: Arc::clone(&running.stack),
        base: running.base.clone(),
        http: paywall::http::client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        clock: running.clock.clone(),
        _running: running,
    }
}

impl Stack {
    pub fn token(&self, user: &str) -> String {
        dev::dev_jwt::mint_with(
            DEFAULT_JWT_SECRET.as_bytes(),
            user,
            Some(&format!("{user}@example.com")),
            true,
            self.clock.now().unix_seconds(),
        )
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let answer = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("answered");
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    pub async fn advance(&self, by: &str) -> Value {
        let (status, body) = self.post("/dev/clock", json!({"advance": by})).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn status(&self, user: &str) -> Value {
        self.http
            .get(format!("{}/payment/status", self.base))
            .bearer_auth(self.token(user))
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("json")
    }

    /// Opens a checkout for `plan` and submits the simulator's page with `form`; the
    /// payment id, confirmed on the success route when paid.
    pub async fn buy(&self, user: &str, plan: &str, form: &str) -> String {
        let token = self.token(user);
        let location = self.checkout(&token, plan, form).await;
        let payment_id = location
            .split(['?', '&'])
            .find_map(|pair| pair.strip_prefix("payment_id="))
            .expect("a payment id")
            .to_owned();
        if location.contains("status=succeeded") {
            let confirmed = self
                .http
                .post(format!("{}/payment/success", self.base))
                .bearer_auth(&token)
                .json(&json!({"payment_id": payment_id}))
                .send()
                .await
                .expect("answered");
            assert_eq!(confirmed.status().as_u16(), 200);
        }
        payment_id
    }

    /// `method path` as `user` (a verified `{user}@example.com` unless `email` says
    /// otherwise), with a JSON body: the status and the JSON answer.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        user: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token(user));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.expect("answered");
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    /// A token for `user` with `email`, verified or not.
    pub fn token_with(&self, user: &str, email: &str, verified: bool) -> String {
        dev::dev_jwt::mint_with(
            DEFAULT_JWT_SECRET.as_bytes(),
            user,
            Some(email),
            verified,
            self.clock.now().unix_seconds(),
        )
    }

    /// `GET path` without a token (the local server's `/dev/*` routes): its JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("json")
    }

    /// The access events of `user`, oldest first: each one's `change`.
    pub async fn changes(&self, user: &str) -> Vec<String> {
        let listed = self.get_json(&format!("/dev/events?user_id={user}")).await;
        let mut events: Vec<(String, String)> = listed["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| {
                (
                    e["detail"]["at"].as_str().unwrap_or_default().to_owned(),
                    e["detail"]["change"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect();
        events.sort();
        events.into_iter().map(|(_, change)| change).collect()
    }

    /// Opens a checkout of `plan` as `token` and pays it on the simulator's page with
    /// `form`: where the page sends the buyer back.
    pub async fn checkout(&self, token: &str, plan: &str, form: &str) -> String {
        let session: Value = self
            .http
            .post(format!("{}/payment/create-checkout-session", self.base))
            .bearer_auth(token)
            .json(&json!({"plan": plan}))
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("json");
        let url = session["checkout_url"].as_str().expect("a checkout url");
        let paid = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned())
            .send()
            .await
            .expect("answered");
        assert_eq!(paid.status().as_u16(), 303);
        paid.headers()["location"]
            .to_str()
            .expect("text")
            .to_owned()
    }

    pub fn sim(&self) -> &dev::dodo_simulator::DodoSimulator {
        self.stack.simulator.as_ref().expect("the simulator")
    }

    pub fn events(&self, kind: &str) -> usize {
        self.sim()
            .deliveries()
            .iter()
            .filter(|d| d.attempt == 1 && d.event_type == kind)
            .count()
    }
}
