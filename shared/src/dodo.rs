//! A small client for the Dodo Payments endpoints the paywall uses.
//!
//! Bounded in time so that a call can never outlast API Gateway's 29 s: a short connect
//! and request timeout, and at most one retry, only where a retry is safe (a read, or a
//! write whose connection never opened). Responses are read leniently: only the fields
//! we use, unknown fields and enum values accepted, because Dodo adds them often.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;

use crate::config::DodoConfig;
use crate::ids::{PaymentId, ProductId};

/// The largest page Dodo's list endpoints serve.
pub const LIST_PAGE_SIZE: usize = 100;

/// Dodo's lists that reconcile reads: succeeded payments, and what was claimed back
/// from payments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimList {
    Payments,
    Refunds,
    Disputes,
}

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    /// One attempt, from sending the request to the end of the body.
    pub request: Duration,
    /// The pause before the single retry.
    pub retry_backoff: Duration,
}

impl Default for Timeouts {
    /// Worst case for a read: 6 s + 0.3 s + 6 s, well inside API Gateway's 29 s with room
    /// left for the DynamoDB write that follows.
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(6),
            retry_backoff: Duration::from_millis(300),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DodoError {
    #[error("Dodo did not answer in time")]
    Timeout,
    #[error("Dodo is unreachable or failing ({0})")]
    Unavailable(String),
    /// Dodo answered with an error status and (usually) its `{code, message}` body.
    #[error("Dodo answered {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from Dodo: {0}")]
    Decode(String),
    /// Dodo answered `429`: never retried (a retry would spend the quota that is already
    /// spent); its `Retry-After` (seconds; 60 when absent) goes to our caller.
    #[error("Dodo's rate limit is reached; retry in {retry_after} s")]
    RateLimited { retry_after: i64 },
}

impl DodoError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Api { status: 404, .. })
    }
}

#[derive(Clone)]
pub struct DodoClient {
    http: reqwest::Client,
    base_url: String,
    api_key: SecretString,
    timeouts: Timeouts,
    /// Whether a failed read is tried once more (the API functions: a user is waiting);
    /// off for reconcile, which counts every request against its budget and tries again
    /// next run.
    retry_reads: bool,
}

impl std::fmt::Debug for DodoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DodoClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// What `POST /checkouts` needs from us.
#[derive(Debug, Serialize)]
pub struct CheckoutRequest<'a> {
    pub product_cart: Vec<CartLine<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<CheckoutCustomer<'a>>,
    pub return_url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_flags: Option<CheckoutFlags>,
    /// String values only: the oldest API version Dodo documents accepts nothing else.
    pub metadata: BTreeMap<&'static str, String>,
    /// A subscription's trial (Dodo takes the card now and charges at its end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_data: Option<SubscriptionData>,
}

/// `subscription_data` of a checkout session.
#[derive(Debug, Serialize)]
pub struct SubscriptionData {
    /// Overrides the product's trial; 0 to 10,000 days.
    pub trial_period_days: u32,
}

/// The body of `POST /subscriptions/{id}/change-plan` (and of its preview).
#[derive(Debug, Serialize)]
pub struct PlanChange<'a> {
    pub product_id: &'a str,
    pub quantity: u32,
    pub proration_billing_mode: &'a str,
    /// `immediately` or `next_billing_date`.
    pub effective_at: &'a str,
    /// `prevent_change` (keep the current plan if the charge fails) or `apply_change`.
    pub on_payment_failure: &'a str,
    /// The latest request wins over a change scheduled before.
    pub cancel_scheduled_change_plan: bool,
}

/// What Dodo's preview of a plan change says it will charge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChangePreview {
    /// Charged when the change takes effect, at `effective_at` (Dodo's
    /// `immediate_charge.summary.total_amount`, minor units).
    pub amount: i64,
    /// Charged at once: `amount` for a change that applies now, 0 for one scheduled at
    /// the next billing date (that renewal charges it instead).
    pub charge_now: i64,
    /// Credits moved to the customer's balance (minor units; positive: credited).
    pub credit: i64,
    pub currency: String,
    /// When the change takes effect.
    pub effective_at: Option<crate::time::Timestamp>,
    /// Each later charge of the new plan (before tax), and the next one's date.
    pub next_charge: i64,
    pub next_charge_at: Option<crate::time::Timestamp>,
}

