//! DynamoDB on this machine: dynoxide embedded in the process, served on a loopback port,
//! so that the product's one store implementation talks to it through the real
//! `aws-sdk-dynamodb`, exactly as it talks to DynamoDB in AWS. The table is created from
//! `template.yaml`'s own definition, never from a copy.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use serde_yaml_ng::Value;
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum LocalDynamoError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("template.yaml is not YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("template.yaml: {0}")]
    Template(String),
    #[error("dynoxide: {0}")]
    Engine(String),
    #[error("DynamoDB call failed: {0}")]
    Sdk(String),
    #[error("cannot listen on loopback: {0}")]
    Listen(#[from] std::io::Error),
}

/// A running dynoxide server on `127.0.0.1`. Dropping it stops the server.
pub struct LocalDynamo {
    endpoint: String,
    stop: Option<oneshot::Sender<()>>,
    stopped: Option<tokio::task::JoinHandle<Result<(), String>>>,
    /// Every request the front served, when it meters ([`LocalDynamo::in_memory_metered`]).
    meter: Option<Meter>,
    /// Operations the front answers with DynamoDB's `InternalServerError` until healed;
    /// `None` without a front ([`LocalDynamo::in_memory_without_iam`]).
    faults: Option<DatabaseFaults>,
}

/// The operations (`TransactWriteItems`, ...) the front answers with DynamoDB's
/// `InternalServerError` (a 500, which the SDK retries, then gives up on), reaching
/// nothing, until healed: one kind of call failing at a chosen step of a handler, for
/// tests of what a failure after an effect elsewhere leaves (and the local server's
/// `/dev/database`). A handle: clones share the set, and an engine restarted with it
/// keeps failing.
#[derive(Clone, Debug, Default)]
pub struct DatabaseFaults(Arc<Mutex<std::collections::BTreeSet<String>>>);

impl DatabaseFaults {
    /// Every `operation` call fails from now on; an operation DynamoDB does not have (of
    /// those that read or write items) is refused.
    pub fn fail(&self, operation: &str) -> Result<(), String> {
        if !CAPACITY_OPERATIONS.contains(&operation) {
            return Err(format!(
                "`{operation}` is not one of DynamoDB's item operations: {}",
                CAPACITY_OPERATIONS.join(", ")
            ));
        }
        self.set().insert(operation.to_owned());
        Ok(())
    }

    /// Every call reaches the engine again.
    pub fn heal(&self) {
        self.set().clear();
    }

    /// The operations failing now, sorted.
    pub fn failing(&self) -> Vec<String> {
        self.set().iter().cloned().collect()
    }

    fn fails(&self, operation: &str) -> bool {
        self.set().contains(operation)
    }

    fn set(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where a metered call's capacity units were read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitsFrom {
    /// The engine's own `ConsumedCapacity` in its answer.
    Engine,
    /// DynamoDB's documented rules, for an answer that carries none (a failed
    /// conditional write, a cancelled transaction, a refusal).
    Rules,
}

/// One DynamoDB request, as the metering front saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct MeteredCall {
    /// The binary whose role signed it (access key `role-<binary>`, see
    /// [`crate::iam::access_key_for`]); empty for the administrator's key (a test's
    /// setup and checks).
    pub function: String,
    /// The `X-Amz-Target` operation, e.g. `Query`, `TransactWriteItems`.
    pub operation: String,
    /// Read request units DynamoDB on demand would bill for it.
    pub read_units: f64,
    /// Write request units DynamoDB on demand would bill for it.
    pub write_units: f64,
    pub units_from: UnitsFrom,
    /// The HTTP status it was answered with.
    pub status: u16,
}

/// The calls a metering front recorded and nobody has taken yet.
type Meter = Arc<Mutex<Vec<MeteredCall>>>;

impl LocalDynamo {
    /// In memory: each call is a fresh, empty engine.
    pub async fn in_memory() -> Result<Self, LocalDynamoError> {
        let db =
            dynoxide::Database::memory().map_err(|e| LocalDynamoError::Engine(e.to_string()))?;
        Self::serve(db, "127.0.0.1:0", None).await
    }

    /// In memory, behind the same IAM front, which also meters: it records every
    /// request (see [`LocalDynamo::take_calls`]) with the capacity units DynamoDB would
    /// bill for it. The function sees exactly the answer it would without the meter.
    pub async fn in_memory_metered() -> Result<Self, LocalDynamoError> {
        let db =
            dynoxide::Database::memory().map_err(|e| LocalDynamoError::Engine(e.to_string()))?;
        Self::serve(db, "127.0.0.1:0", Some(Meter::default())).await
    }

    /// The requests served since the last take, in the order they were answered; empty
    /// when this engine does not meter.
    pub fn take_calls(&self) -> Vec<MeteredCall> {
        self.meter.as_ref().map_or_else(Vec::new, |meter| {
            std::mem::take(&mut *meter.lock().unwrap_or_else(|e| e.into_inner()))
        })
    }

    /// In memory, served directly by dynoxide without the IAM gate: for the bench, which
    /// measures the functions' own latency, not a loopback hop of the stand-in (the tests
    /// prove the permissions).
    pub async fn in_memory_without_iam() -> Result<Self, LocalDynamoError> {
        let db =
            dynoxide::Database::memory().map_err(|e| LocalDynamoError::Engine(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (stop, stop_signal) = oneshot::channel::<()>();
        let stopped = tokio::spawn(dynoxide::server::serve_with_shutdown(listener, db, async {
            let _ = stop_signal.await;
        }));
        Ok(Self {
            endpoint,
            stop: Some(stop),
            stopped: Some(stopped),
            meter: None,
            faults: None,
        })
    }

    /// Backed by a SQLite file, so state survives a restart.
    pub async fn on_disk(path: &Path, address: &str) -> Result<Self, LocalDynamoError> {
        Self::on_disk_with_faults(path, address, DatabaseFaults::default()).await
    }

    /// As [`Self::on_disk`], failing the operations `faults` names (a restart keeps them).
    pub async fn on_disk_with_faults(
        path: &Path,
        address: &str,
        faults: DatabaseFaults,
    ) -> Result<Self, LocalDynamoError> {
        let db = dynoxide::Database::new(&path.to_string_lossy())
            .map_err(|e| LocalDynamoError::Engine(e.to_string()))?;
        Self::serve_with_faults(db, address, None, faults).await
    }

    /// dynoxide on a private loopback port, behind [`crate::iam`]'s check of each call
    /// against the role that signed it (dynoxide itself ignores IAM), on `address`; with
    /// `meter`, the front also records every request into it.
    async fn serve(
        db: dynoxide::Database,
        address: &str,
        meter: Option<Meter>,
    ) -> Result<Self, LocalDynamoError> {
        Self::serve_with_faults(db, address, meter, DatabaseFaults::default()).await
    }

    async fn serve_with_faults(
        db: dynoxide::Database,
        address: &str,
        meter: Option<Meter>,
        faults: DatabaseFaults,
    ) -> Result<Self, LocalDynamoError> {
        let engine_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let engine = format!("http://{}", engine_listener.local_addr()?);
        let listener = tokio::net::TcpListener::bind(address).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (stop, stop_signal) = oneshot::channel::<()>();
        let (stop_front, stop_front_signal) = oneshot::channel::<()>();
        let front = axum::Router::new()
            .fallback(iam_gate)
            .with_state(IamGate {
                engine,
                http: paywall::http::client_builder()
                    .no_proxy()
                    .build()
                    .map_err(|e| LocalDynamoError::Engine(e.to_string()))?,
                meter: meter.clone(),
                key_names: Arc::default(),
                faults: faults.clone(),
            })
            .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024));
        let front_served = tokio::spawn(async move {
            let _ = axum::serve(listener, front)
                .with_graceful_shutdown(async {
                    let _ = stop_front_signal.await;
                })
                .await;
        });
        // Stopping stops the front first (no call reaches a stopped engine), then dynoxide.
        let (stop_engine, stop_engine_signal) = oneshot::channel::<()>();
        let engine = tokio::spawn(dynoxide::server::serve_with_shutdown(
            engine_listener,
            db,
            async {
                let _ = stop_engine_signal.await;
            },
        ));
        let stopped = tokio::spawn(async move {
            let _ = stop_signal.await;
            let _ = stop_front.send(());
            let _ = front_served.await;
            let _ = stop_engine.send(());
            engine
                .await
                .map_err(|e| e.to_string())
                .and_then(|served| served)
        });
        Ok(Self {
            endpoint,
            stop: Some(stop),
            stopped: Some(stopped),
            meter,
            faults: Some(faults),
        })
    }

    /// `http://127.0.0.1:<port>`: what `AWS_ENDPOINT_URL_DYNAMODB` should say.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// An SDK client for this engine, with dummy credentials and a fixed region, so that
    /// no request ever leaves loopback.
    pub fn client(&self) -> Client {
        client_for(&self.endpoint)
    }

    /// A client for this engine that signs as the function `binary`'s role: its calls
    /// are held to that role's policy in `template.yaml`.
    pub fn client_as(&self, binary: &str) -> Client {
        client_as(&self.endpoint, binary)
    }

    /// The handle on the operations this engine fails ([`DatabaseFaults`]). Only behind
    /// the front: [`Self::in_memory_without_iam`] panics, as a test relying on it would
    /// prove nothing.
    pub fn faults(&self) -> DatabaseFaults {
        self.faults
            .clone()
            .expect("faults need the front: not in_memory_without_iam")
    }

    /// From now on, every `operation` call fails (see [`DatabaseFaults`]), until
    /// [`Self::heal`]. Panics on a name DynamoDB does not have.
    pub fn fail(&self, operation: &str) {
        if let Err(unknown) = self.faults().fail(operation) {
            panic!("{unknown}");
        }
    }

    /// Every call reaches the engine again.
    pub fn heal(&self) {
        if let Some(faults) = &self.faults {
            faults.heal();
        }
    }

    /// Stops serving (an outage, for tests); requests then fail to connect.
    pub async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.await;
        }
    }
}

