//! `cargo run -p dev -- trigger <event type> [options]`: sends one Dodo-shaped event,
//! signed with Standard Webhooks as Dodo signs it, to any webhook URL (the local server,
//! or a deployed Function URL). Dodo's own CLI trigger sends unsigned events, which a
//! verifying endpoint rightly refuses.
//!
//! The local server verifies signatures against its *test clock*, which may be far ahead
//! of the wall clock: when the URL is a loopback address, the trigger signs with the
//! time that server's `GET /dev/clock` answers (`--timestamp` sets it explicitly).

use paywall::webhook_signature::WebhookSecret;
use serde_json::{Value, json};

use crate::local_server::DEFAULT_WEBHOOK_SECRET;

pub const USAGE: &str = "\
usage: cargo run -p dev -- trigger <event type> [options]

  <event type>          e.g. payment.succeeded, payment.failed, refund.succeeded, or
                        payout.success (an event the paywall ignores: a harmless check
                        of a deployed webhook's URL and secret)
  --url URL             webhook URL (default http://127.0.0.1:3000/payment/webhook)
  --secret whsec_...    signing secret (default $DODO_PAYMENTS_WEBHOOK_SECRET, else the local server's)
  --email EMAIL         the customer's e-mail (default buyer@example.com)
  --customer-id ID      the payment's Dodo customer (default: one of its own)
  --user-id ID          put our user id in the payment's metadata (links it to that user)
  --payment-id ID       the payment id (default a new pay_trigger_…)
  --session-id ID       the checkout session id
  --product-id ID       the product bought (default $DODO_PRODUCT_ID, else pdt_local_demo)
  --status STATUS       the payment's status (default: from the event type)
  --timestamp TIME      sign as of TIME (unix seconds or RFC 3339); default: the local
                        server's test clock (GET /dev/clock) for a loopback URL, else now

A payment.succeeded with --user-id is a real grant: that user gets the plan's days.";

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
    /// The time to sign at and to stamp the event with (unix seconds); `None`: see
    /// [`Trigger::resolve_timestamp`].
    pub timestamp: Option<i64>,
}

/// Whether `url` names this machine (where `make dev`'s test clock may run ahead).
fn is_loopback(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    let Some(host) = parsed.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `--timestamp`'s value: unix seconds or an RFC 3339 time.
fn parse_timestamp(text: &str) -> Option<i64> {
    text.parse::<i64>()
        .ok()
        .or_else(|| paywall::time::Timestamp::parse_rfc3339(text).map(|t| t.unix_seconds()))
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
            timestamp: None,
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
                "--timestamp" => {
                    trigger.timestamp = Some(parse_timestamp(&value).ok_or_else(|| {
                        format!("--timestamp {value}: not unix seconds or an RFC 3339 time")
                    })?);
                }
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

    /// The time to sign at: `--timestamp`, else the local server's test clock when the
    /// URL is on this machine and answers `GET /dev/clock`, else the wall clock.
    pub async fn resolve_timestamp(&self) -> i64 {
        if let Some(at) = self.timestamp {
            return at;
        }
        if is_loopback(&self.url)
            && let Some(at) = local_clock(&self.url).await
        {
            return at;
        }
        paywall::time::Clock::system().now().unix_seconds()
    }

    /// The event body, shaped like Dodo's envelope with a Payment (or Refund, or
    /// Payout) payload, stamped `at` (unix seconds).
    pub fn body_at(&self, at: i64) -> String {
        let now = paywall::time::Timestamp::from_unix_seconds(at).to_rfc3339();
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
        let data: Value = if self.event_type.starts_with("payout.") {
            // A merchant payout: nothing to do with any user's access.
            json!({
                "payload_type": "Payout", "payout_id": format!("pout_{}", self.payment_id),
                "business_id": "bus_trigger", "amount": 1900, "currency": "USD",
                "fee": 0, "payment_method": "bank_transfer",
                "status": self.status.as_deref().unwrap_or("success"),
                "created_at": now, "updated_at": now,
            })
        } else if self.event_type.starts_with("refund.") {
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
        let timestamp = self.resolve_timestamp().await;
        let body = self.body_at(timestamp);
        let id = format!(
            "msg_trigger_{}",
            paywall::time::Clock::system().now().unix_seconds()
        );
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

/// The local server's test clock (unix seconds), read from `GET /dev/clock` on the
/// webhook URL's origin; `None` when nothing there answers it.
async fn local_clock(webhook_url: &str) -> Option<i64> {
    let mut url = reqwest::Url::parse(webhook_url).ok()?;
    url.set_path("/dev/clock");
    url.set_query(None);
    let answer = paywall::http::client()
        .get(url)
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if !answer.status().is_success() {
        return None;
    }
    let clock: Value = answer.json().await.ok()?;
    let now = clock.get("now")?.as_str()?;
    paywall::time::Timestamp::parse_rfc3339(now).map(|t| t.unix_seconds())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_told_apart() {
        assert!(is_loopback("http://127.0.0.1:3000/payment/webhook"));
        assert!(is_loopback("http://localhost:3000/webhook"));
        assert!(is_loopback("http://[::1]:3000/webhook"));
        assert!(!is_loopback("https://abc.lambda-url.us-east-1.on.aws/"));
        assert!(!is_loopback("not a url"));
    }

    #[test]
    fn timestamps_are_unix_seconds_or_rfc3339() {
        assert_eq!(parse_timestamp("1614265330"), Some(1_614_265_330));
        assert_eq!(parse_timestamp("2021-02-25T15:02:10Z"), Some(1_614_265_330));
        assert_eq!(parse_timestamp("yesterday"), None);
        let args: Vec<String> = ["payout.success", "--timestamp", "soon"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(Trigger::parse(&args).is_err());
    }
}
