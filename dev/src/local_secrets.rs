//! A local Secrets Manager (`GetSecretValue` only), for the stack's `secrets-manager`
//! mode: it recomputes each call's SigV4 signature with the credentials every local run
//! uses (`local`/`local`) and answers only calls signed exactly as AWS would check them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Default)]
struct Secrets {
    values: HashMap<String, String>,
    calls: usize,
    refused: usize,
}

#[derive(Clone, Default)]
pub struct LocalSecretsManager {
    secrets: Arc<Mutex<Secrets>>,
}

impl LocalSecretsManager {
    /// Serves on a loopback port; the URL to put in `AWS_ENDPOINT_URL_SECRETS_MANAGER`.
    pub async fn start(&self) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/", axum::routing::post(get_secret_value))
            .with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(url)
    }

    /// Stores `value` as the plain-text secret `id`.
    pub fn put(&self, id: &str, value: &str) {
        self.lock().values.insert(id.to_owned(), value.to_owned());
    }

    /// Calls answered with a value.
    pub fn calls(&self) -> usize {
        self.lock().calls
    }

    /// Calls refused: badly signed, or for a secret that does not exist.
    pub fn refused(&self) -> usize {
        self.lock().refused
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Secrets> {
        self.secrets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The Authorization header AWS would expect for this call, signed for `service` with the
/// local credentials at the call's own `x-amz-date`.
pub fn expected_signature(headers: &HeaderMap, body: &[u8], service: &str) -> Option<String> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let date = header("x-amz-date")?;
    let time = parse_amz_date(date)?;
    let url = format!("http://{}/", header("host")?);
    let signed: Vec<(&str, &str)> = ["content-type", "x-amz-target"]
        .iter()
        .filter_map(|name| header(name).map(|value| (*name, value)))
        .collect();
    // The key id is the caller's (a function's role, see crate::iam); the secret is
    // the one every local run uses.
    let access_key = header("authorization")?
        .split("Credential=")
        .nth(1)?
        .split('/')
        .next()?
        .to_owned();
    let identity = aws_sdk_dynamodb::config::Credentials::new(
        access_key,
        "local",
        header("x-amz-security-token").map(str::to_owned),
        None,
        "local",
    )
    .into();
    let region = header("authorization")?.split('/').nth(2)?.to_owned();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .ok()?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url.as_str(),
        signed.into_iter(),
        SignableBody::Bytes(body),
    )
    .ok()?;
    let (instructions, _) = sign(signable, &params).ok()?.into_parts();
    instructions
        .headers()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value.to_owned())
}

/// `20261128T120000Z` as a time.
fn parse_amz_date(raw: &str) -> Option<SystemTime> {
    let stamp = paywall::time::Timestamp::parse_rfc3339(&format!(
        "{}-{}-{}T{}:{}:{}Z",
        raw.get(0..4)?,
        raw.get(4..6)?,
        raw.get(6..8)?,
        raw.get(9..11)?,
        raw.get(11..13)?,
        raw.get(13..15)?
    ))?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(stamp.unix_seconds()).ok()?))
}

async fn get_secret_value(
    State(manager): State<LocalSecretsManager>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut secrets = manager.lock();
    if target != "secretsmanager.GetSecretValue"
        || expected_signature(&headers, &body, "secretsmanager").as_deref() != Some(authorization)
    {
        secrets.refused += 1;
        return refusal(
            "IncompleteSignatureException",
            "the request signature does not match",
        );
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = request["SecretId"].as_str().unwrap_or_default();
    let needs = [(
        "secretsmanager:GetSecretValue".to_owned(),
        crate::iam::Resource::Secret(id.to_owned()),
    )];
    if let Err(denied) = crate::iam::authorize(authorization, &needs) {
        secrets.refused += 1;
        return refusal("AccessDeniedException", &denied.to_string());
    }
    match secrets.values.get(id).cloned() {
        Some(value) => {
            secrets.calls += 1;
            axum::Json(json!({"ARN": format!("arn:aws:secretsmanager:us-east-1:000000000000:secret:{id}-AbCdEf"),
                              "Name": id, "SecretString": value, "VersionStages": ["AWSCURRENT"]}))
            .into_response()
        }
        None => {
            secrets.refused += 1;
            refusal(
                "ResourceNotFoundException",
                "Secrets Manager can't find the specified secret.",
            )
        }
    }
}

fn refusal(kind: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(
            json!({"__type": format!("com.amazonaws.secretsmanager#{kind}"), "message": message}),
        ),
    )
        .into_response()
}
