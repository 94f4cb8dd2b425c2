//! The table's stream as Lambda's event source mapping reads it in AWS, from the local
//! engine (dynoxide serves the DynamoDB Streams API on the same endpoint), and a local
//! stand-in for EventBridge's `PutEvents`: together they carry access events through the
//! same publisher code as the deployed `access-events` function.
//!
//! The stand-in can also play the template's webhook (`AccessEventsWebhookUrl`): a rule
//! on the bus whose target is an EventBridge API destination. Each entry it takes is then
//! POSTed to that URL as EventBridge delivers to an API destination — see
//! [`ApiDestination`] for what is modelled and what is not.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use paywall::time::{Clock, Timestamp};
use secrecy::{ExposeSecret, SecretString};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the local stream could not be read: {0}")]
    Read(String),
}

/// A reader of one table's stream, from its start (`TRIM_HORIZON`).
pub struct LocalStream {
    http: reqwest::Client,
    endpoint: String,
    /// One iterator per shard, moved on as records are read.
    iterators: Vec<String>,
}

impl LocalStream {
    async fn call(
        http: &reqwest::Client,
        endpoint: &str,
        action: &str,
        body: Value,
    ) -> Result<Value, StreamError> {
        let answer = http
            .post(endpoint)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", format!("DynamoDBStreams_20120810.{action}"))
            // The local engine wants the shape of a SigV4 header (it verifies nothing).
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=local/20270101/us-east-1/dynamodb/aws4_request, \
                 SignedHeaders=host, Signature=0",
            )
            .header("x-amz-date", "20270101T000000Z")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| StreamError::Read(e.to_string()))?;
        let status = answer.status();
        let value: Value = answer
            .json()
            .await
            .map_err(|e| StreamError::Read(e.to_string()))?;
        if !status.is_success() {
            return Err(StreamError::Read(format!("{action}: {status} {value}")));
        }
        Ok(value)
    }

    /// Opens the stream of `table` on the engine at `endpoint`.
    pub async fn open(endpoint: &str, table: &str) -> Result<Self, StreamError> {
        let http = paywall::http::client();
        let streams =
            Self::call(&http, endpoint, "ListStreams", json!({"TableName": table})).await?;
        let arn = streams["Streams"][0]["StreamArn"]
            .as_str()
            .ok_or_else(|| StreamError::Read(format!("table {table} has no stream")))?
            .to_owned();
        let described =
            Self::call(&http, endpoint, "DescribeStream", json!({"StreamArn": arn})).await?;
        let mut iterators = Vec::new();
        for shard in described["StreamDescription"]["Shards"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let shard_id = shard["ShardId"].as_str().unwrap_or_default();
            let iterator = Self::call(
                &http,
                endpoint,
                "GetShardIterator",
                json!({"StreamArn": arn, "ShardId": shard_id, "ShardIteratorType": "TRIM_HORIZON"}),
            )
            .await?;
            if let Some(iterator) = iterator["ShardIterator"].as_str() {
                iterators.push(iterator.to_owned());
            }
        }
        Ok(Self {
            http,
            endpoint: endpoint.to_owned(),
            iterators,
        })
    }

    /// The records written since the last call, as the Lambda event a stream-triggered
    /// function receives (`{"Records": [...]}`).
    pub async fn next_batch(&mut self) -> Result<Value, StreamError> {
        let mut records = Vec::new();
        for iterator in &mut self.iterators {
            loop {
                let page = Self::call(
                    &self.http,
                    &self.endpoint,
                    "GetRecords",
                    json!({"ShardIterator": iterator}),
                )
                .await?;
                let read = page["Records"].as_array().cloned().unwrap_or_default();
                if let Some(next) = page["NextShardIterator"].as_str() {
                    *iterator = next.to_owned();
                }
                if read.is_empty() {
                    break;
                }
                records.extend(read.into_iter().map(|mut record| {
                    record["eventSource"] = json!("aws:dynamodb");
                    record
                }));
            }
        }
        Ok(json!({ "Records": records }))
    }
}

/// The header the template's connection sends the webhook secret in (its
/// `ApiKeyAuthParameters.ApiKeyName`).
pub const WEBHOOK_SECRET_HEADER: &str = "X-Paywall-Webhook-Secret";

