//! Standard Webhooks verification, as Dodo signs its deliveries.
//!
//! Signed bytes are `{webhook-id}.{webhook-timestamp}.{raw body}`, HMAC-SHA256 keyed with
//! the base64-decoded part of the secret after `whsec_`. `webhook-signature` holds
//! space-separated `v1,<base64>` entries (several during a secret rotation); any one may
//! match. The timestamp must be within five minutes of now, either way.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

/// How far a delivery's timestamp may be from our clock, in either direction.
pub const TOLERANCE_SECONDS: i64 = 5 * 60;

const SECRET_PREFIX: &str = "whsec_";
const SIGNATURE_LENGTH: usize = 32;

pub struct WebhookSecret(SecretBox<Vec<u8>>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the secret is empty")]
    Empty,
    #[error("the secret is not `whsec_` followed by base64")]
    NotBase64,
}

impl WebhookSecret {
    /// `whsec_<base64>`; the prefix is optional, as in the reference libraries.
    pub fn parse(raw: &str) -> Result<Self, SecretError> {
        let encoded = raw.trim();
        let encoded = encoded.strip_prefix(SECRET_PREFIX).unwrap_or(encoded);
        if encoded.is_empty() {
            return Err(SecretError::Empty);
        }
        let key = BASE64.decode(encoded).map_err(|_| SecretError::NotBase64)?;
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self(SecretBox::new(Box::new(key))))
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so this cannot fail for a non-empty key.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` header value for a delivery (`v1,<base64>`): what Dodo
    /// sends. Used by the local simulator and the `trigger` command.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self
            .mac(id, &timestamp.to_string(), body)
            .finalize()
            .into_bytes();
        format!("v1,{}", BASE64.encode(tag))
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

/// Why a delivery was refused. None of these says which part of a signature was wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is too old")]
    TooOld,
    #[error("webhook-timestamp is too far in the future")]
    TooNew,
    #[error("no signature matches")]
    NoMatch,
}

/// The three Standard Webhooks headers of one delivery.
#[derive(Clone, Copy, Debug)]
pub struct SignedHeaders<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

impl<'a> SignedHeaders<'a> {
    pub fn from_http(headers: &'a lambda_http::http::HeaderMap) -> Self {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Self {
            id: get("webhook-id"),
            timestamp: get("webhook-timestamp"),
            signature: get("webhook-signature"),
        }
    }
}

/// Verifies the exact bytes received. Returns the delivery's `webhook-id`.
pub fn verify<'a>(
    secret: &WebhookSecret,
    headers: SignedHeaders<'a>,
    body: &[u8],
    now_unix_seconds: i64,
) -> Result<&'a str, VerifyError> {
    let id = headers
        .id
        .filter(|v| !v.is_empty())
        .ok_or(VerifyError::MissingHeader("webhook-id"))?;
    let timestamp = headers
        .timestamp
        .filter(|v| !v.is_empty())
        .ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
    let signatures = headers
        .signature
        .filter(|v| !v.is_empty())
        .ok_or(VerifyError::MissingHeader("webhook-signature"))?;

    let sent_at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    if sent_at < now_unix_seconds - TOLERANCE_SECONDS {
        return Err(VerifyError::TooOld);
    }
    if sent_at > now_unix_seconds + TOLERANCE_SECONDS {
        return Err(VerifyError::TooNew);
    }

    let expected = secret.mac(id, timestamp, body);
    let matched = signatures.split_whitespace().any(|entry| {
        let Some(encoded) = entry.strip_prefix("v1,") else {
            return false; // another scheme (e.g. v1a), or a malformed entry
        };
        match BASE64.decode(encoded) {
            // An empty (`v1,`) or truncated signature must never pass, so the length is
            // checked before the constant-time comparison.
            Ok(candidate) if candidate.len() == SIGNATURE_LENGTH => {
                expected.clone().verify_slice(&candidate).is_ok()
            }
            _ => false,
        }
    });
    if matched {
        Ok(id)
    } else {
        Err(VerifyError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks specification's own known-answer vector.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secret() -> WebhookSecret {
        WebhookSecret::parse(SECRET).expect("valid secret")
    }

    fn headers<'a>(signature: &'a str, timestamp: &'a str) -> SignedHeaders<'a> {
        SignedHeaders {
            id: Some(ID),
            timestamp: Some(timestamp),
            signature: Some(signature),
        }
    }

    #[test]
    fn signs_the_known_answer() {
        assert_eq!(secret().sign(ID, TIMESTAMP, BODY), SIGNATURE);
    }

    #[test]
    fn accepts_the_known_answer() {
        let ts = TIMESTAMP.to_string();
        assert_eq!(
            verify(&secret(), headers(SIGNATURE, &ts), BODY, TIMESTAMP),
            Ok(ID)
        );
    }

    #[test]
    fn refuses_a_changed_body_id_or_timestamp() {
        let ts = TIMESTAMP.to_string();
        let changed_body = br#"{"test": 2432232315}"#;
        assert_eq!(
            verify(&secret(), headers(SIGNATURE, &ts), changed_body, TIMESTAMP),
            Err(VerifyError::NoMatch)
        );
        let other_id = SignedHeaders {
            id: Some("msg_other"),
            ..headers(SIGNATURE, &ts)
        };
        assert_eq!(
            verify(&secret(), other_id, BODY, TIMESTAMP),
            Err(VerifyError::NoMatch)
        );
        let ts_plus_one = (TIMESTAMP + 1).to_string();
        assert_eq!(
            verify(&secret(), headers(SIGNATURE, &ts_plus_one), BODY, TIMESTAMP),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn refuses_bare_and_truncated_signatures() {
        let ts = TIMESTAMP.to_string();
        for forged in [
            "v1,",
            "v1",
            "v1,g0hM9SsE+OTPJTGt",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1O==",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=AAAA",
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            "v1,not base64!",
        ] {
            assert_eq!(
                verify(&secret(), headers(forged, &ts), BODY, TIMESTAMP),
                Err(VerifyError::NoMatch),
                "{forged}"
            );
        }
    }

    #[test]
    fn refuses_the_wrong_secret() {
        let other =
            WebhookSecret::parse("whsec_c2VjcmV0LW9mLWFub3RoZXItYnVzaW5lc3M=").expect("valid");
        let ts = TIMESTAMP.to_string();
        assert_eq!(
            verify(&other, headers(SIGNATURE, &ts), BODY, TIMESTAMP),
            Err(VerifyError::NoMatch)
        );
    }

    #[test]
    fn accepts_any_of_several_signatures_during_rotation() {
        let ts = TIMESTAMP.to_string();
        let old = WebhookSecret::parse("whsec_c2VjcmV0LW9mLWFub3RoZXItYnVzaW5lc3M=")
            .expect("valid")
            .sign(ID, TIMESTAMP, BODY);
        let both = format!("{old} {SIGNATURE}");
        assert_eq!(
            verify(&secret(), headers(&both, &ts), BODY, TIMESTAMP),
            Ok(ID)
        );
        let both_reversed = format!("v1,  {SIGNATURE} {old}");
        assert_eq!(
            verify(&secret(), headers(&both_reversed, &ts), BODY, TIMESTAMP),
            Ok(ID)
        );
    }

    #[test]
    fn enforces_the_tolerance_both_ways() {
        let ts = TIMESTAMP.to_string();
        let at = |now| verify(&secret(), headers(SIGNATURE, &ts), BODY, now);
        assert_eq!(at(TIMESTAMP + TOLERANCE_SECONDS), Ok(ID));
        assert_eq!(at(TIMESTAMP - TOLERANCE_SECONDS), Ok(ID));
        assert_eq!(
            at(TIMESTAMP + TOLERANCE_SECONDS + 1),
            Err(VerifyError::TooOld)
        );
        assert_eq!(
            at(TIMESTAMP - TOLERANCE_SECONDS - 1),
            Err(VerifyError::TooNew)
        );
    }

    #[test]
    fn refuses_missing_headers_and_bad_timestamps() {
        let ts = TIMESTAMP.to_string();
        let mut h = headers(SIGNATURE, &ts);
        h.id = None;
        assert_eq!(
            verify(&secret(), h, BODY, TIMESTAMP),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
        let mut h = headers(SIGNATURE, &ts);
        h.signature = Some("");
        assert_eq!(
            verify(&secret(), h, BODY, TIMESTAMP),
            Err(VerifyError::MissingHeader("webhook-signature"))
        );
        assert_eq!(
            verify(&secret(), headers(SIGNATURE, "soon"), BODY, TIMESTAMP),
            Err(VerifyError::BadTimestamp)
        );
    }

    #[test]
    fn refuses_empty_and_malformed_secrets() {
        assert_eq!(WebhookSecret::parse("").err(), Some(SecretError::Empty));
        assert_eq!(
            WebhookSecret::parse("whsec_").err(),
            Some(SecretError::Empty)
        );
        assert_eq!(
            WebhookSecret::parse("whsec_%%%").err(),
            Some(SecretError::NotBase64)
        );
        assert!(!format!("{:?}", secret()).contains("MfKQ"));
    }
}
