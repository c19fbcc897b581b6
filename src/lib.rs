//! contactplan: keeps B2B customer relationships warm. See ARCHITECTURE.md for the map.

pub mod app;
pub mod calendar;
pub mod cli;
pub mod clock;
pub mod config;
pub mod diagnostics;
pub mod dispatch;
pub mod mail;
pub mod occasion;
pub mod plan;
pub mod render;
pub mod store;
pub mod telemetry;
