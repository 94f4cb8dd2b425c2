//! The year-in-the-life checker (`dev/src/simulate.rs`) is independent of what it checks.
//!
//! A checker that takes a rule from the paywall moves with a defect in that rule: when it
//! imported the paywall's renewal grace, a grace raised from one day to ten passed a
//! 200-user year with 0 violations. Here the same defect is planted in the system under
//! test only (`plant_renewal_grace_for_tests`, which no configuration reaches) and the
//! checker must see it; and the checker's source may take from the paywall only what
//! drives the system or reads the state it judges.

use dev::simulate::{
    Options, Report, TrialTaken, mailbox, periods_charged_twice, run, trials_taken_twice,
};
use paywall::subscription::plant_renewal_grace_for_tests;
use serde_json::json;

/// Small enough for `make test`: a few thousand simulated hours in seconds.
const OPTIONS: Options = Options {
    users: 30,
    months: 3,
    seed: 1,
};

/// Puts the documented grace back, even when an assertion fails midway.
struct Unplant;

impl Drop for Unplant {
    fn drop(&mut self) {
        plant_renewal_grace_for_tests(None);
    }
}

fn summary(report: &Report) -> String {
    let mut rules: Vec<&str> = report.violations.iter().map(|v| v.rule).collect();
    rules.sort_unstable();
    rules.dedup();
    format!(
        "{} ({} checks; rules broken: {rules:?})",
        report.summary_line(),
        report.checks
    )
}

// One test, both runs in turn: the planted grace is process-wide, and the honest run
// must not see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_day_renewal_grace_planted_in_the_paywall_is_caught() {
    let honest = run(OPTIONS).await.expect("the honest run completes");
    println!("documented one-day grace: {}", summary(&honest));
    assert!(
        honest.violations.is_empty(),
        "the unmodified paywall breaks no rule: {:#?}",
        honest.violations
    );
    assert!(honest.checks > 0, "the run checks someone");

    let _unplant = Unplant;
    plant_renewal_grace_for_tests(Some(10 * 86_400));
    let planted = run(OPTIONS).await.expect("the planted run completes");
    plant_renewal_grace_for_tests(None);
    println!("planted ten-day grace: {}", summary(&planted));
    let granted_not_paid = planted
        .violations
        .iter()
        .filter(|v| v.rule == "(c) granted ≠ paid" || v.rule == "(b) access not paid for")
        .count();
    assert!(
        granted_not_paid > 0,
        "the checker misses a ten-day renewal grace: {}",
        summary(&planted)
    );
    // What it reports is the grace: an expiry nine days past what Dodo's state gives.
    assert!(
        planted
            .violations
            .iter()
            .any(|v| v.detail.contains("access until")
                && v.detail.contains("where Dodo's state gives")),
        "{:#?}",
        planted.violations
    );
}

/// Every path the checker takes from the paywall, and what for. A new one must be
/// something that drives the system or reads what it stored — never a rule, a policy
/// constant or the catalogue's parser — and be added here with its reason.
const ALLOWED: &[(&str, &str)] = &[
    ("paywall::ids::UserId", "the key the store's reads take"),
    ("paywall::store::Store", "reads the stored state it judges"),
    ("paywall::time::Clock", "the test clock the stack runs on"),
    (
        "paywall::runtime::init_logging",
        "the paywall's logs, when debugging",
    ),
    (
        "paywall::http::client_builder",
        "the HTTP client that plays the users",
    ),
];

