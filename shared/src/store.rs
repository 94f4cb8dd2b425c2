//! The one store: a single DynamoDB table, defined in `template.yaml`, reached through
//! `aws-sdk-dynamodb`.
//!
//! Items (`pk`, `sk`):
//! - `USER#{sub}` / `PROFILE`: a user's access (`paid_until`, `plan`, …), their open
//!   checkout, and a `version` for optimistic concurrency. Carries `email`, which feeds the
//!   sparse `email-index` used only as the last way to link a payment to a user.
//! - `PAYMENT#{payment_id}` / `GRANT`: the mark that a payment's access was granted. It is
//!   written in the same transaction as the grant, on the condition that it does not exist,
//!   so a payment grants exactly once whichever path brings it first. Kept forever.
//! - `PAYMENT#{payment_id}` / `CLAIMS`: refunds and disputes of the payment; a grant and a
//!   change of claims that revokes or restores it are written in one transaction.
//! - `CHECKOUT#{session_id}` / `SESSION`: which user opened a checkout session.
//! - `PAYMENT#{payment_id}` / `UNMATCHED`: a succeeded payment that nothing linked to a
//!   user, kept for support instead of being dropped.
//!
//! - `USER#{sub}` / `SUB#{subscription_id}`: a subscription's state as of the most recent
//!   event applied (`event_at`, ms), written only if no newer event was applied before,
//!   so deliveries in any order end in the same state.
//! - `SUBSCRIPTION#{id}` / `OWNER` and `CUSTOMER#{id}` / `OWNER`: which user a Dodo
//!   subscription or customer belongs to, for events that carry no metadata of ours.
//!
//! - `USER#{sub}` / `LOG#{webhook_id}`: the audit trail, one entry per delivery applied
//!   (type, time, effect), kept a year.
//!
//! `expires_at` (unix seconds) is the table's TTL attribute.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem, Update};

use crate::config::StoreConfig;
use crate::ids::{Email, UserId};
use crate::subscription::{Subscription, SubscriptionStatus};
use crate::time::{SECONDS_PER_DAY, Timestamp};

pub const EMAIL_INDEX: &str = "email-index";
/// The sparse index of what the reconcile function checks with Dodo.
pub const DUE_INDEX: &str = "due-index";
const DUE_BUCKET: &str = "due";
/// How long after a checkout opens, unpaid, the reconcile function asks Dodo about it.
pub const CHECKOUT_RECHECK_AFTER: i64 = 3600;
const PROFILE: &str = "PROFILE";
const GRANT: &str = "GRANT";
const SESSION: &str = "SESSION";
const UNMATCHED: &str = "UNMATCHED";
const CLAIMS: &str = "CLAIMS";
const OWNER: &str = "OWNER";
/// Sort-key prefix of a user's audit entries (sorts before `PROFILE`, so status reads
/// never touch them).
const LOG_PREFIX: &str = "LOG#";
/// How long the audit trail keeps an entry.
const AUDIT_DAYS: i64 = 365;
/// Sort keys of a user's own items: `PROFILE`, then `SUB#{id}` (both sort at or after
/// `PROFILE`, so one query reads a user's whole access).
const SUBSCRIPTION_PREFIX: &str = "SUB#";

/// How long the session -> user link outlives the checkout (Dodo retries a webhook for
/// about a day; a buyer may pay a session hours after opening it).
const CHECKOUT_LINK_DAYS: i64 = 90;
/// Optimistic-concurrency attempts before answering "try again" (Dodo and the frontend
/// both retry).
const MAX_GRANT_ATTEMPTS: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the payment store is unavailable: {0}")]
    Unavailable(String),
    #[error("too many concurrent updates of one user")]
    Contention,
    #[error("a stored record is malformed: {0}")]
    Corrupt(String),
}

impl<E, R> From<SdkError<E, R>> for StoreError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    fn from(err: SdkError<E, R>) -> Self {
        Self::Unavailable(DisplayErrorContext(&err).to_string())
    }
}

/// A checkout the user opened and has not (yet) paid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCheckout {
    pub session_id: String,
    pub plan: String,
    pub created_at: Timestamp,
}

/// What is stored about one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub user_id: UserId,
    pub email: Option<String>,
    /// The plan of the last payment granted.
    pub plan: Option<String>,
    /// Access ends here; `has_paid` is derived from it at read time.
    pub paid_until: Option<Timestamp>,
    pub payment_date: Option<Timestamp>,
    pub last_payment_id: Option<String>,
    pub pending_checkout: Option<PendingCheckout>,
    /// Dodo's customer id, once a subscription told us.
    pub customer_id: Option<String>,
    /// The last pass payment was refunded or lost in a dispute.
    pub refunded: bool,
    pub version: u64,
}

impl UserRecord {
    fn empty(user_id: UserId) -> Self {
        Self {
            user_id,
            email: None,
            plan: None,
            paid_until: None,
            payment_date: None,
            last_payment_id: None,
            pending_checkout: None,
            customer_id: None,
            refunded: false,
            version: 0,
        }
    }
}

