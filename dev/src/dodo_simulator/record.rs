//! What the simulator answers and sends, written down for Dodo's own models to judge
//! (`make test-sdk-models`, `dev/sdk-oracle/validate.py`).
//!
//! Off unless `DODO_SIMULATOR_RECORD_DIR` names a folder: then every JSON answer of the
//! API routes (route template, method, status, body, and what was asked: the query and
//! the JSON request body) and every webhook event (its type and
//! body, once per event, not per delivery attempt) is appended as one JSON line to
//! `<dir>/simulator-<pid>.jsonl`. One file per process, one lock per file and one
//! `write` per line, so that parallel test processes (and the several simulators of one
//! test process) never interleave.
//!
//! A test that stores objects of its own shape ([`super::DodoSimulator::put_payment`],
//! [`super::DodoSimulator::put_subscription`]) marks that simulator's later lines
//! `"shaped_by_test": true`: those bodies are the test's, not the simulator's, and the
//! validator leaves them out.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use axum::body::Body;
use axum::extract::{MatchedPath, NestedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::DodoSimulator;

/// The environment variable that turns recording on.
pub const RECORD_DIR_VAR: &str = "DODO_SIMULATOR_RECORD_DIR";

/// The largest body recorded (Dodo's pages of 100 payments are well under this).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// The open record file of this process, when recording is on.
fn sink() -> Option<&'static Mutex<File>> {
    static SINK: OnceLock<Option<Mutex<File>>> = OnceLock::new();
    SINK.get_or_init(|| {
        let dir = PathBuf::from(std::env::var_os(RECORD_DIR_VAR).filter(|d| !d.is_empty())?);
        if let Err(err) = std::fs::create_dir_all(&dir) {
            tracing::warn!(error = %err, "the Dodo simulator cannot record: no folder");
            return None;
        }
        let path = dir.join(format!("simulator-{}.jsonl", std::process::id()));
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(file) => Some(Mutex::new(file)),
            Err(err) => {
                tracing::warn!(error = %err, "the Dodo simulator cannot record: no file");
                None
            }
        }
    })
    .as_ref()
}

/// Whether this process records (read once).
pub fn enabled() -> bool {
    sink().is_some()
}

fn write_line(mut line: Value, shaped_by_test: bool) {
    let Some(sink) = sink() else { return };
    if shaped_by_test {
        line["shaped_by_test"] = json!(true);
    }
    let mut text = line.to_string();
    text.push('\n');
    let mut file = sink.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(err) = file.write_all(text.as_bytes()) {
        tracing::warn!(error = %err, "the Dodo simulator could not record a line");
    }
}

/// One webhook event as sent (its body, exactly the bytes signed).
pub fn webhook(sim: &DodoSimulator, event_type: &str, body: &str) {
    if !enabled() {
        return;
    }
    let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    write_line(
        json!({"kind": "webhook", "type": event_type, "body": body}),
        sim.shaped_by_test(),
    );
}

/// Middleware on the API routes: records each JSON answer with its route template.
pub async fn answers(State(sim): State<DodoSimulator>, request: Request, next: Next) -> Response {
    if !enabled() {
        return next.run(request).await;
    }
    let method = request.method().to_string();
    // The template as Dodo names it: without the prefix the simulator is mounted under
    // (`/dodo` in the local server).
    let prefix = request
        .extensions()
        .get::<NestedPath>()
        .map(|p| p.as_str().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    let route = request.extensions().get::<MatchedPath>().map(|p| {
        let path = p.as_str();
        path.strip_prefix(prefix.as_str())
            .filter(|rest| rest.starts_with('/'))
            .unwrap_or(path)
            .to_owned()
    });
    // What was asked: the query and the JSON body (the validator judges both by the
    // SDK's request parameters).
    let query = request.uri().query().map(str::to_owned);
    let (parts, body) = request.into_parts();
    let Ok(asked) = axum::body::to_bytes(body, MAX_BODY).await else {
        return (axum::http::StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    };
    let asked_json: Value = serde_json::from_slice(&asked).unwrap_or(Value::Null);
    let request = Request::from_parts(parts, Body::from(asked));
    let response = next.run(request).await;
    let Some(route) = route else {
        return response; // the fallback: not a route of Dodo's
    };
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return (parts.status, "body too large to record").into_response();
    };
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    write_line(
        json!({
            "kind": "answer",
            "method": method,
            "route": route,
            "status": parts.status.as_u16(),
            "body": body,
            "query": query,
            "request": asked_json,
        }),
        sim.shaped_by_test(),
    );
    Response::from_parts(parts, Body::from(bytes))
}
