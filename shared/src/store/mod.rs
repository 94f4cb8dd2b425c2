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
//! - `USER#{sub}` / `SERVER_GRANT`: access given by the founder's backend (`/server/`).
//! - `USER#{sub}` / `USAGE#{limit}`: what was used of a limit in the current paid period;
//!   `USER#{sub}` / `IDEMPOTENCY#usage#{key}`: the answer a usage call's key was given.
//! - `USER#{sub}` / `EVENT#{ms}#{event_id}`: a change of the user's access, written in the
//!   transaction that changed it; the table's stream publishes it to EventBridge.
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

mod access_events;
mod audit;
mod checkouts;
mod claims;
mod customers;
mod grants;
mod profile;
mod rate_limits;
mod reconcile_index;
mod server_grants;
mod subscriptions;
mod trials;
mod usage;

pub use access_events::{
    ACCESS_EVENT_PREFIX, AccessChange, AccessEvent, AccessObserver, ExpiryWatch, Trigger,
    access_event_from_item, with_cause,
};
pub use audit::{AuditEntry, AuditPage};
use checkouts::CHECKOUT_FIELDS;
pub use checkouts::{CHECKOUT_RECHECK_AFTER, OPENING_LOCK_SECONDS, PendingCheckout};
pub use claims::{Claim, ClaimOutcome, Claims};
pub use grants::{Grant, GrantOutcome, GrantRecord, GrantSource};
pub use profile::{Account, UserRecord};
pub use rate_limits::{DodoBudget, RATE_LIMIT_CALLS, RATE_LIMIT_WINDOW_SECONDS, RateDecision};
pub use reconcile_index::{Due, DueItem, DuePage};
pub use server_grants::ServerGrant;
pub use subscriptions::{SubscriptionOutcome, SubscriptionPayment, SubscriptionRecord};
use subscriptions::{
    subscription_from_item, subscription_key, subscription_payment_key, unchanged_since,
};
pub use trials::TrialRefused;
pub use usage::{UsageAnswer, UsageCounter, UsageError, UsageRequest};

pub const EMAIL_INDEX: &str = "email-index";
/// The sparse index of what the reconcile function checks with Dodo.
pub const DUE_INDEX: &str = "due-index";
/// Short, so that an unreachable DynamoDB answers 503 well before any caller's timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const DUE_BUCKET: &str = "due";
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
/// Sort key of the mark that a payment paid for a subscription (`PAYMENT#{id}`).
const SUBSCRIPTION_PAYMENT: &str = "SUBSCRIPTION";

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

#[derive(Clone)]
pub struct Store {
    client: Client,
    table: String,
    /// Builds an access event for each change of access (see [`Store::with_access_events`]).
    observer: Option<AccessObserver>,
    /// The Dodo calls all users' requests may make (see [`Store::take_dodo_budget`]).
    dodo_budget: DodoBudget,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("table", &self.table).finish()
    }
}

/// One DynamoDB item, as the SDK holds it.
pub type Item = HashMap<String, AttributeValue>;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

impl Store {
    /// Reads many items by key, a hundred per call, asking again for what DynamoDB
    /// leaves unprocessed. Missing items are simply absent from the answer.
    pub(crate) async fn batch_get(&self, mut keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        // DynamoDB refuses a batch that names one key twice.
        let id = |item: &Item| {
            (
                get_s(item, "pk").map(str::to_owned),
                get_s(item, "sk").map(str::to_owned),
            )
        };
        keys.sort_by_key(id);
        keys.dedup_by(|a, b| id(a) == id(b));
        let mut found = Vec::new();
        for chunk in keys.chunks(100) {
            let asked = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                .set_keys(Some(chunk.to_vec()))
                .build()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let mut request = Some(HashMap::from([(self.table.clone(), asked)]));
            while let Some(asked) = request.take().filter(|r| !r.is_empty()) {
                let output = self
                    .client
                    .batch_get_item()
                    .set_request_items(Some(asked))
                    .send()
                    .await?;
                if let Some(items) = output.responses.and_then(|mut r| r.remove(&self.table)) {
                    found.extend(items);
                }
                request = output.unprocessed_keys;
            }
        }
        Ok(found)
    }
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

fn values<const N: usize>(pairs: [(&str, AttributeValue); N]) -> Item {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            observer: None,
            dodo_budget: DodoBudget::default(),
        }
    }

    /// Builds the client from Lambda's environment. Nothing is sent (or read from disk)
    /// until first use.
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
            .http_client(crate::http::SdkHttpClient::new(CONNECT_TIMEOUT))
            // Short, so that an outage answers 503 long before API Gateway's 29 s and
            // before Dodo's 15 s webhook timeout.
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
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
}

/// Appends several items to a transaction being built.
trait WithItems {
    fn with_items(self, items: Vec<TransactWriteItem>) -> Self;
}

impl WithItems
    for aws_sdk_dynamodb::operation::transact_write_items::builders::TransactWriteItemsFluentBuilder
{
    fn with_items(self, items: Vec<TransactWriteItem>) -> Self {
        items
            .into_iter()
            .fold(self, |builder, item| builder.transact_items(item))
    }
}

/// 5 ms, 10 ms, 15 ms… plus up to 10 ms of jitter, so that writers who collided once do
/// not collide again in lockstep.
fn backoff(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, RandomState};
    let jitter = RandomState::new().hash_one(attempt) % 10;
    Duration::from_millis(5 * u64::from(attempt + 1) + jitter)
}

/// Whether a write failed only because its condition did not hold.
fn is_condition_failed<E, R>(err: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    err.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
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

impl WriteConflict {
    fn into_store_error(self) -> StoreError {
        match self {
            Self::Cancelled => StoreError::Contention,
            Self::Failed(err) => err,
        }
    }
}