/// A subscription of the user's, as its most recent event left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub subscription_id: String,
    pub status: SubscriptionStatus,
    pub plan: String,
    pub next_billing_date: Option<Timestamp>,
    pub past_due_ends_at: Option<Timestamp>,
    pub cancel_at_next_billing_date: bool,
    /// When the event that set this state occurred (ms).
    pub event_at: i64,
}

impl SubscriptionRecord {
    pub fn from_subscription(subscription: &Subscription, plan: &str, event_at: i64) -> Self {
        Self {
            subscription_id: subscription.subscription_id.clone(),
            status: subscription.status.clone(),
            plan: plan.to_owned(),
            next_billing_date: subscription.next_billing_date,
            past_due_ends_at: subscription.past_due_ends_at,
            cancel_at_next_billing_date: subscription.cancel_at_next_billing_date,
            event_at,
        }
    }

    /// Until when this state gives access (see [`crate::subscription::access_until`]).
    pub fn access_until(&self) -> Option<Timestamp> {
        crate::subscription::access_until(
            &self.status,
            self.next_billing_date,
            self.past_due_ends_at,
        )
    }

    pub fn grants_access(&self, now: Timestamp) -> bool {
        self.access_until().is_some_and(|until| until > now)
    }
}

/// Something the reconcile function checks with Dodo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DueItem {
    /// A running subscription whose paid period ends soon.
    Subscription {
        user: UserId,
        subscription_id: String,
        plan: String,
    },
    /// A checkout still pending an hour after it opened.
    Checkout {
        user: UserId,
        session_id: String,
        created_at: Timestamp,
    },
}

/// One applied webhook delivery in a user's audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub webhook_id: String,
    pub event_type: String,
    /// What it did: `granted`, `duplicate`, `applied`, `stale`, `revoked`, ...
    pub effect: String,
    /// The payment or subscription it was about.
    pub object_id: String,
    pub at: Timestamp,
}

/// Everything that decides one user's access.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub profile: Option<UserRecord>,
    pub subscriptions: Vec<SubscriptionRecord>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionOutcome {
    Applied,
    /// A newer event had already been applied: nothing changed.
    Stale,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantSource {
    Webhook,
    SuccessCall,
    Reconcile,
}

impl GrantSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::SuccessCall => "success_call",
            Self::Reconcile => "reconcile",
        }
    }
}

/// Access bought by one payment.
#[derive(Clone, Debug)]
pub struct Grant {
    pub user_id: UserId,
    pub payment_id: String,
    /// The buyer's Dodo customer id, when the payment says.
    pub customer_id: Option<String>,
    pub plan: String,
    pub days: u32,
    pub source: GrantSource,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantOutcome {
    /// This call granted the payment; the user's record after it.
    Applied(UserRecord),
    /// The payment had been granted before, to `owner`. Nothing changed.
    AlreadyApplied { owner: UserId },
    /// The payment was refunded or lost in a dispute before it could be granted: it is
    /// recorded as granted and revoked, and gives no access.
    Revoked,
}

/// The stored mark of a granted payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRecord {
    pub user_id: UserId,
    pub plan: String,
    pub days: u32,
    pub granted_until: Timestamp,
    /// Taken back by a full refund or a lost dispute (and given back if it is won).
    pub revoked: bool,
}

/// What Dodo said about a payment after it was made: refunds and disputes. Kept per
/// payment, so that a refund or a dispute that arrives before the payment itself is still
/// applied when the payment arrives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    pub fully_refunded: bool,
    pub dispute_status: Option<String>,
    /// When the dispute state applied occurred (ms); older dispute events are ignored.
    pub dispute_event_at: i64,
    version: i64,
}

impl Claims {
    /// Whether the payment's access is taken back: refunded in full, or a dispute lost or
    /// accepted (money returned to the buyer).
    pub fn revokes(&self) -> bool {
        self.fully_refunded
            || matches!(
                self.dispute_status.as_deref(),
                Some("dispute_lost" | "dispute_accepted")
            )
    }
}

/// One refund or dispute event about a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// `refund.succeeded`: a partial refund changes nothing.
    Refund { full: bool },
    /// `dispute.*`: the dispute's latest status, as of `event_at` (ms).
    Dispute { status: String, event_at: i64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The payment's access was taken back.
    Revoked,
    /// The payment's access was given back (a dispute won).
    Restored,
    /// Recorded; the payment's access did not change (not granted yet, or no change).
    Recorded,
    /// A duplicate or an older event: nothing changed.
    Unchanged,
}

#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    table: String,
}

type Item = HashMap<String, AttributeValue>;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

fn user_key(user: &UserId) -> Item {
    key(format!("USER#{user}"), PROFILE)
}

fn grant_key(payment_id: &str) -> Item {
    key(format!("PAYMENT#{payment_id}"), GRANT)
}

fn claims_key(payment_id: &str) -> Item {
    key(format!("PAYMENT#{payment_id}"), CLAIMS)
}

fn checkout_key(session_id: &str) -> Item {
    key(format!("CHECKOUT#{session_id}"), SESSION)
}