impl Drop for LocalDynamo {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The front of the local engine: what IAM would decide for the role that signed the
/// call, then dynoxide; when it meters, what the call cost.
#[derive(Clone)]
struct IamGate {
    engine: String,
    http: reqwest::Client,
    meter: Option<Meter>,
    /// Table name -> its key attributes' names (read once, to find a put's key).
    key_names: Arc<Mutex<HashMap<String, Vec<String>>>>,
    faults: DatabaseFaults,
}

/// DynamoDB's JSON protocol target prefix (streams have their own).
const DYNAMODB_TARGET: &str = "DynamoDB_20120810.";

/// Operations that accept `ReturnConsumedCapacity`.
const CAPACITY_OPERATIONS: [&str; 13] = [
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "Query",
    "Scan",
    "BatchGetItem",
    "BatchWriteItem",
    "TransactGetItems",
    "TransactWriteItems",
    "ExecuteStatement",
    "BatchExecuteStatement",
    "ExecuteTransaction",
];

/// Operations whose units are read units (the rest that report capacity write).
const READ_OPERATIONS: [&str; 5] = [
    "GetItem",
    "Query",
    "Scan",
    "BatchGetItem",
    "TransactGetItems",
];

async fn iam_gate(
    axum::extract::State(gate): axum::extract::State<IamGate>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let target = header("x-amz-target");
    let operation = target.rsplit('.').next().unwrap_or(target).to_owned();
    let function = crate::iam::role_of(header("authorization")).unwrap_or_default();
    let mut request = serde_json::Value::Null;
    if !target.is_empty() {
        request = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        let needs = crate::iam::dynamodb_needs(target, &request);
        if let Err(denied) = crate::iam::authorize(header("authorization"), &needs) {
            // Refused before DynamoDB reads anything: nothing billed.
            gate.record(MeteredCall {
                function,
                operation,
                read_units: 0.0,
                write_units: 0.0,
                units_from: UnitsFrom::Rules,
                status: 400,
            });
            return (
                axum::http::StatusCode::BAD_REQUEST,
                [("content-type", "application/x-amz-json-1.0")],
                crate::iam::dynamodb_denial(&denied),
            )
                .into_response();
        }
    }
    if gate.faults.fails(&operation) {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "application/x-amz-json-1.0")],
            serde_json::json!({
                "__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
                "message": "Internal server error (injected by the test)",
            })
            .to_string(),
        )
            .into_response();
    }
    // The meter asks the engine what each call consumed; a caller that did not ask
    // gets the answer without it, as DynamoDB would give it.
    let metered = gate.meter.is_some()
        && target.starts_with(DYNAMODB_TARGET)
        && CAPACITY_OPERATIONS.contains(&operation.as_str())
        && request.is_object();
    let mut strip_capacity = false;
    let mut body = body;
    if metered
        && matches!(
            request["ReturnConsumedCapacity"].as_str(),
            None | Some("NONE")
        )
    {
        let mut asking = request.clone();
        asking["ReturnConsumedCapacity"] = "TOTAL".into();
        body = serde_json::to_vec(&asking)
            .map(axum::body::Bytes::from)
            .unwrap_or(body);
        strip_capacity = true;
    }
    let mut forward = gate.http.request(method, &gate.engine).body(body);
    for (name, value) in &headers {
        if name != axum::http::header::HOST && name != axum::http::header::CONTENT_LENGTH {
            forward = forward.header(name, value);
        }
    }
    match forward.send().await {
        Ok(answer) => {
            let status = answer.status();
            let mut response_headers = axum::http::HeaderMap::new();
            for (name, value) in answer.headers() {
                if name != axum::http::header::CONTENT_LENGTH
                    && name != axum::http::header::TRANSFER_ENCODING
                {
                    response_headers.insert(name.clone(), value.clone());
                }
            }
            let Ok(mut bytes) = answer.bytes().await else {
                return axum::http::StatusCode::BAD_GATEWAY.into_response();
            };
            if metered {
                let mut answered: serde_json::Value =
                    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                let (read_units, write_units, units_from) = match answered.get("ConsumedCapacity") {
                    Some(consumed) => {
                        let (read, write) = engine_units(&operation, consumed);
                        (read, write, UnitsFrom::Engine)
                    }
                    None => {
                        let (read, write) = gate
                            .rule_units(&operation, &request, &answered, &headers)
                            .await;
                        (read, write, UnitsFrom::Rules)
                    }
                };
                if strip_capacity
                    && let Some(object) = answered.as_object_mut()
                    && object.remove("ConsumedCapacity").is_some()
                    && let Ok(stripped) = serde_json::to_vec(&answered)
                {
                    // The SDK checks the body against the engine's checksum.
                    if let Ok(value) = crc32(&stripped).to_string().parse() {
                        response_headers.insert("x-amz-crc32", value);
                    }
                    bytes = stripped.into();
                }
                gate.record(MeteredCall {
                    function,
                    operation,
                    read_units,
                    write_units,
                    units_from,
                    status: status.as_u16(),
                });
            } else if gate.meter.is_some() && !target.is_empty() {
                // An operation that consumes no capacity (DescribeTable, CreateTable...).
                gate.record(MeteredCall {
                    function,
                    operation,
                    read_units: 0.0,
                    write_units: 0.0,
                    units_from: UnitsFrom::Rules,
                    status: status.as_u16(),
                });
            }
            (status, response_headers, bytes).into_response()
        }
        // The engine is stopping (an outage in a test): as if the connection broke.
        Err(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// Read and write units from an answer's `ConsumedCapacity` (one object, or one per
/// table for batches and transactions).
fn engine_units(operation: &str, consumed: &serde_json::Value) -> (f64, f64) {
    let entries: Vec<&serde_json::Value> = match consumed {
        serde_json::Value::Array(entries) => entries.iter().collect(),
        entry => vec![entry],
    };
    let reads = READ_OPERATIONS.contains(&operation);
    entries.iter().fold((0.0, 0.0), |(read, write), entry| {
        let total = entry["CapacityUnits"].as_f64().unwrap_or(0.0);
        match (
            entry["ReadCapacityUnits"].as_f64(),
            entry["WriteCapacityUnits"].as_f64(),
        ) {
            (None, None) if reads => (read + total, write),
            (None, None) => (read, write + total),
            (r, w) => (read + r.unwrap_or(0.0), write + w.unwrap_or(0.0)),
        }
    })
}

/// Write units for `size` bytes: one per KB started, at least one.
fn write_units_of(size: usize) -> f64 {
    size.div_ceil(1024).max(1) as f64
}

/// The size DynamoDB bills an item at (names plus values), from its JSON form.
fn item_size(item: &serde_json::Value) -> usize {
    serde_json::from_value::<dynoxide::types::Item>(item.clone())
        .map(|item| dynoxide::types::item_size(&item))
        .unwrap_or(0)
}

impl IamGate {
    fn record(&self, call: MeteredCall) {
        if let Some(meter) = &self.meter {
            meter.lock().unwrap_or_else(|e| e.into_inner()).push(call);
        }
    }

    /// Units for an answer without `ConsumedCapacity`, by DynamoDB's documented rules: a
    /// conditional write that fails still consumes write units for the item's size (the
    /// larger of the stored item and a put's new one, one per KB started, at least one),
    /// and a cancelled transaction is charged so for each of its items, twice
    /// (transactional). Anything else that failed (validation, a refusal) is not billed.
    /// The stored items are read again after the failure: nothing was written by it.
    async fn rule_units(
        &self,
        operation: &str,
        request: &serde_json::Value,
        answered: &serde_json::Value,
        headers: &axum::http::HeaderMap,
    ) -> (f64, f64) {
        let error = answered["__type"].as_str().unwrap_or_default();
        let (members, factor): (Vec<&serde_json::Value>, f64) = if error
            .ends_with("#TransactionCanceledException")
            && operation == "TransactWriteItems"
        {
            let members = request["TransactItems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|item| {
                    ["Put", "Update", "Delete", "ConditionCheck"]
                        .iter()
                        .find_map(|member| item.get(*member))
                })
                .collect();
            (members, 2.0)
        } else if error.ends_with("#ConditionalCheckFailedException")
            && matches!(operation, "PutItem" | "UpdateItem" | "DeleteItem")
        {
            (vec![request], 1.0)
        } else {
            return (0.0, 0.0);
        };
        let mut write = 0.0;
        for member in members {
            let table = member["TableName"].as_str().unwrap_or_default();
            let new_size = member.get("Item").map_or(0, item_size);
            let key = match member.get("Key") {
                Some(key) => Some(key.clone()),
                None => self.key_of(table, &member["Item"], headers).await,
            };
            let stored_size = match key {
                Some(key) => self.stored_size(table, &key, headers).await,
                None => 0,
            };
            write += factor * write_units_of(stored_size.max(new_size));
        }
        (0.0, write)
    }

    /// A side request to the engine (not metered), with the caller's auth material,
    /// which dynoxide checks for presence only.
    async fn ask_engine(
        &self,
        operation: &str,
        body: serde_json::Value,
        headers: &axum::http::HeaderMap,
    ) -> Option<serde_json::Value> {
        let mut request = self
            .http
            .post(&self.engine)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", format!("{DYNAMODB_TARGET}{operation}"))
            .body(body.to_string());
        for name in ["authorization", "x-amz-date", "x-amz-security-token"] {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value);
            }
        }
        let answer = request.send().await.ok()?;
        if !answer.status().is_success() {
            return None;
        }
        serde_json::from_slice(&answer.bytes().await.ok()?).ok()
    }

    /// The size of the item stored under `key` (0 when there is none).
    async fn stored_size(
        &self,
        table: &str,
        key: &serde_json::Value,
        headers: &axum::http::HeaderMap,
    ) -> usize {
        let body = serde_json::json!({"TableName": table, "Key": key, "ConsistentRead": true});
        self.ask_engine("GetItem", body, headers)
            .await
            .and_then(|answer| answer.get("Item").map(item_size))
            .unwrap_or(0)
    }

    /// The key attributes of `item` in `table`.
    async fn key_of(
        &self,
        table: &str,
        item: &serde_json::Value,
        headers: &axum::http::HeaderMap,
    ) -> Option<serde_json::Value> {
        let known = self
            .key_names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(table)
            .cloned();
        let names = match known {
            Some(names) => names,
            None => {
                let described = self
                    .ask_engine(
                        "DescribeTable",
                        serde_json::json!({"TableName": table}),
                        headers,
                    )
                    .await?;
                let names: Vec<String> = described["Table"]["KeySchema"]
                    .as_array()?
                    .iter()
                    .filter_map(|element| element["AttributeName"].as_str().map(str::to_owned))
                    .collect();
                self.key_names
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(table.to_owned(), names.clone());
                names
            }
        };
        let key: serde_json::Map<String, serde_json::Value> = names
            .into_iter()
            .filter_map(|name| Some((name.clone(), item.get(&name)?.clone())))
            .collect();
        Some(key.into())
    }
}

