//! The one HTTPS stack of every binary: one rustls configuration, built once, with the
//! root certificates compiled in, under every HTTP client the binary has — the AWS SDK's
//! (DynamoDB), Dodo's, EventBridge's and Secrets Manager's.
//!
//! Why built in: reading the system's store (about 150 files in `/etc/ssl/certs` on
//! Debian) took milliseconds of every cold start, once per client, and Lambda bills init.
//! The roots are Mozilla's, from the `webpki-roots` crate (generated from the CCADB, the
//! same source Debian's `ca-certificates` follows); `cargo update -p webpki-roots` takes a
//! new release, and `tests::built_in_roots_hold_the_endpoints_roots` checks that the roots
//! AWS's endpoints chain to are in it. The verification is rustls's WebPKI verifier with
//! `ring`: one small crypto library for TLS (the AWS SDK's own default, aws-lc, is about a
//! megabyte more in every binary).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

/// The binary's TLS configuration: built on first use, then shared. Each HTTP client holds
/// a clone, which shares this one's verifier (and so its root store), crypto provider and
/// session cache: the allocations are made once.
static TLS: LazyLock<rustls::ClientConfig> = LazyLock::new(|| {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
});

/// A reqwest client builder over the binary's TLS configuration. Every HTTP client in the
/// project starts here (reqwest has no crypto provider of its own in this build).
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(TLS.clone())
}

/// A builder for a client of AWS's APIs: as [`client_builder`], and never following a
/// redirect (AWS's endpoints send none, and a followed one would carry a signed body and
/// the session token to another host), as the SDK's own client does not.
pub fn aws_client_builder() -> reqwest::ClientBuilder {
    client_builder().redirect(reqwest::redirect::Policy::none())
}

/// A client with no settings beyond the shared TLS configuration (tests, local tools).
pub fn client() -> reqwest::Client {
    client_builder()
        .build()
        .expect("a client over a preconfigured TLS backend always builds")
}

/// The AWS SDK's HTTP client: the SDK's requests, signed and retried by the SDK, sent by
/// reqwest over the shared TLS configuration, instead of the SDK's own hyper client with
/// a second TLS stack that reads the system's roots.
#[derive(Clone, Debug)]
pub struct SdkHttpClient {
    http: reqwest::Client,
}

impl SdkHttpClient {
    /// `connect_timeout` bounds the TCP and TLS set-up; the SDK's own operation and
    /// attempt timeouts bound the rest. (The SDK's `HttpConnectorSettings` carry only a
    /// connect and a read timeout, and this client is built once with its own: give the
    /// SDK config no other.)
    pub fn new(connect_timeout: Duration) -> Self {
        let http = aws_client_builder()
            .connect_timeout(connect_timeout)
            .build()
            .expect("a client over a preconfigured TLS backend always builds");
        Self { http }
    }
}

impl HttpClient for SdkHttpClient {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for SdkHttpClient {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let http = self.http.clone();
        HttpConnectorFuture::new(async move {
            let request = to_reqwest(request)?;
            let response = http.execute(request).await.map_err(connector_error)?;
            let mut head = http::Response::builder().status(response.status());
            if let Some(headers) = head.headers_mut() {
                headers.extend(response.headers().clone());
            }
            // DynamoDB's answers are small JSON documents, read whole (the SDK reads them
            // whole too before parsing). A body cut off after the head is a broken
            // connection, which the SDK retries, as it does when it reads the body itself.
            let body = response
                .bytes()
                .await
                .map_err(|e| ConnectorError::io(e.into()))?;
            let response = head
                .body(SdkBody::from(body))
                .map_err(|e| ConnectorError::other(e.into(), None))?;
            HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// The SDK's request as reqwest's: the same method, URI, headers and bytes, so that the
/// signature the SDK computed still holds.
fn to_reqwest(request: HttpRequest) -> Result<reqwest::Request, ConnectorError> {
    let request = request
        .try_into_http1x()
        .map_err(|e| ConnectorError::user(e.into()))?;
    let (head, body) = request.into_parts();
    let bytes = body
        .bytes()
        .ok_or_else(|| ConnectorError::user("a streaming request body is not supported".into()))?
        .to_vec();
    reqwest::Request::try_from(http::Request::from_parts(head, bytes))
        .map_err(|e| ConnectorError::user(e.into()))
}

/// What the SDK's retry strategy needs to know: a timeout or a broken connection is
/// transient (retried), a request that could not be built is the caller's.
fn connector_error(err: reqwest::Error) -> ConnectorError {
    if err.is_timeout() {
        ConnectorError::timeout(err.into())
    } else if err.is_builder() {
        ConnectorError::user(err.into())
    } else if err.is_connect() || err.is_request() || err.is_body() {
        ConnectorError::io(err.into())
    } else {
        ConnectorError::other(err.into(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A one-connection HTTP server on loopback that reads the request head and answers
    /// `answer` (raw bytes), then closes; its URL.
    fn answer_once(answer: impl Into<String>) -> String {
        let answer = answer.into();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        format!("http://{address}/")
    }

    async fn send(url: &str) -> Result<HttpResponse, ConnectorError> {
        let request = http::Request::builder()
            .method("POST")
            .uri(url)
            .body(SdkBody::from("{}"))
            .expect("request");
        let request = HttpRequest::try_from(request).expect("SDK request");
        SdkHttpClient::new(Duration::from_secs(2))
            .call(request)
            .await
    }

    /// A body cut off after the head is a broken connection: an I/O error, which the SDK's
    /// retry strategy retries (a DynamoDB call that would otherwise fail at once).
    #[tokio::test(flavor = "current_thread")]
    async fn a_body_cut_off_is_a_retryable_io_error() {
        let url = answer_once("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"Item\"");
        let error = send(&url).await.expect_err("the body is cut off");
        assert!(error.is_io(), "{error:?}");
    }

    /// A redirect reaches the SDK as it came (AWS sends none): never followed with the
    /// signed body and the session token to another host.
    #[tokio::test(flavor = "current_thread")]
    async fn a_redirect_is_not_followed() {
        let elsewhere = answer_once("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
        let redirect = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: {elsewhere}\r\ncontent-length: 0\r\n\r\n"
        );
        let response = send(&answer_once(redirect)).await.expect("an answer");
        assert_eq!(response.status().as_u16(), 307);
    }

    /// The roots AWS's endpoints (DynamoDB, EventBridge, Secrets Manager) chain to, by
    /// subject: Amazon Trust Services' four roots and the Starfield root they cross-sign
    /// from. A `webpki-roots` release that dropped one would fail here before it shipped.
    #[test]
    fn built_in_roots_hold_the_endpoints_roots() {
        let subjects: Vec<String> = webpki_roots::TLS_SERVER_ROOTS
            .iter()
            .map(|anchor| String::from_utf8_lossy(anchor.subject.as_ref()).into_owned())
            .collect();
        for root in [
            "Amazon Root CA 1",
            "Amazon Root CA 2",
            "Amazon Root CA 3",
            "Amazon Root CA 4",
            "Starfield Services Root Certificate Authority - G2",
        ] {
            assert!(
                subjects.iter().any(|subject| subject.contains(root)),
                "{root} is missing from the built-in roots"
            );
        }
        assert!(subjects.len() > 100, "only {} roots", subjects.len());
    }
}
