//! Measures the release binaries against the budgets, each run as Lambda runs it against
//! dynoxide and the Dodo simulator on loopback: init (process start to the first poll of
//! the Runtime API), cold request (process start to the first response), warm latency,
//! stripped and zipped size, and peak RSS over the warm invocations. In the same run it
//! times the original Python router's stack starting (its imports, in a virtualenv the
//! bench creates), for the ratio.
//!
//! Then, in a separate short pass (so that the latency figures above stay comparable:
//! that pass uses the engine without its IAM and metering front, and logs at WARN), what
//! each request costs ([`dev::route_costs`]): AWS calls, DynamoDB units, Dodo calls, the
//! billed duration estimated at 128 MB and the bytes logged at INFO, per route;
//! `--write-measured FILE` writes them (`dev/cost/measured.toml`, which `cargo run -p dev
//! -- cost` reads).
//!
//! `make bench`, or: `cargo run -p dev --bin lambda-bench -- [--cold N] [--warm N]
//! [--bin-dir DIR] [--python-runs N | --no-python] [--cost-requests N]
//! [--write-measured FILE] [--costs-only]`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dev::dodo_simulator::DodoSimulator;
use dev::fixtures::{api_gateway_event, function_url_event};
use dev::lambda_harness::{RunningFunction, binary_dir};
use dev::local_dynamodb::{LocalDynamo, create_table_from_template_without_stream, template_path};
use paywall::webhook_signature::WebhookSecret;
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PRODUCT: &str = "pdt_bench";
// In this order: portal's users are those create-checkout gave a Dodo customer, and
// reconcile runs before success has put payments in the simulator for it to read.
const FUNCTIONS: [&str; 8] = [
    "status",
    "create-checkout",
    "portal",
    "reconcile",
    "success",
    "webhook",
    "server",
    "access-events",
];
/// Warm runs of reconcile: each is a whole run, paced at one Dodo call per 1.5 s.
const RECONCILE_WARM_RUNS: usize = 10;

/// The original router's stack, as its imports name it (see ../shared/seed), pinned so
/// that every run measures the same thing; mangum is what runs FastAPI on Lambda.
const PYTHON_STACK: [&str; 5] = [
    "fastapi==0.165.0",
    "sqlalchemy==2.1.9",
    "dodopayments==1.123.0",
    "standardwebhooks==1.1.0",
    "mangum==0.22.0",
];
const PYTHON_IMPORTS: &str = "from fastapi import APIRouter; from sqlalchemy.orm import Session; \
    from dodopayments import DodoPayments; from standardwebhooks import Webhook; \
    from mangum import Mangum";

struct Options {
    cold: usize,
    warm: usize,
    bin_dir: PathBuf,
    python_runs: usize,
    /// Requests per route in the cost pass.
    cost_requests: usize,
    write_measured: Option<PathBuf>,
    /// Only the cost pass (no latency, size or Python figures).
    costs_only: bool,
}

