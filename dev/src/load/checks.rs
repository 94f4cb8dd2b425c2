//! The load test's invariants, each a pure function of what the run saw and what the
//! store holds afterwards (so that a planted defect can be shown caught, below).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::PASS_DAYS;

/// Every answer one idempotency key got.
#[derive(Clone, Debug, Default)]
pub struct KeyAnswers {
    pub user: String,
    pub amount: u64,
    /// `(allowed, remaining)` of each `200`.
    pub answers: Vec<(bool, u64)>,
}

/// One invariant and what broke it.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: &'static str,
    /// How many things (keys, payments, events...) it looked at.
    pub checked: usize,
    pub violations: Vec<String>,
}

/// Usage counted once and within its limit, from every key's answers and the stored
/// counters (user -> used).
pub fn usage_checks(
    keys: &BTreeMap<String, KeyAnswers>,
    counters: &BTreeMap<String, u64>,
    allowance: u64,
) -> Vec<Check> {
    let mut same_answer = Vec::new();
    let mut allowed_sum: BTreeMap<&str, u64> = BTreeMap::new();
    let mut remaining_seen: BTreeMap<&str, BTreeMap<u64, &str>> = BTreeMap::new();
    let mut counted = Vec::new();
    for (key, record) in keys {
        let Some(&(allowed, remaining)) = record.answers.first() else {
            same_answer.push(format!("{key}: never answered"));
            continue;
        };
        if record
            .answers
            .iter()
            .any(|answer| *answer != (allowed, remaining))
        {
            same_answer.push(format!("{key}: answered differently: {:?}", record.answers));
        }
        if allowed {
            *allowed_sum.entry(&record.user).or_default() += record.amount;
            if let Some(other) = remaining_seen
                .entry(&record.user)
                .or_default()
                .insert(remaining, key)
            {
                counted.push(format!(
                    "{}: keys {other} and {key} were both allowed with {remaining} remaining (one counter state counted twice)",
                    record.user
                ));
            }
        }
    }
    for (user, used) in counters {
        let sum = allowed_sum.get(user.as_str()).copied().unwrap_or(0);
        if sum != *used {
            counted.push(format!(
                "{user}: the allowed answers add up to {sum}, the counter says {used}"
            ));
        }
    }
    let beyond: Vec<String> = counters
        .iter()
        .filter(|(_, used)| **used > allowance)
        .map(|(user, used)| format!("{user}: {used} used of {allowance}"))
        .collect();
    vec![
        Check {
            name: "usage: every answer to one idempotency key is the same",
            checked: keys.len(),
            violations: same_answer,
        },
        Check {
            name: "usage: counted once (allowed answers add up to the stored counter)",
            checked: counters.len(),
            violations: counted,
        },
        Check {
            name: "usage: nothing beyond a limit (counter <= allowance)",
            checked: counters.len(),
            violations: beyond,
        },
    ]
}

/// What the store says of one payment made during the run.
#[derive(Clone, Debug)]
pub struct PaymentFacts {
    pub payment_id: String,
    pub buyer: String,
    pub succeeded: bool,
    /// A webhook delivery of it was answered 2xx, or a confirmation 200.
    pub acknowledged: bool,
    pub grant: Option<GrantFacts>,
}

#[derive(Clone, Debug)]
pub struct GrantFacts {
    pub owner: String,
    pub granted_until: i64,
    pub revoked: bool,
}

