//! `cargo run -p dev -- trigger <event type> [options]`: sends one Dodo-shaped event,
//! signed with Standard Webhooks as Dodo signs it, to any webhook URL (the local server,
//! or a deployed Function URL). Dodo's own CLI trigger sends unsigned events, which a
//! verifying endpoint rightly refuses.

use paywall::webhook_signature::WebhookSecret;
use serde_json::{Value, json};

use crate::local_server::DEFAULT_WEBHOOK_SECRET;

pub const USAGE: &str = "\
usage: cargo run -p dev -- trigger <event type> [options]

  <event type>          e.g. payment.succeeded, payment.failed, refund.succeeded
  --url URL             webhook URL (default http://127.0.0.1:3000/payment/webhook)
  --secret whsec_...    signing secret (default $DODO_PAYMENTS_WEBHOOK_SECRET, else the local server's)
  --email EMAIL         the customer's e-mail (default buyer@example.com)
  --customer-id ID      the payment's Dodo customer (default: one of its own)
  --user-id ID          put our user id in the payment's metadata (links it to that user)
  --payment-id ID       the payment id (default a new pay_trigger_…)
  --session-id ID       the checkout session id
  --product-id ID       the product bought (default $DODO_PRODUCT_ID, else pdt_local_demo)
  --status STATUS       the payment's status (default: from the event type)";

#[derive(Debug)]
pub struct Trigger {
    pub event_type: String,
    pub url: String,
    pub secret: String,
    pub email: String,
    pub user_id: Option<String>,
    pub payment_id: String,
    pub session_id: Option<String>,
    pub product_id: String,
    pub status: Option<String>,
    pub customer_id: Option<String>,
}

impl Trigger {
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut args = args.iter();
        let event_type = args.next().ok_or("missing the event type")?.clone();
        let mut trigger = Self {
            event_type,
            url: "http://127.0.0.1:3000/payment/webhook".to_owned(),
            secret: std::env::var("DODO_PAYMENTS_WEBHOOK_SECRET")
                .unwrap_or_else(|_| DEFAULT_WEBHOOK_SECRET.to_owned()),
            email: "buyer@example.com".to_owned(),
            user_id: None,
            payment_id: format!(
                "pay_trigger_{}",
                paywall::time::Clock::system().now().unix_seconds()
            ),
            session_id: None,
            product_id: std::env::var("DODO_PRODUCT_ID")
                .unwrap_or_else(|_| "pdt_local_demo".to_owned()),
            status: None,
            customer_id: None,
        };
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))?
                .clone();
            match flag.as_str() {
                "--url" => trigger.url = value,
                "--secret" => trigger.secret = value,
                "--email" => trigger.email = value,
                "--user-id" => trigger.user_id = Some(value),
                "--payment-id" => trigger.payment_id = value,
                "--session-id" => trigger.session_id = Some(value),
                "--product-id" => trigger.product_id = value,
                "--status" => trigger.status = Some(value),
                "--customer-id" => trigger.customer_id = Some(value),
                other => return Err(format!("unknown option {other}")),
            }
        }
        Ok(trigger)
    }

    /// The payment's customer: the one given, else one of its own (a test event never
    /// names a customer that might be a real user's).
    fn customer_id(&self) -> String {
        self.customer_id
            .clone()
            .unwrap_or_else(|| format!("cus_trigger_{}", self.payment_id))
    }

    /// The event body, shaped like Dodo's envelope with a Payment (or Refund) payload.
    pub fn body(&self) -> String {
        let now = paywall::time::Clock::system().now().to_rfc3339();
        let default_status = match self.event_type.as_str() {
            "payment.failed" => "failed",
            "payment.processing" => "processing",
            "payment.cancelled" => "cancelled",
            _ => "succeeded",
        };
        let mut metadata = json!({});
        if let Some(user) = &self.user_id {
            metadata = json!({"user_id": user, "plan": "monthly"});
        }
        let data: Value = if self.event_type.starts_with("refund.") {
            json!({
                "payload_type": "Refund", "refund_id": format!("ref_{}", self.payment_id),
                "payment_id": self.payment_id, "business_id": "bus_trigger", "is_partial": false,
                "amount": 1900, "currency": "USD", "status": self.status.as_deref().unwrap_or("succeeded"),
                "created_at": now, "metadata": {},
                "customer": {"customer_id": self.customer_id(), "email": self.email, "name": "Buyer"},
            })
        } else {
            json!({
                "payload_type": "Payment", "payment_id": self.payment_id, "business_id": "bus_trigger",
                "brand_id": "bus_trigger", "created_at": now,
                "status": self.status.as_deref().unwrap_or(default_status),
                "total_amount": 1900, "currency": "USD", "settlement_amount": 1900, "settlement_currency": "USD",
                "customer": {"customer_id": self.customer_id(), "email": self.email, "name": "Buyer"},
                "billing": {"country": "US"}, "metadata": metadata,
                "checkout_session_id": self.session_id, "subscription_id": null,
                "product_cart": [{"product_id": self.product_id, "quantity": 1}],
                "disputes": [], "refunds": [], "payment_provider": "dodo",
                "digital_products_delivered": false, "is_multi_subscription": false,
                "is_update_payment_method": false, "retry_attempt": 0, "subscription_ids": [],
            })
        };
        json!({"business_id": "bus_trigger", "type": self.event_type, "timestamp": now, "data": data}).to_string()
    }

    /// Sends it; returns the HTTP status and the answer's body.
    pub async fn send(&self) -> Result<(u16, String), String> {
        let secret = WebhookSecret::parse(&self.secret).map_err(|e| format!("--secret: {e}"))?;
        let body = self.body();
        let id = format!(
            "msg_trigger_{}",
            paywall::time::Clock::system().now().unix_seconds()
        );
        let timestamp = paywall::time::Clock::system().now().unix_seconds();
        let response = paywall::http::client()
            .post(&self.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                secret.sign(&id, timestamp, body.as_bytes()),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.url))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Ok((status, text))
    }
}
