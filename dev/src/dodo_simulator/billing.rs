//! What Dodo does over time, on the simulator's clock: subscriptions renew each period,
//! a failing card puts them on hold and is retried on Dodo's schedule, a cancellation at
//! period end takes effect then, refunds and disputes are raised and resolved.
//!
//! The model (Dodo's documentation, 2026; README "Test clock" says the same):
//! - A subscription is bought in a checkout: `subscription.active` and the first
//!   `payment.succeeded` (the payment names the subscription and carries no cart).
//! - Each month (calendar month, from the day it started) Dodo charges the card. Paid:
//!   `payment.succeeded` and `subscription.renewed`, `previous_billing_date` becomes the
//!   old `next_billing_date`, which moves on a month. Declined: `payment.failed` and
//!   `subscription.on_hold`; Dodo's payment retries (on, with the default 13-day recovery
//!   window) charge again 12 h, 36 h, 3.5 d, 6.5 d and 10.5 d after the failure, each
//!   failure another `payment.failed`. A retry that succeeds makes it `active` again
//!   (`payment.succeeded`, `subscription.active`, a new period from then). When the window
//!   ends it stays `on_hold` (Dodo neither cancels nor expires it).
//! - A new card (the customer, in the portal) charges an on-hold subscription at once.
//! - `cancel_at_next_billing_date` (`PATCH /subscriptions/{id}`): `subscription.updated`
//!   now; at the period's end no charge, status `cancelled`, `subscription.cancelled`.
//! - `POST /refunds` refunds a payment in full: `refund.succeeded`.
//! - A dispute (simulator-only: banks raise them) is `dispute.opened` now and
//!   `dispute.won` or `dispute.lost` seven days later.

use paywall::time::{SECONDS_PER_DAY, Timestamp, add_months};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{DEFAULT_PRICE_MINOR, Records, find_customer};

/// Payment retries after a failed renewal, as offsets from the failure (Dodo's schedule
/// within its default 13-day recovery window).
pub const RETRY_AFTER_FAILURE: [i64; 5] = [12 * 3600, 36 * 3600, 84 * 3600, 156 * 3600, 252 * 3600];

/// How long a dispute stays open before the bank decides.
pub const DISPUTE_RESOLVES_AFTER: i64 = 7 * SECONDS_PER_DAY;

/// Something the simulator will do at a moment of its clock.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Scheduled {
    pub at_ms: i64,
    /// Ties at the same moment run in the order they were scheduled.
    pub seq: u64,
    pub action: Action,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub(super) enum Action {
    /// Charge the period that starts at `due` (the subscription's `next_billing_date`).
    Renew {
        subscription_id: String,
        due: i64,
    },
    /// The `attempt`-th retry of the renewal that failed at `failed_at`.
    RetryCharge {
        subscription_id: String,
        failed_at: i64,
        attempt: usize,
    },
    ResolveDispute {
        dispute_id: String,
        won: bool,
    },
    /// A webhook delivery attempt (its first, delayed, or a retry).
    Deliver {
        event_type: String,
        webhook_id: String,
        body: String,
        attempt: u32,
        #[serde(default)]
        object_id: String,
    },
}

/// Events one change produces, in the order Dodo would send them.
pub(super) type Emitted = Vec<(String, Value)>;

fn rfc3339(seconds: i64) -> String {
    Timestamp::from_unix_seconds(seconds).to_rfc3339()
}

fn seconds_of(value: &Value, key: &str) -> Option<i64> {
    value
        .get(key)
        .and_then(Value::as_str)
        .and_then(Timestamp::parse_rfc3339)
        .map(Timestamp::unix_seconds)
}

/// A payment as Dodo's `GET /payments/{id}` answers it.
pub(super) struct NewPayment<'a> {
    pub id: String,
    pub now: i64,
    pub succeeded: bool,
    pub quantity: i64,
    pub customer: &'a Value,
    pub metadata: Value,
    pub checkout_session_id: Option<&'a str>,
    pub subscription_id: Option<&'a str>,
    /// `None` for a subscription's payments: Dodo sends no cart with those.
    pub product_cart: Option<Value>,
    pub retry_attempt: usize,
    /// What a subscription's charge pays for: Dodo's `charge_type` (`new`, `renewal`) and
    /// the period it starts, `[start, end)` (its `service_periods` once succeeded).
    pub charge: Option<(&'a str, (i64, i64))>,
}

