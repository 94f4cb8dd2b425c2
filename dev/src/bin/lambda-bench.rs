//! Measures the release binaries against the budgets: init (process start to the first
//! poll of the Runtime API), stripped size, and peak RSS over warm invocations, each run
//! as Lambda runs it against dynoxide and the Dodo simulator on loopback.
//!
//! `cargo build --release --bins && cargo run -p dev --bin lambda-bench -- [--cold N] [--warm N] [--bin-dir DIR]`

use std::time::{Duration, Instant};

use dev::dodo_simulator::DodoSimulator;
use dev::fixtures::{api_gateway_event, function_url_event};
use dev::lambda_harness::{RunningFunction, binary_dir};
use dev::local_dynamodb::{LocalDynamo, create_table_from_template_without_stream, template_path};
use paywall::webhook_signature::WebhookSecret;
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PRODUCT: &str = "pdt_bench";
const FUNCTIONS: [&str; 6] = [
    "status",
    "create-checkout",
    "success",
    "webhook",
    "server",
    "access-events",
];
// (portal is create-checkout's twin in size and start-up: one Dodo client, one read.)

struct Options {
    cold: usize,
    warm: usize,
    bin_dir: std::path::PathBuf,
}

fn options() -> Options {
    let mut options = Options {
        cold: 20,
        warm: 300,
        bin_dir: binary_dir("release"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "--cold" => options.cold = value.parse().unwrap_or(options.cold),
            "--warm" => options.warm = value.parse().unwrap_or(options.warm),
            "--bin-dir" => options.bin_dir = value.into(),
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options();
    let dynamo = LocalDynamo::in_memory().await?;
    // Without the table's stream: DynamoDB's stream costs a write nothing, but the embedded
    // engine's grows with every write and would be measured instead of the functions.
    create_table_from_template_without_stream(&dynamo.client(), &template_path(), "bench").await?;
    let dodo = DodoSimulator::start(Some("sk_bench".into())).await?;
    let secret = WebhookSecret::parse(SECRET)?;
    let bus = dev::local_stream::LocalEventBus::default();
    let bus_url = bus.start().await?;
    let config: Vec<(&str, String)> = vec![
        ("TABLE_NAME", "bench".into()),
        ("AWS_ENDPOINT_URL_DYNAMODB", dynamo.endpoint().into()),
        ("DODO_PAYMENTS_API_KEY", "sk_bench".into()),
        ("DODO_PAYMENTS_BASE_URL", dodo.url.clone()),
        ("DODO_PAYMENTS_WEBHOOK_SECRET", SECRET.into()),
        ("DODO_PRODUCT_ID", PRODUCT.into()),
        ("DODO_SUCCESS_URL", "https://app.example.com/back".into()),
        ("AWS_ENDPOINT_URL_EVENTBRIDGE", bus_url),
    ];

    println!(
        "| function | stripped size | init p50 | init p90 | init max | warm p50 | warm p99 | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut failed = false;
    for function in FUNCTIONS {
        let binary = options.bin_dir.join(function);
        let size = std::fs::metadata(&binary)
            .map_err(|e| format!("{}: {e}", binary.display()))?
            .len();

        let mut inits = Vec::new();
        for _ in 0..options.cold {
            let calls_before = dodo.simulator.api_calls().len();
            let running = RunningFunction::spawn(&binary, &config).await?;
            let init = running
                .init_duration(Duration::from_secs(10))
                .await
                .ok_or_else(|| format!("{function} never polled the Runtime API"))?;
            if dodo.simulator.api_calls().len() != calls_before {
                eprintln!("{function}: called Dodo during init");
                failed = true;
            }
            inits.push(init);
        }
        inits.sort();

        let running = RunningFunction::spawn(&binary, &config).await?;
        running.init_duration(Duration::from_secs(10)).await;
        let mut latencies = Vec::new();
        for i in 0..options.warm {
            let (event, expected) = event_for(function, i, &dodo.simulator, &secret);
            let started = Instant::now();
            let response = running.invoke(event).await?;
            latencies.push(started.elapsed());
            let status = response["statusCode"].as_u64().unwrap_or_default();
            let batch_failed = response["batchItemFailures"]
                .as_array()
                .is_some_and(|failures| !failures.is_empty());
            if status != expected || batch_failed {
                eprintln!(
                    "{function}: invocation {i} answered {status}: {}",
                    response["body"]
                );
                failed = true;
            }
        }
        latencies.sort();
        let rss = running.peak_rss_kib().unwrap_or_default();
        println!(
            "| {function} | {:.2} MB | {} ms | {} ms | {} ms | {} ms | {} ms | {:.1} MB |",
            size as f64 / 1_000_000.0,
            ms(percentile(&inits, 0.5)),
            ms(percentile(&inits, 0.9)),
            ms(percentile(&inits, 1.0)),
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            rss as f64 / 1024.0,
        );
    }
    println!(
        "\n{} cold starts and {} warm invocations per function; DynamoDB and Dodo on loopback.",
        options.cold, options.warm
    );
    if failed {
        return Err("some invocations failed".into());
    }
    Ok(())
}
