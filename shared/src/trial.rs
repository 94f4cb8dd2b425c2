//! Free trials, once per person.
//!
//! A plan's trial runs either at Dodo, with the card taken at checkout (a subscription's
//! `trial_period_days`; Dodo charges at its end), or in the paywall without a card
//! (`POST /payment/trial`; it grants the plan until it ends, and nothing is charged).
//! Either way a person gets one trial of a plan: the paywall remembers, per plan, each
//! user and each verified e-mail (normalised, see [`person_email`]) that had one.

use crate::time::Timestamp;

/// A trial the paywall runs without a card: `plan`'s features and limits from `from`
/// until `until`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CardlessTrial {
    pub plan: String,
    pub from: Timestamp,
    pub until: Timestamp,
}

impl CardlessTrial {
    pub fn grants_access(&self, now: Timestamp) -> bool {
        self.from <= now && now < self.until
    }
}

/// Domains whose mailboxes ignore a `+tag` in the local part (`ann+1@gmail.com` reaches
/// `ann@gmail.com`).
const PLUS_TAG_DOMAINS: [&str; 12] = [
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "fastmail.com",
    "proton.me",
    "protonmail.com",
];

/// The mailbox an address reaches, as one person's key for trials: lower case; a `+tag`
/// dropped where the domain ignores it; Gmail's dots dropped too (Gmail ignores them,
/// and `googlemail.com` is `gmail.com`). Other domains keep their local part as written
/// (a `+` may be significant there).
pub fn person_email(email: &str) -> String {
    let email = email.trim().to_lowercase();
    let Some((local, domain)) = email.rsplit_once('@') else {
        return email;
    };
    let domain = if domain == "googlemail.com" {
        "gmail.com"
    } else {
        domain
    };
    let mut local = local.to_owned();
    if PLUS_TAG_DOMAINS.contains(&domain)
        && let Some(at) = local.find('+')
    {
        local.truncate(at);
    }
    if domain == "gmail.com" {
        local.retain(|c| c != '.');
    }
    format!("{local}@{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_mailbox_is_one_person() {
        for (given, person) in [
            ("Ann@Example.com", "ann@example.com"),
            ("ann+trial@gmail.com", "ann@gmail.com"),
            ("A.N.N+x@GoogleMail.com", "ann@gmail.com"),
            ("ann+2@outlook.com", "ann@outlook.com"),
            // A domain that may route on `+` keeps it; dots matter outside Gmail.
            ("ann+2@example.com", "ann+2@example.com"),
            ("a.nn@example.com", "a.nn@example.com"),
        ] {
            assert_eq!(person_email(given), person, "{given}");
        }
    }

    #[test]
    fn a_cardless_trial_runs_from_its_start_to_its_end() {
        let trial = CardlessTrial {
            plan: "pro".into(),
            from: Timestamp::from_unix_seconds(100),
            until: Timestamp::from_unix_seconds(200),
        };
        assert!(!trial.grants_access(Timestamp::from_unix_seconds(99)));
        assert!(trial.grants_access(Timestamp::from_unix_seconds(100)));
        assert!(!trial.grants_access(Timestamp::from_unix_seconds(200)));
    }
}