/// The rule target's `RetryPolicy` (the template's values, EventBridge's defaults), and
/// the back-off between attempts.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// `MaximumEventAgeInSeconds`: an event older than this is not tried again.
    pub maximum_event_age: Duration,
    /// `MaximumRetryAttempts`: retries after the first attempt.
    pub maximum_retry_attempts: u32,
    /// The wait before the first retry; it doubles with each retry up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            maximum_event_age: Duration::from_secs(24 * 3600),
            maximum_retry_attempts: 185,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait after the `retry`th failed attempt (0: after the first).
    fn backoff(&self, retry: u32) -> Duration {
        self.first_backoff
            .saturating_mul(2u32.saturating_pow(retry.min(30)))
            .min(self.max_backoff)
    }
}

/// An EventBridge API destination, with its connection's API-key header, as the target
/// of a rule that matches every entry the local bus takes.
///
/// Modelled, from EventBridge's documentation of API destinations: each event is POSTed
/// as the full event envelope (`version`, `id`, `detail-type`, `source`, `account`,
/// `time`, `region`, `resources`, `detail`) with `Content-Type: application/json;
/// charset=utf-8`, `User-Agent: Amazon/EventBridge/ApiDestinations` and the API-key
/// header; a 2xx is delivered; 409, 429, 5xx, a timeout (EventBridge gives an endpoint
/// 5 seconds) or a connection failure is retried with exponential back-off, timed from
/// the start of the failed attempt, until `MaximumRetryAttempts` or
/// `MaximumEventAgeInSeconds` runs out; any other status (1xx, 3xx, other 4xx) is not
/// retried; what is not delivered goes to the dead-letter list (the rule's SQS
/// dead-letter queue in AWS). Retries are timed on `clock`: the stack's test clock when
/// it has one (moving it makes retries due), else real time.
///
/// A 401 or 407 de-authorizes the connection, as EventBridge de-authorizes an API-key
/// connection that gets one ("De-authorizing connections in EventBridge"): it loses its
/// key and stays `DEAUTHORIZED` until it is updated. Here that event and every later one
/// (pending retries included) is dead-lettered with the reason, without a request,
/// until the bus is made again (the server restarted, or reconfigured). In AWS they
/// fail too and reach the queue (at once or after their retries: EventBridge does not
/// say); here they go at once, so the local dead letter shows the cause without waiting.
///
/// Not modelled: the jitter EventBridge adds to its back-off (the waits here are exact,
/// so tests can count attempts), `InvocationRateLimitPerSecond` (no throttling), the
/// headers EventBridge strips or adds beyond those above (`Range`…), and parallel
/// deliveries (one at a time here, so a slow endpoint delays the others).
#[derive(Clone)]
pub struct ApiDestination {
    pub endpoint: String,
    pub api_key_name: String,
    pub api_key_value: SecretString,
    pub retry: RetryPolicy,
    pub clock: Clock,
    pub region: String,
    pub account: String,
    /// EventBridge's limit on how long the endpoint may take to answer.
    pub timeout: Duration,
}