/// CRC-32 (IEEE), the checksum DynamoDB sends in `x-amz-crc32`.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An SDK client that signs as the function `binary`'s role (see [`crate::iam`]).
pub fn client_as(endpoint: &str, binary: &str) -> Client {
    client_with_key(endpoint, &crate::iam::access_key_for(binary))
}

/// An SDK client with the administrator's (the developer's) dummy credentials.
pub fn client_for(endpoint: &str) -> Client {
    client_with_key(endpoint, "local")
}

fn client_with_key(endpoint: &str, access_key: &str) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(access_key, "local", None, None, "local"))
        .endpoint_url(endpoint)
        .http_client(paywall::http::SdkHttpClient::new(
            std::time::Duration::from_secs(1),
        ))
        // The SDK's standard retries, with a short first back-off: the engine is on
        // loopback, and an outage in a test (or `simulate`) should cost milliseconds of
        // waiting, not seconds.
        .retry_config(
            aws_sdk_dynamodb::config::retry::RetryConfig::standard()
                .with_initial_backoff(std::time::Duration::from_millis(5)),
        )
        .build();
    Client::from_conf(config)
}

/// The workspace's `template.yaml`.
pub fn template_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml")
}

fn text<'v>(value: &'v Value, key: &str, context: &str) -> Result<&'v str, LocalDynamoError> {
    value.get(key).and_then(Value::as_str).ok_or_else(|| {
        LocalDynamoError::Template(format!("{context}: `{key}` is missing or not text"))
    })
}

