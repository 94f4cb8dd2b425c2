//! AWS's JSON protocol (`x-amz-json-1.1`), for the two small calls the paywall makes
//! outside DynamoDB — EventBridge's `PutEvents` and Secrets Manager's `GetSecretValue` —
//! signed with SigV4 by the AWS SDK's own signer over the binary's one HTTP client
//! (no second SDK, no second TLS stack).

use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;

use crate::config::StoreConfig;

#[derive(Clone)]
pub struct AwsJsonClient {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    service: &'static str,
    credentials: aws_sdk_dynamodb::config::Credentials,
}

impl std::fmt::Debug for AwsJsonClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsJsonClient")
            .field("endpoint", &self.endpoint)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// What came back: the HTTP status and the body, or why nothing did.
pub type Answer = Result<(u16, String), String>;

impl AwsJsonClient {
    /// `service` is the signing name (`events`, `secretsmanager`); `endpoint` the URL the
    /// caller chose (AWS's regional endpoint, or a local stand-in); the credentials and
    /// region are Lambda's, as the DynamoDB client has them.
    pub fn new(
        aws: &StoreConfig,
        service: &'static str,
        endpoint: String,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let http = crate::http::aws_client_builder().timeout(timeout).build()?;
        Ok(Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            region: aws.region.clone(),
            service,
            credentials: aws_sdk_dynamodb::config::Credentials::new(
                aws.access_key_id.clone(),
                aws.secret_access_key.expose_secret(),
                aws.session_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_owned()),
                None,
                "lambda-environment",
            ),
        })
    }

    /// One call: `target` is the `X-Amz-Target` (`AWSEvents.PutEvents`), `body` the JSON.
    pub async fn call(&self, target: &str, body: String) -> Answer {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let url = format!("{}/", self.endpoint);
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target),
        ];
        let identity = self.credentials.clone().into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.service)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| e.to_string())?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| e.to_string())?
            .into_parts();
        let mut request = self.http.post(&url).body(body);
        for (name, value) in headers.iter().copied().chain(instructions.headers()) {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| e.without_url().to_string())?;
        Ok((status, text))
    }
}
