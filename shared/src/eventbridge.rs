//! The one EventBridge call the paywall makes: `PutEvents` (see [`crate::aws_json`]).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::aws_json::AwsJsonClient;
use crate::config::{ConfigError, StoreConfig, Vars, aws_endpoint};

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
    aws: AwsJsonClient,
    bus: String,
}

impl std::fmt::Debug for EventBridgeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBridgeClient")
            .field("aws", &self.aws)
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
        let endpoint = aws_endpoint(vars, "AWS_ENDPOINT_URL_EVENTBRIDGE", "events", &aws.region)?;
        let bus = vars
            .optional("ACCESS_EVENT_BUS")
            .unwrap_or_else(|| "default".to_owned());
        let aws =
            AwsJsonClient::new(&aws, "events", endpoint, Duration::from_secs(5)).map_err(|e| {
                ConfigError::Invalid {
                    var: "AWS_ENDPOINT_URL_EVENTBRIDGE",
                    reason: e.to_string(),
                }
            })?;
        Ok(Self { aws, bus })
    }

    /// Publishes up to [`MAX_ENTRIES`] entries; for each, whether EventBridge took it.
    pub async fn put_events(&self, entries: &[Entry]) -> Result<Vec<bool>, EventBridgeError> {
        let body = json!({
            "Entries": entries.iter().map(|e| json!({
                "Source": e.source,
                "DetailType": e.detail_type,
                "Detail": e.detail,
                "EventBusName": self.bus,
            })).collect::<Vec<_>>()
        })
        .to_string();
        let (status, text) = self
            .aws
            .call("AWSEvents.PutEvents", body)
            .await
            .map_err(EventBridgeError::Unavailable)?;
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
