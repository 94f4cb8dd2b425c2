pub mod dodo_simulator;
pub mod local_dynamodb;