fn key_schema(value: &Value, context: &str) -> Result<Vec<KeySchemaElement>, LocalDynamoError> {
    let elements = value
        .get("KeySchema")
        .and_then(Value::as_sequence)
        .ok_or_else(|| LocalDynamoError::Template(format!("{context}: no KeySchema")))?;
    elements
        .iter()
        .map(|element| {
            KeySchemaElement::builder()
                .attribute_name(text(element, "AttributeName", context)?)
                .key_type(KeyType::from(text(element, "KeyType", context)?))
                .build()
                .map_err(|e| LocalDynamoError::Template(e.to_string()))
        })
        .collect()
}

/// Creates `table_name` with the keys, attributes, indexes, TTL and stream of the
/// `AWS::DynamoDB::Table` in `template.yaml`. Already existing is fine (a restart).
pub async fn create_table_from_template(
    client: &Client,
    template: &Path,
    table_name: &str,
) -> Result<(), LocalDynamoError> {
    create_table(client, template, table_name, true).await
}

/// The same table without its stream: for the local server, which lists access events
/// from their items (`/dev/events`) and never reads the stream, which the embedded
/// engine keeps growing with every write (a simulated year of writes ran 5 times slower
/// with it).
pub async fn create_table_from_template_without_stream(
    client: &Client,
    template: &Path,
    table_name: &str,
) -> Result<(), LocalDynamoError> {
    create_table(client, template, table_name, false).await
}

