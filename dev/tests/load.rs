//! `dev -- load`, briefly: the built (debug) binaries under a few concurrent users, with
//! every invariant checked afterwards. A smoke test of the load test itself: the figures
//! it prints are measured by running it (docs/src/load-test.md), never asserted here.

use dev::lambda_harness::binary_dir;
use dev::load::{LAMBDA_ROUTES, Options, PAY, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_drives_every_route_and_breaks_no_invariant() {
    let bin_dir = binary_dir("debug");
    assert!(
        bin_dir.join("status").exists(),
        "{} has no functions: build them first (`cargo build --bins`, which `make test` runs)",
        bin_dir.display()
    );
    let report = run(Options {
        users: 8,
        seconds: 3,
        bin_dir,
        ..Options::default()
    })
    .await
    .expect("the run completes");
    println!("{report}");
    for route in LAMBDA_ROUTES.iter().chain([&PAY]) {
        assert!(
            report.requests(route) > 0,
            "no request to {route}:\n{report}"
        );
    }
    assert!(report.checks.len() >= 5, "{report}");
    for check in &report.checks {
        assert!(
            check.checked > 0,
            "{} checked nothing:\n{report}",
            check.name
        );
    }
    assert_eq!(report.violations(), 0, "{report}");
}
