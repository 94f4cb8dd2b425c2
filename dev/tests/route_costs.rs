//! What each request costs, held to the committed `dev/cost/measured.toml`: every route's
//! DynamoDB calls by operation and their units, other AWS calls and Dodo calls, measured
//! on the Lambda binaries (debug here; the bench measures release, and both make the
//! same calls) against the metering front of the local engine (dev::route_costs). A
//! change that adds a round trip, a unit or a Dodo call fails here until the figures are
//! measured again and committed. Durations are not compared (they are the machine's);
//! log lines are: at most one per request at INFO (a reconcile run: its summary and its
//! metric line).

use dev::lambda_harness::binary_dir;
use dev::route_costs::{Measured, Runs, measure};

const MEASURED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/cost/measured.toml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_makes_the_calls_the_committed_figures_say() {
    let committed = Measured::read(std::path::Path::new(MEASURED)).expect("measured.toml");
    let runs = Runs {
        requests: 3,
        reconcile_runs: 1,
    };
    let measurement = measure(&binary_dir("debug"), runs).await.expect("measured");
    assert!(
        measurement.problems.is_empty(),
        "while measuring: {:#?}",
        measurement.problems
    );
    let differences = measurement.measured.exact_differences(&committed);
    assert!(
        differences.is_empty(),
        "the calls or units of some routes changed:\n{}\n\nIf the change is meant, measure again \
         and commit the figures: cargo build --locked --release --bin status --bin \
         create-checkout --bin success --bin webhook --bin portal --bin reconcile --bin server \
         --bin access-events && cargo run --locked -p dev --bin lambda-bench -- --costs-only \
         --write-measured dev/cost/measured.toml (or make bench), and update the table in \
         docs/src/performance.md.",
        differences.join("\n")
    );

    for (key, cost) in &measurement.measured.routes {
        // Logs cost money too: one line per request, a scheduled run's summary and metric.
        let most = if key == "reconcile_run" { 2000 } else { 1000 };
        assert!(
            cost.log_lines_per_1000 <= most,
            "{key} logs {} lines per 1,000 requests at INFO (at most {most})",
            cost.log_lines_per_1000
        );
    }
    // The hot paths, as the issue fixed them: the entitlement read is one round trip,
    // a usage call at most two (the committed figures hold it; this says why).
    let routes = &measurement.measured.routes;
    let round_trips = |key: &str| routes[key].dynamodb_calls.values().sum::<u32>();
    assert_eq!(round_trips("entitlements"), 1);
    assert_eq!(round_trips("status"), 1);
    assert!(round_trips("usage") <= 2, "{:?}", routes["usage"]);
}
