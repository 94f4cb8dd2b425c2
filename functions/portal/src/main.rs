//! The `portal` Lambda function: configuration and clients built once at cold start, then
//! every request answered by [`paywall::handlers::PortalHandler`].

#[tokio::main(flavor = "current_thread")]
async fn main() {
    paywall::runtime::run(paywall::handlers::PortalHandler::from_env()).await;
}
