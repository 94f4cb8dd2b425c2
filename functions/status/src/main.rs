//! The `status` Lambda function: configuration and clients built once at cold start, then
//! every request answered by [`paywall::handlers::StatusHandler`].

#[tokio::main(flavor = "current_thread")]
async fn main() {
    paywall::runtime::run(paywall::handlers::StatusHandler::from_env()).await;
}
