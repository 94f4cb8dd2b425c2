//! What every Lambda binary does at cold start and per invocation.

use std::convert::Infallible;
use std::future::Future;

use lambda_http::{Body, Request, Response, service_fn};

use crate::handlers::StartError;

/// One endpoint: a request in, a response out. Errors are answered, never raised, so
/// the runtime never sees a failed invocation for a request it could answer.
pub trait Handler: Sync {
    fn handle(&self, request: Request) -> impl Future<Output = Response<Body>> + Send;
}

/// Structured logs on stdout: JSON when the function's log format is JSON (as
/// `template.yaml` sets), level from `AWS_LAMBDA_LOG_LEVEL` (or `RUST_LOG`), INFO by
/// default. Lambda stamps each line with the time and request id itself.
pub fn init_logging() {
    use tracing_subscriber::filter::LevelFilter;
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|raw| raw.trim().parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let logs = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .without_time()
        .with_ansi(false);
    // Another subscriber already installed (a test harness) is not an error.
    let _ = if json {
        logs.json().try_init()
    } else {
        logs.try_init()
    };
}

/// A Lambda binary's whole `main`: logging, the handler built once from the environment,
/// then requests until the sandbox is torn down. A configuration error stops the cold
/// start with a message that names the variable (exit status 1).
pub async fn run<H: Handler>(build: impl Future<Output = Result<H, StartError>>) {
    init_logging();
    let handler = match build.await {
        Ok(handler) => handler,
        Err(err) => {
            tracing::error!(error = %err, "cannot start");
            eprintln!("cannot start: {err}");
            std::process::exit(1);
        }
    };
    if let Err(err) = serve(handler).await {
        tracing::error!(error = %err, "the Lambda runtime stopped");
        eprintln!("the Lambda runtime stopped: {err}");
        std::process::exit(1);
    }
}

/// The `reconcile` binary's whole `main`: one run per scheduled event, its summary as
/// the invocation's result.
pub async fn run_scheduled(
    build: impl Future<Output = Result<crate::handlers::Reconciler, StartError>>,
) {
    use lambda_http::lambda_runtime::{self, LambdaEvent};
    init_logging();
    let reconciler = match build.await {
        Ok(reconciler) => reconciler,
        Err(err) => {
            tracing::error!(error = %err, "cannot start");
            eprintln!("cannot start: {err}");
            std::process::exit(1);
        }
    };
    let reconciler = &reconciler;
    let service = service_fn(move |_event: LambdaEvent<serde_json::Value>| async move {
        let summary = reconciler.run(crate::time::Timestamp::now()).await;
        Ok::<_, Infallible>(summary)
    });
    if let Err(err) = lambda_runtime::run(service).await {
        eprintln!("the Lambda runtime stopped: {err}");
        std::process::exit(1);
    }
}

/// Serves `handler` on the Lambda Runtime API until the sandbox is torn down.
pub async fn serve<H: Handler>(handler: H) -> Result<(), lambda_http::Error> {
    let handler = &handler;
    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, Infallible>(handler.handle(request).await)
    }))
    .await
}