fn options() -> Options {
    let mut options = Options {
        cold: 20,
        warm: 300,
        bin_dir: binary_dir("release"),
        python_runs: 10,
        cost_requests: 50,
        write_measured: None,
        costs_only: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--no-python" {
            options.python_runs = 0;
            continue;
        }
        if arg == "--costs-only" {
            options.costs_only = true;
            continue;
        }
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "--cold" => options.cold = value.parse().unwrap_or(options.cold),
            "--warm" => options.warm = value.parse().unwrap_or(options.warm),
            "--bin-dir" => options.bin_dir = value.into(),
            "--python-runs" => options.python_runs = value.parse().unwrap_or(options.python_runs),
            "--cost-requests" => {
                options.cost_requests = value.parse().unwrap_or(options.cost_requests)
            }
            "--write-measured" => options.write_measured = Some(value.into()),
            other => {
                eprintln!("unknown option {other}");
                std::process::exit(2);
            }
        }
    }
    options
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// The event for warm invocation `i` of `function`, and the status it must answer.
fn event_for(
    function: &str,
    i: usize,
    sim: &DodoSimulator,
    secret: &WebhookSecret,
) -> (Value, u64) {
    // One user per invocation, as a population of users calls it: one user alone may
    // make only ten Dodo-calling requests a minute.
    let sub = format!("bench-user-{i}");
    let email = format!("bench{i}@example.com");
    let user = Some((sub.as_str(), Some(email.as_str())));
    match function {
        "status" => (api_gateway_event("GET", "/payment/status", user, None), 200),
        // A metered call from the founder's backend: a check-and-consume transaction.
        "server" => {
            let body = json!({"user_id": sub, "feature": "api_calls", "amount": 1,
                              "idempotency_key": format!("bench-{i}")})
            .to_string();
            (
                dev::fixtures::server_event(
                    "POST",
                    "/server/usage",
                    Some("arn:aws:iam::123456789012:user/bench"),
                    Some(&body),
                ),
                200,
            )
        }
        // A batch of stream records with one access event: one PutEvents call. Answers
        // `batchItemFailures`, not a status (0 stands for "no failures").
        "access-events" => (
            json!({"Records": [{
                "eventID": format!("e{i}"), "eventName": "INSERT", "eventSource": "aws:dynamodb",
                "dynamodb": {"SequenceNumber": format!("{i}"), "NewImage": {
                    "sk": {"S": format!("EVENT#0000000000000#evt_{i}")},
                    "detail": {"S": json!({"event_id": format!("evt_{i}"), "user_id": sub}).to_string()}
                }}
            }]}),
            0,
        ),
        "create-checkout" => (
            api_gateway_event("POST", "/payment/create-checkout-session", user, Some("{}")),
            200,
        ),
        // A portal session for the Dodo customer create-checkout bound to this user.
        "portal" => (
            api_gateway_event("POST", "/payment/portal", user, None),
            200,
        ),
        // The hourly schedule's event. Answers the run's summary (0: nothing failed).
        "reconcile" => (
            json!({"version": "0", "id": format!("bench-{i}"), "detail-type": "Scheduled Event",
                   "source": "aws.events", "account": "123456789012",
                   "time": paywall::time::Clock::system().now().to_rfc3339(),
                   "region": "us-east-1", "resources": [], "detail": {}}),
            0,
        ),
        "success" => {
            let id = format!("pay_bench_s{i}");
            sim.put_payment(json!({
                "payment_id": id, "status": "succeeded",
                "metadata": {"user_id": sub, "plan": "monthly"},
                "product_cart": [{"product_id": PRODUCT, "quantity": 1}],
            }));
            let body = json!({"payment_id": id}).to_string();
            (
                api_gateway_event("POST", "/payment/success", user, Some(&body)),
                200,
            )
        }
        _ => {
            let body = json!({
                "business_id": "bus_bench", "type": "payment.succeeded",
                "timestamp": paywall::time::Clock::system().now().to_rfc3339(),
                "data": {"payload_type": "Payment", "payment_id": format!("pay_bench_w{i}"),
                         "status": "succeeded", "metadata": {"user_id": sub},
                         "product_cart": [{"product_id": PRODUCT, "quantity": 1}]}
            })
            .to_string();
            let now = paywall::time::Clock::system().now().unix_seconds();
            let id = format!("msg_bench_{i}");
            let headers = [
                ("webhook-id", id.clone()),
                ("webhook-timestamp", now.to_string()),
                ("webhook-signature", secret.sign(&id, now, body.as_bytes())),
            ];
            (function_url_event(body.as_bytes(), &headers, false), 200)
        }
    }
}

/// p50, p90 and max of `samples`, in milliseconds, as table cells.
fn spread(samples: &mut [Duration]) -> [String; 3] {
    samples.sort();
    [0.5, 0.9, 1.0].map(|p| ms(percentile(samples, p)))
}