impl ChangePreview {
    fn from_json(answer: &Value) -> Result<Self, DodoError> {
        let charge = answer.get("immediate_charge").ok_or_else(|| {
            DodoError::Decode("plan change preview without immediate_charge".to_owned())
        })?;
        let summary = charge.get("summary").unwrap_or(&Value::Null);
        let new_plan = answer.get("new_plan").unwrap_or(&Value::Null);
        let int = |value: &Value, key: &str| value.get(key).and_then(Value::as_i64);
        let time = |value: &Value, key: &str| {
            str_field(value, key).and_then(crate::time::Timestamp::parse_rfc3339)
        };
        let amount = int(summary, "total_amount").ok_or_else(|| {
            DodoError::Decode("plan change preview without summary.total_amount".to_owned())
        })?;
        Ok(Self {
            amount,
            charge_now: amount,
            credit: int(summary, "customer_credits").unwrap_or(0),
            currency: str_field(summary, "currency").unwrap_or("USD").to_owned(),
            effective_at: time(charge, "effective_at"),
            next_charge: int(new_plan, "recurring_pre_tax_amount").unwrap_or(0),
            next_charge_at: time(new_plan, "next_billing_date"),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct CartLine<'a> {
    pub product_id: &'a str,
    pub quantity: u32,
}

/// Who pays: always the customer the paywall created for the user. (A checkout that
/// names only an e-mail is attached by Dodo to any existing customer with that e-mail.)
#[derive(Debug, Serialize)]
pub struct CheckoutCustomer<'a> {
    pub customer_id: &'a str,
}

/// `feature_flags` of a checkout session.
#[derive(Debug, Default, Serialize)]
pub struct CheckoutFlags {
    /// When no customer can be named (no e-mail to create one with), Dodo's page must
    /// create a new customer rather than attach the buyer to someone else's by e-mail.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub always_create_new_customer: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckoutSession {
    pub session_id: String,
    pub checkout_url: String,
}

/// A payment's state as Dodo reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentStatus {
    Succeeded,
    Failed,
    Cancelled,
    /// `processing`, `requires_*`, `partially_captured*`: may still succeed.
    InProgress(String),
    /// A value this version does not know. Never grants.
    Unknown(String),
    /// Dodo sent no status.
    Missing,
}

impl PaymentStatus {
    pub fn parse(raw: Option<&str>) -> Self {
        match raw {
            None => Self::Missing,
            Some("succeeded") => Self::Succeeded,
            Some("failed") => Self::Failed,
            Some("cancelled") => Self::Cancelled,
            Some(s)
                if s == "processing"
                    || s.starts_with("requires_")
                    || s.starts_with("partially_captured") =>
            {
                Self::InProgress(s.to_owned())
            }
            Some(other) => Self::Unknown(other.to_owned()),
        }
    }
}

/// The parts of Dodo's Payment object (from `GET /payments/{id}` or a `payment.*`
/// webhook) that decide who gets access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub payment_id: String,
    pub status: PaymentStatus,
    /// Our own metadata, echoed by Dodo; non-string values are shown as text.
    pub metadata: BTreeMap<String, String>,
    pub customer_email: Option<String>,
    pub customer_id: Option<String>,
    pub checkout_session_id: Option<String>,
    pub subscription_id: Option<String>,
    /// What it bought, line by line; empty when Dodo did not say (which buys nothing).
    pub product_cart: Vec<CartItem>,
    /// A payment that only saved a new card for a subscription: it buys nothing.
    pub is_update_payment_method: bool,
    /// When Dodo created it (ms), to order a subscription's payments.
    pub created_at: Option<i64>,
    /// Whether it pays a subscription's whole billing period (Dodo's `charge_type`
    /// `new` or `renewal`, or none said), rather than part of one: a plan change that
    /// keeps the cycle, or on-demand usage. A refund or lost dispute of a partial charge
    /// never ends the period another payment paid.
    pub pays_period: bool,
}

/// One line of a payment's `product_cart`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CartItem {
    pub product_id: String,
    pub quantity: u32,
}

fn str_field<'v>(value: &'v Value, key: &str) -> Option<&'v str> {
    value
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

