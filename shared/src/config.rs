//! Typed configuration, read once at cold start. A missing or malformed variable fails
//! the start with a message that names it, instead of failing some request later.

use secrecy::SecretString;

use crate::webhook_signature::WebhookSecret;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
    #[error("{file} is invalid: {reason}")]
    InvalidFile { file: &'static str, reason: String },
}

/// Where variables come from: the process environment in production, a map in tests;
/// and the secrets read from Secrets Manager at cold start ([`crate::secrets`]), which
/// stand for the variables they replace.
pub struct Vars<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    fetched: &'a [(&'static str, String)],
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl<'a> Vars<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            lookup,
            fetched: &[],
        }
    }

    pub fn process() -> Vars<'static> {
        Vars::new(&process_env)
    }

    /// The same variables, with `fetched` (variable, value) pairs set too.
    pub fn with_fetched<'b>(&self, fetched: &'b [(&'static str, String)]) -> Vars<'b>
    where
        'a: 'b,
    {
        Vars {
            lookup: self.lookup,
            fetched,
        }
    }

    /// A set, non-blank value, trimmed.
    pub fn optional(&self, name: &str) -> Option<String> {
        let fetched = self.fetched.iter().find(|(var, _)| *var == name);
        fetched
            .map(|(_, value)| value.clone())
            .or_else(|| (self.lookup)(name))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }
}

fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.into(),
    }
}

/// How to reach the table: `TABLE_NAME` (the one table defined in `template.yaml`) and
/// the AWS settings Lambda puts in every function's environment.
///
/// The SDK client is configured from these directly rather than through `aws-config`'s
/// provider chain: Lambda always provides the region and the execution role's
/// credentials as variables, and skipping the chain (profiles, SSO, STS, IMDS) keeps the
/// binaries small and the cold start short. `AWS_ENDPOINT_URL_DYNAMODB` (or
/// `AWS_ENDPOINT_URL`) points the client at a local engine, as the SDKs' own convention.
#[derive(Clone)]
pub struct StoreConfig {
    pub table_name: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
    pub endpoint_url: Option<String>,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("table_name", &self.table_name)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .finish_non_exhaustive()
    }
}

impl StoreConfig {
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let endpoint_url = endpoint_override(vars, "AWS_ENDPOINT_URL_DYNAMODB")?;
        Ok(Self {
            table_name: vars.required("TABLE_NAME")?,
            region: vars
                .optional("AWS_REGION")
                .or_else(|| vars.optional("AWS_DEFAULT_REGION"))
                .ok_or(ConfigError::Missing("AWS_REGION"))?,
            access_key_id: vars.required("AWS_ACCESS_KEY_ID")?,
            secret_access_key: SecretString::from(vars.required("AWS_SECRET_ACCESS_KEY")?),
            session_token: vars.optional("AWS_SESSION_TOKEN").map(SecretString::from),
            endpoint_url,
        })
    }
}

pub const TEST_MODE_BASE_URL: &str = "https://test.dodopayments.com";
pub const LIVE_MODE_BASE_URL: &str = "https://live.dodopayments.com";

/// How to reach Dodo: the API key, and the base URL chosen by `ENV`
/// (`development` -> test mode, `production` -> live mode) unless
/// `DODO_PAYMENTS_BASE_URL` overrides it, as Dodo's own SDKs allow.
#[derive(Clone, Debug)]
pub struct DodoConfig {
    pub api_key: SecretString,
    pub base_url: String,
}

impl DodoConfig {
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let api_key = SecretString::from(vars.required("DODO_PAYMENTS_API_KEY")?);
        let mode_url = match vars.optional("ENV").as_deref() {
            None | Some("development") => TEST_MODE_BASE_URL,
            Some("production") => LIVE_MODE_BASE_URL,
            Some(other) => {
                return Err(invalid(
                    "ENV",
                    format!("expected `development` or `production`, got `{other}`"),
                ));
            }
        };
        let base_url = match vars.optional("DODO_PAYMENTS_BASE_URL") {
            Some(url) => {
                parse_http_url(&url).map_err(|reason| invalid("DODO_PAYMENTS_BASE_URL", reason))?
            }
            None => mode_url.to_owned(),
        };
        Ok(Self {
            api_key,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
    }
}

/// `DODO_SUCCESS_URL`: where Dodo sends the buyer back after the hosted checkout.
#[derive(Clone, Debug)]
pub struct CheckoutConfig {
    pub success_url: String,
}

impl CheckoutConfig {
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let url = vars.required("DODO_SUCCESS_URL")?;
        let success_url =
            parse_http_url(&url).map_err(|reason| invalid("DODO_SUCCESS_URL", reason))?;
        Ok(Self { success_url })
    }
}

