//! What every Lambda binary does at cold start and per invocation.

use std::convert::Infallible;
use std::future::Future;

use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpResponse;
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
        // The current span (the runtime's, with the request id) once, not again in a
        // list of every span: CloudWatch Logs bills each byte.
        logs.json().with_span_list(false).try_init()
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
    // Boxed: the runtime's future nests deeply enough to exceed the compiler's default
    // layout depth in release builds.
    if let Err(err) = Box::pin(serve(handler)).await {
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
        let summary = reconciler.run(reconciler.clock().now()).await;
        // Metrics for the dashboard and the alarm, read by CloudWatch from the log.
        println!("{}", summary.metric_line(reconciler.clock().now_millis()));
        if summary.complete() {
            Ok(summary)
        } else {
            // A failed invocation, so that the function's error alarm fires.
            Err(format!(
                "reconcile left {} due item(s) behind and met {} error(s)",
                summary.left_behind, summary.failed
            ))
        }
    });
    if let Err(err) = Box::pin(lambda_runtime::run(service)).await {
        eprintln!("the Lambda runtime stopped: {err}");
        std::process::exit(1);
    }
}

/// The `access-events` binary's whole `main`: each batch of stream records published,
/// its partial failures reported for Lambda to retry.
pub async fn run_stream(
    build: impl Future<Output = Result<crate::handlers::AccessEventPublisher, StartError>>,
) {
    use lambda_http::lambda_runtime::{self, LambdaEvent};
    init_logging();
    let publisher = match build.await {
        Ok(publisher) => publisher,
        Err(err) => {
            tracing::error!(error = %err, "cannot start");
            eprintln!("cannot start: {err}");
            std::process::exit(1);
        }
    };
    let publisher = &publisher;
    let service = service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        Ok::<_, Infallible>(publisher.publish(&event.payload).await)
    });
    if let Err(err) = Box::pin(lambda_runtime::run(service)).await {
        eprintln!("the Lambda runtime stopped: {err}");
        std::process::exit(1);
    }
}

/// Serves `handler` on the Lambda Runtime API until the sandbox is torn down.
///
/// Events are read as JSON first so that JWT claims can be made strings (API Gateway
/// sends them so, but an identity provider's numbers or booleans must never make a
/// whole request fail to parse), then handed over as lambda_http requests. Answers are
/// API Gateway v2 / Function URL responses.
pub async fn serve<H: Handler>(handler: H) -> Result<(), lambda_http::Error> {
    use lambda_http::lambda_runtime::{self, LambdaEvent};
    let handler = &handler;
    let service = service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        Ok::<_, Infallible>(Box::pin(answer_event(handler, event.payload)).await)
    });
    Box::pin(lambda_runtime::run(service)).await
}

/// One API Gateway v2 or Function URL event in, its response out.
pub async fn answer_event<H: Handler>(
    handler: &H,
    mut event: serde_json::Value,
) -> ApiGatewayV2httpResponse {
    stringify_claims(&mut event);
    let response = match lambda_http::request::from_str(&event.to_string()) {
        Ok(request) => handler.handle(request).await,
        Err(err) => crate::api::ApiError::bad_request(format!(
            "not an API Gateway v2 or Function URL event: {err}"
        ))
        .into_response(),
    };
    let (parts, body) = response.into_parts();
    let mut answer = ApiGatewayV2httpResponse::default();
    answer.status_code = i64::from(parts.status.as_u16());
    answer.headers = parts.headers;
    answer.is_base64_encoded = matches!(body, Body::Binary(_));
    answer.body = match body {
        Body::Empty => None,
        other => Some(other),
    };
    answer
}

/// `requestContext.authorizer.jwt.claims` as strings, the way API Gateway passes them:
/// numbers and booleans as their text, arrays as `[a b c]`.
fn stringify_claims(event: &mut serde_json::Value) {
    use serde_json::Value;
    let Some(claims) = event
        .pointer_mut("/requestContext/authorizer/jwt/claims")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for value in claims.values_mut() {
        let text = match &*value {
            Value::String(_) | Value::Null => continue,
            Value::Array(items) => {
                let items: Vec<String> = items
                    .iter()
                    .map(|item| match item {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                format!("[{}]", items.join(" "))
            }
            other => other.to_string(),
        };
        *value = Value::String(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_become_strings_as_api_gateway_sends_them() {
        let mut event = json!({"requestContext": {"authorizer": {"jwt": {"claims": {
            "sub": "u1", "iat": 1700000000, "email_verified": true,
            "cognito:groups": ["admin", "staff"], "nothing": null
        }}}}});
        stringify_claims(&mut event);
        let claims = &event["requestContext"]["authorizer"]["jwt"]["claims"];
        assert_eq!(claims["sub"], "u1");
        assert_eq!(claims["iat"], "1700000000");
        assert_eq!(claims["email_verified"], "true");
        assert_eq!(claims["cognito:groups"], "[admin staff]");
        assert_eq!(claims["nothing"], serde_json::Value::Null);
    }
}
