//! The `success` Lambda function: configuration and clients built once at cold start, then
//! every request answered by [`paywall::handlers::SuccessHandler`].

#[tokio::main(flavor = "current_thread")]
async fn main() {
    paywall::runtime::run(paywall::handlers::SuccessHandler::from_env()).await;
}