impl Payment {
    /// Reads a Payment object leniently: only `payment_id` is required.
    pub fn from_json(value: &Value) -> Result<Self, DodoError> {
        let payment_id = str_field(value, "payment_id")
            .ok_or_else(|| DodoError::Decode("payment without payment_id".to_owned()))?
            .to_owned();
        let metadata = metadata_of(value);
        let customer = value.get("customer").unwrap_or(&Value::Null);
        let product_cart = value
            .get("product_cart")
            .and_then(Value::as_array)
            .map(|lines| {
                lines
                    .iter()
                    .filter_map(|line| {
                        Some(CartItem {
                            product_id: str_field(line, "product_id")?.to_owned(),
                            // A line without a readable quantity is one item; a zero or
                            // negative one buys nothing.
                            quantity: match line.get("quantity") {
                                None | Some(Value::Null) => 1,
                                Some(q) => q.as_u64().and_then(|q| u32::try_from(q).ok())?,
                            },
                        })
                    })
                    .filter(|item| item.quantity > 0)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            payment_id,
            status: PaymentStatus::parse(str_field(value, "status")),
            metadata,
            customer_email: str_field(customer, "email").map(str::to_owned),
            customer_id: str_field(customer, "customer_id").map(str::to_owned),
            checkout_session_id: str_field(value, "checkout_session_id").map(str::to_owned),
            subscription_id: str_field(value, "subscription_id").map(str::to_owned),
            product_cart,
            is_update_payment_method: value
                .get("is_update_payment_method")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            created_at: str_field(value, "created_at").and_then(crate::time::parse_rfc3339_millis),
            pays_period: pays_period(value),
        })
    }
}

/// `new`, `renewal` or no `charge_type` pays a period; `on_demand` does not; a
/// `plan_change` does only when its service period is a whole one (`proration_factor`
/// `"1"`: a change that starts a new cycle, such as `full_immediately`).
fn pays_period(payment: &Value) -> bool {
    match str_field(payment, "charge_type") {
        None | Some("new" | "renewal") => true,
        Some("plan_change") => payment
            .get("service_periods")
            .and_then(Value::as_array)
            .is_some_and(|periods| {
                periods.iter().any(|p| {
                    str_field(p, "proration_factor")
                        .and_then(|f| f.parse::<f64>().ok())
                        .is_some_and(|f| f >= 1.0)
                })
            }),
        Some(_) => false,
    }
}

/// An object's `metadata`, with non-string values shown as text and nested ones dropped.
pub fn metadata_of(value: &Value) -> BTreeMap<String, String> {
    value
        .get("metadata")
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => return None,
                    };
                    Some((k.clone(), text))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A product's display price, e.g. `$19.00`, when Dodo's product has a fixed price.
pub fn display_price(product: &Value) -> Option<String> {
    let price = product.get("price")?;
    let minor = price.get("price")?.as_i64()?;
    let currency = price.get("currency")?.as_str()?.to_uppercase();
    // Dodo amounts are in the currency's smallest unit.
    let decimals = match currency.as_str() {
        "JPY" | "KRW" | "VND" | "CLP" | "ISK" | "UGX" | "XAF" | "XOF" | "PYG" | "RWF" => 0,
        "BHD" | "JOD" | "KWD" | "OMR" | "TND" => 3,
        _ => 2,
    };
    let divisor = 10_i64.pow(decimals);
    let amount = if decimals == 0 {
        minor.to_string()
    } else {
        format!(
            "{}.{:0width$}",
            minor / divisor,
            (minor % divisor).abs(),
            width = decimals as usize
        )
    };
    Some(match currency.as_str() {
        "USD" => format!("${amount}"),
        "EUR" => format!("€{amount}"),
        "GBP" => format!("£{amount}"),
        "INR" => format!("₹{amount}"),
        _ => format!("{amount} {currency}"),
    })
}

/// An id from our own records, checked to be a plain token before it goes in a path.
fn token(id: &str) -> Result<crate::ids::PaymentId, DodoError> {
    crate::ids::PaymentId::parse(id).map_err(|e| DodoError::Decode(e.to_string()))
}

/// The largest answer read from Dodo.
const MAX_ANSWER_BYTES: u64 = 4 * 1024 * 1024;

enum Retry {
    /// Reads: retried once on a timeout, a failed connection, 429 or 5xx.
    Safe,
    /// Writes without an idempotency key: retried only when the connection never opened,
    /// so the request cannot have reached Dodo.
    OnlyIfNotSent,
}

impl DodoClient {
    pub fn new(config: &DodoConfig) -> Result<Self, DodoError> {
        Self::with_timeouts(config, Timeouts::default())
    }