async fn create_table(
    client: &Client,
    template: &Path,
    table_name: &str,
    with_stream: bool,
) -> Result<(), LocalDynamoError> {
    let source = std::fs::read_to_string(template).map_err(|source| LocalDynamoError::Read {
        path: template.display().to_string(),
        source,
    })?;
    let document: Value = serde_yaml_ng::from_str(&source)?;
    let resources = document
        .get("Resources")
        .and_then(Value::as_mapping)
        .ok_or_else(|| LocalDynamoError::Template("no Resources".into()))?;
    let mut tables = resources
        .values()
        .filter(|r| r.get("Type").and_then(Value::as_str) == Some("AWS::DynamoDB::Table"));
    let table = tables
        .next()
        .ok_or_else(|| LocalDynamoError::Template("no AWS::DynamoDB::Table".into()))?;
    if tables.next().is_some() {
        return Err(LocalDynamoError::Template("more than one table".into()));
    }
    let properties = table
        .get("Properties")
        .ok_or_else(|| LocalDynamoError::Template("table without Properties".into()))?;

    let mut request = client
        .create_table()
        .table_name(table_name)
        .billing_mode(BillingMode::from(
            properties
                .get("BillingMode")
                .and_then(Value::as_str)
                .unwrap_or("PAY_PER_REQUEST"),
        ))
        .set_key_schema(Some(key_schema(properties, "table")?));
    for attribute in properties
        .get("AttributeDefinitions")
        .and_then(Value::as_sequence)
        .ok_or_else(|| LocalDynamoError::Template("no AttributeDefinitions".into()))?
    {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(text(attribute, "AttributeName", "attribute")?)
                .attribute_type(ScalarAttributeType::from(text(
                    attribute,
                    "AttributeType",
                    "attribute",
                )?))
                .build()
                .map_err(|e| LocalDynamoError::Template(e.to_string()))?,
        );
    }
    if let Some(view) = properties
        .get("StreamSpecification")
        .filter(|_| with_stream)
        .and_then(|spec| spec.get("StreamViewType"))
        .and_then(Value::as_str)
    {
        request = request.stream_specification(
            aws_sdk_dynamodb::types::StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(aws_sdk_dynamodb::types::StreamViewType::from(view))
                .build()
                .map_err(|e| LocalDynamoError::Template(e.to_string()))?,
        );
    }
    for index in properties
        .get("GlobalSecondaryIndexes")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        let name = text(index, "IndexName", "index")?;
        let projection = index.get("Projection");
        let projection_type = projection
            .and_then(|p| p.get("ProjectionType"))
            .and_then(Value::as_str)
            .unwrap_or("ALL");
        let non_key: Option<Vec<String>> = projection
            .and_then(|p| p.get("NonKeyAttributes"))
            .and_then(Value::as_sequence)
            .map(|names| {
                names
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            });
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .set_key_schema(Some(key_schema(index, name)?))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(projection_type))
                        .set_non_key_attributes(non_key)
                        .build(),
                )
                .build()
                .map_err(|e| LocalDynamoError::Template(e.to_string()))?,
        );
    }

    match request.send().await {
        Ok(_) => {}
        Err(err) => {
            let already = err
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception());
            if !already {
                return Err(LocalDynamoError::Sdk(
                    aws_sdk_dynamodb::error::DisplayErrorContext(&err).to_string(),
                ));
            }
        }
    }

    if let Some(ttl) = properties.get("TimeToLiveSpecification")
        && ttl.get("Enabled").and_then(Value::as_bool) == Some(true)
    {
        let attribute = text(ttl, "AttributeName", "TimeToLiveSpecification")?;
        let result = client
            .update_time_to_live()
            .table_name(table_name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(attribute)
                    .enabled(true)
                    .build()
                    .map_err(|e| LocalDynamoError::Template(e.to_string()))?,
            )
            .send()
            .await;
        if let Err(err) = result {
            // Enabling TTL twice (a restart) is refused by DynamoDB; that is fine.
            let text = aws_sdk_dynamodb::error::DisplayErrorContext(&err).to_string();
            if !text.contains("already enabled") {
                return Err(LocalDynamoError::Sdk(text));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{crc32, write_units_of};

    #[test]
    fn the_checksum_is_crc32_ieee() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn a_write_costs_one_unit_per_kilobyte_started() {
        assert_eq!(write_units_of(0), 1.0);
        assert_eq!(write_units_of(1024), 1.0);
        assert_eq!(write_units_of(1025), 2.0);
    }
}
