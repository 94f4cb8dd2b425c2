//! `/server/` over HTTP with SigV4, as the founder's backend calls it through API
//! Gateway's IAM authorization: requests signed by AWS's own signer (the `aws-sigv4`
//! crate every AWS SDK for Rust signs with) with the local stack's one principal
//! (`local` / `local`, `us-east-1`, service `execute-api`) get in as
//! `arn:aws:iam::000000000000:user/local`; tampered, stale or strangers' signatures get
//! API Gateway's 403s; the dev token still works.

use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use dev::local_server::TestStack;
use serde_json::{Value, json};

struct Signer {
    key: &'static str,
    secret: &'static str,
    at: SystemTime,
}

const LOCAL: Signer = Signer {
    key: "local",
    secret: "local",
    at: SystemTime::UNIX_EPOCH,
};

impl Signer {
    fn now() -> Self {
        Self {
            at: SystemTime::now(),
            ..LOCAL
        }
    }

    /// The headers AWS's signer adds for `method url` with `body`.
    fn headers(&self, method: &str, url: &str, body: &[u8]) -> Vec<(String, String)> {
        let identity = aws_sdk_dynamodb::config::Credentials::new(
            self.key,
            self.secret,
            Some("a-session-token".to_owned()),
            None,
            "test",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("execute-api")
            .time(self.at)
            .settings(SigningSettings::default())
            .build()
            .expect("params")
            .into();
        let content_type = [("content-type", "application/json")];
        let signable = SignableRequest::new(
            method,
            url,
            content_type.iter().copied(),
            SignableBody::Bytes(body),
        )
        .expect("signable");
        let (instructions, _) = sign(signable, &params).expect("signed").into_parts();
        content_type
            .iter()
            .copied()
            .chain(instructions.headers())
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect()
    }
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> (u16, Value, Option<String>) {
    let mut request = http.request(method, url).body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let answer = request.send().await.expect("answered");
    let status = answer.status().as_u16();
    let kind = answer
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, answer.json().await.unwrap_or(Value::Null), kind)
}

#[tokio::test]
async fn a_sigv4_signed_server_call_works_and_a_tampered_one_is_refused() {
    let running = TestStack::start("sigv4", "2027-03-10T10:00:00Z", 3)
        .await
        .expect("the stack starts");
    let http = paywall::http::client();
    let url = format!("{}/server/usage", running.base);
    let usage = |key: &str| {
        json!({"user_id": "alice", "feature": "api_calls", "amount": 1, "idempotency_key": key})
            .to_string()
            .into_bytes()
    };

    // Signed as any AWS SDK signs: in, and counted (the free tier's 20 calls).
    let body = usage("k1");
    let headers = Signer::now().headers("POST", &url, &body);
    let (status, answer, _) = send(&http, reqwest::Method::POST, &url, &headers, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["allowed"], true, "{answer}");
    assert_eq!(answer["remaining"], 19, "{answer}");

    // The same signature over another body: API Gateway's mismatch, and nothing counted.
    let (status, answer, kind) =
        send(&http, reqwest::Method::POST, &url, &headers, usage("k2")).await;
    assert_eq!(status, 403);
    assert_eq!(
        answer,
        json!({"message": "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."})
    );
    assert_eq!(kind.as_deref(), Some("InvalidSignatureException"));
    // …or to another path.
    let other = format!("{}/server/users/alice/grants", running.base);
    let (status, _, _) = send(&http, reqwest::Method::POST, &other, &headers, usage("k1")).await;
    assert_eq!(status, 403);

    // A key the stack does not know; a signature from ten minutes ago.
    let body = usage("k3");
    let stranger = Signer {
        key: "AKIASTRANGER",
        ..Signer::now()
    }
    .headers("POST", &url, &body);
    let (status, answer, kind) =
        send(&http, reqwest::Method::POST, &url, &stranger, body.clone()).await;
    assert_eq!(status, 403);
    assert_eq!(
        answer,
        json!({"message": "The security token included in the request is invalid."})
    );
    assert_eq!(kind.as_deref(), Some("UnrecognizedClientException"));
    let stale = Signer {
        at: SystemTime::now() - Duration::from_secs(600),
        ..LOCAL
    }
    .headers("POST", &url, &body);
    let (status, answer, _) = send(&http, reqwest::Method::POST, &url, &stale, body).await;
    assert_eq!(status, 403);
    let message = answer["message"].as_str().expect("a message");
    assert!(message.starts_with("Signature expired: "), "{message}");
    // The wrong secret.
    let body = usage("k4");
    let wrong = Signer {
        secret: "guess",
        ..Signer::now()
    }
    .headers("POST", &url, &body);
    let (status, _, _) = send(&http, reqwest::Method::POST, &url, &wrong, body).await;
    assert_eq!(status, 403);

    // Only the first call was counted.
    let body = usage("k5");
    let headers = Signer::now().headers("POST", &url, &body);
    let (status, answer, _) = send(&http, reqwest::Method::POST, &url, &headers, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["remaining"], 18, "{answer}");

    // A signed grant is audited under the signer's identity, read back by a signed GET
    // whose query is part of what is signed.
    let grants = format!("{}/server/users/bob/grants", running.base);
    let body = json!({"plan": "monthly", "days": 3, "reason": "support"})
        .to_string()
        .into_bytes();
    let headers = Signer::now().headers("POST", &grants, &body);
    let (status, answer, _) = send(&http, reqwest::Method::POST, &grants, &headers, body).await;
    assert_eq!(status, 200, "{answer}");
    let read = format!("{}/server/users/bob?limit=5", running.base);
    let headers = Signer::now().headers("GET", &read, b"");
    let (status, user, _) = send(&http, reqwest::Method::GET, &read, &headers, Vec::new()).await;
    assert_eq!(status, 200, "{user}");
    assert!(
        user.to_string()
            .contains("arn:aws:iam::000000000000:user/local"),
        "{user}"
    );
    let tampered = format!("{}/server/users/bob?limit=6", running.base);
    let (status, _, _) = send(&http, reqwest::Method::GET, &tampered, &headers, Vec::new()).await;
    assert_eq!(status, 403);

    // No credentials at all: API Gateway's bare 403. The dev token still works.
    let (status, answer, _) = send(&http, reqwest::Method::POST, &url, &[], usage("k6")).await;
    assert_eq!(status, 403);
    assert_eq!(answer, json!({"message": "Forbidden"}));
    let minted: Value = http
        .get(format!("{}/dev/token?server=1", running.base))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    let bearer = vec![
        (
            "authorization".to_owned(),
            format!("Bearer {}", minted["token"].as_str().expect("token")),
        ),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    let (status, answer, _) = send(&http, reqwest::Method::POST, &url, &bearer, usage("k7")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["remaining"], 17, "{answer}");
}