    pub fn with_timeouts(config: &DodoConfig, timeouts: Timeouts) -> Result<Self, DodoError> {
        // No redirect is followed (L12): a 307/308 would re-send a checkout or customer
        // POST to another URL; Dodo's API sends none.
        let http = crate::http::client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            .user_agent(concat!("dodo-paywall/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DodoError::Unavailable(format!("HTTP client setup failed: {e}")))?;
        Ok(Self {
            http,
            base_url: config.base_url.clone(),
            api_key: config.api_key.clone(),
            timeouts,
            retry_reads: true,
        })
    }

    /// The same client, sending each request once: every HTTP request then is exactly
    /// one call a caller counts.
    pub fn without_retries(mut self) -> Self {
        self.retry_reads = false;
        self
    }

    /// `POST /checkouts`: a hosted checkout session.
    #[tracing::instrument(skip_all)]
    pub async fn create_checkout(
        &self,
        request: &CheckoutRequest<'_>,
    ) -> Result<CheckoutSession, DodoError> {
        let body = serde_json::to_value(request).map_err(|e| DodoError::Decode(e.to_string()))?;
        let answer = self
            .call(
                Method::POST,
                "/checkouts",
                Some(&body),
                Retry::OnlyIfNotSent,
            )
            .await?;
        let session_id = str_field(&answer, "session_id");
        let checkout_url = str_field(&answer, "checkout_url");
        match (session_id, checkout_url) {
            (Some(session_id), Some(checkout_url)) => Ok(CheckoutSession {
                session_id: session_id.to_owned(),
                checkout_url: checkout_url.to_owned(),
            }),
            _ => Err(DodoError::Decode(
                "checkout session without session_id or checkout_url".to_owned(),
            )),
        }
    }

    /// `GET /payments/{id}`.
    #[tracing::instrument(skip_all, fields(payment_id = %id))]
    pub async fn get_payment(&self, id: &PaymentId) -> Result<Payment, DodoError> {
        let answer = self
            .call(Method::GET, &format!("/payments/{id}"), None, Retry::Safe)
            .await?;
        Payment::from_json(&answer)
    }

    /// `GET /subscriptions/{id}`.
    #[tracing::instrument(skip_all, fields(subscription_id = %id))]
    pub async fn get_subscription(
        &self,
        id: &str,
    ) -> Result<crate::subscription::Subscription, DodoError> {
        // Ids come from Dodo's own payment objects; refuse anything that is not a token.
        let id = crate::ids::PaymentId::parse(id).map_err(|e| DodoError::Decode(e.to_string()))?;
        let answer = self
            .call(
                Method::GET,
                &format!("/subscriptions/{id}"),
                None,
                Retry::Safe,
            )
            .await?;
        crate::subscription::Subscription::from_json(&answer).map_err(DodoError::Decode)
    }

    /// `POST /subscriptions/{id}/change-plan`: applies (or schedules) a plan change; the
    /// payment that settles it, if Dodo made one. Not retried unless the connection never
    /// opened: a retry could charge twice.
    #[tracing::instrument(skip_all)]
    pub async fn change_plan(
        &self,
        subscription_id: &str,
        change: &PlanChange<'_>,
    ) -> Result<Option<String>, DodoError> {
        let id = token(subscription_id)?;
        let body = serde_json::to_value(change).map_err(|e| DodoError::Decode(e.to_string()))?;
        let answer = self
            .call(
                Method::POST,
                &format!("/subscriptions/{id}/change-plan"),
                Some(&body),
                Retry::OnlyIfNotSent,
            )
            .await?;
        Ok(str_field(&answer, "payment_id").map(str::to_owned))
    }

    /// `POST /subscriptions/{id}/change-plan/preview`: what the change would charge;
    /// changes nothing, so it is retried as a read.
    #[tracing::instrument(skip_all)]
    pub async fn preview_change_plan(
        &self,
        subscription_id: &str,
        change: &PlanChange<'_>,
    ) -> Result<ChangePreview, DodoError> {
        let id = token(subscription_id)?;
        let body = serde_json::to_value(change).map_err(|e| DodoError::Decode(e.to_string()))?;
        let answer = self
            .call(
                Method::POST,
                &format!("/subscriptions/{id}/change-plan/preview"),
                Some(&body),
                Retry::Safe,
            )
            .await?;
        ChangePreview::from_json(&answer)
    }

    /// `DELETE /subscriptions/{id}/change-plan/scheduled`: drops the scheduled change.
    #[tracing::instrument(skip_all)]
    pub async fn cancel_scheduled_change(&self, subscription_id: &str) -> Result<(), DodoError> {
        let id = token(subscription_id)?;
        self.call(
            Method::DELETE,
            &format!("/subscriptions/{id}/change-plan/scheduled"),
            None,
            Retry::Safe,
        )
        .await
        .map(drop)
    }

    /// `PATCH /subscriptions/{id}` `{cancel_at_next_billing_date}`: cancels at the end of
    /// the paid period (`true`) or takes that back (`false`); the subscription as Dodo
    /// now has it. Setting a value is idempotent, so it is retried as a read.
    #[tracing::instrument(skip_all)]
    pub async fn set_cancel_at_period_end(
        &self,
        subscription_id: &str,
        cancel: bool,
    ) -> Result<crate::subscription::Subscription, DodoError> {
        let id = token(subscription_id)?;
        let body = serde_json::json!({ "cancel_at_next_billing_date": cancel });
        let answer = self
            .call(
                Method::PATCH,
                &format!("/subscriptions/{id}"),
                Some(&body),
                Retry::Safe,
            )
            .await?;
        crate::subscription::Subscription::from_json(&answer).map_err(DodoError::Decode)
    }

    /// `POST /customers/{id}/customer-portal/session`: a link to Dodo's customer portal,
    /// where the customer manages subscriptions, payment methods and invoices.
    #[tracing::instrument(skip_all)]
    pub async fn create_portal_session(&self, customer_id: &str) -> Result<String, DodoError> {
        let id = crate::ids::PaymentId::parse(customer_id)
            .map_err(|e| DodoError::Decode(e.to_string()))?;
        // Not retried unless the connection never opened: each call opens a session.
        let answer = self
            .call(
                Method::POST,
                &format!("/customers/{id}/customer-portal/session?send_email=false"),
                None,
                Retry::OnlyIfNotSent,
            )
            .await?;
        str_field(&answer, "link")
            .map(str::to_owned)
            .ok_or_else(|| DodoError::Decode("portal session without link".to_owned()))
    }

    /// `POST /customers`: a new Dodo customer for one user (never looked up by e-mail).
    #[tracing::instrument(skip_all)]
    pub async fn create_customer(&self, email: &str, name: &str) -> Result<String, DodoError> {
        let body = serde_json::json!({"email": email, "name": name});
        // Not retried unless the connection never opened: a retry could create two (the
        // store binds only one to the user either way).
        let answer = self
            .call(
                Method::POST,
                "/customers",
                Some(&body),
                Retry::OnlyIfNotSent,
            )
            .await?;
        str_field(&answer, "customer_id")
            .map(str::to_owned)
            .ok_or_else(|| DodoError::Decode("customer without customer_id".to_owned()))
    }

    /// `GET /subscriptions?status=S&page_size=100&page_number=N`: one page of the
    /// business's subscriptions in status `S`, newest first, and how many items Dodo
    /// listed (an item that cannot be read is left out of the first, not the second). A
    /// page shorter than 100 is the last.
    #[tracing::instrument(skip_all, fields(page))]
    pub async fn list_subscriptions(
        &self,
        page: u32,
        status: &str,
    ) -> Result<(Vec<crate::subscription::Subscription>, usize), DodoError> {
        let status =
            crate::ids::PaymentId::parse(status).map_err(|e| DodoError::Decode(e.to_string()))?;
        let answer = self
            .call(
                Method::GET,
                &format!(
                    "/subscriptions?status={status}&page_size={LIST_PAGE_SIZE}&page_number={page}"
                ),
                None,
                Retry::Safe,
            )
            .await?;
        let items = answer
            .get("items")
            .and_then(Value::as_array)
            .ok_or_else(|| DodoError::Decode("subscription list without items".to_owned()))?;
        // An item we cannot read is skipped, not fatal: the rest of the page still counts.
        let readable = items
            .iter()
            .filter_map(|item| crate::subscription::Subscription::from_json(item).ok())
            .collect();
        Ok((readable, items.len()))
    }

    /// `GET /subscriptions?customer_id=C&product_id=P&created_at_gte=T`: one customer's
    /// subscriptions to one product created since `since` (a handful: one page).
    pub async fn list_new_subscriptions(
        &self,
        customer_id: &str,
        product_id: &ProductId,
        since: crate::time::Timestamp,
    ) -> Result<Vec<crate::subscription::Subscription>, DodoError> {
        let customer = token(customer_id)?;
        let answer = self
            .call(
                Method::GET,
                &format!(
                    "/subscriptions?customer_id={customer}&product_id={product_id}&created_at_gte={}&page_size={LIST_PAGE_SIZE}&page_number=0",
                    since.to_rfc3339()
                ),
                None,
                Retry::Safe,
            )
            .await?;
        let items = answer
            .get("items")
            .and_then(Value::as_array)
            .ok_or_else(|| DodoError::Decode("subscription list without items".to_owned()))?;
        Ok(items
            .iter()
            .filter_map(|item| crate::subscription::Subscription::from_json(item).ok())
            .collect())
    }

    /// One page (newest first) of `GET /payments?status=succeeded`, `GET /refunds` or
    /// `GET /disputes` created at or after
    /// `since`: the raw items, and whether the page was full (more may follow).
    pub async fn list_claims(
        &self,
        kind: ClaimList,
        since: crate::time::Timestamp,
        page: u32,
    ) -> Result<(Vec<Value>, bool), DodoError> {
        let (path, only) = match kind {
            ClaimList::Payments => ("/payments", "&status=succeeded"),
            ClaimList::Refunds => ("/refunds", ""),
            ClaimList::Disputes => ("/disputes", ""),
        };
        let answer = self
            .call(
                Method::GET,
                &format!(
                    "{path}?created_at_gte={}&page_size={LIST_PAGE_SIZE}&page_number={page}{only}",
                    since.to_rfc3339()
                ),
                None,
                Retry::Safe,
            )
            .await?;
        let items = answer
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| DodoError::Decode(format!("{path} list without items")))?;
        let full = items.len() >= LIST_PAGE_SIZE;
        Ok((items, full))
    }

    /// `GET /checkouts/{id}`: the payment made in a checkout session, if any yet.
    #[tracing::instrument(skip_all, fields(session_id = %id))]
    pub async fn get_checkout_payment(&self, id: &str) -> Result<Option<String>, DodoError> {
        let id = crate::ids::SessionId::parse(id).map_err(|e| DodoError::Decode(e.to_string()))?;
        let answer = self
            .call(Method::GET, &format!("/checkouts/{id}"), None, Retry::Safe)
            .await?;
        Ok(str_field(&answer, "payment_id").map(str::to_owned))
    }

    /// `GET /products/{id}`, as Dodo's JSON.
    #[tracing::instrument(skip_all, fields(product_id = %id))]
    pub async fn get_product(&self, id: &ProductId) -> Result<Value, DodoError> {
        self.call(Method::GET, &format!("/products/{id}"), None, Retry::Safe)
            .await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<Value, DodoError> {
        let first = self.attempt(method.clone(), path, body).await;
        let retryable = match (&first, &retry) {
            (Ok(_), _) => false,
            (Err(Attempt::NotSent(_)), _) => true,
            (Err(Attempt::Failed(_)), Retry::Safe) if !self.retry_reads => false,
            (Err(Attempt::Failed(err)), Retry::Safe) => match err {
                DodoError::Timeout | DodoError::Unavailable(_) => true,
                DodoError::Api { status, .. } => *status >= 500,
                DodoError::Decode(_) | DodoError::RateLimited { .. } => false,
            },
            (Err(Attempt::Failed(_)), Retry::OnlyIfNotSent) => false,
        };
        let outcome = if retryable {
            tokio::time::sleep(self.timeouts.retry_backoff).await;
            self.attempt(method, path, body).await
        } else {
            first
        };
        outcome.map_err(Attempt::into_error)
    }

    async fn attempt(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Attempt> {
        let url = format!("{}{}", self.base_url, path);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(self.api_key.expose_secret())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(classify)?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|seconds| (0..=3600).contains(seconds))
                .unwrap_or(60);
            return Err(Attempt::Failed(DodoError::RateLimited { retry_after }));
        }
        // Dodo's answers are a few kilobytes; one far larger is not Dodo's (L12).
        if response
            .content_length()
            .is_some_and(|length| length > MAX_ANSWER_BYTES)
        {
            return Err(Attempt::Failed(DodoError::Decode(
                "the answer is larger than 4 MiB".to_owned(),
            )));
        }
        let bytes = response.bytes().await.map_err(classify)?;
        if bytes.len() as u64 > MAX_ANSWER_BYTES {
            return Err(Attempt::Failed(DodoError::Decode(
                "the answer is larger than 4 MiB".to_owned(),
            )));
        }
        if status.is_success() {
            // Some routes answer nothing (`DELETE .../change-plan/scheduled`).
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes)
                .map_err(|e| Attempt::Failed(DodoError::Decode(format!("body is not JSON: {e}"))));
        }
        Err(Attempt::Failed(api_error(status, &bytes)))
    }
}

