//! contactplan: keeps B2B customer relationships warm. See ARCHITECTURE.md for the map.

#![warn(missing_docs)]
#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]

pub mod app;
pub mod calendar;
pub mod capacity;
pub mod cli;
pub mod clock;
pub mod config;
pub mod diagnostics;
pub mod dispatch;
pub mod events;
pub mod files;
pub mod handover;
pub mod hash;
pub mod health;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod money;
pub mod occasion;
pub mod orders;
pub mod plan;
pub mod reload;
pub mod render;
pub mod retention;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod watch;
pub mod workspace;
