//! The one EventBridge call the paywall makes: `PutEvents`, signed with SigV4 by the
//! AWS SDK's own signer over the HTTP client the paywall already has (no second SDK).

use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use crate::config::{ConfigError, StoreConfig, Vars};

/// EventBridge takes at most 10 entries a call.
pub const MAX_ENTRIES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum EventBridgeError {
    #[error("EventBridge could not be reached: {0}")]
    Unavailable(String),
    #[error("EventBridge refused the call ({status}): {message}")]
    Refused { status: u16, message: String },
}

/// One event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub source: String,
    pub detail_type: String,
    /// JSON text.
    pub detail: String,
}

#[derive(Clone)]
pub struct EventBridgeClient {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    bus: String,
    credentials: aws_sdk_dynamodb::config::Credentials,
}

impl std::fmt::Debug for EventBridgeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBridgeClient")
            .field("endpoint", &self.endpoint)
            .field("bus", &self.bus)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutEventsOutput {
    #[serde(default)]
    entries: Vec<ResultEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResultEntry {
    error_code: Option<String>,
}

impl EventBridgeClient {
    /// From Lambda's environment: the credentials and region the DynamoDB client uses,
    /// `ACCESS_EVENT_BUS` (default `default`), and `AWS_ENDPOINT_URL_EVENTBRIDGE` to point
    /// it elsewhere (tests).
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let aws = StoreConfig::from_vars(vars)?;
        let endpoint = vars
            .optional("AWS_ENDPOINT_URL_EVENTBRIDGE")
            .unwrap_or_else(|| format!("https://events.{}.amazonaws.com", aws.region));
        let bus = vars
            .optional("ACCESS_EVENT_BUS")
            .unwrap_or_else(|| "default".to_owned());
        let http = crate::http::client_builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ConfigError::Invalid {
                var: "AWS_ENDPOINT_URL_EVENTBRIDGE",
                reason: e.to_string(),
            })?;
        Ok(Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            region: aws.region,
            bus,
            credentials: aws_sdk_dynamodb::config::Credentials::new(
                aws.access_key_id,
                aws.secret_access_key.expose_secret(),
                aws.session_token.map(|t| t.expose_secret().to_owned()),
                None,
                "lambda-environment",
            ),
        })
    }

    /// Publishes up to [`MAX_ENTRIES`] entries; for each, whether EventBridge took it.
    pub async fn put_events(&self, entries: &[Entry]) -> Result<Vec<bool>, EventBridgeError> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let body = json!({
            "Entries": entries.iter().map(|e| json!({
                "Source": e.source,
                "DetailType": e.detail_type,
                "Detail": e.detail,
                "EventBusName": self.bus,
            })).collect::<Vec<_>>()
        })
        .to_string();
        let url = format!("{}/", self.endpoint);
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "AWSEvents.PutEvents"),
        ];
        let identity = self.credentials.clone().into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("events")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| EventBridgeError::Unavailable(e.to_string()))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| EventBridgeError::Unavailable(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| EventBridgeError::Unavailable(e.to_string()))?
            .into_parts();
        let mut request = self.http.post(&url).body(body);
        for (name, value) in headers.iter().copied().chain(instructions.headers()) {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| EventBridgeError::Unavailable(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| EventBridgeError::Unavailable(e.without_url().to_string()))?;
        if !(200..300).contains(&status) {
            return Err(EventBridgeError::Refused {
                status,
                message: text.chars().take(200).collect(),
            });
        }
        let output: PutEventsOutput = serde_json::from_str(&text)
            .map_err(|e| EventBridgeError::Unavailable(format!("unreadable answer: {e}")))?;
        if output.entries.len() != entries.len() {
            return Err(EventBridgeError::Unavailable(
                "the answer does not list every entry".into(),
            ));
        }
        Ok(output
            .entries
            .iter()
            .map(|e| e.error_code.is_none())
            .collect())
    }
}
