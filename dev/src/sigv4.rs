//! API Gateway's IAM authorization, played locally: verifies an AWS Signature Version 4
//! request (`Authorization: AWS4-HMAC-SHA256 …`, or the query-string form of a presigned
//! URL) as API Gateway does for a route with `AuthorizationType: AWS_IAM`.
//!
//! The local stack knows one IAM principal: the server process's own
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (`make dev` exports `local` / `local`),
//! in its `AWS_REGION` (default `us-east-1`), for the service `execute-api`. A founder's
//! backend that signs with those credentials (any AWS SDK's signer) is let in as
//! `arn:aws:iam::000000000000:user/local`.
//!
//! What is checked, per AWS's specification of the canonical request: the method; the
//! path, normalised (dot segments removed) and URI-encoded once more, as every service
//! but S3 expects; the query's parameters, decoded, re-encoded and sorted (the
//! `X-Amz-Signature` one left out); the headers listed in `SignedHeaders` (which must
//! include `host`), values trimmed and inner spaces collapsed; the payload's SHA-256 (the
//! body's own: an `x-amz-content-sha256` header that does not match the body is a
//! mismatch); the credential scope (date, region, `execute-api`); and `x-amz-date` within
//! five minutes of the real wall clock (signers use real time, not the test clock). An
//! `X-Amz-Security-Token` is accepted (signed or not) and not checked against anything:
//! the local principal has no sessions. What is not modelled: IAM policies (the one
//! principal may call every `/server/` route), `Date` in place of `X-Amz-Date`, SigV4A.
//!
//! Answers are API Gateway's own: 403 `{"message": …}` with its wording.

use std::time::SystemTime;

use axum::http::{HeaderMap, Method, Uri};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

pub const SERVICE: &str = "execute-api";
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The account the local stack pretends to be.
pub const LOCAL_ACCOUNT: &str = "000000000000";
/// How far `x-amz-date` may be from the wall clock, either way (API Gateway: 5 minutes).
pub const MAX_SKEW_SECONDS: i64 = 300;
/// The longest a presigned URL may live (`X-Amz-Expires`), as AWS allows: 7 days.
const MAX_EXPIRES_SECONDS: i64 = 7 * 24 * 3600;

/// API Gateway's answer to a signature that does not match.
pub const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the \
     signature you provided. Check your AWS Secret Access Key and signing method. Consult the \
     service documentation for details.";
/// API Gateway's answer to an access key it does not know.
pub const INVALID_TOKEN: &str = "The security token included in the request is invalid.";

/// Why a signed request was refused. Each is a 403 with [`Rejection::message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The signature part is malformed or incomplete (API Gateway's
    /// `IncompleteSignatureException`).
    #[error("{0}")]
    Incomplete(String),
    #[error("{SIGNATURE_MISMATCH}")]
    SignatureMismatch,
    #[error("{INVALID_TOKEN}")]
    UnknownAccessKey,
    /// The credential scope names another region or service, or a date other than the
    /// request's.
    #[error("{0}")]
    WrongScope(String),
    #[error("Signature expired: {signed} is now earlier than {earliest} ({now} - 5 min.)")]
    Expired {
        signed: String,
        earliest: String,
        now: String,
    },
    #[error("Signature not yet current: {signed} is still later than {latest} ({now} + 5 min.)")]
    NotYetCurrent {
        signed: String,
        latest: String,
        now: String,
    },
}

impl Rejection {
    /// The `message` of API Gateway's 403 body.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// The caller a verified signature identifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub access_key: String,
    pub account_id: String,
    pub user_arn: String,
}

/// The one principal the local stack knows, and where it is.
pub struct Verifier {
    region: String,
    access_key: String,
    secret_key: SecretString,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// Whether the request carries a SigV4 signature (header or query form): then it is
/// judged by [`Verifier::verify`], never by another scheme.
pub fn is_signed(headers: &HeaderMap, uri: &Uri) -> bool {
    let in_header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("AWS4-"));
    let in_query = query_pairs(uri.query().unwrap_or_default())
        .iter()
        .any(|(name, _)| name == "X-Amz-Algorithm" || name == "X-Amz-Signature");
    in_header || in_query
}

