//! The `webhook` Lambda function: configuration and clients built once at cold start, then
//! every request answered by [`paywall::handlers::WebhookHandler`].

#[tokio::main(flavor = "current_thread")]
async fn main() {
    paywall::runtime::run(paywall::handlers::WebhookHandler::from_env()).await;
}
