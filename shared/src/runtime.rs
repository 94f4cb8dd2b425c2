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

/// Structured logs: JSON when the function's log format is JSON (as `template.yaml` sets),
/// level from `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`.
pub fn init_logging() {
    lambda_http::tracing::init_default_subscriber();
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

/// Serves `handler` on the Lambda Runtime API until the sandbox is torn down.
pub async fn serve<H: Handler>(handler: H) -> Result<(), lambda_http::Error> {
    let handler = &handler;
    lambda_http::run(service_fn(move |request: Request| async move {
        Ok::<_, Infallible>(handler.handle(request).await)
    }))
    .await
}