/// The parts of a signature, from the header or the query.
struct Parts {
    access_key: String,
    scope_date: String,
    scope_region: String,
    scope_service: String,
    signed_headers: Vec<String>,
    signature: String,
    amz_date: String,
    /// A presigned URL's lifetime; `None` for the header form.
    expires: Option<i64>,
}

impl Verifier {
    pub fn new(region: &str, access_key: &str, secret_key: SecretString) -> Self {
        Self {
            region: region.to_owned(),
            access_key: access_key.to_owned(),
            secret_key,
        }
    }

    /// The local principal's ARN.
    pub fn user_arn(&self) -> String {
        format!("arn:aws:iam::{LOCAL_ACCOUNT}:user/local")
    }

    /// Verifies a signed request at `now` (the real wall clock in the server).
    pub fn verify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Caller, Rejection> {
        let query = query_pairs(uri.query().unwrap_or_default());
        let parts = match headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.trim_start().starts_with("AWS4-"))
        {
            Some(authorization) => from_header(authorization, headers)?,
            None => from_query(&query)?,
        };

        // As API Gateway: the key first, then the scope, the time, the signature.
        if parts.access_key != self.access_key {
            return Err(Rejection::UnknownAccessKey);
        }
        if parts.scope_service != SERVICE {
            return Err(Rejection::WrongScope(format!(
                "Credential should be scoped to correct service: '{SERVICE}'. "
            )));
        }
        if parts.scope_region != self.region {
            return Err(Rejection::WrongScope(format!(
                "Credential should be scoped to a valid region, not '{}'. ",
                parts.scope_region
            )));
        }
        let signed_at = parse_amz_date(&parts.amz_date).ok_or_else(|| {
            Rejection::Incomplete(format!(
                "Date must be in ISO-8601 'basic format'. Got '{}'. See http://en.wikipedia.org/wiki/ISO_8601",
                parts.amz_date
            ))
        })?;
        if parts.scope_date != parts.amz_date[..8] {
            return Err(Rejection::WrongScope(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{}'.",
                parts.scope_date,
                &parts.amz_date[..8],
                parts.amz_date
            )));
        }
        let now_s = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        // A header-signed request is good for MAX_SKEW_SECONDS either side of now; a
        // presigned URL for its X-Amz-Expires after signing; neither if signed further ahead.
        let max_age = parts.expires.unwrap_or(MAX_SKEW_SECONDS);
        if signed_at.saturating_add(max_age) < now_s {
            return Err(Rejection::Expired {
                signed: parts.amz_date.clone(),
                earliest: format_amz_date(now_s - max_age),
                now: format_amz_date(now_s),
            });
        }
        if signed_at > now_s + MAX_SKEW_SECONDS {
            return Err(Rejection::NotYetCurrent {
                signed: parts.amz_date.clone(),
                latest: format_amz_date(now_s + MAX_SKEW_SECONDS),
                now: format_amz_date(now_s),
            });
        }
        if !parts.signed_headers.iter().any(|h| h == "host") {
            return Err(Rejection::Incomplete(
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
                    .to_owned(),
            ));
        }

        let body_hash = hex(&Sha256::digest(body));
        // A declared payload hash is what the signer signed; it must be this body's.
        if let Some(declared) = headers
            .get("x-amz-content-sha256")
            .and_then(|v| v.to_str().ok())
            && declared != body_hash
        {
            return Err(Rejection::SignatureMismatch);
        }
        let canonical = canonical_request(
            method,
            uri.path(),
            &query_pairs_bytes(uri.query().unwrap_or_default()),
            parts.expires.is_some(),
            headers,
            &parts.signed_headers,
            &body_hash,
        )
        .ok_or(Rejection::SignatureMismatch)?;
        let scope = format!(
            "{}/{}/{}/aws4_request",
            parts.scope_date, parts.scope_region, parts.scope_service
        );
        let string_to_sign = format!(
            "{ALGORITHM}\n{}\n{scope}\n{}",
            parts.amz_date,
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let key = signing_key(
            self.secret_key.expose_secret(),
            &parts.scope_date,
            &parts.scope_region,
            &parts.scope_service,
        );
        let Some(provided) = unhex(&parts.signature) else {
            return Err(Rejection::SignatureMismatch);
        };
        let mut mac = hmac(&key);
        mac.update(string_to_sign.as_bytes());
        // Compared in constant time.
        mac.verify_slice(&provided)
            .map_err(|_| Rejection::SignatureMismatch)?;
        Ok(Caller {
            access_key: parts.access_key,
            account_id: LOCAL_ACCOUNT.to_owned(),
            user_arn: self.user_arn(),
        })
    }
}

