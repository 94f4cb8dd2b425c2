//! The `status` Lambda function: configuration and clients built once at cold start, then
//! every request answered by [`paywall::handlers::StatusHandler`].

use paywall::handlers::StatusHandler;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    paywall::runtime::init_logging();
    let handler = StatusHandler::from_env().await?;
    paywall::runtime::serve(handler).await
}
