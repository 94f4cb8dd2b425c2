//! The paywall's common crate. Every Lambda binary is a thin `main` over one of the
//! handlers in [`handlers`]; everything they share lives here, one module per concept.

pub mod access;
pub mod access_events;
pub mod api;
pub mod aws_json;
pub mod config;
pub mod dodo;
pub mod entitlements;
pub mod eventbridge;
pub mod events;
pub mod expiry;
pub mod handlers;
pub mod http;
pub mod ids;
pub mod plan;
pub mod plan_listing;
pub mod purchase;
pub mod revalidation;
pub mod runtime;
pub mod secrets;
pub mod store;
pub mod subscription;
pub mod time;
pub mod trial;
pub mod webhook_signature;