/// No payment granted twice, to anyone else, or lost once acknowledged; each buyer's
/// access is exactly what their grants add up to (`pass_ends`: buyer -> the stored end of
/// their pass). Also returns how many succeeded payments were left to reconcile.
pub fn grant_checks(
    payments: &[PaymentFacts],
    pass_ends: &BTreeMap<String, Option<i64>>,
) -> (Check, usize) {
    let mut violations = Vec::new();
    let mut left = 0;
    let mut ends: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for payment in payments {
        match (&payment.grant, payment.succeeded) {
            (Some(_), false) => {
                violations.push(format!("{}: declined, yet granted", payment.payment_id))
            }
            (None, true) if payment.acknowledged => violations.push(format!(
                "{}: acknowledged (webhook 2xx or confirmation 200) but not granted",
                payment.payment_id
            )),
            (None, true) => left += 1,
            (Some(grant), true) => {
                if grant.owner != payment.buyer || grant.revoked {
                    violations.push(format!(
                        "{}: granted to {} (revoked: {}), bought by {}",
                        payment.payment_id, grant.owner, grant.revoked, payment.buyer
                    ));
                }
                ends.entry(&payment.buyer)
                    .or_default()
                    .push(grant.granted_until);
            }
            (None, false) => {}
        }
    }
    let pass = PASS_DAYS * 86_400;
    for (buyer, stored_end) in pass_ends {
        let mut grants = ends.get(buyer.as_str()).cloned().unwrap_or_default();
        grants.sort_unstable();
        // Each grant extends the pass running before it by exactly one pass.
        if grants.windows(2).any(|pair| pair[1] - pair[0] != pass) {
            violations.push(format!(
                "{buyer}: grants end at {grants:?}, not one pass ({pass} s) apart"
            ));
        }
        if grants.last().copied() != *stored_end {
            violations.push(format!(
                "{buyer}: access ends at {stored_end:?}, the last grant at {:?}",
                grants.last()
            ));
        }
    }
    (
        Check {
            name: "payments: none granted twice, none acknowledged and lost",
            checked: payments.len(),
            violations,
        },
        left,
    )
}

