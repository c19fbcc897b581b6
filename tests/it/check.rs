//! `contactplan check` on deliberately broken plans, and the daemon on the same folder.

use crate::helpers::utc;
use contactplan::app::Application;
use contactplan::clock::ManualClock;
use contactplan::config::{Config, Environment};
use contactplan::mail::{Mailer, MemoryMailer};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

fn contactplan(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_contactplan"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("CONTACTPLAN_DATABASE_URL")
        .output()
        .unwrap()
}

#[test]
fn check_reports_every_broken_plan_with_file_and_line() {
    let out = contactplan(&["check", "--config", "tests/fixtures/broken/contactplan.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = [
        ("bad-cron.toml:22:8", "invalid cron expression `0 9 * * MONDAY`"),
        ("bad-email.toml:14:9", "`pat.example.com` is not a valid email address"),
        ("bad-timezone.toml:6:12", "unknown time zone `Europe/Berln`"),
        ("bad-toml.toml:18:15", "invalid basic string"),
        ("two-primary.toml:25:11", "a second contact is marked `primary = true`"),
        ("unknown-key.toml:10:1", "unknown key `colour`"),
        ("unknown-template.toml:23:12", "unknown template `thank-you-card`"),
    ];
    for (location, message) in expected {
        let at = format!("tests/fixtures/broken/plans/{location}");
        let block =
            stderr.split("\n\n").find(|b| b.contains(&at)).unwrap_or_else(|| panic!("no report at {at}:\n{stderr}"));
        assert!(block.contains(message), "{at}: expected `{message}` in\n{block}");
        assert!(block.contains("= hint:"), "{at}: a hint\n{block}");
    }
    assert_eq!(stderr.matches("error:").count(), expected.len(), "one error per broken file:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("8 plan files") && stdout.contains("1 valid customer,") && stdout.contains("7 errors"),
        "{stdout}"
    );
}

#[test]
fn check_passes_on_the_shipped_examples() {
    let out = contactplan(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_json_lists_problems_for_scripts() {
    let out = contactplan(&["check", "--config", "tests/fixtures/broken/contactplan.toml", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 7);
    let tz = items.iter().find(|d| d["file"].as_str().unwrap().ends_with("bad-timezone.toml")).unwrap();
    assert_eq!((tz["line"].as_u64(), tz["column"].as_u64()), (Some(6), Some(12)));
    assert_eq!(tz["value"], "\"Europe/Berln\"");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_keeps_serving_valid_plans_next_to_broken_ones() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config =
        Config::load(&root.join("tests/fixtures/broken/contactplan.toml"), &Environment::default()).unwrap();
    config.database_url = format!("sqlite://{}", dir.path().join("outbox.db").display());
    let memory = MemoryMailer::default();
    // 1980-05-17 birthday, Europe/Berlin, 09:00 CEST = 07:00 UTC.
    let clock = ManualClock::new(utc("2027-05-17T07:00:00Z"));
    let app = Application::build_with(config, Arc::new(clock), Default::default(), Mailer::Memory(memory.clone()))
        .await
        .unwrap();
    assert_eq!(app.current().plans.len(), 1);
    let report = app.scheduler().tick(&CancellationToken::new()).await.unwrap();
    assert_eq!(report.accepted, 1);
    let sent = memory.sent.lock().unwrap();
    let text = String::from_utf8_lossy(&sent[0]);
    assert!(
        text.contains("To: \"Pat Doe\" <pat@example.com>") || text.contains("To: Pat Doe <pat@example.com>"),
        "{text}"
    );
}

#[test]
fn every_command_has_help_with_examples() {
    for cmd in ["check", "agenda", "preview", "explain", "run"] {
        let out = contactplan(&[cmd, "--help"]);
        assert_eq!(out.status.code(), Some(0));
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("Examples:"), "{cmd}: {help}");
    }
}

/// `agenda --capacity` forecasts every customer together (the relay's caps are shared): with
/// `--customer`, a forecast of that customer alone said "everything fits" for a peak that did
/// not. The combination is refused.
#[test]
fn a_capacity_forecast_is_never_of_one_customer_alone() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_contactplan"))
        .args(["agenda", "--capacity", "--customer", "mueller-maschinenbau"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("CONTACTPLAN_DATABASE_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("'--capacity' cannot be used with '--customer"), "{stderr}");
}