/// The size of `binary` zipped as Lambda takes it (one `bootstrap` entry, deflated as
/// `sam build`'s packaging does, with Python's zipfile).
fn zipped_size(binary: &Path) -> Result<u64, String> {
    let zip = std::env::temp_dir().join(format!("lambda-bench-{}.zip", std::process::id()));
    let status = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\n\
             with zipfile.ZipFile(sys.argv[2], 'w', zipfile.ZIP_DEFLATED) as z:\n    \
             z.write(sys.argv[1], 'bootstrap')",
        ])
        .arg(binary)
        .arg(&zip)
        .status()
        .map_err(|e| format!("python3 (to zip {}): {e}", binary.display()))?;
    if !status.success() {
        return Err(format!("zipping {} failed", binary.display()));
    }
    let size = std::fs::metadata(&zip).map_err(|e| e.to_string())?.len();
    let _ = std::fs::remove_file(&zip);
    Ok(size)
}

/// The original router's stack in a virtualenv under `target/bench` (made on first use),
/// then the wall time of `runs` fresh interpreters importing it, after one untimed run
/// that compiles the bytecode (as a deployed package would ship it).
fn python_stack_start(runs: usize) -> Result<Vec<Duration>, String> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/python-stack");
    let python = venv.join("bin/python");
    let stamp = venv.join("installed.txt");
    let wanted = PYTHON_STACK.join("\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        eprintln!(
            "creating {} with {}",
            venv.display(),
            PYTHON_STACK.join(" ")
        );
        let run = |command: &mut Command| -> Result<(), String> {
            let status = command.status().map_err(|e| e.to_string())?;
            status
                .success()
                .then_some(())
                .ok_or_else(|| format!("{command:?} failed"))
        };
        run(Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv))?;
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PYTHON_STACK))?;
        std::fs::write(&stamp, &wanted).map_err(|e| e.to_string())?;
    }
    let mut times = Vec::new();
    for run in 0..=runs {
        let started = Instant::now();
        let output = Command::new(&python)
            .args(["-c", PYTHON_IMPORTS])
            .output()
            .map_err(|e| e.to_string())?;
        let took = started.elapsed();
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        if run > 0 {
            times.push(took);
        }
    }
    Ok(times)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options();
    let mut failed = false;
    if !options.costs_only {
        failed |= latency_pass(&options).await?;
    }
    failed |= cost_pass(&options).await?;
    if failed {
        return Err("some invocations failed".into());
    }
    Ok(())
}

/// What each request costs, measured apart from the timed pass (see dev::route_costs).
/// `Ok(true)`: something did not hold.
async fn cost_pass(options: &Options) -> Result<bool, Box<dyn std::error::Error>> {
    let runs = dev::route_costs::Runs {
        requests: options.cost_requests,
        reconcile_runs: RECONCILE_WARM_RUNS.min(options.cost_requests),
    };
    let measurement = dev::route_costs::measure(&options.bin_dir, runs).await?;
    let measured = &measurement.measured;
    println!(
        "\nWhat each request costs ({} requests per route, {} runs of reconcile, after one \
         unmeasured request; DynamoDB behind its metering front, logs at INFO in JSON):\n",
        runs.requests, runs.reconcile_runs
    );
    print!("{}", measured.table());
    println!(
        "\nRRU and WRU: DynamoDB on-demand request units, from the engine's ConsumedCapacity \
         (\"(rules)\": some computed by DynamoDB's rules, for answers that carry none). \
         Billed ms: Lambda's billed duration at {} MB estimated from the medians here, as \
         wall - cpu + cpu * 1769 / {} (Lambda gives 1/13.8 of a vCPU at 128 MB), rounded up \
         to the millisecond; measured on x86_64 only, the same figure stands for arm64. \
         Secrets Manager is read only at cold start, in the secrets-manager mode: {}.",
        measured.memory_mb,
        measured.memory_mb,
        cold_start_calls(measured),
    );
    for problem in &measurement.problems {
        eprintln!("{problem}");
    }
    if let Some(path) = &options.write_measured {
        std::fs::write(path, measured.to_toml())?;
        println!("Written to {}.", path.display());
    }
    Ok(!measurement.problems.is_empty())
}