/// Every stored access event on the bus exactly once, nothing else on it, one event per
/// grant for each user (`grants_per_user`, metered users with 0). `stored` and
/// `published` are `(event_id, user_id)`.
pub fn event_checks(
    stored: &[(String, String)],
    published: &[(String, String)],
    grants_per_user: &BTreeMap<String, usize>,
    stream_retries: usize,
) -> Check {
    let mut violations = Vec::new();
    let mut times_published: HashMap<&str, usize> = HashMap::new();
    for (id, _) in published {
        *times_published.entry(id).or_default() += 1;
    }
    let stored_ids: HashSet<&str> = stored.iter().map(|(id, _)| id.as_str()).collect();
    for (id, user) in stored {
        match times_published.get(id.as_str()) {
            None => violations.push(format!("{user}: event {id} stored, never published")),
            // At least once: a batch retried after a reported failure may publish again.
            Some(n) if *n > 1 && stream_retries == 0 => violations.push(format!(
                "{user}: event {id} published {n} times with no batch retried"
            )),
            Some(_) => {}
        }
    }
    for (id, user) in published {
        if !stored_ids.contains(id.as_str()) {
            violations.push(format!(
                "{user}: event {id} published, but no change stored it"
            ));
        }
    }
    let mut per_user: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
    for (id, user) in published {
        per_user.entry(user).or_default().insert(id);
    }
    for (user, grants) in grants_per_user {
        let events = per_user.get(user.as_str()).map_or(0, HashSet::len);
        if events != *grants {
            violations.push(format!(
                "{user}: {events} access events for {grants} changes of access"
            ));
        }
    }
    for user in per_user.keys() {
        if !grants_per_user.contains_key(*user) {
            violations.push(format!("{user}: access events for a user no one touched"));
        }
    }
    Check {
        name: "access events: each change on the bus exactly once, none missing",
        checked: stored.len(),
        violations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str, amount: u64, answers: &[(bool, u64)]) -> KeyAnswers {
        KeyAnswers {
            user: user.into(),
            amount,
            answers: answers.to_vec(),
        }
    }

    #[test]
    fn the_usage_checks_catch_a_double_count_a_changed_answer_and_an_overrun() {
        let keys = BTreeMap::from([
            ("a".to_owned(), key("u", 2, &[(true, 8)])),
            ("b".to_owned(), key("u", 3, &[(true, 5), (true, 5)])),
            ("c".to_owned(), key("u", 9, &[(false, 5)])),
        ]);
        let right = BTreeMap::from([("u".to_owned(), 5)]);
        let checks = usage_checks(&keys, &right, 10);
        assert!(checks.iter().all(|c| c.violations.is_empty()), "{checks:?}");

        // The counter moved twice for one key.
        let counted_twice = BTreeMap::from([("u".to_owned(), 8)]);
        assert_eq!(
            usage_checks(&keys, &counted_twice, 10)[1].violations.len(),
            1
        );
        // A repeat answered otherwise than the first call.
        let mut changed = keys.clone();
        if let Some(b) = changed.get_mut("b") {
            b.answers.push((false, 5));
        }
        assert_eq!(usage_checks(&changed, &right, 10)[0].violations.len(), 1);
        // Two calls allowed on the same counter state.
        let mut same_state = keys.clone();
        same_state.insert("d".into(), key("u", 1, &[(true, 8)]));
        let at_six = BTreeMap::from([("u".to_owned(), 6)]);
        assert_eq!(
            usage_checks(&same_state, &at_six, 10)[1].violations.len(),
            1
        );
        // Beyond the allowance.
        assert_eq!(usage_checks(&keys, &right, 4)[2].violations.len(), 1);
    }

    fn payment(id: &str, buyer: &str, until: Option<i64>) -> PaymentFacts {
        PaymentFacts {
            payment_id: id.into(),
            buyer: buyer.into(),
            succeeded: true,
            acknowledged: true,
            grant: until.map(|granted_until| GrantFacts {
                owner: buyer.into(),
                granted_until,
                revoked: false,
            }),
        }
    }

    #[test]
    fn the_grant_checks_catch_a_double_grant_and_a_lost_one() {
        let pass = PASS_DAYS * 86_400;
        let payments = [
            payment("p1", "b", Some(pass)),
            payment("p2", "b", Some(2 * pass)),
        ];
        let ends = BTreeMap::from([("b".to_owned(), Some(2 * pass))]);
        assert!(grant_checks(&payments, &ends).0.violations.is_empty());
        // Access extended once more than the grants say (a payment applied twice).
        let extended = BTreeMap::from([("b".to_owned(), Some(3 * pass))]);
        assert_eq!(grant_checks(&payments, &extended).0.violations.len(), 1);
        // Two grants computed from the same state (one lost).
        let same = [
            payment("p1", "b", Some(pass)),
            payment("p2", "b", Some(pass)),
        ];
        let at_one = BTreeMap::from([("b".to_owned(), Some(pass))]);
        assert_eq!(grant_checks(&same, &at_one).0.violations.len(), 1);
        // Acknowledged, never granted.
        let lost = [payment("p1", "b", Some(pass)), payment("p2", "b", None)];
        let at_one = BTreeMap::from([("b".to_owned(), Some(pass))]);
        assert_eq!(grant_checks(&lost, &at_one).0.violations.len(), 1);
    }

    #[test]
    fn the_event_checks_catch_a_missing_a_duplicated_and_an_extra_event() {
        let e = |id: &str, user: &str| (id.to_owned(), user.to_owned());
        let stored = [e("1", "b"), e("2", "b")];
        let grants = BTreeMap::from([("b".to_owned(), 2), ("m".to_owned(), 0)]);
        assert!(
            event_checks(&stored, &stored, &grants, 0)
                .violations
                .is_empty()
        );
        assert!(
            !event_checks(&stored, &stored[..1], &grants, 0)
                .violations
                .is_empty()
        );
        let twice = [e("1", "b"), e("2", "b"), e("2", "b")];
        assert_eq!(
            event_checks(&stored, &twice, &grants, 0).violations.len(),
            1
        );
        assert!(
            event_checks(&stored, &twice, &grants, 1)
                .violations
                .is_empty()
        );
        let extra = [e("1", "b"), e("2", "b"), e("3", "m")];
        assert!(
            !event_checks(&stored, &extra, &grants, 0)
                .violations
                .is_empty()
        );
    }
}
