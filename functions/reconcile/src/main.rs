//! The `reconcile` Lambda function, run on a schedule: checks with Dodo what lost
//! webhooks would leave wrong ([`paywall::handlers::Reconciler`]).

#[tokio::main(flavor = "current_thread")]
async fn main() {
    paywall::runtime::run_scheduled(paywall::handlers::Reconciler::from_env()).await;
}
