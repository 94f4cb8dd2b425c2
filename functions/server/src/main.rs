//! The `server` Lambda function: the founder's backend's API under `/server/` (IAM
//! authorization), answered by [`paywall::handlers::ServerHandler`].

#[tokio::main(flavor = "current_thread")]
async fn main() {
    paywall::runtime::run(paywall::handlers::ServerHandler::from_env()).await;
}