enum Attempt {
    /// The connection never opened: the request did not reach Dodo.
    NotSent(DodoError),
    Failed(DodoError),
}

impl Attempt {
    fn into_error(self) -> DodoError {
        match self {
            Self::NotSent(e) | Self::Failed(e) => e,
        }
    }
}

fn classify(err: reqwest::Error) -> Attempt {
    if err.is_connect() {
        // A connect timeout is also a connection that never opened.
        Attempt::NotSent(if err.is_timeout() {
            DodoError::Timeout
        } else {
            DodoError::Unavailable("connection failed".to_owned())
        })
    } else if err.is_timeout() {
        Attempt::Failed(DodoError::Timeout)
    } else {
        Attempt::Failed(DodoError::Unavailable(
            "the connection failed during the request".to_owned(),
        ))
    }
}

/// Dodo's errors are `{"code": "...", "message": "..."}`; anything else is summarised by
/// its status. The body is never logged whole.
fn api_error(status: StatusCode, bytes: &[u8]) -> DodoError {
    let parsed: Option<Value> = serde_json::from_slice(bytes).ok();
    let field = |key| {
        parsed
            .as_ref()
            .and_then(|v| str_field(v, key))
            .map(|s| s.chars().take(300).collect::<String>())
    };
    DodoError::Api {
        status: status.as_u16(),
        code: field("code").unwrap_or_else(|| format!("HTTP_{}", status.as_u16())),
        message: field("message")
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_payment_leniently() {
        let payment = Payment::from_json(&json!({
            "payment_id": "pay_1",
            "status": "succeeded",
            "metadata": {"user_id": "u1", "count": 3, "flag": true, "nested": {"a": 1}},
            "customer": {"customer_id": "cus_1", "email": "a@example.com", "new_field": 1},
            "checkout_session_id": "cks_1",
            "subscription_id": null,
            "product_cart": [{"product_id": "pdt_a", "quantity": 1}],
            "total_amount": "not even a number",
            "brand_new_field": {"x": [1, 2]}
        }))
        .expect("valid");
        assert_eq!(payment.status, PaymentStatus::Succeeded);
        assert_eq!(
            payment.metadata.get("user_id").map(String::as_str),
            Some("u1")
        );
        assert_eq!(payment.metadata.get("count").map(String::as_str), Some("3"));
        assert!(!payment.metadata.contains_key("nested"));
        assert_eq!(payment.customer_email.as_deref(), Some("a@example.com"));
        assert_eq!(payment.checkout_session_id.as_deref(), Some("cks_1"));
        assert_eq!(payment.subscription_id, None);
        assert_eq!(
            payment.product_cart,
            vec![CartItem {
                product_id: "pdt_a".to_owned(),
                quantity: 1
            }]
        );
        assert!(!payment.is_update_payment_method);
    }

    #[test]
    fn unknown_statuses_are_kept_apart() {
        assert_eq!(
            PaymentStatus::parse(Some("requires_customer_action")),
            PaymentStatus::InProgress("requires_customer_action".into())
        );
        assert_eq!(
            PaymentStatus::parse(Some("teleported")),
            PaymentStatus::Unknown("teleported".into())
        );
        assert_eq!(PaymentStatus::parse(None), PaymentStatus::Missing);
        assert!(Payment::from_json(&json!({"status": "succeeded"})).is_err());
    }

    #[test]
    fn formats_prices_in_minor_units() {
        let price = |amount: i64, currency: &str| {
            display_price(&json!({"price": {"price": amount, "currency": currency}}))
        };
        assert_eq!(price(1900, "USD").as_deref(), Some("$19.00"));
        assert_eq!(price(1905, "EUR").as_deref(), Some("€19.05"));
        assert_eq!(price(1900, "JPY").as_deref(), Some("1900 JPY"));
        assert_eq!(price(12_345, "chf").as_deref(), Some("123.45 CHF"));
        assert_eq!(
            display_price(&json!({"price": {"pay_what_you_want": true}})),
            None
        );
    }
}
