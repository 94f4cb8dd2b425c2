//! Dodo's webhook envelope, read leniently and dispatched on its `type` string.
//!
//! `{business_id, type, timestamp, data{payload_type, ...}}`. Only the fields used are
//! read; unknown event types are answered 2xx and ignored, so a new Dodo event can never
//! make deliveries fail.

use serde_json::Value;

use crate::dodo::Payment;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A one-time purchase was paid: grant it.
    PaymentSucceeded(Payment),
    /// Any other type: acknowledged, no change.
    Ignored { event_type: String },
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
    match event_type {
        "payment.succeeded" => Payment::from_json(data)
            .map(Event::PaymentSucceeded)
            .map_err(|e| EventError::BadData(e.to_string())),
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
    fn refuses_malformed_envelopes() {
        assert_eq!(parse(b"not json"), Err(EventError::NotJson));
        assert_eq!(parse(br#"{"data":{}}"#), Err(EventError::NoType));
        assert!(matches!(
            parse(br#"{"type":"payment.succeeded","data":{"status":"succeeded"}}"#),
            Err(EventError::BadData(_))
        ));
    }
}