/// `DODO_PAYMENTS_WEBHOOK_SECRET`: `whsec_` + base64, never empty.
pub struct WebhookConfig {
    pub secret: WebhookSecret,
}

impl WebhookConfig {
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let raw = vars.required("DODO_PAYMENTS_WEBHOOK_SECRET")?;
        let secret = WebhookSecret::parse(&raw)
            .map_err(|e| invalid("DODO_PAYMENTS_WEBHOOK_SECRET", e.to_string()))?;
        Ok(Self { secret })
    }
}

/// Where an AWS service is reached instead of its own endpoint, by the SDKs' convention:
/// `service_var` (`AWS_ENDPOINT_URL_<SERVICE>`), else `AWS_ENDPOINT_URL`.
pub(crate) fn endpoint_override(
    vars: &Vars,
    service_var: &'static str,
) -> Result<Option<String>, ConfigError> {
    let chosen = vars
        .optional(service_var)
        .map(|url| (service_var, url))
        .or_else(|| {
            vars.optional("AWS_ENDPOINT_URL")
                .map(|url| ("AWS_ENDPOINT_URL", url))
        });
    match chosen {
        Some((var, url)) => parse_http_url(&url)
            .map(Some)
            .map_err(|reason| invalid(var, reason)),
        None => Ok(None),
    }
}

/// The endpoint of the AWS service whose endpoint prefix is `service` (`events`,
/// `secretsmanager`) in `region`, unless [`endpoint_override`] names another: China's
/// Regions are under `amazonaws.com.cn`.
pub(crate) fn aws_endpoint(
    vars: &Vars,
    service_var: &'static str,
    service: &str,
    region: &str,
) -> Result<String, ConfigError> {
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    Ok(endpoint_override(vars, service_var)?
        .unwrap_or_else(|| format!("https://{service}.{region}.{domain}")))
}

fn parse_http_url(raw: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err("expected an absolute http(s) URL".to_owned());
    }
    Ok(raw.to_owned())
}

