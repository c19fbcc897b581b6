//! contactplan: keeps B2B customer relationships warm. See ARCHITECTURE.md for the map.

pub mod app;
pub mod calendar;
pub mod cli;
pub mod clock;
pub mod config;
pub mod diagnostics;
pub mod dispatch;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod occasion;
pub mod plan;
pub mod reload;
pub mod render;
pub mod retention;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod watch;
