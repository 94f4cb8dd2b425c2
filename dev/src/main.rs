//! `cargo run -p dev -- [serve]`: the local server (`make dev`).
//! `cargo run -p dev -- trigger <event type> …`: a signed test event to any webhook URL.
//! `cargo run -p dev -- api-reference [--check]`: the book's API reference, from openapi.yaml.
//! `cargo run -p dev -- load --users N --seconds S …`: the Lambda binaries under load, then
//! the invariants checked (dev::load).
//! `cargo run -p dev -- cost --mau N …`: the monthly AWS bill per service (docs/src/cost.md).

use dev::local_server::{self, Started};
use dev::simulate;
use dev::trigger::{Trigger, USAGE};

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    eprintln!("\nstopping…");
}

/// `make dev`'s log: one line per request (method, path, status, time) from the local
/// server, and the handlers' warnings, webhook refusals with their reason among them
/// (never a body, a header or a token).
fn init_logging() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let targets = Targets::new()
        .with_target("dev", LevelFilter::INFO)
        .with_target("paywall", LevelFilter::WARN)
        .with_default(LevelFilter::ERROR);
    let _ = tracing_subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .finish()
        .with(targets)
        .try_init();
}

fn announce(started: &Started) {
    let base = &started.base_url;
    println!("Dodo paywall, running locally");
    println!();
    println!("  demo page        {base}/");
    println!("  API              GET  {base}/payment/status");
    println!("                   GET  {base}/payment/entitlements");
    println!("                   POST {base}/payment/create-checkout-session");
    println!("                   POST {base}/payment/success");
    println!("                   POST {base}/payment/portal");
    println!("                   GET  {base}/payment/plans  (public)");
    println!("                   POST {base}/payment/trial, /payment/cancel, /payment/resume");
    println!("                   POST|DELETE {base}/payment/change-plan");
    println!("  webhook          POST {base}/payment/webhook  (or {base}/webhook)");
    println!(
        "  server API       {base}/server/usage, {base}/server/users/<id>[/grants]  (SigV4 as local/local, or token: /dev/token?server=1)"
    );
    println!("  dev tokens       {base}/dev/token?sub=<user id>&email=<email>");
    if dev::book::is_built(&dev::book::book_dir()) {
        println!("  docs (the book)  {base}/docs/");
    } else {
        println!("  docs (the book)  {base}/docs/  (not built yet: make docs builds it)");
    }
    println!(
        "  OpenAPI          {base}/openapi.yaml  (API reference: {base}/docs/reference/api.html)"
    );
    if started.simulator {
        println!("  test clock       {base}/dev/clock  (GET; POST {{\"advance\": \"30d\"}})");
        println!("  faults           {base}/dev/faults");
    }
    println!(
        "  DynamoDB faults  {base}/dev/database  (POST {{\"failing\": [\"TransactWriteItems\"]}}; [] heals)"
    );
    println!("  access events    {base}/dev/events  (?user_id=)");
    if started.access_events_webhook {
        println!(
            "  events webhook   each access event POSTed to ACCESS_EVENTS_WEBHOOK_URL; deliveries at {base}/dev/events/webhook"
        );
    }
    if started.simulator {
        println!(
            "  Dodo simulator   {base}/dodo  (no DODO_PAYMENTS_API_KEY: nothing leaves this machine)"
        );
    } else {
        println!(
            "  Dodo             the real API (DODO_PAYMENTS_API_KEY is set; ENV picks test or live mode)"
        );
    }
    if started.jwt_secret_is_default {
        println!(
            "  JWT secret       {} (the default; set DEV_JWT_SECRET to change it)",
            local_server::DEFAULT_JWT_SECRET
        );
    }
    println!();
    println!(
        "Ready. Ctrl-C stops it; state is kept in {}/ (PAYWALL_STATE_DIR).",
        started.state_dir.display()
    );
}

