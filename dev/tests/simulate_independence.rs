//! The year-in-the-life checker (`dev/src/simulate.rs`) is independent of what it checks.
//!
//! A checker that takes a rule from the paywall moves with a defect in that rule: when it
//! imported the paywall's renewal grace, a grace raised from one day to ten passed a
//! 200-user year with 0 violations. Here the same defect is planted in the system under
//! test only (`plant_renewal_grace_for_tests`, which no configuration reaches) and the
//! checker must see it; and the checker's source may take from the paywall only what
//! drives the system or reads the state it judges.

use dev::simulate::{Options, Report, run};
use paywall::subscription::plant_renewal_grace_for_tests;

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
    // A grouped import (`use paywall::{…}`) would hide its names from the scan above.
    assert!(!source.contains("paywall::{"), "name each path in full");
    assert!(!source.contains("paywall::*"), "no glob import");
    assert!(!source.contains("paywall as"), "no renamed crate");
}