impl NewPayment<'_> {
    pub fn into_json(self) -> Value {
        let amount = DEFAULT_PRICE_MINOR * self.quantity.max(1);
        // Dodo's `service_periods`: empty unless the payment succeeded and pays a
        // subscription's period (SDK `Payment.service_periods`).
        let service_periods = match (self.charge, self.subscription_id) {
            (Some((_, (start, end))), Some(subscription_id)) if self.succeeded => json!([{
                "subscription_id": subscription_id,
                "starts_at": rfc3339(start),
                "ends_at": rfc3339(end),
                "proration_factor": "1",
            }]),
            _ => json!([]),
        };
        json!({
            "payment_id": self.id,
            "business_id": "bus_simulator",
            "brand_id": "bus_simulator",
            "created_at": rfc3339(self.now),
            "updated_at": rfc3339(self.now),
            "status": if self.succeeded { "succeeded" } else { "failed" },
            "total_amount": amount,
            "currency": "USD",
            "settlement_amount": amount,
            "settlement_currency": "USD",
            "customer": {
                "customer_id": self.customer["customer_id"],
                "email": self.customer["email"],
                "name": self.customer["name"],
            },
            "billing": {"country": "US"},
            "metadata": self.metadata,
            "checkout_session_id": self.checkout_session_id,
            "subscription_id": self.subscription_id,
            "subscription_ids": self.subscription_id.map_or_else(Vec::new, |id| vec![id]),
            "product_cart": self.product_cart,
            "disputes": [],
            "refunds": [],
            "payment_method": "card",
            "payment_provider": "dodo",
            "digital_products_delivered": false,
            "is_multi_subscription": false,
            "is_update_payment_method": false,
            "retry_attempt": self.retry_attempt,
            "includes_usage": false,
            "service_periods": service_periods,
            "charge_type": self.charge.map(|(charge_type, _)| charge_type),
            "error_code": if self.succeeded { Value::Null } else { json!("CARD_DECLINED") },
            "error_message": if self.succeeded { Value::Null } else { json!("Your card was declined.") },
        })
    }
}

impl Records {
    pub(super) fn schedule(&mut self, at_seconds: i64, action: Action) {
        self.schedule_ms(at_seconds * 1000, action);
    }

    pub(super) fn schedule_ms(&mut self, at_ms: i64, action: Action) {
        self.next_seq += 1;
        self.schedule.push(Scheduled {
            at_ms,
            seq: self.next_seq,
            action,
        });
    }

    /// A subscription bought in checkout `session_id`, active from `now`.
    pub(super) fn start_subscription(
        &mut self,
        now: i64,
        product_id: &str,
        customer: &Value,
        metadata: &Value,
        renewal_fails: bool,
    ) -> Value {
        let id = self.new_id("sub");
        let next = add_months(now, 1);
        // Every field Dodo's `Subscription` requires (SDK `types/subscription.py`); the
        // simulator sells no addons, meters or credits, so those lists are empty.
        let subscription = json!({
            "subscription_id": id,
            "brand_id": "bus_simulator",
            "status": "active",
            "product_id": product_id,
            "quantity": 1,
            "customer": {
                "customer_id": customer["customer_id"],
                "email": customer["email"],
                "name": customer["name"],
            },
            "metadata": metadata,
            "created_at": rfc3339(now),
            "previous_billing_date": rfc3339(now),
            "next_billing_date": rfc3339(next),
            "cancel_at_next_billing_date": false,
            "cancelled_at": null,
            "payment_frequency_count": 1,
            "payment_frequency_interval": "Month",
            "subscription_period_count": 10,
            "subscription_period_interval": "Year",
            "recurring_pre_tax_amount": DEFAULT_PRICE_MINOR,
            "currency": "USD",
            "tax_inclusive": false,
            "trial_period_days": 0,
            "on_demand": false,
            "billing": {"country": "US"},
            "has_payment_method": true,
            "addons": [],
            "meters": [],
            "credit_entitlement_cart": [],
            "meter_credit_entitlement_cart": [],
        });
        self.note_object(&id, &subscription);
        self.subscriptions.insert(id.clone(), subscription.clone());
        self.renewal_fails.insert(id.clone(), renewal_fails);
        self.schedule(
            next,
            Action::Renew {
                subscription_id: id,
                due: next,
            },
        );
        subscription
    }