/// Writes `docs/src/reference/api.md` from `openapi.yaml`, or with `--check` only says
/// whether it is up to date.
fn api_reference(option: Option<&str>) -> Result<(), String> {
    use dev::api_reference::{REGENERATE, openapi_path, reference_path, render};
    let check = match option {
        None => false,
        Some("--check") => true,
        Some(other) => {
            return Err(format!(
                "unknown option {other}\n\nusage: cargo run -p dev -- api-reference [--check]"
            ));
        }
    };
    let openapi = openapi_path();
    let yaml =
        std::fs::read_to_string(&openapi).map_err(|e| format!("{}: {e}", openapi.display()))?;
    let page = render(&yaml)?;
    let target = reference_path();
    let current = std::fs::read_to_string(&target).unwrap_or_default();
    if current == page {
        println!("{} is up to date", target.display());
        Ok(())
    } else if check {
        Err(format!("{} is stale: run `{REGENERATE}`", target.display()))
    } else {
        std::fs::write(&target, page).map_err(|e| format!("{}: {e}", target.display()))?;
        println!("wrote {}", target.display());
        Ok(())
    }
}

/// The outcome, and how long it took.
async fn timed<T, E>(
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<(T, std::time::Duration), E> {
    let started = std::time::Instant::now();
    work.await.map(|done| (done, started.elapsed()))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        None | Some("serve") => {
            init_logging();
            local_server::run(shutdown_signal(), announce)
                .await
                .map_err(|e| e.to_string())
        }
        Some("trigger") => match Trigger::parse(&args[1..]) {
            Err(message) => Err(format!("{message}\n\n{USAGE}")),
            Ok(trigger) => match trigger.send().await {
                Ok((status, body)) => {
                    println!("{} answered {status}: {body}", trigger.url);
                    if (200..300).contains(&status) {
                        Ok(())
                    } else {
                        Err(format!("the webhook refused the event ({status})"))
                    }
                }
                Err(message) => Err(message),
            },
        },
        Some("simulate") => match simulate::Options::parse(&args[1..]) {
            Err(message) => Err(format!("{message}\n\n{}", simulate::USAGE)),
            Ok(options) => match timed(simulate::run(options)).await {
                Err(message) => Err(message),
                Ok((report, took)) => {
                    for violation in &report.violations {
                        println!("{}", report.describe(violation));
                    }
                    let kinds: Vec<String> = report
                        .actions_by_kind
                        .iter()
                        .map(|(kind, count)| format!("{kind} {count}"))
                        .collect();
                    println!("(actions by kind: {})", kinds.join(", "));
                    println!(
                        "({} user actions, {} checks of which {} on the hour, {} hourly reconcile runs, in {:.1} s)",
                        report.actions,
                        report.checks,
                        report.hourly_checks,
                        report.reconcile_runs,
                        took.as_secs_f64()
                    );
                    println!("{}", report.summary_line());
                    if report.violations.is_empty() {
                        Ok(())
                    } else {
                        std::process::exit(1);
                    }
                }
            },
        },
        Some("permissions") => {
            let dir = args
                .get(1)
                .map(std::path::PathBuf::from)
                .unwrap_or_else(dev::iam::CallLog::dir);
            match dev::iam::CallLog::read(&dir) {
                Err(e) => Err(format!(
                    "no calls recorded in {} ({e}): run the tests first (make test-rust)",
                    dir.display()
                )),
                Ok(calls) => {
                    let verdict = dev::iam::Verdict::of(dev::iam::Roles::of_workspace(), &calls);
                    print!("{}", verdict.report());
                    if verdict.passed() {
                        Ok(())
                    } else {
                        Err("template.yaml's roles and the calls the tests made disagree".into())
                    }
                }
            }
        }
        Some("api-reference") => api_reference(args.get(1).map(String::as_str)),
        Some("load") => match dev::load::Options::parse(&args[1..]) {
            Err(message) => Err(format!("{message}\n\n{}", dev::load::USAGE)),
            Ok(options) => match dev::load::run(options).await {
                Err(message) => Err(message),
                Ok(report) => {
                    print!("{report}");
                    if report.violations() > 0 {
                        std::process::exit(1);
                    }
                    Ok(())
                }
            },
        },
        Some("cost") => dev::cost::run(&args[1..]).map(|report| print!("{report}")),
        Some(other) => Err(format!("unknown command {other}\n\n{USAGE}")),
    };
    if let Err(message) = outcome {
        eprintln!("{message}");
        std::process::exit(1);
    }
}
