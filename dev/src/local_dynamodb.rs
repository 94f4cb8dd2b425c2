//! DynamoDB on this machine: dynoxide embedded in the process, served on a loopback port,
//! so that the product's one store implementation talks to it through the real
//! `aws-sdk-dynamodb`, exactly as it talks to DynamoDB in AWS. The table is created from
//! `template.yaml`'s own definition, never from a copy.

use std::path::Path;

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
}

impl LocalDynamo {
    /// In memory: each call is a fresh, empty engine.
    pub async fn in_memory() -> Result<Self, LocalDynamoError> {
        let db =
            dynoxide::Database::memory().map_err(|e| LocalDynamoError::Engine(e.to_string()))?;
        Self::serve(db, "127.0.0.1:0").await
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
        })
    }

    /// Backed by a SQLite file, so state survives a restart.
    pub async fn on_disk(path: &Path, address: &str) -> Result<Self, LocalDynamoError> {
        let db = dynoxide::Database::new(&path.to_string_lossy())
            .map_err(|e| LocalDynamoError::Engine(e.to_string()))?;
        Self::serve(db, address).await
    }

    /// dynoxide on a private loopback port, behind [`crate::iam`]'s check of each call
    /// against the role that signed it (dynoxide itself ignores IAM), on `address`.
    async fn serve(db: dynoxide::Database, address: &str) -> Result<Self, LocalDynamoError> {
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
/// call, then dynoxide.
#[derive(Clone)]
struct IamGate {
    engine: String,
    http: reqwest::Client,
}

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
    if !target.is_empty() {
        let request: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        let needs = crate::iam::dynamodb_needs(target, &request);
        if let Err(denied) = crate::iam::authorize(header("authorization"), &needs) {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                [("content-type", "application/x-amz-json-1.0")],
                crate::iam::dynamodb_denial(&denied),
            )
                .into_response();
        }
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
            match answer.bytes().await {
                Ok(bytes) => (status, response_headers, bytes).into_response(),
                Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
            }
        }
        // The engine is stopping (an outage in a test): as if the connection broke.
        Err(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
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