/// Parses a positive whole number of days.
pub(crate) fn parse_days(var: &'static str, raw: &str) -> Result<u32, ConfigError> {
    match raw.parse::<u32>() {
        Ok(days) if (1..=3660).contains(&days) => Ok(days),
        _ => Err(invalid(
            var,
            format!("expected whole days from 1 to 3660, got `{raw}`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn vars_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn dodo_mode_follows_env() {
        let lookup = vars_of(&[("DODO_PAYMENTS_API_KEY", "sk"), ("ENV", "production")]);
        let config = DodoConfig::from_vars(&Vars::new(&lookup)).expect("valid");
        assert_eq!(config.base_url, LIVE_MODE_BASE_URL);
        assert_eq!(config.api_key.expose_secret(), "sk");

        let lookup = vars_of(&[("DODO_PAYMENTS_API_KEY", "sk")]);
        let config = DodoConfig::from_vars(&Vars::new(&lookup)).expect("valid");
        assert_eq!(config.base_url, TEST_MODE_BASE_URL);
    }

    #[test]
    fn aws_endpoints_follow_the_sdks_convention() {
        let endpoint = |pairs: &[(&str, &str)], region: &str| {
            let lookup = vars_of(pairs);
            aws_endpoint(
                &Vars::new(&lookup),
                "AWS_ENDPOINT_URL_EVENTBRIDGE",
                "events",
                region,
            )
        };
        assert_eq!(
            endpoint(&[], "eu-west-1").expect("default"),
            "https://events.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            endpoint(&[], "cn-north-1").expect("China"),
            "https://events.cn-north-1.amazonaws.com.cn"
        );
        let both = [
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
            ("AWS_ENDPOINT_URL_EVENTBRIDGE", "http://127.0.0.1:2"),
        ];
        assert_eq!(
            endpoint(&both, "eu-west-1").expect("the service's own"),
            "http://127.0.0.1:2"
        );
        assert_eq!(
            endpoint(&both[..1], "eu-west-1").expect("the global one"),
            "http://127.0.0.1:1"
        );
        let err = endpoint(&[("AWS_ENDPOINT_URL", "nowhere")], "eu-west-1").expect_err("bad");
        assert!(err.to_string().contains("AWS_ENDPOINT_URL"), "{err}");
    }

    #[test]
    fn base_url_override_wins_and_is_validated() {
        let lookup = vars_of(&[
            ("DODO_PAYMENTS_API_KEY", "sk"),
            ("DODO_PAYMENTS_BASE_URL", "http://127.0.0.1:9999/"),
        ]);
        let config = DodoConfig::from_vars(&Vars::new(&lookup)).expect("valid");
        assert_eq!(config.base_url, "http://127.0.0.1:9999");

        let lookup = vars_of(&[
            ("DODO_PAYMENTS_API_KEY", "sk"),
            ("DODO_PAYMENTS_BASE_URL", "not a url"),
        ]);
        let err = DodoConfig::from_vars(&Vars::new(&lookup)).expect_err("invalid");
        assert!(err.to_string().contains("DODO_PAYMENTS_BASE_URL"), "{err}");
    }

    #[test]
    fn errors_name_the_variable() {
        let lookup = vars_of(&[("ENV", "staging"), ("DODO_PAYMENTS_API_KEY", "sk")]);
        let err = DodoConfig::from_vars(&Vars::new(&lookup)).expect_err("invalid");
        assert!(err.to_string().contains("ENV"), "{err}");

        let lookup = vars_of(&[("TABLE_NAME", "  ")]);
        let err = StoreConfig::from_vars(&Vars::new(&lookup)).expect_err("blank");
        assert_eq!(
            err.to_string(),
            "environment variable TABLE_NAME is not set"
        );

        let lookup = vars_of(&[
            ("TABLE_NAME", "t"),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ]);
        let err = StoreConfig::from_vars(&Vars::new(&lookup)).expect_err("no region");
        assert!(err.to_string().contains("AWS_REGION"), "{err}");

        let lookup = vars_of(&[("DODO_PAYMENTS_WEBHOOK_SECRET", "whsec_")]);
        let err = WebhookConfig::from_vars(&Vars::new(&lookup))
            .err()
            .expect("empty secret refused");
        assert!(
            err.to_string().contains("DODO_PAYMENTS_WEBHOOK_SECRET"),
            "{err}"
        );

        let lookup = vars_of(&[("DODO_SUCCESS_URL", "/relative")]);
        let err = CheckoutConfig::from_vars(&Vars::new(&lookup)).expect_err("relative");
        assert!(err.to_string().contains("DODO_SUCCESS_URL"), "{err}");
    }

    #[test]
    fn the_store_reads_lambdas_aws_variables() {
        let lookup = vars_of(&[
            ("TABLE_NAME", "payments"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:8000"),
        ]);
        let config = StoreConfig::from_vars(&Vars::new(&lookup)).expect("valid");
        assert_eq!(config.region, "eu-west-1");
        assert_eq!(
            config.endpoint_url.as_deref(),
            Some("http://127.0.0.1:8000")
        );
        assert!(config.session_token.is_none());
        assert!(!format!("{config:?}").contains("secret"));

        let lookup = vars_of(&[
            ("TABLE_NAME", "payments"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_ENDPOINT_URL_DYNAMODB", "localhost:8000"),
        ]);
        let err = StoreConfig::from_vars(&Vars::new(&lookup)).expect_err("not a URL");
        assert!(
            err.to_string().contains("AWS_ENDPOINT_URL_DYNAMODB"),
            "{err}"
        );
    }

    #[test]
    fn days_are_bounded() {
        assert_eq!(parse_days("PLAN_DURATION_DAYS", "30").ok(), Some(30));
        assert!(parse_days("PLAN_DURATION_DAYS", "0").is_err());
        assert!(parse_days("PLAN_DURATION_DAYS", "-1").is_err());
        assert!(parse_days("PLAN_DURATION_DAYS", "thirty").is_err());
    }
}
