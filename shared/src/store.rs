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
//! - `CHECKOUT#{session_id}` / `SESSION`: which user opened a checkout session.
//! - `PAYMENT#{payment_id}` / `UNMATCHED`: a succeeded payment that nothing linked to a
//!   user, kept for support instead of being dropped.
//!
//! `expires_at` (unix seconds) is the table's TTL attribute.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};

use crate::config::StoreConfig;
use crate::ids::{Email, UserId};
use crate::time::{SECONDS_PER_DAY, Timestamp};

pub const EMAIL_INDEX: &str = "email-index";
const PROFILE: &str = "PROFILE";
const GRANT: &str = "GRANT";
const SESSION: &str = "SESSION";
const UNMATCHED: &str = "UNMATCHED";

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
            version: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantSource {
    Webhook,
    SuccessCall,
}

impl GrantSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::SuccessCall => "success_call",
        }
    }
}

/// Access bought by one payment.
#[derive(Clone, Debug)]
pub struct Grant {
    pub user_id: UserId,
    pub payment_id: String,
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
}

/// The stored mark of a granted payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRecord {
    pub user_id: UserId,
    pub plan: String,
    pub granted_until: Timestamp,
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
        version: get_n(item, "version")?.unwrap_or(0).max(0) as u64,
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
            granted_until: get_time(&item, "granted_until")?
                .ok_or_else(|| StoreError::Corrupt("grant without granted_until".into()))?,
        }))
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
             checkout_created_at = :created, version = if_not_exists(version, :zero)",
        );
        let mut attribute_values = values([
            (":user", s(user.as_str())),
            (":session", s(&checkout.session_id)),
            (":plan", s(&checkout.plan)),
            (":created", n(checkout.created_at.unix_seconds())),
            (":zero", n(0)),
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
            let current = self
                .get_user(&grant.user_id)
                .await?
                .unwrap_or_else(|| UserRecord::empty(grant.user_id.clone()));
            let starts = current.paid_until.map_or(now, |until| until.max(now));
            let until = starts.plus_days(grant.days);

            match self.write_grant(grant, &current, starts, until, now).await {
                Ok(()) => {
                    return Ok(GrantOutcome::Applied(UserRecord {
                        plan: Some(grant.plan.clone()),
                        paid_until: Some(until),
                        payment_date: Some(now),
                        last_payment_id: Some(grant.payment_id.clone()),
                        pending_checkout: None,
                        version: current.version + 1,
                        ..current
                    }));
                }
                Err(WriteConflict::Cancelled) => {
                    // Either the payment was granted meanwhile (the loop's first read
                    // says so) or the user changed: read again and retry, backing off a
                    // little more each time so concurrent writers spread out.
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(WriteConflict::Failed(err)) => return Err(err),
            }
        }
        Err(StoreError::Contention)
    }

    async fn write_grant(
        &self,
        grant: &Grant,
        current: &UserRecord,
        starts: Timestamp,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<(), WriteConflict> {
        let build_error = |e: aws_sdk_dynamodb::error::BuildError| {
            WriteConflict::Failed(StoreError::Unavailable(e.to_string()))
        };
        let mark = Put::builder()
            .table_name(&self.table)
            .set_item(Some({
                let mut item = grant_key(&grant.payment_id);
                item.extend(values([
                    ("user_id", s(grant.user_id.as_str())),
                    ("plan", s(&grant.plan)),
                    ("days", n(i64::from(grant.days))),
                    ("granted_from", n(starts.unix_seconds())),
                    ("granted_until", n(until.unix_seconds())),
                    ("applied_at", n(now.unix_seconds())),
                    ("source", s(grant.source.as_str())),
                ]));
                item
            }))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(build_error)?;

        // The condition makes the read-modify-write safe: it fails if anyone granted
        // another payment to this user since we read `current`.
        let access = Update::builder()
            .table_name(&self.table)
            .set_key(Some(user_key(&grant.user_id)))
            .update_expression(
                "SET user_id = :user, #plan = :plan, paid_until = :until, payment_date = :now, \
                 last_payment_id = :payment, version = :next \
                 REMOVE checkout_session_id, checkout_plan, checkout_created_at",
            )
            .condition_expression("attribute_not_exists(pk) OR version = :version")
            .expression_attribute_names("#plan", "plan")
            .set_expression_attribute_values(Some(values([
                (":user", s(grant.user_id.as_str())),
                (":plan", s(&grant.plan)),
                (":until", n(until.unix_seconds())),
                (":now", n(now.unix_seconds())),
                (":payment", s(&grant.payment_id)),
                (":version", n(current.version as i64)),
                (":next", n(current.version as i64 + 1)),
            ])))
            .build()
            .map_err(build_error)?;

        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(mark).build())
            .transact_items(TransactWriteItem::builder().update(access).build())
            .send()
            .await;
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

    /// Keeps a succeeded payment that nothing linked to a user, for support to resolve.
    pub async fn record_unmatched_payment(
        &self,
        payment_id: &str,
        customer_email: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut item = key(format!("PAYMENT#{payment_id}"), UNMATCHED);
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

enum WriteConflict {
    Cancelled,
    Failed(StoreError),
}
