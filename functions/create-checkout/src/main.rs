//! The `create-checkout` Lambda function: configuration and clients built once at cold start, then
//! every request answered by [`paywall::handlers::CreateCheckoutHandler`].

#[tokio::main(flavor = "current_thread")]
async fn main() {
    paywall::runtime::run(paywall::handlers::CreateCheckoutHandler::from_env()).await;
}
