//! The `webhook` Lambda function: configuration and clients built once at cold start, then
//! every request answered by [`paywall::handlers::WebhookHandler`].

use paywall::handlers::WebhookHandler;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    paywall::runtime::init_logging();
    let handler = WebhookHandler::from_env().await?;
    paywall::runtime::serve(handler).await
}
