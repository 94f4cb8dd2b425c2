//! Dodo's webhook envelope, read leniently and dispatched on its `type` string.
//!
//! `{business_id, type, timestamp, data{payload_type, ...}}`. Only the fields used are
//! read; unknown event types are answered 2xx and ignored, so a new Dodo event can never
//! make deliveries fail.

use serde_json::Value;

use crate::dodo::{DodoError, Payment};
use crate::subscription::Subscription;
use crate::time::parse_rfc3339_millis;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A payment succeeded: grant a pass (a subscription's payment is driven by its
    /// subscription's events instead).
    PaymentSucceeded(Payment),
    /// Any `subscription.*` event: the subscription's latest state, as of `occurred_at`.
    Subscription {
        event_type: String,
        subscription: Subscription,
        occurred_at: Option<i64>,
    },
    /// `refund.succeeded`: a full refund takes back what the payment granted.
    Refund { payment_id: String, full: bool },
    /// `dispute.*`: the dispute's latest status (`dispute_lost`, `dispute_won`, ...).
    Dispute {
        event_type: String,
        payment_id: String,
        status: String,
        occurred_at: Option<i64>,
    },
    /// Any other type: acknowledged, no change.
    Ignored { event_type: String },
}

impl Event {
    /// Dodo's `type` of the event.
    pub fn event_type(&self) -> &str {
        match self {
            Self::PaymentSucceeded(_) => "payment.succeeded",
            Self::Subscription { event_type, .. } | Self::Ignored { event_type } => event_type,
            Self::Refund { .. } => "refund.succeeded",
            Self::Dispute { event_type, .. } => event_type,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("the body is not JSON")]
    NotJson,
    #[error("the event has no `type`")]
    NoType,
    #[error("the event's `data` is unusable: {0}")]
    BadData(String),
}

pub fn parse(body: &[u8]) -> Result<Event, EventError> {
    let envelope: Value = serde_json::from_slice(body).map_err(|_| EventError::NotJson)?;
    let event_type = envelope
        .get("type")
        .and_then(Value::as_str)
        .ok_or(EventError::NoType)?;
    let data = envelope.get("data").unwrap_or(&Value::Null);
    // When the event occurred (not when it was delivered): orders subscription states.
    let occurred_at = envelope
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339_millis);
    let payment_id = || {
        data.get("payment_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| EventError::BadData("no payment_id".to_owned()))
    };
    match event_type {
        // The payload is an incoming event's, not an answer from Dodo: say what is wrong
        // with it, without the "unexpected answer from Dodo" of a Dodo API call.
        "payment.succeeded" => Payment::from_json(data)
            .map(Event::PaymentSucceeded)
            .map_err(|e| {
                EventError::BadData(match e {
                    DodoError::Decode(what) => what,
                    other => other.to_string(),
                })
            }),
        subscription if subscription.starts_with("subscription.") => Subscription::from_json(data)
            .map(|subscription| Event::Subscription {
                event_type: event_type.to_owned(),
                subscription,
                occurred_at,
            })
            .map_err(EventError::BadData),
        "refund.succeeded" => {
            let status = data.get("status").and_then(Value::as_str);
            if status.is_some_and(|s| s != "succeeded") {
                return Ok(Event::Ignored {
                    event_type: event_type.to_owned(),
                });
            }
            let partial = data
                .get("is_partial")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Ok(Event::Refund {
                payment_id: payment_id()?,
                full: !partial,
            })
        }
        dispute if dispute.starts_with("dispute.") => {
            // The payload's status is the dispute's latest; the type names the change.
            let status = data
                .get("dispute_status")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("dispute_{}", &dispute["dispute.".len()..]));
            Ok(Event::Dispute {
                event_type: event_type.to_owned(),
                payment_id: payment_id()?,
                status,
                occurred_at,
            })
        }
        other => Ok(Event::Ignored {
            event_type: other.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatches_on_type() {
        let event = parse(
            br#"{"business_id":"bus_1","type":"payment.succeeded","timestamp":"2026-01-01T00:00:00Z",
                "data":{"payload_type":"Payment","payment_id":"pay_1","status":"succeeded","future":[1]}}"#,
        )
        .expect("valid");
        assert!(matches!(event, Event::PaymentSucceeded(p) if p.payment_id == "pay_1"));

        let event = parse(br#"{"type":"payout.success","data":{}}"#).expect("valid");
        assert_eq!(
            event,
            Event::Ignored {
                event_type: "payout.success".into()
            }
        );
    }

    #[test]
    fn reads_subscriptions_refunds_and_disputes() {
        let event = parse(
            br#"{"type":"subscription.renewed","timestamp":"2026-01-01T00:00:00.500Z",
                "data":{"payload_type":"Subscription","subscription_id":"sub_1","status":"active",
                        "next_billing_date":"2026-02-01T00:00:00Z"}}"#,
        )
        .expect("valid");
        let Event::Subscription {
            subscription,
            occurred_at,
            ..
        } = event
        else {
            panic!("a subscription event");
        };
        assert_eq!(subscription.subscription_id, "sub_1");
        assert_eq!(occurred_at, Some(1_767_225_600_500));

        let event = parse(
            br#"{"type":"refund.succeeded","data":{"payment_id":"pay_1","is_partial":true}}"#,
        );
        assert_eq!(
            event,
            Ok(Event::Refund {
                payment_id: "pay_1".into(),
                full: false
            })
        );
        let event = parse(br#"{"type":"refund.succeeded","data":{"payment_id":"pay_1","is_partial":false,"status":"succeeded"}}"#);
        assert_eq!(
            event,
            Ok(Event::Refund {
                payment_id: "pay_1".into(),
                full: true
            })
        );

        let event = parse(br#"{"type":"dispute.lost","data":{"payment_id":"pay_1"}}"#);
        assert_eq!(
            event,
            Ok(Event::Dispute {
                event_type: "dispute.lost".into(),
                payment_id: "pay_1".into(),
                status: "dispute_lost".into(),
                occurred_at: None
            })
        );
        let event = parse(br#"{"type":"dispute.lost","data":{"payment_id":"pay_1","dispute_status":"dispute_won"}}"#);
        assert!(matches!(event, Ok(Event::Dispute { status, .. }) if status == "dispute_won"));
    }

    #[test]
    fn refuses_malformed_envelopes() {
        assert_eq!(parse(b"not json"), Err(EventError::NotJson));
        assert_eq!(parse(br#"{"data":{}}"#), Err(EventError::NoType));
        assert!(matches!(
            parse(br#"{"type":"payment.succeeded","data":{"status":"succeeded"}}"#),
            Err(EventError::BadData(_))
        ));
    }

    #[test]
    fn a_payment_event_without_its_id_says_so_without_blaming_dodo() {
        let err = parse(br#"{"type":"payment.succeeded","data":{"status":"succeeded"}}"#)
            .expect_err("no payment_id");
        assert_eq!(
            err.to_string(),
            "the event's `data` is unusable: payment without payment_id"
        );
    }
}
