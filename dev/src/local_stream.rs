//! The table's stream as Lambda's event source mapping reads it in AWS, from the local
//! engine (dynoxide serves the DynamoDB Streams API on the same endpoint), and a local
//! stand-in for EventBridge's `PutEvents`: together they carry access events through the
//! same publisher code as the deployed `access-events` function.

use std::sync::{Arc, Mutex};

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

/// What the EventBridge stand-in received, and how it should answer next.
#[derive(Default)]
struct Bus {
    entries: Vec<Value>,
    /// Entries to refuse (by position in the next calls' entries, counted across calls).
    refuse_next: usize,
    unsigned_calls: usize,
}

/// A local `PutEvents` endpoint: it checks the call is SigV4-signed for `events` and
/// keeps the entries it takes.
#[derive(Clone, Default)]
pub struct LocalEventBus {
    bus: Arc<Mutex<Bus>>,
}

impl LocalEventBus {
    /// Serves on a loopback port; the URL to put in `AWS_ENDPOINT_URL_EVENTBRIDGE`.
    pub async fn start(&self) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/", axum::routing::post(put_events))
            .with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(url)
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
        if state.refuse_next > 0 {
            state.refuse_next -= 1;
            failed += 1;
            results.push(json!({"ErrorCode": "InternalFailure", "ErrorMessage": "try again"}));
        } else {
            state.entries.push(entry.clone());
            results.push(json!({"EventId": format!("local-{}", state.entries.len())}));
        }
    }
    axum::Json(json!({"FailedEntryCount": failed, "Entries": results})).into_response()
}