impl std::fmt::Debug for ApiDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiDestination")
            .field("api_key_name", &self.api_key_name)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl ApiDestination {
    /// POSTs to `endpoint` with the secret in [`WEBHOOK_SECRET_HEADER`], retried as the
    /// template's rule target retries, timed on `clock`.
    pub fn new(endpoint: &str, secret: SecretString, clock: Clock) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            api_key_name: WEBHOOK_SECRET_HEADER.to_owned(),
            api_key_value: secret,
            retry: RetryPolicy::default(),
            clock,
            region: "us-east-1".to_owned(),
            account: crate::sigv4::LOCAL_ACCOUNT.to_owned(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// An event on its way to the API destination.
struct Delivery {
    envelope: Value,
    /// When the bus took it (the event's age counts from here).
    taken_ms: i64,
    attempts: u32,
    due_ms: i64,
    /// Why the last attempt failed (what the dead letter shows if retries run out).
    last_failure: Option<Failure>,
}

/// Why an attempt failed.
#[derive(Clone)]
struct Failure {
    status: Option<u16>,
    error: String,
    retryable: bool,
}

/// What the EventBridge stand-in received, and how it should answer next.
#[derive(Default)]
struct Bus {
    entries: Vec<Value>,
    /// Entries to refuse (by position in the next calls' entries, counted across calls).
    refuse_next: usize,
    unsigned_calls: usize,
    /// Every request received, signed or not (the `PutEvents` calls a function made).
    calls: usize,
    destination: Option<Arc<ApiDestination>>,
    pending: Vec<Delivery>,
    delivered: Vec<Value>,
    dead_letters: Vec<Value>,
    /// Why the connection is `DEAUTHORIZED` (a 401 or 407 answer); `None`: authorized.
    deauthorized: Option<String>,
}

/// A local `PutEvents` endpoint: it checks the call is SigV4-signed for `events` and
/// keeps the entries it takes (and, with an [`ApiDestination`], delivers them there).
#[derive(Clone, Default)]
pub struct LocalEventBus {
    bus: Arc<Mutex<Bus>>,
}

impl LocalEventBus {
    /// A bus with a rule that sends every entry it takes to `destination`.
    pub fn with_api_destination(destination: ApiDestination) -> Self {
        let bus = Self::default();
        bus.lock().destination = Some(Arc::new(destination));
        bus
    }

    /// Serves on a loopback port; the URL to put in `AWS_ENDPOINT_URL_EVENTBRIDGE`. With
    /// an API destination, its deliveries start too.
    pub async fn start(&self) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/", axum::routing::post(put_events))
            .with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let destination = self.lock().destination.clone();
        if let Some(destination) = destination {
            let http = paywall::http::client_builder()
                .timeout(destination.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(std::io::Error::other)?;
            let bus = self.clone();
            tokio::spawn(async move { bus.deliver_forever(http, destination).await });
        }
        Ok(url)
    }

    /// Envelopes the API destination answered with a 2xx, oldest first.
    pub fn delivered(&self) -> Vec<Value> {
        self.lock().delivered.clone()
    }

    /// Events that could not be delivered, oldest first: `{event, attempts, last_status,
    /// error, exhausted_retry_condition, at}`.
    pub fn dead_letters(&self) -> Vec<Value> {
        self.lock().dead_letters.clone()
    }

    /// Events taken but neither delivered nor dead-lettered yet.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// The connection's state, as `DescribeConnection` names it: `{"state": "AUTHORIZED"}`,
    /// or `{"state": "DEAUTHORIZED", "reason": …}` after a 401 or 407.
    pub fn connection(&self) -> Value {
        match &self.lock().deauthorized {
            None => json!({"state": "AUTHORIZED"}),
            Some(reason) => json!({"state": "DEAUTHORIZED", "reason": reason}),
        }
    }

    /// Polls for due deliveries (every 20 ms of real time; "due" is on the destination's
    /// clock) and makes them, one at a time.
    async fn deliver_forever(&self, http: reqwest::Client, destination: Arc<ApiDestination>) {
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = destination.clock.now_millis();
            let due: Vec<Delivery> = {
                let mut state = self.lock();
                let (due, waiting) = std::mem::take(&mut state.pending)
                    .into_iter()
                    .partition(|d: &Delivery| d.due_ms <= now);
                state.pending = waiting;
                due
            };
            for mut delivery in due {
                let max_age_ms = i64::try_from(destination.retry.maximum_event_age.as_millis())
                    .unwrap_or(i64::MAX);
                // Too old to try again (the clock moved past the event's age limit): the
                // dead letter keeps the last attempt's failure.
                if delivery.attempts > 0
                    && destination.clock.now_millis() - delivery.taken_ms >= max_age_ms
                {
                    let failure = delivery.last_failure.clone().unwrap_or(Failure {
                        status: None,
                        error: "not retried: the event is older than MaximumEventAgeInSeconds"
                            .into(),
                        retryable: true,
                    });
                    self.dead_letter(
                        &destination,
                        delivery,
                        &failure,
                        Some("MaximumEventAgeInSeconds"),
                    );
                    continue;
                }
                // A de-authorized connection has no key to send: nothing is sent.
                let deauthorized = self.lock().deauthorized.clone();
                if let Some(reason) = deauthorized {
                    delivery.attempts += 1;
                    let failure = Failure {
                        status: None,
                        error: format!("the connection is DEAUTHORIZED: {reason}"),
                        retryable: false,
                    };
                    self.dead_letter(&destination, delivery, &failure, None);
                    continue;
                }
                delivery.attempts += 1;
                // The back-off counts from the attempt's start, not from when its answer
                // is read: the clock may move while the endpoint answers.
                let started_ms = destination.clock.now_millis();
                match attempt(&http, &destination, &delivery.envelope).await {
                    Ok(()) => {
                        tracing::info!(
                            target: "dev::access_events",
                            attempts = delivery.attempts,
                            "access event delivered to the webhook"
                        );
                        self.lock().delivered.push(delivery.envelope);
                    }
                    Err(failure) if matches!(failure.status, Some(401 | 407)) => {
                        let status = failure.status.unwrap_or_default();
                        let reason = format!(
                            "the endpoint answered {status}, which de-authorizes an API-key \
                             connection; restart the local server to authorize it again"
                        );
                        tracing::warn!(
                            target: "dev::access_events",
                            status,
                            "the webhook answered {status}: the connection is de-authorized \
                             and every later delivery is dead-lettered"
                        );
                        self.lock().deauthorized = Some(reason.clone());
                        let failure = Failure {
                            error: format!("the connection is DEAUTHORIZED: {reason}"),
                            ..failure
                        };
                        self.dead_letter(&destination, delivery, &failure, None);
                    }
                    Err(failure) if !failure.retryable => {
                        self.dead_letter(&destination, delivery, &failure, None);
                    }
                    Err(failure) => {
                        let retries = delivery.attempts - 1;
                        if retries >= destination.retry.maximum_retry_attempts {
                            self.dead_letter(
                                &destination,
                                delivery,
                                &failure,
                                Some("MaximumRetryAttempts"),
                            );
                            continue;
                        }
                        let wait = destination.retry.backoff(retries);
                        tracing::info!(
                            target: "dev::access_events",
                            status = failure.status,
                            attempts = delivery.attempts,
                            retry_in_ms = wait.as_millis() as u64,
                            "the webhook refused an access event; retrying"
                        );
                        delivery.due_ms =
                            started_ms + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
                        delivery.last_failure = Some(failure);
                        self.lock().pending.push(delivery);
                    }
                }
            }
        }
    }

    fn dead_letter(
        &self,
        destination: &ApiDestination,
        delivery: Delivery,
        failure: &Failure,
        exhausted: Option<&str>,
    ) {
        tracing::warn!(
            target: "dev::access_events",
            status = failure.status,
            attempts = delivery.attempts,
            "an access event could not be delivered to the webhook; see /dev/events/webhook"
        );
        self.lock().dead_letters.push(json!({
            "event": delivery.envelope,
            "attempts": delivery.attempts,
            "last_status": failure.status,
            "error": failure.error,
            "exhausted_retry_condition": exhausted,
            "at": destination.clock.now().to_rfc3339(),
        }));
    }

    /// Every entry taken, oldest first.
    pub fn entries(&self) -> Vec<Value> {
        self.lock().entries.clone()
    }

    /// Refuses the next `count` entries (as EventBridge's `FailedEntryCount` does).
    pub fn refuse_next(&self, count: usize) {
        self.lock().refuse_next = count;
    }

    /// Calls that were not signed as AWS signs them.
    pub fn unsigned_calls(&self) -> usize {
        self.lock().unsigned_calls
    }

    /// Every call received (`PutEvents`, answered or refused).
    pub fn calls(&self) -> usize {
        self.lock().calls
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bus> {
        self.bus
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn put_events(
    State(bus): State<LocalEventBus>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    bus.lock().calls += 1;
    let signed = header("authorization").starts_with("AWS4-HMAC-SHA256 Credential=")
        && header("authorization").contains("/events/aws4_request")
        && !header("x-amz-date").is_empty();
    if header("x-amz-target") != "AWSEvents.PutEvents" || !signed {
        bus.lock().unsigned_calls += 1;
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"__type": "MissingAuthenticationTokenException"})),
        )
            .into_response();
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    // Each entry names its bus (absent: the default bus).
    let mut needs: Vec<(String, crate::iam::Resource)> = request["Entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let bus = entry["EventBusName"].as_str().unwrap_or("default");
            (
                "events:PutEvents".to_owned(),
                crate::iam::Resource::EventBus(bus.to_owned()),
            )
        })
        .collect();
    needs.dedup();
    if let Err(denied) = crate::iam::authorize(&header("authorization"), &needs) {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"__type": "AccessDeniedException", "message": denied.to_string()})),
        )
            .into_response();
    }
    let mut state = bus.lock();
    let mut results = Vec::new();
    let mut failed = 0;
    for entry in request["Entries"].as_array().into_iter().flatten() {
        let detail = entry["Detail"]
            .as_str()
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
            .filter(Value::is_object);
        if state.refuse_next > 0 {
            state.refuse_next -= 1;
            failed += 1;
            results.push(json!({"ErrorCode": "InternalFailure", "ErrorMessage": "try again"}));
        } else if detail.is_none() {
            failed += 1;
            results.push(json!({"ErrorCode": "MalformedDetail",
                "ErrorMessage": "Detail is malformed."}));
        } else {
            state.entries.push(entry.clone());
            let id = event_id();
            if let (Some(destination), Some(detail)) = (state.destination.clone(), detail) {
                let now = destination.clock.now_millis();
                state.pending.push(Delivery {
                    envelope: envelope(&destination, &id, entry, detail),
                    taken_ms: now,
                    attempts: 0,
                    due_ms: now,
                    last_failure: None,
                });
            }
            results.push(json!({"EventId": id}));
        }
    }
    axum::Json(json!({"FailedEntryCount": failed, "Entries": results})).into_response()
}

