//! The one integration test binary: drives the real daemon code (store, renderer, SMTP over
//! TCP) with an injected clock. Modules by capability; shared set-up in `helpers`.

/// `on_both_engines!(test_a, test_b)`: each `async fn test_a(engine: Engine)` of the module
/// becomes `sqlite::test_a` and `postgres::test_a` (the module imports `Engine` from `helpers`).
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                super::$name(super::Engine::Sqlite).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                super::$name(super::Engine::Postgres).await;
            })*
        }
    };
}

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