fn incomplete(what: &str) -> Rejection {
    Rejection::Incomplete(format!(
        "Authorization header requires '{what}' parameter. Authorization header requires \
         existence of either a 'X-Amz-Date' or a 'Date' header."
    ))
}

/// `Credential=AKID/20270101/us-east-1/execute-api/aws4_request` split up.
fn credential(value: &str) -> Result<(String, String, String, String), Rejection> {
    let fields: Vec<&str> = value.split('/').collect();
    match fields.as_slice() {
        [key, date, region, service, "aws4_request"] if !key.is_empty() => Ok((
            (*key).to_owned(),
            (*date).to_owned(),
            (*region).to_owned(),
            (*service).to_owned(),
        )),
        _ => Err(Rejection::Incomplete(
            "Credential should be scoped to a valid region, date, service and terminated by \
             'aws4_request'. "
                .to_owned(),
        )),
    }
}

fn signed_header_list(value: &str) -> Vec<String> {
    value
        .split(';')
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect()
}

fn from_header(authorization: &str, headers: &HeaderMap) -> Result<Parts, Rejection> {
    let rest = authorization.trim_start();
    let Some(rest) = rest.strip_prefix(ALGORITHM) else {
        return Err(Rejection::Incomplete(
            "Unsupported signing algorithm: only AWS4-HMAC-SHA256 is accepted.".to_owned(),
        ));
    };
    let (mut credential_value, mut signed, mut signature) = (None, None, None);
    for field in rest.split(',') {
        let field = field.trim();
        if let Some((name, value)) = field.split_once('=') {
            match name.trim() {
                "Credential" => credential_value = Some(value.trim()),
                "SignedHeaders" => signed = Some(value.trim()),
                "Signature" => signature = Some(value.trim()),
                _ => {}
            }
        }
    }
    let credential_value = credential_value.ok_or_else(|| incomplete("Credential"))?;
    let signed = signed.ok_or_else(|| incomplete("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| incomplete("Signature"))?;
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| incomplete("X-Amz-Date"))?
        .trim()
        .to_owned();
    let (access_key, scope_date, scope_region, scope_service) = credential(credential_value)?;
    Ok(Parts {
        access_key,
        scope_date,
        scope_region,
        scope_service,
        signed_headers: signed_header_list(signed),
        signature: signature.to_owned(),
        amz_date,
        expires: None,
    })
}

fn from_query(query: &[(String, String)]) -> Result<Parts, Rejection> {
    let get = |name: &str| {
        query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| {
                Rejection::Incomplete(format!(
                    "AWS query-string parameters must include '{name}'. Re-examine the \
                     query-string parameters."
                ))
            })
    };
    if get("X-Amz-Algorithm")? != ALGORITHM {
        return Err(Rejection::Incomplete(
            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"".to_owned(),
        ));
    }
    let (access_key, scope_date, scope_region, scope_service) =
        credential(get("X-Amz-Credential")?)?;
    let expires: i64 = get("X-Amz-Expires")?
        .parse()
        .ok()
        .filter(|seconds| (0..=MAX_EXPIRES_SECONDS).contains(seconds))
        .ok_or_else(|| {
            Rejection::Incomplete(
                "X-Amz-Expires must be a whole number of seconds, at most 604800.".to_owned(),
            )
        })?;
    Ok(Parts {
        access_key,
        scope_date,
        scope_region,
        scope_service,
        signed_headers: signed_header_list(get("X-Amz-SignedHeaders")?),
        signature: get("X-Amz-Signature")?.to_owned(),
        amz_date: get("X-Amz-Date")?.to_owned(),
        expires: Some(expires),
    })
}

