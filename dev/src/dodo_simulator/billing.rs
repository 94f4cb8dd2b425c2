//! What Dodo does over time, on the simulator's clock: subscriptions renew each period,
//! a failing card puts them on hold and is retried on Dodo's schedule, a cancellation at
//! period end takes effect then, refunds and disputes are raised and resolved.
//!
//! The model (Dodo's documentation, 2026; the book's "Test clock" says the same):
//! - A subscription is bought in a checkout: `subscription.active` and the first
//!   `payment.succeeded` (the payment names the subscription and carries no cart). With a
//!   free trial (`subscription_data.trial_period_days`), `subscription.active` alone: the
//!   first charge is at the trial's end, a renewal as below (`subscriptions.rs`).
//! - Each month (calendar month, from the day it started) Dodo charges the card its
//!   `recurring_pre_tax_amount`, less the subscription's credit from downgrades (a charge
//!   the credit pays in full makes no payment). Paid:
//!   `payment.succeeded` and `subscription.renewed`, `previous_billing_date` becomes the
//!   old `next_billing_date`, which moves on a month. Declined: `payment.failed` and
//!   `subscription.on_hold`; Dodo's payment retries (on, with the default 13-day recovery
//!   window) charge again 12 h, 36 h, 3.5 d, 6.5 d and 10.5 d after the failure, each
//!   failure another `payment.failed`. A retry that succeeds makes it `active` again
//!   (`payment.succeeded`, `subscription.active`, a new period from then). When the window
//!   ends it stays `on_hold` (Dodo neither cancels nor expires it).
//! - A plan change scheduled for the renewal (`effective_at: next_billing_date`) is charged
//!   instead of it, at the new price (`subscriptions.rs`).
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

pub(super) fn rfc3339(seconds: i64) -> String {
    Timestamp::from_unix_seconds(seconds).to_rfc3339()
}

