//! The `access-events` Lambda function: the table's stream in, access events out to
//! EventBridge, by [`paywall::handlers::AccessEventPublisher`].

#[tokio::main(flavor = "current_thread")]
async fn main() {
    paywall::runtime::run_stream(paywall::handlers::AccessEventPublisher::from_env()).await;
}
