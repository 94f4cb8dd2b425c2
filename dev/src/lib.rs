pub mod dodo_simulator;
pub mod fixtures;
pub mod lambda_harness;
pub mod local_dynamodb;
pub mod runtime_api;
