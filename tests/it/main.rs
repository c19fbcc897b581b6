//! The one integration test binary: drives the real daemon code (store, renderer, SMTP over
//! TCP) with an injected clock. Modules by capability; shared set-up in `helpers`.

mod architecture;
mod calendar;
mod capacity;
mod check;
mod crash;
mod crontab;
mod daemon;
mod delivery;
mod diagnostics;
mod events;
mod faults;
mod handover;
mod hardening;
mod helpers;
mod messages;
mod milestones;
mod ops;
mod ops_binary;
mod orders;
mod peer;
mod reconcile;
mod relay;
mod reload;
mod store;
mod templates;
mod xoauth2;