/// A version 4 UUID, as EventBridge gives each event.
fn event_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let high = RandomState::new().hash_one(n);
    let low = RandomState::new().hash_one(n.wrapping_add(1 << 63));
    let bits =
        (u128::from(high) << 64 | u128::from(low)) & !(0xf000_u128 << 64) & !(0xc000_u128 << 48);
    let bits = bits | (0x4000_u128 << 64) | (0x8000_u128 << 48);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The event as EventBridge hands it to a target: its metadata around the entry's detail.
fn envelope(destination: &ApiDestination, id: &str, entry: &Value, detail: Value) -> Value {
    // An entry's own `Time` (RFC 3339) is kept; else the time the bus took it.
    let time = entry["Time"]
        .as_str()
        .and_then(Timestamp::parse_rfc3339)
        .unwrap_or_else(|| destination.clock.now());
    json!({
        "version": "0",
        "id": id,
        "detail-type": entry["DetailType"],
        "source": entry["Source"],
        "account": destination.account,
        "time": time.to_rfc3339(),
        "region": destination.region,
        "resources": entry["Resources"].as_array().cloned().unwrap_or_default(),
        "detail": detail,
    })
}

/// One POST of the envelope, as an API destination makes it.
async fn attempt(
    http: &reqwest::Client,
    destination: &ApiDestination,
    envelope: &Value,
) -> Result<(), Failure> {
    let answer = http
        .post(&destination.endpoint)
        .header("content-type", "application/json; charset=utf-8")
        .header("user-agent", "Amazon/EventBridge/ApiDestinations")
        .header(
            destination.api_key_name.as_str(),
            destination.api_key_value.expose_secret(),
        )
        .body(envelope.to_string())
        .send()
        .await;
    match answer {
        Ok(answer) => {
            let status = answer.status().as_u16();
            if answer.status().is_success() {
                Ok(())
            } else {
                Err(Failure {
                    status: Some(status),
                    error: format!("the endpoint answered {status}"),
                    // 401 and 407 are retried too, but de-authorize the connection first
                    // (see the delivery loop), so no retry ever reaches the endpoint.
                    retryable: matches!(status, 401 | 407 | 409 | 429 | 500..=599),
                })
            }
        }
        // Never the URL (it may carry a token): only what went wrong.
        Err(err) => Err(Failure {
            status: None,
            error: if err.is_timeout() {
                format!("no answer within {} s", destination.timeout.as_secs())
            } else {
                format!("could not reach the endpoint: {}", err.without_url())
            },
            retryable: true,
        }),
    }
}
