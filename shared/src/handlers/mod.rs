//! The endpoints. Each is a struct holding what it needs (built once at cold start)
//! and answering every request through [`crate::runtime::Handler`].

pub mod create_checkout;
pub mod portal;
pub mod reconcile;
pub mod status;
pub mod success;
pub mod webhook;

pub use create_checkout::CreateCheckoutHandler;
pub use portal::PortalHandler;
pub use reconcile::Reconciler;
pub use status::StatusHandler;
pub use success::SuccessHandler;
pub use webhook::WebhookHandler;

/// Errors at cold start (configuration): the binary exits with this message.
pub type StartError = Box<dyn std::error::Error + Send + Sync>;