    /// One charge of a subscription, for the period `period` (a renewal's, or a new one
    /// from now when it recovers from on hold): the payment, stored.
    fn charge(
        &mut self,
        subscription_id: &str,
        now: i64,
        retry_attempt: usize,
        period: (i64, i64),
    ) -> Value {
        let id = self.new_id("pay");
        let subscription = &self.subscriptions[subscription_id];
        let customer_id = subscription
            .pointer("/customer/customer_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let customer = find_customer(self, customer_id)
            .cloned()
            .unwrap_or_else(|| subscription["customer"].clone());
        let succeeds = !self
            .renewal_fails
            .get(subscription_id)
            .copied()
            .unwrap_or(false);
        let payment = NewPayment {
            id,
            now,
            succeeded: succeeds,
            quantity: 1,
            customer: &customer,
            metadata: subscription["metadata"].clone(),
            checkout_session_id: None,
            subscription_id: Some(subscription_id),
            product_cart: None,
            retry_attempt,
            charge: Some(("renewal", period)),
        }
        .into_json();
        let id = payment["payment_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.note_object(&id, &payment);
        self.payments.insert(id, payment.clone());
        payment
    }

    /// Starts a new paid period at `now` (a recovered subscription).
    fn reactivate(&mut self, subscription_id: &str, now: i64) -> Value {
        let next = add_months(now, 1);
        self.holds.remove(subscription_id);
        let subscription = self
            .subscriptions
            .get_mut(subscription_id)
            .expect("the subscription exists");
        subscription["status"] = json!("active");
        subscription["previous_billing_date"] = json!(rfc3339(now));
        subscription["next_billing_date"] = json!(rfc3339(next));
        let snapshot = subscription.clone();
        self.schedule(
            next,
            Action::Renew {
                subscription_id: subscription_id.to_owned(),
                due: next,
            },
        );
        snapshot
    }

    /// The charge that failed at `now` (`retry_attempt` 0: the renewal itself): on hold,
    /// with the next retry scheduled if the recovery window has one left.
    fn hold(&mut self, subscription_id: &str, failed_at: i64, next_attempt: usize) -> Value {
        self.holds.insert(subscription_id.to_owned(), failed_at);
        if let Some(offset) = RETRY_AFTER_FAILURE.get(next_attempt - 1) {
            self.schedule(
                failed_at + offset,
                Action::RetryCharge {
                    subscription_id: subscription_id.to_owned(),
                    failed_at,
                    attempt: next_attempt,
                },
            );
        }
        let subscription = self
            .subscriptions
            .get_mut(subscription_id)
            .expect("the subscription exists");
        subscription["status"] = json!("on_hold");
        subscription.clone()
    }

    /// Runs one scheduled billing action at `now`; what it emits.
    pub(super) fn run_billing(&mut self, action: &Action, now: i64) -> Emitted {
        match action {
            Action::Renew {
                subscription_id,
                due,
            } => {
                let Some(subscription) = self.subscriptions.get(subscription_id) else {
                    return vec![];
                };
                // Stale: the period moved (a recovery) or the subscription stopped.
                if subscription["status"] != "active"
                    || seconds_of(subscription, "next_billing_date") != Some(*due)
                {
                    return vec![];
                }
                if subscription["cancel_at_next_billing_date"] == true {
                    let subscription = self.subscriptions.get_mut(subscription_id).expect("exists");
                    subscription["status"] = json!("cancelled");
                    subscription["cancelled_at"] = json!(rfc3339(now));
                    return vec![("subscription.cancelled".into(), subscription.clone())];
                }
                let payment = self.charge(subscription_id, now, 0, (*due, add_months(*due, 1)));
                if payment["status"] == "succeeded" {
                    let next = add_months(*due, 1);
                    let subscription = self.subscriptions.get_mut(subscription_id).expect("exists");
                    subscription["previous_billing_date"] = json!(rfc3339(*due));
                    subscription["next_billing_date"] = json!(rfc3339(next));
                    let mut snapshot = subscription.clone();
                    // `subscription.renewed` names the payment that renewed it (SDK
                    // `SubscriptionRenewedWebhookEvent.Data.payment_id`).
                    snapshot["payment_id"] = payment["payment_id"].clone();
                    self.schedule(
                        next,
                        Action::Renew {
                            subscription_id: subscription_id.clone(),
                            due: next,
                        },
                    );
                    vec![
                        ("payment.succeeded".into(), payment),
                        ("subscription.renewed".into(), snapshot),
                    ]
                } else {
                    let snapshot = self.hold(subscription_id, now, 1);
                    vec![
                        ("payment.failed".into(), payment),
                        ("subscription.on_hold".into(), snapshot),
                    ]
                }
            }
            Action::RetryCharge {
                subscription_id,
                failed_at,
                attempt,
            } => {
                let current = self.subscriptions.get(subscription_id);
                let still_on_this_hold = current.is_some_and(|s| s["status"] == "on_hold")
                    && self.holds.get(subscription_id) == Some(failed_at);
                if !still_on_this_hold {
                    return vec![];
                }
                let payment =
                    self.charge(subscription_id, now, *attempt, (now, add_months(now, 1)));
                if payment["status"] == "succeeded" {
                    let snapshot = self.reactivate(subscription_id, now);
                    vec![
                        ("payment.succeeded".into(), payment),
                        ("subscription.active".into(), snapshot),
                    ]
                } else {
                    self.holds.remove(subscription_id);
                    self.hold(subscription_id, *failed_at, attempt + 1);
                    vec![("payment.failed".into(), payment)]
                }
            }
            Action::ResolveDispute { dispute_id, won } => {
                let Some(dispute) = self
                    .disputes
                    .iter_mut()
                    .find(|d| d["dispute_id"] == dispute_id.as_str())
                else {
                    return vec![];
                };
                let status = if *won { "dispute_won" } else { "dispute_lost" };
                dispute["dispute_status"] = json!(status);
                // Dodo's `Dispute` has no `updated_at`: when it was decided is the
                // simulator's own note (tests' truth), not part of the object.
                self.dispute_decided_at.insert(dispute_id.clone(), now);
                let snapshot = dispute.clone();
                self.mirror_dispute(&snapshot);
                let event = if *won { "dispute.won" } else { "dispute.lost" };
                vec![(event.into(), snapshot)]
            }
            Action::Deliver { .. } => vec![],
        }
    }

    /// The customer gave a new card (`succeeds`: whether it pays). An on-hold
    /// subscription is charged with it at once.
    pub(super) fn new_card(&mut self, subscription_id: &str, succeeds: bool, now: i64) -> Emitted {
        if !self.subscriptions.contains_key(subscription_id) {
            return vec![];
        }
        self.renewal_fails
            .insert(subscription_id.to_owned(), !succeeds);
        if self.subscriptions[subscription_id]["status"] != "on_hold" {
            return vec![];
        }
        let payment = self.charge(subscription_id, now, 0, (now, add_months(now, 1)));
        if payment["status"] == "succeeded" {
            let snapshot = self.reactivate(subscription_id, now);
            vec![
                ("payment.succeeded".into(), payment),
                ("subscription.active".into(), snapshot),
            ]
        } else {
            vec![("payment.failed".into(), payment)]
        }
    }

    pub(super) fn set_cancel_at_period_end(
        &mut self,
        subscription_id: &str,
        cancel: bool,
    ) -> Option<Emitted> {
        let subscription = self.subscriptions.get_mut(subscription_id)?;
        if subscription["cancel_at_next_billing_date"] == cancel {
            return Some(vec![]);
        }
        subscription["cancel_at_next_billing_date"] = json!(cancel);
        Some(vec![("subscription.updated".into(), subscription.clone())])
    }

    /// A full refund of a succeeded payment, once.
    pub(super) fn refund(
        &mut self,
        payment_id: &str,
        reason: &str,
        now: i64,
    ) -> Result<Emitted, &'static str> {
        let refund_id = self.new_id("rfnd");
        let payment = self.payments.get(payment_id).ok_or("Payment not found")?;
        if payment["status"] != "succeeded" {
            return Err("Only a succeeded payment can be refunded");
        }
        if self.index.refund_by_payment.contains_key(payment_id) {
            return Err("This payment is already refunded");
        }
        // Dodo's `Refund` (SDK `types/refund.py`): `POST /refunds` and `refund.*`
        // webhooks; lists and the payment's `refunds` carry the shorter `RefundListItem`.
        let refund = json!({
            "refund_id": refund_id,
            "payment_id": payment_id,
            "business_id": "bus_simulator",
            "brand_id": payment["brand_id"],
            "status": "succeeded",
            "amount": payment["total_amount"],
            "currency": payment["currency"],
            "is_partial": false,
            "reason": reason,
            "created_at": rfc3339(now),
            "customer": payment["customer"],
            "metadata": {},
        });
        self.index
            .refund_by_payment
            .insert(payment_id.to_owned(), self.refunds.len());
        self.refunds.push(refund.clone());
        if let Some(payment) = self.payments.get_mut(payment_id) {
            if let Some(refunds) = payment["refunds"].as_array_mut() {
                refunds.push(super::refund_list_item(&refund));
            }
            // Dodo's summary of the payment's succeeded refunds.
            payment["refund_status"] = json!("full");
        }
        Ok(vec![("refund.succeeded".into(), refund)])
    }

    pub(super) fn open_dispute(
        &mut self,
        payment_id: &str,
        won: bool,
        now: i64,
    ) -> Result<Emitted, &'static str> {
        let id = self.new_id("dsp");
        let payment = self.payments.get(payment_id).ok_or("Payment not found")?;
        if payment["status"] != "succeeded" {
            return Err("Only a succeeded payment can be disputed");
        }
        if self.index.dispute_by_payment.contains_key(payment_id) {
            return Err("This payment is already disputed");
        }
        // Dodo's `Dispute` (SDK `types/dispute.py`: `dispute.*` webhooks and the
        // payment's `disputes`; `amount` is a string there); `GET /disputes` lists the
        // `DisputeListResponse` shape.
        let dispute = json!({
            "dispute_id": id,
            "payment_id": payment_id,
            "business_id": "bus_simulator",
            "amount": payment["total_amount"].to_string(),
            "currency": payment["currency"],
            "dispute_stage": "dispute",
            "dispute_status": "dispute_opened",
            "created_at": rfc3339(now),
        });
        self.index
            .dispute_by_payment
            .insert(payment_id.to_owned(), self.disputes.len());
        self.disputes.push(dispute.clone());
        self.mirror_dispute(&dispute);
        self.schedule(
            now + DISPUTE_RESOLVES_AFTER,
            Action::ResolveDispute {
                dispute_id: id,
                won,
            },
        );
        Ok(vec![("dispute.opened".into(), dispute)])
    }