fn get_s<'i>(item: &'i Item, name: &str) -> Option<&'i str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_n(item: &Item, name: &str) -> Result<Option<i64>, StoreError> {
    match item.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_n()
            .ok()
            .and_then(|raw| raw.parse().ok())
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt(format!("{name} is not a number"))),
    }
}

fn get_bool(item: &Item, name: &str) -> bool {
    item.get(name)
        .and_then(|v| v.as_bool().ok())
        .copied()
        .unwrap_or(false)
}

fn get_time(item: &Item, name: &str) -> Result<Option<Timestamp>, StoreError> {
    Ok(get_n(item, name)?.map(Timestamp::from_unix_seconds))
}

fn get_user_id(item: &Item) -> Result<UserId, StoreError> {
    let raw = get_s(item, "user_id").ok_or_else(|| StoreError::Corrupt("no user_id".into()))?;
    UserId::parse(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn user_from_item(item: &Item) -> Result<UserRecord, StoreError> {
    let pending_checkout = match (
        get_s(item, "checkout_session_id"),
        get_time(item, "checkout_created_at")?,
    ) {
        (Some(session_id), Some(created_at)) => Some(PendingCheckout {
            session_id: session_id.to_owned(),
            plan: get_s(item, "checkout_plan").unwrap_or_default().to_owned(),
            created_at,
        }),
        _ => None,
    };
    Ok(UserRecord {
        user_id: get_user_id(item)?,
        email: get_s(item, "email").map(str::to_owned),
        plan: get_s(item, "plan").map(str::to_owned),
        paid_until: get_time(item, "paid_until")?,
        payment_date: get_time(item, "payment_date")?,
        last_payment_id: get_s(item, "last_payment_id").map(str::to_owned),
        pending_checkout,
        customer_id: get_s(item, "customer_id").map(str::to_owned),
        refunded: get_bool(item, "refunded"),
        version: get_n(item, "version")?.unwrap_or(0).max(0) as u64,
    })
}

fn subscription_from_item(item: &Item) -> Result<SubscriptionRecord, StoreError> {
    Ok(SubscriptionRecord {
        subscription_id: get_s(item, "subscription_id")
            .ok_or_else(|| StoreError::Corrupt("subscription without id".into()))?
            .to_owned(),
        status: SubscriptionStatus::parse(get_s(item, "status").unwrap_or_default()),
        plan: get_s(item, "plan").unwrap_or_default().to_owned(),
        next_billing_date: get_time(item, "next_billing_date")?,
        past_due_ends_at: get_time(item, "past_due_ends_at")?,
        cancel_at_next_billing_date: get_bool(item, "cancel_at_next_billing_date"),
        event_at: get_n(item, "event_at")?.unwrap_or(0),
    })
}

fn values<const N: usize>(pairs: [(&str, AttributeValue); N]) -> Item {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Builds the client from Lambda's environment. Nothing is sent until first use.
    pub fn connect(config: &StoreConfig) -> Self {
        use aws_sdk_dynamodb::config::retry::RetryConfig;
        use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
        use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
        use secrecy::ExposeSecret;
        let credentials = Credentials::new(
            &config.access_key_id,
            config.secret_access_key.expose_secret(),
            config
                .session_token
                .as_ref()
                .map(|token| token.expose_secret().to_owned()),
            None,
            "lambda-environment",
        );
        let mut sdk = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            // Short, so that an outage answers 503 long before API Gateway's 29 s and
            // before Dodo's 15 s webhook timeout.
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(1))
                    .operation_attempt_timeout(Duration::from_secs(2))
                    .operation_timeout(Duration::from_secs(5))
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(3));
        if let Some(endpoint) = &config.endpoint_url {
            sdk = sdk.endpoint_url(endpoint);
        }
        Self::new(Client::from_conf(sdk.build()), &config.table_name)
    }

    pub fn table_name(&self) -> &str {
        &self.table
    }

    async fn get(&self, key: Item) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await?;
        Ok(output.item)
    }

    pub async fn get_user(&self, user: &UserId) -> Result<Option<UserRecord>, StoreError> {
        self.get(user_key(user))
            .await?
            .as_ref()
            .map(user_from_item)
            .transpose()
    }

    /// A user's profile and subscriptions, in one strongly consistent query.
    pub async fn get_account(&self, user: &UserId) -> Result<Account, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk >= :profile")
            .expression_attribute_values(":pk", s(format!("USER#{user}")))
            .expression_attribute_values(":profile", s(PROFILE))
            .consistent_read(true)
            .send()
            .await?;
        let mut account = Account::default();
        for item in output.items() {
            match get_s(item, "sk") {
                Some(PROFILE) => account.profile = Some(user_from_item(item)?),
                Some(sk) if sk.starts_with(SUBSCRIPTION_PREFIX) => {
                    account.subscriptions.push(subscription_from_item(item)?)
                }
                _ => {}
            }
        }
        Ok(account)
    }

    /// Which user a Dodo subscription belongs to, once linked.
    pub async fn subscription_owner(
        &self,
        subscription_id: &str,
    ) -> Result<Option<UserId>, StoreError> {
        self.get(key(format!("SUBSCRIPTION#{subscription_id}"), OWNER))
            .await?
            .as_ref()
            .map(get_user_id)
            .transpose()
    }

    /// Which user a Dodo customer belongs to, once linked.
    pub async fn customer_owner(&self, customer_id: &str) -> Result<Option<UserId>, StoreError> {
        self.get(key(format!("CUSTOMER#{customer_id}"), OWNER))
            .await?
            .as_ref()
            .map(get_user_id)
            .transpose()
    }

    /// Links a subscription to its user without changing any state (a subscription's
    /// payment may arrive before any subscription event).
    pub async fn link_subscription(
        &self,
        user: &UserId,
        subscription_id: &str,
    ) -> Result<(), StoreError> {
        let mut item = key(format!("SUBSCRIPTION#{subscription_id}"), OWNER);
        item.insert("user_id".to_owned(), s(user.as_str()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await?;
        Ok(())
    }

    /// Stores a subscription's state for `user` unless a newer event was applied before.
    /// The state, the subscription and customer links, and the profile's customer id are
    /// written in one transaction.
    pub async fn apply_subscription(
        &self,
        user: &UserId,
        subscription: &Subscription,
        plan: &str,
        event_at: i64,
    ) -> Result<SubscriptionOutcome, StoreError> {
        let build_error =
            |e: aws_sdk_dynamodb::error::BuildError| StoreError::Unavailable(e.to_string());
        let record = SubscriptionRecord::from_subscription(subscription, plan, event_at);
        let state_key = key(
            format!("USER#{user}"),
            &format!("{SUBSCRIPTION_PREFIX}{}", record.subscription_id),
        );
        for attempt in 0..MAX_GRANT_ATTEMPTS {
            let mut item = state_key.clone();
            item.extend(values([
                ("user_id", s(user.as_str())),
                ("subscription_id", s(&record.subscription_id)),
                ("status", s(record.status.as_str())),
                ("plan", s(&record.plan)),
                (
                    "cancel_at_next_billing_date",
                    AttributeValue::Bool(record.cancel_at_next_billing_date),
                ),
                ("event_at", n(event_at)),
            ]));
            if let Some(date) = record.next_billing_date {
                item.insert("next_billing_date".to_owned(), n(date.unix_seconds()));
            }
            if let Some(date) = record.past_due_ends_at {
                item.insert("past_due_ends_at".to_owned(), n(date.unix_seconds()));
            }
            // A running subscription is checked with Dodo as its paid period ends, so a
            // lost renewal webhook never locks out a paying user.
            if matches!(
                record.status,
                SubscriptionStatus::Active | SubscriptionStatus::PastDue
            ) && let Some(until) = record.access_until()
            {
                item.insert("due_bucket".to_owned(), s(DUE_BUCKET));
                item.insert("due_at".to_owned(), n(until.unix_seconds()));
            }
            // Only a newer (or equally recent) event may replace the stored state.
            let state = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk) OR event_at <= :event_at")
                .expression_attribute_values(":event_at", n(event_at))
                .build()
                .map_err(build_error)?;
            let mut link = key(format!("SUBSCRIPTION#{}", record.subscription_id), OWNER);
            link.insert("user_id".to_owned(), s(user.as_str()));
            let link = Put::builder()
                .table_name(&self.table)
                .set_item(Some(link))
                .build()
                .map_err(build_error)?;
            let mut request = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(state).build())
                .transact_items(TransactWriteItem::builder().put(link).build());
            if let Some(customer) = &subscription.customer_id {
                let mut owner = key(format!("CUSTOMER#{customer}"), OWNER);
                owner.insert("user_id".to_owned(), s(user.as_str()));
                let owner = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(owner))
                    .build()
                    .map_err(build_error)?;
                let profile = Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(user_key(user)))
                    .update_expression(
                        "SET user_id = :user, customer_id = :customer, version = if_not_exists(version, :zero)",
                    )
                    .set_expression_attribute_values(Some(values([
                        (":user", s(user.as_str())),
                        (":customer", s(customer)),
                        (":zero", n(0)),
                    ])))
                    .build()
                    .map_err(build_error)?;
                request = request
                    .transact_items(TransactWriteItem::builder().put(owner).build())
                    .transact_items(TransactWriteItem::builder().update(profile).build());
            }
            match conflict_of(request.send().await) {
                Ok(()) => return Ok(SubscriptionOutcome::Applied),
                Err(WriteConflict::Cancelled) => {
                    let stored = self.get(state_key.clone()).await?;
                    let newer = stored
                        .as_ref()
                        .map(|item| get_n(item, "event_at"))
                        .transpose()?
                        .flatten()
                        .is_some_and(|stored_at| stored_at > event_at);
                    if newer {
                        return Ok(SubscriptionOutcome::Stale);
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(WriteConflict::Failed(err)) => return Err(err),
            }
        }
        Err(StoreError::Contention)
    }

    /// Adds a delivery to the user's audit trail. Keyed by the delivery id and written
    /// once, so Dodo's retries of one delivery leave its first effect.
    pub async fn record_event(&self, user: &UserId, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut item = key(
            format!("USER#{user}"),
            &format!("{LOG_PREFIX}{}", entry.webhook_id),
        );
        item.extend(values([
            ("webhook_id", s(&entry.webhook_id)),
            ("event_type", s(&entry.event_type)),
            ("effect", s(&entry.effect)),
            ("object_id", s(&entry.object_id)),
            ("at", n(entry.at.unix_seconds())),
            (
                "expires_at",
                n(entry.at.unix_seconds() + AUDIT_DAYS * SECONDS_PER_DAY),
            ),
        ]));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        unless_condition_failed(result)
    }

    /// A user's audit trail, oldest first (for support).
    pub async fn audit_trail(&self, user: &UserId) -> Result<Vec<AuditEntry>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :log)")
            .expression_attribute_values(":pk", s(format!("USER#{user}")))
            .expression_attribute_values(":log", s(LOG_PREFIX))
            .send()
            .await?;
        let mut entries = output
            .items()
            .iter()
            .map(|item| {
                Ok(AuditEntry {
                    webhook_id: get_s(item, "webhook_id").unwrap_or_default().to_owned(),
                    event_type: get_s(item, "event_type").unwrap_or_default().to_owned(),
                    effect: get_s(item, "effect").unwrap_or_default().to_owned(),
                    object_id: get_s(item, "object_id").unwrap_or_default().to_owned(),
                    at: get_time(item, "at")?.unwrap_or(Timestamp::from_unix_seconds(0)),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        entries.sort_by_key(|e| e.at);
        Ok(entries)
    }

    /// What is due for a check with Dodo by `until`: subscriptions whose paid period ends
    /// and checkouts left pending, oldest first, at most `limit`.
    pub async fn due_for_reconcile(
        &self,
        until: Timestamp,
        limit: i32,
    ) -> Result<Vec<DueItem>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(DUE_INDEX)
            .key_condition_expression("due_bucket = :due AND due_at <= :until")
            .expression_attribute_values(":due", s(DUE_BUCKET))
            .expression_attribute_values(":until", n(until.unix_seconds()))
            .limit(limit)
            .send()
            .await?;
        output
            .items()
            .iter()
            .filter_map(|item| {
                let user = get_s(item, "pk")?.strip_prefix("USER#")?;
                let user = match UserId::parse(user) {
                    Ok(user) => user,
                    Err(e) => return Some(Err(StoreError::Corrupt(e.to_string()))),
                };
                let sk = get_s(item, "sk")?;
                if let Some(id) = sk.strip_prefix(SUBSCRIPTION_PREFIX) {
                    return Some(Ok(DueItem::Subscription {
                        user,
                        subscription_id: id.to_owned(),
                        plan: get_s(item, "plan").unwrap_or_default().to_owned(),
                    }));
                }
                let session_id = get_s(item, "checkout_session_id")?.to_owned();
                let created_at = get_time(item, "checkout_created_at").ok().flatten()?;
                Some(Ok(DueItem::Checkout {
                    user,
                    session_id,
                    created_at,
                }))
            })
            .collect()
    }

    /// Stops checking a checkout that was never paid (the buyer walked away).
    pub async fn forget_pending_checkout(
        &self,
        user: &UserId,
        session_id: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(user_key(user)))
            .update_expression("REMOVE due_bucket, due_at")
            .condition_expression("checkout_session_id = :session")
            .expression_attribute_values(":session", s(session_id))
            .send()
            .await;
        // A newer checkout or a payment changed it meanwhile: nothing to forget.
        unless_condition_failed(result)
    }

    /// Which user opened a checkout session, if we opened it.
    pub async fn checkout_owner(&self, session_id: &str) -> Result<Option<UserId>, StoreError> {
        self.get(checkout_key(session_id))
            .await?
            .as_ref()
            .map(get_user_id)
            .transpose()
    }

    /// The mark left by granting a payment, if it was granted.
    pub async fn payment_grant(&self, payment_id: &str) -> Result<Option<GrantRecord>, StoreError> {
        let Some(item) = self.get(grant_key(payment_id)).await? else {
            return Ok(None);
        };
        Ok(Some(GrantRecord {
            user_id: get_user_id(&item)?,
            plan: get_s(&item, "plan").unwrap_or_default().to_owned(),
            days: get_n(&item, "days")?
                .unwrap_or(0)
                .clamp(0, i64::from(u32::MAX)) as u32,
            granted_until: get_time(&item, "granted_until")?
                .ok_or_else(|| StoreError::Corrupt("grant without granted_until".into()))?,
            revoked: get_bool(&item, "revoked"),
        }))
    }

    /// The refunds and disputes recorded for a payment.
    pub async fn payment_claims(&self, payment_id: &str) -> Result<Claims, StoreError> {
        let Some(item) = self.get(claims_key(payment_id)).await? else {
            return Ok(Claims::default());
        };
        Ok(Claims {
            fully_refunded: get_bool(&item, "fully_refunded"),
            dispute_status: get_s(&item, "dispute_status").map(str::to_owned),
            dispute_event_at: get_n(&item, "dispute_event_at")?.unwrap_or(0),
            version: get_n(&item, "version")?.unwrap_or(0),
        })
    }

    /// Records a refund or a dispute of a payment and, when it changes whether the
    /// payment's access stands, takes the access back (or gives it back) in the same
    /// transaction: the user's expiry moves by the days the payment granted.
    pub async fn apply_claim(
        &self,
        payment_id: &str,
        claim: &Claim,
        now: Timestamp,
    ) -> Result<ClaimOutcome, StoreError> {
        let build_error =
            |e: aws_sdk_dynamodb::error::BuildError| StoreError::Unavailable(e.to_string());
        for attempt in 0..MAX_GRANT_ATTEMPTS {
            let before = self.payment_claims(payment_id).await?;
            let mut after = before.clone();
            match claim {
                Claim::Refund { full } => after.fully_refunded |= *full,
                Claim::Dispute { status, event_at } => {
                    if *event_at >= before.dispute_event_at {
                        after.dispute_status = Some(status.clone());
                        after.dispute_event_at = *event_at;
                    }
                }
            }
            if after == before {
                return Ok(ClaimOutcome::Unchanged);
            }
            let mut item = claims_key(payment_id);
            item.extend(values([
                ("fully_refunded", AttributeValue::Bool(after.fully_refunded)),
                ("dispute_event_at", n(after.dispute_event_at)),
                ("version", n(before.version + 1)),
                ("updated_at", n(now.unix_seconds())),
            ]));
            if let Some(status) = &after.dispute_status {
                item.insert("dispute_status".to_owned(), s(status));
            }
            let claims = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk) OR version = :version")
                .expression_attribute_values(":version", n(before.version))
                .build()
                .map_err(build_error)?;
            let mut request = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(claims).build());

            let grant = self.payment_grant(payment_id).await?;
            let outcome = match &grant {
                Some(grant) if grant.revoked != after.revokes() => {
                    let revoke = after.revokes();
                    let profile = self
                        .get_user(&grant.user_id)
                        .await?
                        .unwrap_or_else(|| UserRecord::empty(grant.user_id.clone()));
                    let shift =
                        i64::from(grant.days) * SECONDS_PER_DAY * if revoke { -1 } else { 1 };
                    let until = profile
                        .paid_until
                        .map_or(grant.granted_until, |until| until.plus_seconds(shift));
                    let mark = Update::builder()
                        .table_name(&self.table)
                        .set_key(Some(grant_key(payment_id)))
                        .update_expression("SET revoked = :revoked")
                        .condition_expression("attribute_exists(pk)")
                        .expression_attribute_values(":revoked", AttributeValue::Bool(revoke))
                        .build()
                        .map_err(build_error)?;
                    let access = Update::builder()
                        .table_name(&self.table)
                        .set_key(Some(user_key(&grant.user_id)))
                        .update_expression(
                            "SET user_id = :user, paid_until = :until, refunded = :refunded, version = :next",
                        )
                        .condition_expression("attribute_not_exists(pk) OR version = :version")
                        .set_expression_attribute_values(Some(values([
                            (":user", s(grant.user_id.as_str())),
                            (":until", n(until.unix_seconds())),
                            (":refunded", AttributeValue::Bool(revoke)),
                            (":version", n(profile.version as i64)),
                            (":next", n(profile.version as i64 + 1)),
                        ])))
                        .build()
                        .map_err(build_error)?;
                    request = request
                        .transact_items(TransactWriteItem::builder().update(mark).build())
                        .transact_items(TransactWriteItem::builder().update(access).build());
                    if revoke {
                        ClaimOutcome::Revoked
                    } else {
                        ClaimOutcome::Restored
                    }
                }
                Some(_) => ClaimOutcome::Recorded,
                None => {
                    // Not granted yet: the claim must land before any grant does, or the
                    // grant must see it; checking that no grant exists serialises the two.
                    let absent = ConditionCheck::builder()
                        .table_name(&self.table)
                        .set_key(Some(grant_key(payment_id)))
                        .condition_expression("attribute_not_exists(pk)")
                        .build()
                        .map_err(build_error)?;
                    request = request.transact_items(
                        TransactWriteItem::builder().condition_check(absent).build(),
                    );
                    ClaimOutcome::Recorded
                }
            };
            match conflict_of(request.send().await) {
                Ok(()) => return Ok(outcome),
                Err(WriteConflict::Cancelled) => tokio::time::sleep(backoff(attempt)).await,
                Err(WriteConflict::Failed(err)) => return Err(err),
            }
        }
        Err(StoreError::Contention)
    }

    /// Users whose profile carries this e-mail (at most two: enough to know whether the
    /// address is ambiguous).
    pub async fn users_by_email(&self, email: &Email) -> Result<Vec<UserId>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(EMAIL_INDEX)
            .key_condition_expression("email = :email")
            .expression_attribute_values(":email", s(email.as_str()))
            .limit(2)
            .send()
            .await?;
        output
            .items()
            .iter()
            .filter_map(|item| get_s(item, "pk")?.strip_prefix("USER#"))
            .map(|raw| UserId::parse(raw).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect()
    }

    /// Records an opened checkout: the session -> user link and the user's pending state,
    /// in one transaction.
    pub async fn record_checkout(
        &self,
        user: &UserId,
        email: Option<&Email>,
        checkout: &PendingCheckout,
    ) -> Result<(), StoreError> {
        let link = Put::builder()
            .table_name(&self.table)
            .set_item(Some({
                let mut item = checkout_key(&checkout.session_id);
                item.extend(values([
                    ("user_id", s(user.as_str())),
                    ("plan", s(&checkout.plan)),
                    ("created_at", n(checkout.created_at.unix_seconds())),
                    (
                        "expires_at",
                        n(checkout.created_at.unix_seconds()
                            + CHECKOUT_LINK_DAYS * SECONDS_PER_DAY),
                    ),
                ]));
                item
            }))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;

        let mut expression = String::from(
            "SET user_id = :user, checkout_session_id = :session, checkout_plan = :plan, \
             checkout_created_at = :created, version = if_not_exists(version, :zero), \
             due_bucket = :due, due_at = :due_at",
        );
        let mut attribute_values = values([
            (":user", s(user.as_str())),
            (":session", s(&checkout.session_id)),
            (":plan", s(&checkout.plan)),
            (":created", n(checkout.created_at.unix_seconds())),
            (":zero", n(0)),
            (":due", s(DUE_BUCKET)),
            (
                ":due_at",
                n(checkout.created_at.unix_seconds() + CHECKOUT_RECHECK_AFTER),
            ),
        ]);
        if let Some(email) = email {
            expression.push_str(", email = :email");
            attribute_values.insert(":email".to_owned(), s(email.as_str()));
        }
        let pending = Update::builder()
            .table_name(&self.table)
            .set_key(Some(user_key(user)))
            .update_expression(expression)
            .set_expression_attribute_values(Some(attribute_values))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;

        self.client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(link).build())
            .transact_items(TransactWriteItem::builder().update(pending).build())
            .send()
            .await?;
        Ok(())
    }

    /// Grants a payment's access exactly once.
    ///
    /// The grant mark (conditional on not existing) and the user's new expiry (conditional
    /// on the version read) are written in one transaction: a crash, a duplicate delivery
    /// or a concurrent grant can neither lose nor double-apply the payment. A new payment
    /// extends from the later of now and the current expiry.
    pub async fn apply_grant(
        &self,
        grant: &Grant,
        now: Timestamp,
    ) -> Result<GrantOutcome, StoreError> {
        for attempt in 0..MAX_GRANT_ATTEMPTS {
            if let Some(existing) = self.payment_grant(&grant.payment_id).await? {
                return Ok(GrantOutcome::AlreadyApplied {
                    owner: existing.user_id,
                });
            }
            let claims = self.payment_claims(&grant.payment_id).await?;
            let current = self
                .get_user(&grant.user_id)
                .await?
                .unwrap_or_else(|| UserRecord::empty(grant.user_id.clone()));
            let starts = current.paid_until.map_or(now, |until| until.max(now));
            let until = starts.plus_days(grant.days);

            // Refunded or lost before it arrived: recorded as granted and revoked (so that
            // a dispute won later restores it), the user ending as if it had been granted
            // and then taken back.
            let revoked = claims.revokes();
            match self
                .write_grant(grant, &current, &claims, (starts, until), now, revoked)
                .await
            {
                Ok(()) if revoked => return Ok(GrantOutcome::Revoked),
                Ok(()) => {
                    return Ok(GrantOutcome::Applied(UserRecord {
                        plan: Some(grant.plan.clone()),
                        paid_until: Some(until),
                        payment_date: Some(now),
                        last_payment_id: Some(grant.payment_id.clone()),
                        pending_checkout: None,
                        customer_id: grant.customer_id.clone().or(current.customer_id.clone()),
                        refunded: false,
                        version: current.version + 1,
                        ..current
                    }));
                }
                Err(WriteConflict::Cancelled) => {
                    // Either the payment was granted meanwhile (the loop's first read
                    // says so), its claims changed, or the user changed: read again and
                    // retry, backing off a little more each time so concurrent writers
                    // spread out.
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(WriteConflict::Failed(err)) => return Err(err),
            }
        }
        Err(StoreError::Contention)
    }

    /// The grant mark, written only if the payment was never granted.
    fn grant_mark(
        &self,
        grant: &Grant,
        starts: Timestamp,
        until: Timestamp,
        now: Timestamp,
        revoked: bool,
    ) -> Result<Put, WriteConflict> {
        let mut item = grant_key(&grant.payment_id);
        item.extend(values([
            ("user_id", s(grant.user_id.as_str())),
            ("plan", s(&grant.plan)),
            ("days", n(i64::from(grant.days))),
            ("granted_from", n(starts.unix_seconds())),
            ("granted_until", n(until.unix_seconds())),
            ("applied_at", n(now.unix_seconds())),
            ("source", s(grant.source.as_str())),
            ("revoked", AttributeValue::Bool(revoked)),
        ]));
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| WriteConflict::Failed(StoreError::Unavailable(e.to_string())))
    }

    /// Fails the transaction if the payment's claims changed since they were read.
    fn claims_unchanged(
        &self,
        payment_id: &str,
        claims: &Claims,
    ) -> Result<TransactWriteItem, WriteConflict> {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(claims_key(payment_id)))
            .condition_expression("attribute_not_exists(pk) OR version = :claims_version")
            .expression_attribute_values(":claims_version", n(claims.version))
            .build()
            .map_err(|e| WriteConflict::Failed(StoreError::Unavailable(e.to_string())))?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    /// Writes a grant: the mark and the user's access in one transaction, checking that
    /// the payment's claims did not change since they were read. A `revoked` grant leaves
    /// the expiry where it would be after a grant and its revocation (`starts`) and marks
    /// the user refunded.
    async fn write_grant(
        &self,
        grant: &Grant,
        current: &UserRecord,
        claims: &Claims,
        (starts, until): (Timestamp, Timestamp),
        now: Timestamp,
        revoked: bool,
    ) -> Result<(), WriteConflict> {
        let build_error = |e: aws_sdk_dynamodb::error::BuildError| {
            WriteConflict::Failed(StoreError::Unavailable(e.to_string()))
        };
        let mark = self.grant_mark(grant, starts, until, now, revoked)?;

        // The condition makes the read-modify-write safe: it fails if anyone granted
        // another payment to this user since we read `current`.
        let mut attribute_values = values([
            (":user", s(grant.user_id.as_str())),
            (":plan", s(&grant.plan)),
            (
                ":until",
                n(if revoked { starts } else { until }.unix_seconds()),
            ),
            (":now", n(now.unix_seconds())),
            (":payment", s(&grant.payment_id)),
            (":refunded", AttributeValue::Bool(revoked)),
            (":version", n(current.version as i64)),
            (":next", n(current.version as i64 + 1)),
        ]);
        let mut set = String::from(
            "SET user_id = :user, #plan = :plan, paid_until = :until, payment_date = :now, \
             last_payment_id = :payment, refunded = :refunded, version = :next",
        );
        // The buyer's Dodo customer, for the customer portal.
        if let Some(customer) = &grant.customer_id {
            set.push_str(", customer_id = :customer");
            attribute_values.insert(":customer".to_owned(), s(customer));
        }
        let access = Update::builder()
            .table_name(&self.table)
            .set_key(Some(user_key(&grant.user_id)))
            .update_expression(format!(
                "{set} REMOVE checkout_session_id, checkout_plan, checkout_created_at, due_bucket, due_at"
            ))
            .condition_expression("attribute_not_exists(pk) OR version = :version")
            .expression_attribute_names("#plan", "plan")
            .set_expression_attribute_values(Some(attribute_values))
            .build()
            .map_err(build_error)?;

        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(mark).build())
            .transact_items(TransactWriteItem::builder().update(access).build())
            .transact_items(self.claims_unchanged(&grant.payment_id, claims)?)
            .send()
            .await;
        conflict_of(result)
    }

    /// Keeps a succeeded payment (`PAYMENT`) or a subscription (`SUBSCRIPTION`) that
    /// nothing linked to a user, for support to resolve.
    pub async fn record_unmatched(
        &self,
        kind: &str,
        id: &str,
        customer_email: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut item = key(format!("{kind}#{id}"), UNMATCHED);
        item.extend(values([("received_at", n(now.unix_seconds()))]));
        if let Some(email) = customer_email {
            // Not `email`: that name feeds the user index.
            item.insert("customer_email".to_owned(), s(email));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await?;
        Ok(())
    }
}

/// 5 ms, 10 ms, 15 ms… plus up to 10 ms of jitter, so that writers who collided once do
/// not collide again in lockstep.
fn backoff(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, RandomState};
    let jitter = RandomState::new().hash_one(attempt) % 10;
    Duration::from_millis(5 * u64::from(attempt + 1) + jitter)
}

/// A write whose condition failed changed nothing, which is all the caller wanted.
fn unless_condition_failed<T, E, R>(result: Result<T, SdkError<E, R>>) -> Result<(), StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(()),
        Err(err)
            if err.as_service_error().and_then(|e| e.code())
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}

fn conflict_of<T, R>(
    result: Result<T, SdkError<TransactWriteItemsError, R>>,
) -> Result<(), WriteConflict>
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(()),
        Err(SdkError::ServiceError(service))
            if matches!(
                service.err(),
                TransactWriteItemsError::TransactionCanceledException(_)
            ) =>
        {
            Err(WriteConflict::Cancelled)
        }
        Err(other) => Err(WriteConflict::Failed(other.into())),
    }
}

enum WriteConflict {
    Cancelled,
    Failed(StoreError),
}
