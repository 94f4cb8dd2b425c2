//! The `success` Lambda function: configuration and clients built once at cold start, then
//! every request answered by [`paywall::handlers::SuccessHandler`].

use paywall::handlers::SuccessHandler;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    paywall::runtime::init_logging();
    let handler = SuccessHandler::from_env().await?;
    paywall::runtime::serve(handler).await
}