pub(super) fn seconds_of(value: &Value, key: &str) -> Option<i64> {
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
    /// What it charges, in minor units (the products' prices times their quantities, or a
    /// subscription's charge after its credit).
    pub amount: i64,
    pub customer: &'a Value,
    pub metadata: Value,
    pub checkout_session_id: Option<&'a str>,
    pub subscription_id: Option<&'a str>,
    /// `None` for a subscription's payments: Dodo sends no cart with those.
    pub product_cart: Option<Value>,
    pub retry_attempt: usize,
    /// What a subscription's charge pays for: Dodo's `charge_type` (`new`, `renewal`,
    /// `plan_change`) and the period it starts, `[start, end)` (its `service_periods` once
    /// succeeded).
    pub charge: Option<(&'a str, (i64, i64))>,
    /// The part of a full period the charge pays for (`service_periods[].proration_factor`;
    /// `None`: a full period, `"1"`).
    pub proration_factor: Option<String>,
}

impl NewPayment<'_> {
    pub fn into_json(self) -> Value {
        let amount = self.amount;
        // Dodo's `service_periods`: empty unless the payment succeeded and pays a
        // subscription's period (SDK `Payment.service_periods`).
        let service_periods = match (self.charge, self.subscription_id) {
            (Some((_, (start, end))), Some(subscription_id)) if self.succeeded => json!([{
                "subscription_id": subscription_id,
                "starts_at": rfc3339(start),
                "ends_at": rfc3339(end),
                "proration_factor": self.proration_factor.as_deref().unwrap_or("1"),
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

/// What a new subscription is: its product, price, and trial.
pub(super) struct NewSubscription<'a> {
    pub product_id: &'a str,
    /// The product's price (minor units); `recurring_pre_tax_amount` is it times `quantity`.
    pub unit_price: i64,
    pub quantity: i64,
    pub customer: &'a Value,
    pub metadata: &'a Value,
    /// The card is declined at every later charge.
    pub renewal_fails: bool,
    /// A free trial of this many days (0: none): the first charge is at its end.
    pub trial_days: i64,
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

    /// A subscription bought in a checkout, active from `now`: its first period paid now,
    /// or, with a trial, free until the trial ends (the first charge then).
    pub(super) fn start_subscription(&mut self, now: i64, new: NewSubscription) -> Value {
        let id = self.new_id("sub");
        let next = if new.trial_days > 0 {
            now + new.trial_days * SECONDS_PER_DAY
        } else {
            add_months(now, 1)
        };
        let customer = new.customer;
        // Every field Dodo's `Subscription` requires (SDK `types/subscription.py`); the
        // simulator sells no addons, meters or credits, so those lists are empty.
        let subscription = json!({
            "subscription_id": id,
            "brand_id": "bus_simulator",
            "status": "active",
            "product_id": new.product_id,
            "quantity": new.quantity,
            "customer": {
                "customer_id": customer["customer_id"],
                "email": customer["email"],
                "name": customer["name"],
            },
            "metadata": new.metadata,
            "created_at": rfc3339(now),
            "previous_billing_date": rfc3339(now),
            "next_billing_date": rfc3339(next),
            "cancel_at_next_billing_date": false,
            "cancelled_at": null,
            "payment_frequency_count": 1,
            "payment_frequency_interval": "Month",
            "subscription_period_count": 10,
            "subscription_period_interval": "Year",
            "recurring_pre_tax_amount": new.unit_price * new.quantity,
            "currency": "USD",
            "tax_inclusive": false,
            "trial_period_days": new.trial_days,
            // A free trial: nothing charged for it (Dodo's paid trials are not simulated).
            "trial_amount": null,
            "on_demand": false,
            "billing": {"country": "US"},
            "has_payment_method": true,
            "addons": [],
            "meters": [],
            "credit_entitlement_cart": [],
            "meter_credit_entitlement_cart": [],
            "scheduled_change": null,
        });
        self.note_object(&id, &subscription);
        self.subscriptions.insert(id.clone(), subscription.clone());
        self.renewal_fails.insert(id.clone(), new.renewal_fails);
        if new.trial_days > 0 {
            self.trial_ends.insert(id.clone(), next);
        }
        self.schedule(
            next,
            Action::Renew {
                subscription_id: id,
                due: next,
            },
        );
        subscription
    }

    /// Whether the subscription's card pays.
    pub(super) fn card_pays(&self, subscription_id: &str) -> bool {
        !self
            .renewal_fails
            .get(subscription_id)
            .copied()
            .unwrap_or(false)
    }

    /// What a charge of `gross` costs after the subscription's credit: (the amount to
    /// charge, the credit it uses).
    pub(super) fn after_credit(&self, subscription_id: &str, gross: i64) -> (i64, i64) {
        let credit = self.credits.get(subscription_id).copied().unwrap_or(0);
        let used = credit.clamp(0, gross.max(0));
        (gross - used, used)
    }

    /// Adds `delta` (negative: spends) to the subscription's credit.
    pub(super) fn add_credit(&mut self, subscription_id: &str, delta: i64) {
        if delta == 0 {
            return;
        }
        let credit = self.credits.entry(subscription_id.to_owned()).or_insert(0);
        *credit += delta;
        if *credit <= 0 {
            self.credits.remove(subscription_id);
        }
    }

    /// One charge of a subscription of `amount`: the payment, stored.
    pub(super) fn charge(
        &mut self,
        subscription_id: &str,
        now: i64,
        retry_attempt: usize,
        amount: i64,
        charge: (&str, (i64, i64)),
        proration_factor: Option<String>,
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
        let payment = NewPayment {
            id,
            now,
            succeeded: self.card_pays(subscription_id),
            amount,
            customer: &customer,
            metadata: subscription["metadata"].clone(),
            checkout_session_id: None,
            subscription_id: Some(subscription_id),
            product_cart: None,
            retry_attempt,
            charge: Some(charge),
            proration_factor,
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

    /// Charges the subscription's recurring amount (less its credit) for `period`: the
    /// payment, or `None` when the credit pays it all (no payment then). The credit is
    /// spent only when paid.
    fn charge_period(
        &mut self,
        subscription_id: &str,
        now: i64,
        retry_attempt: usize,
        period: (i64, i64),
        charge_type: &str,
    ) -> Option<Value> {
        let gross = self.subscriptions[subscription_id]["recurring_pre_tax_amount"]
            .as_i64()
            .unwrap_or(DEFAULT_PRICE_MINOR);
        let (amount, used) = self.after_credit(subscription_id, gross);
        if amount == 0 {
            self.add_credit(subscription_id, -used);
            return None;
        }
        let payment = self.charge(
            subscription_id,
            now,
            retry_attempt,
            amount,
            (charge_type, period),
            None,
        );
        if payment["status"] == "succeeded" {
            self.add_credit(subscription_id, -used);
        }
        Some(payment)
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
    pub(super) fn hold(
        &mut self,
        subscription_id: &str,
        failed_at: i64,
        next_attempt: usize,
    ) -> Value {
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

    /// The renewal due at `due` (the subscription's `next_billing_date`), at `now`.
    fn renew(&mut self, subscription_id: &str, due: i64, now: i64) -> Emitted {
        let Some(subscription) = self.subscriptions.get(subscription_id) else {
            return vec![];
        };
        // Stale: the period moved (a recovery, a plan change) or the subscription stopped.
        if subscription["status"] != "active"
            || seconds_of(subscription, "next_billing_date") != Some(due)
        {
            return vec![];
        }
        // The trial, if any, ends now, whatever the charge does.
        self.trial_ends.remove(subscription_id);
        if subscription["cancel_at_next_billing_date"] == true {
            self.clear_scheduled_change(subscription_id);
            let subscription = self.subscriptions.get_mut(subscription_id).expect("exists");
            subscription["status"] = json!("cancelled");
            subscription["cancelled_at"] = json!(rfc3339(now));
            return vec![("subscription.cancelled".into(), subscription.clone())];
        }
        // A change scheduled for this date: its payment replaces the renewal's and charges
        // the new plan's price (SDK `SubscriptionChangePlanParams.on_payment_failure`).
        let scheduled = subscription["scheduled_change"]
            .get("product_id")
            .is_some()
            .then(|| self.scheduled_terms.get(subscription_id).cloned())
            .flatten();
        let period = (due, add_months(due, 1));
        let mut emitted = Vec::new();
        let paid = match &scheduled {
            Some(terms) => {
                let (amount, used) = self.after_credit(subscription_id, terms.amount);
                let payment = (amount > 0).then(|| {
                    self.charge(
                        subscription_id,
                        now,
                        0,
                        amount,
                        ("plan_change", period),
                        None,
                    )
                });
                let paid = payment.as_ref().is_none_or(|p| p["status"] == "succeeded");
                if paid {
                    self.add_credit(subscription_id, -used);
                }
                if paid || !terms.prevent_change {
                    self.apply_scheduled_change(subscription_id);
                } else {
                    // `prevent_change`: the change is cancelled; the subscription renews on
                    // its current plan, with the usual retries.
                    self.clear_scheduled_change(subscription_id);
                }
                if let Some(payment) = &payment {
                    let event = if paid {
                        "payment.succeeded"
                    } else {
                        "payment.failed"
                    };
                    emitted.push((event.into(), payment.clone()));
                }
                if paid || !terms.prevent_change {
                    let snapshot = self.subscriptions[subscription_id].clone();
                    emitted.push(("subscription.plan_changed".into(), snapshot));
                }
                // The renewal's own payment is the one above.
                let payment_id = payment.map(|p| p["payment_id"].clone());
                paid.then_some(payment_id.unwrap_or(Value::Null))
            }
            None => {
                let payment = self.charge_period(subscription_id, now, 0, period, "renewal");
                let paid = payment.as_ref().is_none_or(|p| p["status"] == "succeeded");
                if let Some(payment) = &payment {
                    let event = if paid {
                        "payment.succeeded"
                    } else {
                        "payment.failed"
                    };
                    emitted.push((event.into(), payment.clone()));
                }
                let payment_id = payment.map(|p| p["payment_id"].clone());
                paid.then_some(payment_id.unwrap_or(Value::Null))
            }
        };
        match paid {
            Some(payment_id) => {
                let next = period.1;
                let subscription = self.subscriptions.get_mut(subscription_id).expect("exists");
                subscription["previous_billing_date"] = json!(rfc3339(due));
                subscription["next_billing_date"] = json!(rfc3339(next));
                let mut snapshot = subscription.clone();
                // `subscription.renewed` names the payment that renewed it (SDK
                // `SubscriptionRenewedWebhookEvent.Data.payment_id`); none when the
                // subscription's credit paid it all.
                snapshot["payment_id"] = payment_id;
                self.schedule(
                    next,
                    Action::Renew {
                        subscription_id: subscription_id.to_owned(),
                        due: next,
                    },
                );
                emitted.push(("subscription.renewed".into(), snapshot));
            }
            None => {
                let snapshot = self.hold(subscription_id, now, 1);
                emitted.push(("subscription.on_hold".into(), snapshot));
            }
        }
        emitted
    }

    /// Runs one scheduled billing action at `now`; what it emits.
    pub(super) fn run_billing(&mut self, action: &Action, now: i64) -> Emitted {
        match action {
            Action::Renew {
                subscription_id,
                due,
            } => self.renew(subscription_id, *due, now),
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
                let period = (now, add_months(now, 1));
                let payment = self.charge_period(subscription_id, now, *attempt, period, "renewal");
                if payment.as_ref().is_none_or(|p| p["status"] == "succeeded") {
                    let snapshot = self.reactivate(subscription_id, now);
                    let mut emitted: Emitted = payment
                        .map(|p| ("payment.succeeded".into(), p))
                        .into_iter()
                        .collect();
                    emitted.push(("subscription.active".into(), snapshot));
                    emitted
                } else {
                    self.holds.remove(subscription_id);
                    self.hold(subscription_id, *failed_at, attempt + 1);
                    payment
                        .map(|p| ("payment.failed".into(), p))
                        .into_iter()
                        .collect()
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
        let period = (now, add_months(now, 1));
        let payment = self.charge_period(subscription_id, now, 0, period, "renewal");
        if payment.as_ref().is_none_or(|p| p["status"] == "succeeded") {
            let snapshot = self.reactivate(subscription_id, now);
            let mut emitted: Emitted = payment
                .map(|p| ("payment.succeeded".into(), p))
                .into_iter()
                .collect();
            emitted.push(("subscription.active".into(), snapshot));
            emitted
        } else {
            payment
                .map(|p| ("payment.failed".into(), p))
                .into_iter()
                .collect()
        }
    }

    pub(super) fn set_cancel_at_period_end(
        &mut self,
        subscription_id: &str,
        cancel: bool,
    ) -> Option<Result<Emitted, &'static str>> {
        let subscription = self.subscriptions.get_mut(subscription_id)?;
        // Idempotent: asking again for what is already so changes nothing, sends nothing.
        if subscription["cancel_at_next_billing_date"] == cancel {
            return Some(Ok(vec![]));
        }
        // Once cancelled there is no period end left to cancel at, nor to resume before.
        if subscription["status"] == "cancelled" {
            return Some(Err("The subscription is already cancelled"));
        }
        subscription["cancel_at_next_billing_date"] = json!(cancel);
        Some(Ok(vec![(
            "subscription.updated".into(),
            subscription.clone(),
        )]))
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