/// The query's parameters, percent-decoded (`+` as a space, as AWS's signers read it).
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    String::from_utf8_lossy(&percent_decode_bytes(text)).into_owned()
}

/// The bytes the text stands for: `%XX` escapes decoded, `+` as a space. Not read as
/// UTF-8, so that different invalid escapes (`%FF`, `%FE`) stay different.
fn percent_decode_bytes(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                match bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    out
}

/// The query's parameters as bytes, percent-decoded: what the canonical query encodes.
fn query_pairs_bytes(query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode_bytes(name), percent_decode_bytes(value))
        })
        .collect()
}

/// RFC 3986 encoding: everything but the unreserved characters (and `/` when `keep_slash`).
fn uri_encode(text: &str, keep_slash: bool) -> String {
    uri_encode_bytes(text.as_bytes(), keep_slash)
}

fn uri_encode_bytes(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &byte in bytes {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && byte == b'/')
        {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The path with `.` and `..` segments and empty segments removed (RFC 3986 5.2.4), as
/// AWS's signers normalise it.
fn normalize_path(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    if !(path.contains('.') || path.contains("//")) && path.starts_with('/') {
        return path.to_owned();
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut normalized = format!("/{}", segments.join("/"));
    if path.ends_with('/') && normalized != "/" {
        normalized.push('/');
    }
    normalized
}

/// The canonical request; `None` when a signed header is absent. `presigned`: signed in
/// the query (`X-Amz-Signature` is then left out of the canonical query, as the signer
/// adds it after signing); signed in the header, every query parameter is signed.
fn canonical_request(
    method: &Method,
    path: &str,
    query: &[(Vec<u8>, Vec<u8>)],
    presigned: bool,
    headers: &HeaderMap,
    signed_headers: &[String],
    payload_hash: &str,
) -> Option<String> {
    // The path as received is already encoded once: encoding it again is the "double"
    // encoding every service but S3 signs.
    let canonical_uri = uri_encode(&normalize_path(path), true);
    let mut params: Vec<(String, String)> = query
        .iter()
        .filter(|(name, _)| !(presigned && name.as_slice() == b"X-Amz-Signature"))
        .map(|(name, value)| {
            (
                uri_encode_bytes(name, false),
                uri_encode_bytes(value, false),
            )
        })
        .collect();
    params.sort();
    let canonical_query = params
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut canonical_headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        if values.is_empty() {
            return None;
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    Some(format!(
        "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{}\n{payload_hash}",
        signed_headers.join(";")
    ))
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

fn hmac_bytes(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = hmac(key);
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac_bytes(format!("AWS4{secret}").as_bytes(), date);
    let k_region = hmac_bytes(&k_date, region);
    let k_service = hmac_bytes(&k_region, service);
    hmac_bytes(&k_service, "aws4_request")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `20270115T100000Z` as seconds since the epoch.
fn parse_amz_date(raw: &str) -> Option<i64> {
    if raw.len() != 16 || raw.as_bytes()[8] != b'T' || !raw.ends_with('Z') {
        return None;
    }
    paywall::time::Timestamp::parse_rfc3339(&format!(
        "{}-{}-{}T{}:{}:{}Z",
        raw.get(0..4)?,
        raw.get(4..6)?,
        raw.get(6..8)?,
        raw.get(9..11)?,
        raw.get(11..13)?,
        raw.get(13..15)?
    ))
    .map(|t| t.unix_seconds())
}

fn format_amz_date(seconds: i64) -> String {
    paywall::time::Timestamp::from_unix_seconds(seconds)
        .to_rfc3339()
        .replace(['-', ':'], "")
}

#[cfg(test)]
mod tests {
    //! Signatures made by AWS's own signer (the `aws-sigv4` crate the SDK signs with), then
    //! verified here; and the same requests tampered with, refused.
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, SystemTime};

    use aws_sigv4::http_request::{
        PayloadChecksumKind, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
        sign,
    };
    use axum::http::{HeaderValue, Request};

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn verifier() -> Verifier {
        Verifier::new("us-east-1", "local", SecretString::from("local"))
    }

    struct Signing<'a> {
        key: &'a str,
        secret: &'a str,
        token: Option<&'a str>,
        region: &'a str,
        service: &'a str,
        at: SystemTime,
        settings: SigningSettings,
    }

    impl Default for Signing<'_> {
        fn default() -> Self {
            Self {
                key: "local",
                secret: "local",
                token: None,
                region: "us-east-1",
                service: SERVICE,
                at: now(),
                settings: SigningSettings::default(),
            }
        }
    }

    /// The request as an HTTP client would send it once AWS's signer signed it: the
    /// signer's headers (or query parameters) added, and `Host` set from the URL.
    fn signed(
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        how: Signing<'_>,
    ) -> Request<Vec<u8>> {
        let identity = aws_sdk_dynamodb::config::Credentials::new(
            how.key,
            how.secret,
            how.token.map(str::to_owned),
            None,
            "test",
        )
        .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(how.region)
            .name(how.service)
            .time(how.at)
            .settings(how.settings)
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new(
            method,
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request.body(body.to_vec()).unwrap();
        instructions.apply_to_request_http1x(&mut request);
        let host = request.uri().authority().unwrap().to_string();
        request
            .headers_mut()
            .insert("host", HeaderValue::from_str(&host).unwrap());
        request
    }

    fn check(request: &Request<Vec<u8>>) -> Result<Caller, Rejection> {
        check_at(request, now())
    }

    fn check_at(request: &Request<Vec<u8>>, at: SystemTime) -> Result<Caller, Rejection> {
        verifier().verify(
            request.method(),
            request.uri(),
            request.headers(),
            request.body(),
            at,
        )
    }

    const URL: &str = "http://127.0.0.1:3000/server/usage";
    const BODY: &[u8] =
        br#"{"user_id":"alice","feature":"api_calls","amount":1,"idempotency_key":"k1"}"#;
    const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

    #[test]
    fn accepts_what_aws_signs_and_names_the_local_principal() {
        let request = signed("POST", URL, &JSON, BODY, Signing::default());
        assert!(is_signed(request.headers(), request.uri()));
        let caller = check(&request).unwrap();
        assert_eq!(caller.user_arn, "arn:aws:iam::000000000000:user/local");
        assert_eq!(caller.account_id, "000000000000");
        assert_eq!(caller.access_key, "local");
    }

    #[test]
    fn accepts_encoded_paths_unsorted_queries_tokens_and_declared_payload_hashes() {
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let request = signed(
            "GET",
            "http://127.0.0.1:3000/server/users/alice%40example.com%2Fx%20y?limit=5&cursor=a%2Bb%3D&empty=",
            &[("x-custom", "  two   spaces  ")],
            b"",
            Signing {
                token: Some("session-token"),
                settings,
                ..Signing::default()
            },
        );
        assert!(request.headers().contains_key("x-amz-security-token"));
        assert!(request.headers().contains_key("x-amz-content-sha256"));
        check(&request).unwrap();
    }

    #[test]
    fn accepts_a_presigned_url_until_it_expires() {
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(900));
        let request = signed(
            "GET",
            "http://127.0.0.1:3000/server/users/alice?limit=2",
            &[],
            b"",
            Signing {
                settings,
                ..Signing::default()
            },
        );
        assert!(request.headers().get("authorization").is_none());
        assert!(is_signed(request.headers(), request.uri()));
        check(&request).unwrap();
        check_at(&request, now() + Duration::from_secs(899)).unwrap();
        let late = check_at(&request, now() + Duration::from_secs(901)).unwrap_err();
        assert!(late.message().starts_with("Signature expired: "), "{late}");
        // A parameter changed after signing.
        let tampered = request.uri().to_string().replace("limit=2", "limit=3");
        let mut changed = request.clone();
        *changed.uri_mut() = tampered.parse().unwrap();
        assert_eq!(check(&changed), Err(Rejection::SignatureMismatch));
    }

    #[test]
    fn a_changed_body_header_path_query_method_or_date_is_a_mismatch() {
        let request = signed(
            "POST",
            "http://127.0.0.1:3000/server/users/alice/grants?x=1",
            &[("content-type", "application/json"), ("x-amz-meta", "a")],
            BODY,
            Signing::default(),
        );
        check(&request).unwrap();

        let mut body = request.clone();
        *body.body_mut() = BODY
            .iter()
            .map(|b| if *b == b'1' { b'9' } else { *b })
            .collect();
        let mut header = request.clone();
        header
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("text/plain"));
        let mut path = request.clone();
        *path.uri_mut() = "http://127.0.0.1:3000/server/users/mallory/grants?x=1"
            .parse()
            .unwrap();
        let mut query = request.clone();
        *query.uri_mut() = "http://127.0.0.1:3000/server/users/alice/grants?x=2"
            .parse()
            .unwrap();
        let mut method = request.clone();
        *method.method_mut() = Method::DELETE;
        let mut date = request.clone();
        let one_second_later = format_amz_date(i64::try_from(NOW).unwrap() + 1);
        date.headers_mut().insert(
            "x-amz-date",
            HeaderValue::from_str(&one_second_later).unwrap(),
        );
        let mut host = request.clone();
        host.headers_mut()
            .insert("host", HeaderValue::from_static("localhost:3000"));
        for (what, tampered) in [
            ("body", body),
            ("header", header),
            ("path", path),
            ("query", query),
            ("method", method),
            ("date", date),
            ("host", host),
        ] {
            let refused = check(&tampered).unwrap_err();
            assert_eq!(refused, Rejection::SignatureMismatch, "{what}");
            assert_eq!(refused.message(), SIGNATURE_MISMATCH);
        }
        // A signed header dropped on the way.
        let mut dropped = request.clone();
        dropped.headers_mut().remove("x-amz-meta");
        assert_eq!(check(&dropped), Err(Rejection::SignatureMismatch));
    }

    #[test]
    fn a_declared_payload_hash_must_be_the_bodys() {
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let request = signed(
            "POST",
            URL,
            &JSON,
            BODY,
            Signing {
                settings,
                ..Signing::default()
            },
        );
        check(&request).unwrap();
        let mut other_body = request.clone();
        other_body.body_mut().push(b' ');
        assert_eq!(check(&other_body), Err(Rejection::SignatureMismatch));
    }

    #[test]
    fn the_wrong_secret_is_a_mismatch_and_an_unknown_key_an_invalid_token() {
        let wrong_secret = signed(
            "POST",
            URL,
            &JSON,
            BODY,
            Signing {
                secret: "not-local",
                ..Signing::default()
            },
        );
        assert_eq!(check(&wrong_secret), Err(Rejection::SignatureMismatch));
        let stranger = signed(
            "POST",
            URL,
            &JSON,
            BODY,
            Signing {
                key: "AKIASTRANGER",
                ..Signing::default()
            },
        );
        let refused = check(&stranger).unwrap_err();
        assert_eq!(refused, Rejection::UnknownAccessKey);
        assert_eq!(
            refused.message(),
            "The security token included in the request is invalid."
        );
    }

    #[test]
    fn a_signature_older_or_newer_than_five_minutes_is_refused() {
        let old = signed(
            "POST",
            URL,
            &JSON,
            BODY,
            Signing {
                at: now() - Duration::from_secs(301),
                ..Signing::default()
            },
        );
        let refused = check(&old).unwrap_err();
        assert!(matches!(refused, Rejection::Expired { .. }), "{refused:?}");
        assert!(
            refused.message().starts_with("Signature expired: ")
                && refused.message().ends_with(" - 5 min.)"),
            "{refused}"
        );
        check_at(&old, now() - Duration::from_secs(2)).unwrap();
        let future = signed(
            "POST",
            URL,
            &JSON,
            BODY,
            Signing {
                at: now() + Duration::from_secs(301),
                ..Signing::default()
            },
        );
        assert!(matches!(
            check(&future),
            Err(Rejection::NotYetCurrent { .. })
        ));
    }

    #[test]
    fn another_region_or_service_is_refused() {
        for how in [
            Signing {
                region: "eu-west-1",
                ..Signing::default()
            },
            Signing {
                service: "lambda",
                ..Signing::default()
            },
        ] {
            let request = signed("POST", URL, &JSON, BODY, how);
            assert!(
                matches!(check(&request), Err(Rejection::WrongScope(_))),
                "{:?}",
                check(&request)
            );
        }
    }

    #[test]
    fn a_malformed_authorization_is_incomplete_and_never_accepted() {
        for authorization in [
            "AWS4-HMAC-SHA256 Credential=local/20270115/us-east-1/execute-api/aws4_request",
            "AWS4-HMAC-SHA256 Credential=local/x, SignedHeaders=host, Signature=00",
            "AWS4-ECDSA-P256-SHA256 Credential=local/20270115/us-east-1/execute-api/aws4_request, SignedHeaders=host, Signature=00",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert("authorization", HeaderValue::from_static(authorization));
            headers.insert("x-amz-date", HeaderValue::from_static("20270115T100000Z"));
            headers.insert("host", HeaderValue::from_static("127.0.0.1:3000"));
            let uri: Uri = URL.parse().unwrap();
            assert!(is_signed(&headers, &uri));
            let refused = verifier()
                .verify(&Method::POST, &uri, &headers, b"", now())
                .unwrap_err();
            assert!(
                matches!(refused, Rejection::Incomplete(_)),
                "{authorization}: {refused:?}"
            );
        }
        // Without host among the signed headers.
        let mut settings = SigningSettings::default();
        settings.excluded_headers = Some(vec!["host".into()]);
        let request = signed(
            "POST",
            URL,
            &JSON,
            BODY,
            Signing {
                settings,
                ..Signing::default()
            },
        );
        let _ = check(&request).unwrap_err();
        let mut bearer = HeaderMap::new();
        bearer.insert("authorization", HeaderValue::from_static("Bearer abc"));
        assert!(!is_signed(&bearer, &URL.parse().unwrap()));
    }

    #[test]
    fn a_signature_parameter_added_to_a_header_signed_query_is_a_mismatch() {
        let request = signed("GET", URL, &[], b"", Signing::default());
        check(&request).unwrap();
        // Signed in the header, every query parameter is signed: AWS would refuse a
        // request with one added, even one named X-Amz-Signature.
        let mut added = request.clone();
        *added.uri_mut() = format!("{URL}?X-Amz-Signature=x").parse().unwrap();
        assert_eq!(check(&added), Err(Rejection::SignatureMismatch));
    }

    #[test]
    fn different_invalid_escapes_are_different_canonical_queries() {
        let canonical = |query: &str| {
            canonical_request(
                &Method::GET,
                "/server/usage",
                &query_pairs_bytes(query),
                false,
                &HeaderMap::new(),
                &[],
                "e3b0",
            )
            .unwrap()
        };
        // The bytes each escape stands for, encoded again: not one replacement character.
        assert!(
            canonical("k=%FF").contains("\nk=%FF\n"),
            "{}",
            canonical("k=%FF")
        );
        assert!(canonical("k=%fe").contains("\nk=%FE\n"));
        assert_ne!(canonical("k=%FF"), canonical("k=%FE"));
        assert_ne!(canonical("%FF=v"), canonical("%FE=v"));
        // Valid UTF-8 and unreserved characters are unchanged by the round trip.
        assert!(canonical("k=%C3%A9%2Fa-b").contains("\nk=%C3%A9%2Fa-b\n"));
    }
}
