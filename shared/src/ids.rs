//! Identifiers parsed once at the boundary (parse, don't validate): once a value has one
//! of these types it is known to be safe to use as a DynamoDB key part or a Dodo URL
//! path segment.

use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} is invalid: {reason}")]
pub struct InvalidId {
    pub what: &'static str,
    pub reason: &'static str,
}

/// The caller's stable identity: the JWT `sub` claim that API Gateway verified.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        let invalid = |reason| InvalidId {
            what: "user id",
            reason,
        };
        if raw.is_empty() {
            return Err(invalid("empty"));
        }
        if raw.len() > 256 {
            return Err(invalid("longer than 256 bytes"));
        }
        if raw.chars().any(char::is_control) {
            return Err(invalid("contains control characters"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Dodo object ids (`pay_…`, `cks_…`, `pdt_…`) and Standard Webhooks message ids: short,
/// URL-safe tokens. Anything else is refused before it reaches a URL or a key.
fn parse_token(raw: &str, what: &'static str) -> Result<String, InvalidId> {
    let invalid = |reason| InvalidId { what, reason };
    if raw.is_empty() {
        return Err(invalid("empty"));
    }
    if raw.len() > 128 {
        return Err(invalid("longer than 128 characters"));
    }
    if !raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(invalid("may hold only letters, digits, '_' and '-'"));
    }
    Ok(raw.to_owned())
}

macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, InvalidId> {
                parse_token(raw, $what).map(Self)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

token_id!(
    /// A Dodo payment id, e.g. `pay_2IjeQm4hqU6RA4Z4kwDee`.
    PaymentId,
    "payment id"
);
token_id!(
    /// A Dodo checkout session id, e.g. `cks_0a1b2c`.
    SessionId,
    "checkout session id"
);
token_id!(
    /// A Dodo product id, e.g. `pdt_a`.
    ProductId,
    "product id"
);

/// An e-mail address as the identity provider gave it, trimmed and lower-cased so that
/// the last-resort lookup by e-mail is not defeated by case.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        let invalid = |reason| InvalidId {
            what: "email",
            reason,
        };
        let trimmed = raw.trim();
        if trimmed.len() > 320 {
            return Err(invalid("longer than 320 characters"));
        }
        match trimmed.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {}
            _ => return Err(invalid("not an address")),
        }
        if trimmed.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("contains whitespace"));
        }
        Ok(Self(trimmed.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before `@`, used as the customer's display name on Dodo's page.
    pub fn local_part(&self) -> &str {
        self.0.split('@').next().unwrap_or(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_ids_are_url_safe_tokens() {
        assert!(PaymentId::parse("pay_2IjeQm4hqU6RA4Z4kwDee").is_ok());
        assert!(PaymentId::parse("").is_err());
        assert!(PaymentId::parse("../checkouts").is_err());
        assert!(PaymentId::parse("pay_1?x=1").is_err());
        assert!(PaymentId::parse(&"a".repeat(129)).is_err());
    }

    #[test]
    fn user_ids_refuse_empty_and_control_characters() {
        assert!(UserId::parse("auth0|abc").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a\nb").is_err());
    }

    #[test]
    fn emails_are_normalised() {
        let email = Email::parse("  Alice@Example.COM ").expect("valid");
        assert_eq!(email.as_str(), "alice@example.com");
        assert_eq!(email.local_part(), "alice");
        assert!(Email::parse("no-at-sign").is_err());
        assert!(Email::parse("@example.com").is_err());
    }
}
