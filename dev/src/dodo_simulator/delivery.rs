//! Webhook delivery: each event signed (Standard Webhooks), its first attempt made at once,
//! non-2xx answers retried on Dodo's schedule (on the test clock, or in the background
//! compressed in time), with the delivery faults applied.

use paywall::time::Timestamp;
use serde_json::{Value, json};

use super::*;

impl DodoSimulator {
    /// Sends the events of one change, in Dodo's order (newest first under the
    /// `reorder_webhooks` fault: Dodo's documentation says delivery order is "not
    /// guaranteed", and each delivery carries the object's latest state).
    pub(super) async fn emit(&self, mut events: Emitted) {
        if self.faults().reorder_webhooks {
            events.reverse();
        }
        for (event_type, data) in events {
            self.send_event(&event_type, data).await;
        }
    }

    /// Sends one event to the webhook URL, Standard-Webhooks signed. The first attempt is
    /// made before returning, so that a local flow is deterministic (the redirect follows
    /// the delivery); non-2xx answers are retried on Dodo's schedule: on the simulator's
    /// test clock when it has one (run by [`Self::run_next_due`]), else in the background,
    /// compressed in time. Faults apply here: a dropped delivery is never sent nor
    /// retried, a delayed one waits, a duplicated one is sent twice.
    ///
    /// For a test's own event: its `data` is the test's, not the simulator's (recorded as
    /// shaped by the test).
    pub async fn deliver(&self, event_type: &str, data: Value) {
        self.mark_shaped_by_test();
        self.send_event(event_type, data).await;
    }

    /// Sends one event of the simulator's own (see [`Self::deliver`]).
    pub(super) async fn send_event(&self, event_type: &str, data: Value) {
        let Some(target) = self.webhook_target() else {
            return;
        };
        // `data` is the object itself, as the SDK's `*WebhookEvent` models have it (they
        // have no `payload_type`, so the simulator sends none and the paywall reads none).
        let is_subscription = event_type.starts_with("subscription.");
        let now_ms = self.now_millis();
        let (sent_at_ms, webhook_id) = self.change(|records| {
            let at = now_ms.max(records.last_event_ms + 1);
            records.last_event_ms = at;
            if let Some(user) = records.owner_of(&data) {
                records.index.last_event_by_user.insert(user, at);
            }
            (at, records.new_id("msg"))
        });
        let body = json!({
            "business_id": "bus_simulator",
            "type": event_type,
            "timestamp": rfc3339_millis(sent_at_ms),
            "data": data,
        })
        .to_string();
        record::webhook(self, event_type, &body);
        let object_id = data
            .get(if is_subscription {
                "subscription_id"
            } else {
                "payment_id"
            })
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let delivery = Pending {
            simulator: self.clone(),
            target,
            event_type: event_type.to_owned(),
            webhook_id,
            body,
            object_id,
        };
        let (dropped, delay) = self.with(|inner| {
            let p = inner.faults.drop_webhooks;
            let dropped = Self::chance(inner, p);
            let delay = inner.faults.delay().filter(|_| !dropped);
            inner.faults_injected += u64::from(delay.is_some());
            (dropped, delay)
        });
        if dropped {
            self.with(|inner| {
                inner.deliveries.push(Delivery {
                    event_type: delivery.event_type.clone(),
                    webhook_id: delivery.webhook_id.clone(),
                    attempt: 1,
                    status: 0,
                    dropped: true,
                    at_ms: now_ms,
                    outcome: None,
                    object_id: delivery.object_id.clone(),
                })
            });
            return;
        }
        match delay {
            Some(delay) if self.clock().is_test() => {
                self.change(|records| {
                    records.schedule_ms(now_ms + delay.as_millis() as i64, delivery.as_action(1))
                });
            }
            Some(delay) => {
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    delivery.attempt_and_follow_up(1).await;
                });
            }
            None => delivery.attempt_and_follow_up(1).await,
        }
    }
}

/// `2026-11-28T04:35:26.123Z`
pub(super) fn rfc3339_millis(ms: i64) -> String {
    let text = Timestamp::from_unix_seconds(ms.div_euclid(1000)).to_rfc3339();
    match text.strip_suffix('Z') {
        Some(seconds) => format!("{seconds}.{:03}Z", ms.rem_euclid(1000)),
        None => text,
    }
}

/// One event on its way to the webhook, across its attempts (same `webhook-id`, a fresh
/// timestamp and signature each time, as Standard Webhooks senders do).
pub(super) struct Pending {
    pub(super) simulator: DodoSimulator,
    pub(super) target: WebhookTarget,
    pub(super) event_type: String,
    pub(super) webhook_id: String,
    pub(super) body: String,
    pub(super) object_id: String,
}

impl Pending {
    pub(super) fn as_action(&self, attempt: u32) -> Action {
        Action::Deliver {
            event_type: self.event_type.clone(),
            webhook_id: self.webhook_id.clone(),
            body: self.body.clone(),
            attempt,
            object_id: self.object_id.clone(),
        }
    }

    /// Attempt `attempt`; then a duplicate (the fault), or the next retry when refused.
    pub(super) async fn attempt_and_follow_up(self, attempt: u32) {
        if self.attempt(attempt).await {
            let duplicate = self.simulator.with(|inner| {
                let p = inner.faults.duplicate_webhooks;
                DodoSimulator::chance(inner, p)
            });
            if duplicate {
                self.attempt(attempt).await;
            }
            return;
        }
        let Some(pause) = DODO_RETRY_SCHEDULE.get(attempt as usize - 1).copied() else {
            return; // Dodo gives up after its last attempt.
        };
        let clock = self.simulator.clock();
        if clock.is_test() {
            let at = clock.now_millis() + pause.as_millis() as i64;
            let action = self.as_action(attempt + 1);
            self.simulator
                .change(|records| records.schedule_ms(at, action));
            return;
        }
        tokio::spawn(async move {
            let compression = self.target.time_compression.max(1);
            let mut attempt = attempt;
            for pause in &DODO_RETRY_SCHEDULE[attempt as usize - 1..] {
                tokio::time::sleep(*pause / compression).await;
                attempt += 1;
                if self.attempt(attempt).await {
                    return;
                }
            }
        });
    }

    /// Returns whether the endpoint answered 2xx.
    pub(super) async fn attempt(&self, attempt: u32) -> bool {
        let now_ms = self.simulator.now_millis();
        let timestamp = now_ms.div_euclid(1000);
        let signature = self
            .target
            .secret
            .sign(&self.webhook_id, timestamp, self.body.as_bytes());
        let answer = self
            .simulator
            .shared
            .http
            .post(&self.target.url)
            .header("content-type", "application/json")
            .header("webhook-id", &self.webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(self.body.clone())
            .send()
            .await;
        let (status, outcome) = match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or_default();
                let outcome = body["outcome"].as_str().map(str::to_owned);
                (status, outcome)
            }
            Err(_) => (0, None),
        };
        self.simulator.with(|inner| {
            inner.deliveries.push(Delivery {
                event_type: self.event_type.clone(),
                webhook_id: self.webhook_id.clone(),
                attempt,
                status,
                dropped: false,
                at_ms: now_ms,
                outcome,
                object_id: self.object_id.clone(),
            })
        });
        (200..300).contains(&status)
    }
}
