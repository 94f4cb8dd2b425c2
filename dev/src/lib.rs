pub mod dev_jwt;
pub mod dodo_simulator;
pub mod fixtures;
pub mod lambda_harness;
pub mod local_dynamodb;
pub mod local_server;
pub mod runtime_api;
pub mod trigger;
