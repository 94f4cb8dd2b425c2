//! Development tokens: HS256 JWTs signed with `DEV_JWT_SECRET`, standing in for the
//! identity provider behind API Gateway's JWT authorizer. Only the local server uses them.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

pub const ISSUER: &str = "paywall-local-dev";
/// Tokens minted locally last a day.
const LIFETIME_SECONDS: i64 = 24 * 3600;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a JWT")]
    Malformed,
    #[error("only HS256 tokens are accepted")]
    WrongAlgorithm,
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
    /// API Gateway's JWT authorizer checks `iss` against the issuer and `aud` against the
    /// audiences it is configured with; the local one checks them against [`ISSUER`].
    #[error("wrong issuer or audience")]
    WrongIssuerOrAudience,
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

/// A token for `sub` (and `email`), valid for a day from `now`.
pub fn mint(secret: &[u8], sub: &str, email: Option<&str>, now: i64) -> String {
    mint_with(secret, sub, email, true, now)
}

/// A token whose `email_verified` claim is `email_verified` (as Cognito's ID tokens carry
/// it): only a verified e-mail may ever link a payment to the user.
pub fn mint_with(
    secret: &[u8],
    sub: &str,
    email: Option<&str>,
    email_verified: bool,
    now: i64,
) -> String {
    let mut claims = json!({
        "sub": sub, "iss": ISSUER, "aud": ISSUER,
        "iat": now, "exp": now + LIFETIME_SECONDS, "token_use": "id",
    });
    if let Some(email) = email {
        claims["email"] = json!(email);
        claims["email_verified"] = json!(email_verified);
    }
    sign(secret, &claims)
}

/// `claims` as an HS256 JWT signed with `secret` (tests use it for tokens that are
/// wrong in one claim).
pub fn sign(secret: &[u8], claims: &serde_json::Value) -> String {
    let header = B64URL.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
    let payload = B64URL.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = mac(secret);
    mac.update(signing_input.as_bytes());
    let signature = B64URL.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// The `token_use` of a server token: it stands for an IAM-signed call from the founder's
/// backend on `/server/` routes, and is refused everywhere else.
pub const SERVER_TOKEN_USE: &str = "server";

/// A token for the server API, acting as the IAM identity `arn` (valid for a day).
pub fn mint_server(secret: &[u8], arn: &str, now: i64) -> String {
    let claims = json!({
        "sub": arn, "iss": ISSUER, "aud": ISSUER,
        "iat": now, "exp": now + LIFETIME_SECONDS, "token_use": SERVER_TOKEN_USE,
    });
    sign(secret, &claims)
}

/// Verifies a token and returns its claims as API Gateway's JWT authorizer hands them to
/// a function: every value as a string.
pub fn verify(secret: &[u8], token: &str, now: i64) -> Result<HashMap<String, String>, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Value = B64URL
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(TokenError::Malformed)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(TokenError::WrongAlgorithm);
    }
    let signature = B64URL
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    let mut mac = mac(secret);
    mac.update(format!("{}.{payload}", token.split('.').next().unwrap_or_default()).as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;

    let claims: serde_json::Map<String, Value> = B64URL
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(TokenError::Malformed)?;
    let expires = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(TokenError::Malformed)?;
    if expires <= now {
        return Err(TokenError::Expired);
    }
    // `aud` may be a string or a list of strings (RFC 7519); one must match.
    let audience_matches = match claims.get("aud") {
        Some(Value::String(aud)) => aud == ISSUER,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(ISSUER)),
        _ => false,
    };
    if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) || !audience_matches {
        return Err(TokenError::WrongIssuerOrAudience);
    }
    Ok(claims
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (key, text)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_verifies_with_string_claims() {
        let token = mint(b"secret", "alice", Some("alice@example.com"), 1_000);
        let claims = verify(b"secret", &token, 1_001).expect("valid");
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["email"], "alice@example.com");
        assert_eq!(claims["exp"], (1_000 + LIFETIME_SECONDS).to_string());
    }

    #[test]
    fn forged_expired_and_malformed_tokens_are_refused() {
        let token = mint(b"secret", "alice", None, 1_000);
        assert_eq!(
            verify(b"other", &token, 1_001),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(b"secret", &token, 1_000 + LIFETIME_SECONDS),
            Err(TokenError::Expired)
        );
        assert_eq!(verify(b"secret", "abc", 0), Err(TokenError::Malformed));
        let none_alg = format!(
            "{}.{}.",
            B64URL.encode(r#"{"alg":"none"}"#),
            token.split('.').nth(1).expect("payload")
        );
        assert_eq!(
            verify(b"secret", &none_alg, 1_001),
            Err(TokenError::WrongAlgorithm)
        );
        let mut parts: Vec<&str> = token.split('.').collect();
        let bob = B64URL.encode(r#"{"sub":"bob","exp":99999999999}"#);
        parts[1] = &bob;
        assert_eq!(
            verify(b"secret", &parts.join("."), 1_001),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_wrong_or_missing_issuer_or_audience_is_refused() {
        let claims = |iss: Value, aud: Value| json!({"sub": "alice", "iss": iss, "aud": aud, "exp": 99_999_999_999_i64});
        let ok = sign(b"secret", &claims(json!(ISSUER), json!([ISSUER, "other"])));
        assert!(verify(b"secret", &ok, 1_001).is_ok());
        for (iss, aud) in [
            (json!("evil"), json!(ISSUER)),
            (json!(ISSUER), json!("other")),
            (json!(ISSUER), json!(["other"])),
            (Value::Null, json!(ISSUER)),
            (json!(ISSUER), Value::Null),
        ] {
            let token = sign(b"secret", &claims(iss.clone(), aud.clone()));
            assert_eq!(
                verify(b"secret", &token, 1_001),
                Err(TokenError::WrongIssuerOrAudience),
                "iss {iss}, aud {aud}"
            );
        }
    }
}