    /// The payment's own `disputes` list shows the dispute's latest state.
    fn mirror_dispute(&mut self, dispute: &Value) {
        let payment_id = dispute["payment_id"].as_str().unwrap_or_default();
        if let Some(list) = self
            .payments
            .get_mut(payment_id)
            .and_then(|p| p["disputes"].as_array_mut())
        {
            list.retain(|d| d["dispute_id"] != dispute["dispute_id"]);
            list.push(dispute.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        Timestamp::parse_rfc3339(text)
            .expect("a time")
            .unix_seconds()
    }

    #[test]
    fn months_are_calendar_months() {
        assert_eq!(
            add_months(at("2026-01-15T10:00:00Z"), 1),
            at("2026-02-15T10:00:00Z")
        );
        assert_eq!(
            add_months(at("2026-01-31T10:00:00Z"), 1),
            at("2026-02-28T10:00:00Z")
        );
        assert_eq!(
            add_months(at("2028-01-31T00:00:00Z"), 1),
            at("2028-02-29T00:00:00Z")
        );
        assert_eq!(
            add_months(at("2026-12-05T23:59:59Z"), 1),
            at("2027-01-05T23:59:59Z")
        );
        assert_eq!(
            add_months(at("2026-11-28T04:00:00Z"), 12),
            at("2027-11-28T04:00:00Z")
        );
    }
}