/// Each function's calls at cold start in the secrets-manager mode, for the note.
fn cold_start_calls(measured: &dev::route_costs::Measured) -> String {
    let mut by_function = std::collections::BTreeMap::new();
    for route in measured.routes.values() {
        by_function.insert(route.function.as_str(), &route.cold_start_aws_calls);
    }
    by_function
        .iter()
        .map(|(function, calls)| {
            let calls: Vec<String> = calls.iter().map(|(c, n)| format!("{c} {n}")).collect();
            format!(
                "{function} {}",
                if calls.is_empty() {
                    "none".into()
                } else {
                    calls.join(", ")
                }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Init, cold request, warm latency, sizes and memory of each function, then the Python
/// stack. `Ok(true)`: some invocation did not answer as expected.
async fn latency_pass(options: &Options) -> Result<bool, Box<dyn std::error::Error>> {
    // As before the IAM gate existed: the figures stay comparable (see in_memory_without_iam).
    let dynamo = LocalDynamo::in_memory_without_iam().await?;
    // Without the table's stream: DynamoDB's stream costs a write nothing, but the embedded
    // engine's grows with every write and would be measured instead of the functions.
    create_table_from_template_without_stream(&dynamo.client(), &template_path(), "bench").await?;
    let dodo = DodoSimulator::start(Some("sk_bench".into())).await?;
    let secret = WebhookSecret::parse(SECRET)?;
    let bus = dev::local_stream::LocalEventBus::default();
    let bus_url = bus.start().await?;
    let secrets = dev::local_secrets::LocalSecretsManager::default();
    // The secret the template lets the functions read (its default name): the local
    // Secrets Manager holds each call to the role, as AWS does (dev::iam).
    secrets.put("dodo-paywall/api-key", "sk_bench");
    let secrets_url = secrets.start().await?;
    let config: Vec<(&str, String)> = vec![
        ("TABLE_NAME", "bench".into()),
        ("AWS_ENDPOINT_URL_DYNAMODB", dynamo.endpoint().into()),
        ("DODO_PAYMENTS_API_KEY", "sk_bench".into()),
        ("DODO_PAYMENTS_BASE_URL", dodo.url.clone()),
        ("DODO_PAYMENTS_WEBHOOK_SECRET", SECRET.into()),
        ("DODO_PRODUCT_ID", PRODUCT.into()),
        ("DODO_SUCCESS_URL", "https://app.example.com/back".into()),
        ("AWS_ENDPOINT_URL_EVENTBRIDGE", bus_url),
        // Hundreds of checkouts in seconds measure latency, not the shared Dodo budget
        // (which would answer most of them 503 busy at its default of 50 a minute).
        ("DODO_USER_CALLS_PER_MINUTE", "10000".into()),
    ];
    // The stack's `secrets-manager` mode: the key read at cold start, not set.
    let mut secrets_mode = config.clone();
    secrets_mode.retain(|(name, _)| *name != "DODO_PAYMENTS_API_KEY");
    secrets_mode.push((
        "DODO_PAYMENTS_API_KEY_SECRET_ID",
        "dodo-paywall/api-key".into(),
    ));
    secrets_mode.push(("AWS_ENDPOINT_URL_SECRETS_MANAGER", secrets_url));

    println!("Measured on {}.\n", dev::route_costs::machine());
    println!(
        "| function | stripped | zipped | init p50 | init p90 | init max | cold request p50 | cold request p90 | cold request max | warm p50 | warm p99 | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut failed = false;
    let mut slowest_init = Duration::ZERO;
    let runs = FUNCTIONS.iter().map(|f| (*f, *f, &config)).chain([(
        "create-checkout",
        "create-checkout (secrets-manager mode)",
        &secrets_mode,
    )]);
    for (function, label, config) in runs {
        let binary = options.bin_dir.join(function);
        let size = std::fs::metadata(&binary)
            .map_err(|e| format!("{}: {e}", binary.display()))?
            .len();
        let zipped = zipped_size(&binary)?;

        // Init alone: the process waits in its first poll, with nothing to do.
        let mut inits = Vec::new();
        for _ in 0..options.cold {
            let calls_before = dodo.simulator.api_calls().len();
            let running = RunningFunction::spawn(&binary, config).await?;
            let init = running
                .init_duration(Duration::from_secs(10))
                .await
                .ok_or_else(|| format!("{label} never polled the Runtime API"))?;
            if dodo.simulator.api_calls().len() != calls_before {
                eprintln!("{label}: called Dodo during init");
                failed = true;
            }
            inits.push(init);
        }
        // Cold request: the event already waits when the process starts, as Lambda's first
        // invocation of a new instance does; everything the first request pays is in it.
        let mut colds = Vec::new();
        for k in 0..options.cold {
            let (event, expected) = event_for(function, 1_000_000 + k, &dodo.simulator, &secret);
            let running = RunningFunction::spawn(&binary, config).await?;
            let response = running.invoke(event).await?;
            colds.push(running.since_spawn());
            failed |= !answered_as_expected(label, k, &response, expected);
        }

        let running = RunningFunction::spawn(&binary, config).await?;
        running.init_duration(Duration::from_secs(10)).await;
        let mut latencies = Vec::new();
        let warm = if function == "reconcile" {
            options.warm.min(RECONCILE_WARM_RUNS)
        } else {
            options.warm
        };
        for i in 0..warm {
            let (event, expected) = event_for(function, i, &dodo.simulator, &secret);
            let started = Instant::now();
            let response = running.invoke(event).await?;
            latencies.push(started.elapsed());
            failed |= !answered_as_expected(label, i, &response, expected);
        }
        latencies.sort();
        let rss = running.peak_rss_kib().unwrap_or_default();
        let [init_p50, init_p90, init_max] = spread(&mut inits);
        if function == label {
            slowest_init = slowest_init.max(percentile(&inits, 0.5));
        }
        let [cold_p50, cold_p90, cold_max] = spread(&mut colds);
        println!(
            "| {label} | {:.2} MB | {:.2} MB | {init_p50} ms | {init_p90} ms | {init_max} ms | {cold_p50} ms | {cold_p90} ms | {cold_max} ms | {} ms | {} ms | {:.1} MB |",
            size as f64 / 1_000_000.0,
            zipped as f64 / 1_000_000.0,
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            rss as f64 / 1024.0,
        );
    }
    println!(
        "\n{} cold starts (init), {} cold requests and {} warm invocations per function \
         ({RECONCILE_WARM_RUNS} warm runs of reconcile, whose request is a whole run, paced at \
         one Dodo call per 1.5 s); DynamoDB, Dodo, EventBridge and Secrets Manager on loopback.",
        options.cold, options.cold, options.warm
    );
    if options.python_runs > 0 {
        let mut python = python_stack_start(options.python_runs)?;
        let [p50, p90, max] = spread(&mut python);
        let ratio = percentile(&python, 0.5).as_secs_f64() / slowest_init.as_secs_f64();
        println!(
            "\nThe original Python stack starting ({}; {} runs, same machine, same run): \
             p50 {p50} ms, p90 {p90} ms, max {max} ms.\n\
             Ratio to the slowest function's init p50 ({} ms): {ratio:.0}x.",
            PYTHON_STACK.join(", "),
            python.len(),
            ms(slowest_init),
        );
    }
    Ok(failed)
}

/// Whether `response` is the answer `function` must give (see
/// [`dev::route_costs::check_answer`]); says what went wrong otherwise.
fn answered_as_expected(function: &str, i: usize, response: &Value, expected: u64) -> bool {
    match dev::route_costs::check_answer(response, expected) {
        Ok(()) => true,
        Err(why) => {
            eprintln!("{function}: invocation {i} {why}");
            false
        }
    }
}
