//! The stack's two secrets — the Dodo API key and the webhook signing secret — in its
//! `secrets-manager` mode (`SecretsSource` in `template.yaml`): instead of the variable
//! itself, the function gets `<VARIABLE>_SECRET_ID` and reads the value once, at cold
//! start, with `GetSecretValue`. The value then never appears in the function's
//! configuration, where anyone allowed `lambda:GetFunctionConfiguration` could read it.
//! Setting the variable itself (local runs, tests, the default `environment` mode) still
//! works and wins.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::aws_json::AwsJsonClient;
use crate::config::{ConfigError, StoreConfig, Vars, aws_endpoint};

/// A secret's variable, and the variable that names it in Secrets Manager instead.
#[derive(Clone, Copy, Debug)]
pub struct SecretVar {
    pub var: &'static str,
    pub id_var: &'static str,
}

pub const DODO_API_KEY: SecretVar = SecretVar {
    var: "DODO_PAYMENTS_API_KEY",
    id_var: "DODO_PAYMENTS_API_KEY_SECRET_ID",
};

pub const WEBHOOK_SECRET: SecretVar = SecretVar {
    var: "DODO_PAYMENTS_WEBHOOK_SECRET",
    id_var: "DODO_PAYMENTS_WEBHOOK_SECRET_ID",
};

/// Inside Lambda's 10 s init limit with a retry to spare.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetSecretValueOutput {
    secret_string: Option<String>,
}

#[derive(Deserialize)]
struct AwsError {
    #[serde(rename = "__type", default)]
    kind: String,
    #[serde(alias = "Message", default)]
    message: String,
}

/// For each of `secrets` whose variable is unset and whose `_SECRET_ID` is set, the
/// (variable, value) pair read from Secrets Manager; for `Vars::with_fetched`. Reads
/// nothing when every variable is set, so the default mode costs no call.
pub async fn fetch(
    vars: &Vars<'_>,
    secrets: &[SecretVar],
) -> Result<Vec<(&'static str, String)>, ConfigError> {
    let wanted: Vec<(SecretVar, String)> = secrets
        .iter()
        .filter(|secret| vars.optional(secret.var).is_none())
        .filter_map(|secret| vars.optional(secret.id_var).map(|id| (*secret, id)))
        .collect();
    let Some((first, _)) = wanted.first() else {
        return Ok(Vec::new());
    };
    let aws = StoreConfig::from_vars(vars)?;
    let endpoint = aws_endpoint(
        vars,
        "AWS_ENDPOINT_URL_SECRETS_MANAGER",
        "secretsmanager",
        &aws.region,
    )?;
    let client = AwsJsonClient::new(&aws, "secretsmanager", endpoint, CALL_TIMEOUT)
        .map_err(|e| invalid(first.id_var, e.to_string()))?;
    let mut fetched = Vec::with_capacity(wanted.len());
    for (secret, id) in wanted {
        let value = get_secret_value(&client, &id)
            .await
            .map_err(|reason| invalid(secret.id_var, reason))?;
        fetched.push((secret.var, value));
    }
    Ok(fetched)
}

/// One `GetSecretValue`, retried once when it may be passing (no answer, 5xx, throttled).
async fn get_secret_value(client: &AwsJsonClient, id: &str) -> Result<String, String> {
    let body = json!({ "SecretId": id }).to_string();
    let mut answer = client
        .call("secretsmanager.GetSecretValue", body.clone())
        .await;
    let transient = match &answer {
        Err(_) => true,
        Ok((status, text)) => *status >= 500 || text.contains("ThrottlingException"),
    };
    if transient {
        tokio::time::sleep(Duration::from_millis(200)).await;
        answer = client.call("secretsmanager.GetSecretValue", body).await;
    }
    let (status, text) =
        answer.map_err(|e| format!("Secrets Manager could not be reached: {e}"))?;
    if !(200..300).contains(&status) {
        // AWS's error names the problem (not found, access denied); it never holds the value.
        let error: AwsError = serde_json::from_str(&text).unwrap_or(AwsError {
            kind: String::new(),
            message: String::new(),
        });
        let kind = error.kind.rsplit('#').next().unwrap_or_default().to_owned();
        let message: String = error.message.chars().take(200).collect();
        return Err(format!(
            "Secrets Manager refused GetSecretValue ({status} {kind}): {message}"
        ));
    }
    let output: GetSecretValueOutput = serde_json::from_str(&text)
        .map_err(|e| format!("unreadable GetSecretValue answer: {e}"))?;
    let value = output
        .secret_string
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .ok_or_else(|| "the secret has no text value (store it as plain text)".to_owned())?;
    // The console's default is a JSON object of key/value pairs; used as the key, Dodo (or
    // the signature check) would refuse every call with a far less clear message.
    if value.starts_with('{') {
        return Err(
            "the secret holds a JSON object: store the value itself as plain text \
             (--secret-string, or the console's Plaintext tab)"
                .to_owned(),
        );
    }
    Ok(value)
}

fn invalid(var: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { var, reason }
}