#[test]
fn the_checker_takes_no_rule_from_the_paywall() {
    let source = include_str!("../src/simulate.rs");
    let mut taken: Vec<String> = Vec::new();
    for (at, _) in source.match_indices("paywall::") {
        let path: String = source[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        taken.push(path.trim_end_matches(':').to_owned());
    }
    assert!(!taken.is_empty(), "the scan finds the imports");
    for path in &taken {
        assert!(
            ALLOWED.iter().any(|(allowed, _)| path == allowed),
            "simulate.rs takes `{path}` from the paywall: only {ALLOWED:?} may be"
        );
    }
    // The one-trial-per-person rule is the checker's own reading of the book, never the
    // paywall's normaliser.
    assert!(
        !source.contains("person_email"),
        "the checker normalises e-mails itself"
    );
    // A grouped import (`use paywall::{…}`) would hide its names from the scan above.
    assert!(!source.contains("paywall::{"), "name each path in full");
    assert!(!source.contains("paywall::*"), "no glob import");
    assert!(!source.contains("paywall as"), "no renamed crate");
}

/// No paywall defect can be planted for trials without a hook in the paywall (none
/// exists, and none is added for this): the checker's rule (j) is shown instead to flag
/// a synthetic second trial — by the same account, or by a second account on the same
/// mailbox written as the book says the paywall must see through — and nothing else.
#[test]
fn a_second_trial_by_one_person_is_flagged_by_the_checkers_own_reading() {
    // The book: "lower case; a `+tag` dropped where the mailbox ignores it (Gmail, Outlook,
    // iCloud, Fastmail, Proton); Gmail's dots dropped and `googlemail.com` read as
    // `gmail.com`".
    for (given, person) in [
        ("Ann.Smith+work@gmail.com", "annsmith@gmail.com"),
        ("ANNSMITH@GoogleMail.com", "annsmith@gmail.com"),
        ("ann+x@outlook.com", "ann@outlook.com"),
        ("a.nn+x@example.com", "a.nn+x@example.com"),
    ] {
        assert_eq!(mailbox(given), person, "{given}");
    }
    let trial = |plan: &str, user: &str, email: &str| TrialTaken {
        plan: plan.into(),
        user: user.into(),
        email: email.into(),
        what: format!("{user}'s trial of {plan}"),
        subscription: None,
    };
    let honest = [
        trial("team", "ann", "Ann.Smith+work@gmail.com"),
        trial("starter", "ann", "Ann.Smith+work@gmail.com"),
        trial("team", "bob", "a.nn+x@example.com"),
        trial("team", "cat", "ann@example.com"),
    ];
    assert!(trials_taken_twice(&honest).is_empty(), "one each");
    let twice = [
        trial("team", "ann", "Ann.Smith+work@gmail.com"),
        trial("team", "ann-2", "annsmith@googlemail.com"),
        trial("starter", "bob", "bob@example.com"),
        trial("starter", "bob", "bob@example.com"),
    ];
    let found = trials_taken_twice(&twice);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!((found[0].0, found[0].1), (0, 1));
    assert!(
        found[0].2.contains("mailbox annsmith@gmail.com"),
        "{found:?}"
    );
    assert_eq!((found[1].0, found[1].1), (2, 3), "bob, twice");
}

/// Rule (k) on synthetic payments: a period charged twice is flagged; a prorated plan
/// change in the same period, a failed charge, another subscription's, are not.
#[test]
fn a_period_charged_twice_is_flagged_and_a_prorated_change_is_not() {
    let payment = |id: &str, sub: &str, kind: &str, start: &str, factor: &str, status: &str| {
        json!({
            "payment_id": id, "subscription_id": sub, "status": status, "charge_type": kind,
            "service_periods": [{"starts_at": start, "ends_at": "2027-03-04T00:00:00Z",
                                 "proration_factor": factor}],
        })
    };
    let feb = "2027-02-04T00:00:00Z";
    let honest = [
        payment("p1", "s1", "renewal", feb, "1", "succeeded"),
        payment("p2", "s1", "plan_change", feb, "0.5", "succeeded"),
        payment("p3", "s1", "renewal", feb, "1", "failed"),
        payment("p4", "s2", "renewal", feb, "1", "succeeded"),
    ];
    assert!(periods_charged_twice(&honest).is_empty());
    let twice = [
        payment("p1", "s1", "renewal", feb, "1", "succeeded"),
        payment("p5", "s1", "plan_change", feb, "1", "succeeded"),
    ];
    let found = periods_charged_twice(&twice);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("p1") && found[0].contains("p5"));
}
