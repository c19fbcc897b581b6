//! Handovers, owner changes and phases through the daemon: a plan edit (while running, or
//! while stopped) that makes another contact primary is detected once and gives one brief to
//! the salesperson (with the stored orders and revenue by year), a welcome to the new contact
//! and a farewell to the departed one; an owner change moves unsent tasks to the new owner and
//! briefs them; a rule limited to phases follows the customer's phase (suppressed with the
//! reason, revived when the phase comes back). On SQLite and PostgreSQL, over real SMTP on
//! 127.0.0.1; and three `contactplan run` daemons on one PostgreSQL database.

use crate::helpers::{Delivery, Engine, TestApp, spawn_app_on, utc};
use contactplan::clock::Clock;
use contactplan::money::{Currency, Money};
use contactplan::orders::Order;
use contactplan::store::{Row, RowState, UnixSecs};

/// Monday 2026-11-30, 09:00 in Berlin.
const START: &str = "2026-11-30T08:00:00Z";

/// ACME with Anna and Bob (`primary` names the primary one), `extra` lines in `[customer]`,
/// and `rules` appended.
fn plan(primary: &str, contacts: &[&str], extra: &str, rules: &str) -> String {
    let mut text = format!(
        "[customer]\nid = \"acme\"\nname = \"ACME\"\nsince = 2015-06-01\ntimezone = \"Europe/Berlin\"\nlanguage = \"en\"\ncurrency = \"EUR\"\n{extra}\n"
    );
    for id in contacts {
        let (name, email, phone) = match *id {
            "anna" => ("Anna Schmidt", "anna@acme.example", "+49 30 1111"),
            _ => ("Bob Baker", "bob@acme.example", "+49 30 2222"),
        };
        text.push_str(&format!(
            "[[contact]]\nid = \"{id}\"\nname = \"{name}\"\ngender = \"{}\"\nemail = \"{email}\"\ntone = \"formal\"\nphone = \"{phone}\"\nrole = \"Purchasing\"\nprimary = {}\n\n",
            if *id == "anna" { "female" } else { "male" },
            *id == primary
        ));
    }
    text.push_str(rules);
    text
}

const OWNER: &str = "owner = \"owner@example.com\"\nphase = \"maturity\"\ngoals = [\"Renew the framework contract\"]\nnotes = \"Orders quarterly\"";

/// A brief for the salesperson, a welcome to the new primary contact, a farewell to the
/// departed one; and a yearly thank-you to all contacts on 1 December.
const RULES: &str = r#"
[[occasion]]
name = "brief"
on = "handover"
send = "task"
template = "handover_brief"
at = "00:00"

[[occasion]]
name = "welcome"
on = "handover"
to = "new"
template = "handover_welcome"
at = "00:00"

[[occasion]]
name = "farewell"
on = "handover"
to = "departed"
template = "handover_farewell"
at = "00:00"

[[occasion]]
name = "thanks"
on = "date"
date = "--12-01"
to = "contacts"
template = "anniversary"
"#;

fn write(app: &TestApp, text: &str) {
    let path = app.dir.path().join("plans/acme.toml");
    let tmp = app.dir.path().join("plans/.acme.toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

async fn edit(app: &TestApp, text: &str) {
    write(app, text);
    app.app.reload("test").await;
}

async fn rows(app: &TestApp, state: RowState) -> Vec<Row> {
    app.app.store().rows(Some(state), 1000).await.unwrap()
}

fn keys(rows: &[Row]) -> Vec<String> {
    let mut k: Vec<String> = rows.iter().map(|r| r.key.to_string()).collect();
    k.sort();
    k
}

fn order(n: u32, year: i32, amount: &str) -> Order {
    Order {
        customer: "acme".into(),
        id: format!("PO-{n}"),
        date: chrono::NaiveDate::from_ymd_opt(year, 3, n).unwrap(),
        amount: Some(Money { amount: amount.parse().unwrap(), currency: Currency::EUR }),
        reference: None,
    }
}

async fn start(engine: Engine, text: &str) -> TestApp {
    let app = spawn_app_on(engine, &[("acme", text)], &[], utc(START), Delivery::Smtp).await;
    let r = app.tick().await;
    assert_eq!((r.changes, r.handovers), (0, 0), "a new customer is not a handover: {r:?}");
    app
}

/// Anna hands over to Bob while the daemon runs: exactly one brief (orders and revenue by
/// year from the store, both contacts with phone and role, goals, notes), one welcome to Bob,
/// one farewell to Anna. Anna then leaves the plan: her open thank-you is suppressed and
/// nothing reaches her afterwards.
async fn a_handover_by_plan_edit_sends_one_brief_a_welcome_and_a_farewell(engine: Engine) {
    let app = start(engine, &plan("anna", &["anna", "bob"], OWNER, RULES)).await;
    assert_eq!(keys(&rows(&app, RowState::Pending).await).len(), 2, "the thank-yous of 1 December");
    let now = UnixSecs::from(app.clock.now());
    let orders = [order(1, 2025, "1000.00"), order(2, 2025, "500.50"), order(3, 2026, "250.00")];
    app.app.store().ingest_orders(&orders, "test", now).await.unwrap();

    app.clock.set(utc("2026-11-30T10:00:00Z"));
    edit(&app, &plan("bob", &["anna", "bob"], OWNER, RULES)).await;
    let r = app.tick().await;
    assert_eq!((r.changes, r.handovers, r.accepted), (1, 3, 3), "{r:?}");
    let sent = rows(&app, RowState::Accepted).await;
    assert_eq!(
        keys(&sent),
        ["acme/brief/owner/handover:1", "acme/farewell/contact:anna/handover:1", "acme/welcome/contact:bob/handover:1"]
    );
    let messages = app.smtp.messages();
    let brief = messages.iter().find(|m| m.to == ["owner@example.com"]).expect("the brief");
    assert_eq!(brief.header("Subject"), "Handover: ACME – new contact Bob Baker");
    let (text, html) = brief.parts();
    for want in [
        "Customer since: 1 June 2015",
        "Orders: 3, revenue in total: €1,750.50",
        "Revenue 2025: €1,500.50",
        "Revenue 2026: €250.00",
        "New: Bob Baker (Purchasing), bob@acme.example, +49 30 2222",
        "Previously: Anna Schmidt (Purchasing), anna@acme.example, +49 30 1111",
        "Goals: Renew the framework contract",
        "Notes: Orders quarterly",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    assert!(html.contains("href=\"tel:+49302222\""), "{html}");
    let welcome = messages.iter().find(|m| m.to == ["bob@acme.example"]).expect("Bob is welcomed");
    assert!(
        welcome.parts().0.contains("Dear Mr Baker,") && welcome.parts().0.contains("taking over from Anna Schmidt")
    );
    let farewell = messages.iter().find(|m| m.to == ["anna@acme.example"]).expect("Anna is thanked");
    assert!(farewell.parts().0.contains("to Bob Baker"), "{}", farewell.parts().0);

    // Nothing more: another tick, a reload without a change.
    app.app.reload("test").await;
    let r = app.tick().await;
    assert_eq!((r.changes, r.handovers, r.accepted), (0, 0, 0), "{r:?}");

    // Anna leaves the plan: her thank-you is suppressed with the reason; Bob's is sent.
    edit(&app, &plan("bob", &["bob"], OWNER, RULES)).await;
    let r = app.tick().await;
    assert_eq!((r.changes, r.suppressed), (0, 1), "{r:?}");
    let suppressed = rows(&app, RowState::Suppressed).await;
    assert_eq!(keys(&suppressed), ["acme/thanks/contact:anna/2026-12-01"]);
    assert_eq!(suppressed[0].reason.as_deref(), Some("contact `anna` removed from the plan of `acme`"));
    let r = app.tick_at("2026-12-01T09:00:00Z").await;
    assert_eq!(r.accepted, 1, "{r:?}");
    let to_anna = app.smtp.messages().iter().filter(|m| m.to == ["anna@acme.example"]).count();
    assert_eq!(to_anna, 1, "only the farewell reached Anna");
}

/// The primary contact changes while no daemon runs: the next start sees it once; the start
/// after that sees nothing new. A departed contact already removed gets no farewell: its row
/// is recorded suppressed with the reason.
async fn a_handover_while_stopped_is_seen_once_at_the_next_start(engine: Engine) {
    let mut app = start(engine, &plan("anna", &["anna", "bob"], OWNER, RULES)).await;
    write(&app, &plan("bob", &["bob"], OWNER, RULES));
    app.restart().await;
    let r = app.tick().await;
    assert_eq!((r.changes, r.handovers, r.accepted), (1, 3, 2), "{r:?}");
    assert_eq!(
        keys(&rows(&app, RowState::Accepted).await),
        ["acme/brief/owner/handover:1", "acme/welcome/contact:bob/handover:1"]
    );
    let gone: Vec<Row> = rows(&app, RowState::Suppressed)
        .await
        .into_iter()
        .filter(|r| r.key.to_string() == "acme/farewell/contact:anna/handover:1")
        .collect();
    assert_eq!(
        gone[0].reason.as_deref(),
        Some("the departed contact `anna` is no longer in the plan of `acme`: no message to them")
    );
    app.restart().await;
    let r = app.tick().await;
    assert_eq!((r.changes, r.handovers, r.accepted), (0, 0, 0), "{r:?}");
    assert_eq!(app.smtp.messages().len(), 2);
}

/// The salesperson changes: the new owner gets the brief (keyed `owner-change:<seq>`), and a
/// task written before the change but sent after it goes to the new owner, not the old one.
async fn an_owner_change_briefs_the_new_owner_and_moves_unsent_tasks(engine: Engine) {
    let rules = r#"
[[occasion]]
name = "brief"
on = "handover"
send = "task"
template = "handover_brief"
at = "00:00"

[[occasion]]
name = "welcome"
on = "handover"
to = "new"
template = "handover_welcome"

[[occasion]]
name = "checkin"
on = "every"
cron = "0 9 1 12 *"
send = "task"
template = "checkin"
"#;
    let app = start(engine, &plan("anna", &["anna"], OWNER, rules)).await;
    assert_eq!(keys(&rows(&app, RowState::Pending).await), ["acme/checkin/owner/2026-12-01T09:00"]);
    app.clock.set(utc("2026-11-30T10:00:00Z"));
    edit(&app, &plan("anna", &["anna"], &OWNER.replace("owner@example.com", "new.owner@example.com"), rules)).await;
    let r = app.tick().await;
    assert_eq!((r.changes, r.handovers, r.accepted), (1, 1, 1), "the brief only, no welcome: {r:?}");
    let messages = app.smtp.messages();
    assert_eq!(messages[0].to, ["new.owner@example.com"]);
    assert_eq!(messages[0].header("Subject"), "Handover: ACME – you now look after this customer");
    assert!(messages[0].parts().0.contains("(previously owner@example.com)"), "{}", messages[0].parts().0);
    assert_eq!(keys(&rows(&app, RowState::Accepted).await), ["acme/brief/owner/owner-change:1"]);

    let r = app.tick_at("2026-12-01T08:00:00Z").await;
    assert_eq!(r.accepted, 1, "{r:?}");
    let messages = app.smtp.messages();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].to, ["new.owner@example.com"], "the unsent task follows the owner");
    assert!(messages.iter().all(|m| m.to != ["owner@example.com"]), "nothing to the previous owner");
}

/// A rule limited to phases: its open row is suppressed with the reason when the customer
/// leaves the phase, revived when it comes back; a phase rule with `to_phase` briefs the
/// salesperson about the change into that phase only.
async fn a_phase_limited_rule_follows_the_phase(engine: Engine) {
    let rules = r#"
[[occasion]]
name = "upsell"
on = "date"
date = "--12-01"
send = "task"
template = "occasion_task"
phases = ["growth"]

[[occasion]]
name = "mature"
on = "phase"
to_phase = "maturity"
send = "task"
template = "handover_brief"
at = "00:00"
"#;
    let growth = "owner = \"owner@example.com\"\nphase = \"growth\"";
    let app = start(engine, &plan("anna", &["anna"], growth, rules)).await;
    assert_eq!(keys(&rows(&app, RowState::Pending).await), ["acme/upsell/owner:anna/2026-12-01"]);

    app.clock.set(utc("2026-11-30T10:00:00Z"));
    edit(&app, &plan("anna", &["anna"], &growth.replace("growth", "maturity"), rules)).await;
    let r = app.tick().await;
    assert_eq!((r.changes, r.suppressed, r.handovers, r.accepted), (1, 1, 1, 1), "{r:?}");
    let suppressed = rows(&app, RowState::Suppressed).await;
    assert_eq!(
        suppressed[0].reason.as_deref(),
        Some("rule `upsell` applies only in phases growth; `acme` is now in phase maturity (phase changed)")
    );
    assert_eq!(app.smtp.messages()[0].header("Subject"), "Handover: ACME – now in the maturity phase");
    assert_eq!(keys(&rows(&app, RowState::Accepted).await), ["acme/mature/owner/phase:1"]);

    // Back to growth: the task is revived; the change into growth sends no brief.
    edit(&app, &plan("anna", &["anna"], growth, rules)).await;
    let r = app.tick().await;
    assert_eq!((r.changes, r.revived, r.handovers, r.accepted), (1, 1, 0, 0), "{r:?}");
    assert_eq!(keys(&rows(&app, RowState::Pending).await), ["acme/upsell/owner:anna/2026-12-01"]);
    let r = app.tick_at("2026-12-01T08:00:00Z").await;
    assert_eq!(r.accepted, 1, "{r:?}");
}

/// The brief lists what this customer was last sent (not its neighbours with similar ids:
/// `acme-x` sorts before `acme/`, `acme2` after `acme0`), newest first, without the brief itself.
async fn the_brief_lists_the_customers_last_messages_only(engine: Engine) {
    let today = r#"
[[occasion]]
name = "hello"
on = "date"
date = 2026-11-30
to = "contacts"
template = "anniversary"
at = "09:00"
"#;
    let rules = format!("{RULES}{today}");
    let acme = plan("anna", &["anna", "bob"], OWNER, &rules);
    let other = |id: &str| {
        acme.replacen("id = \"acme\"", &format!("id = \"{id}\""), 1).replace("hello", &format!("hello-{id}"))
    };
    let (dash, two) = (other("acme-x"), other("acme2"));
    let app =
        spawn_app_on(engine, &[("acme", &acme), ("acme-x", &dash), ("acme2", &two)], &[], utc(START), Delivery::Smtp)
            .await;
    assert_eq!(app.tick().await.accepted, 6, "two greetings per customer, at 09:00 Berlin");
    app.clock.set(utc("2026-11-30T10:00:00Z"));
    edit(&app, &plan("bob", &["anna", "bob"], OWNER, &rules)).await;
    app.tick().await;
    let messages = app.smtp.messages();
    let brief = messages.iter().find(|m| m.header("Subject").starts_with("Handover: ACME")).expect("the brief");
    let text = brief.parts().0;
    let line = text.lines().find(|l| l.starts_with("Last sent:")).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(line, "Last sent: 30 November 2026 hello (email); 30 November 2026 hello (email)", "{text}");
}

on_both_engines!(
    a_handover_by_plan_edit_sends_one_brief_a_welcome_and_a_farewell,
    the_brief_lists_the_customers_last_messages_only,
    a_handover_while_stopped_is_seen_once_at_the_next_start,
    an_owner_change_briefs_the_new_owner_and_moves_unsent_tasks,
    a_phase_limited_rule_follows_the_phase,
);

/// Three `contactplan run` daemons on one PostgreSQL database read the same 1,000 plans; one
/// edit makes another contact primary in every plan while they run. Each daemon reloads and
/// compares; the compare-and-set records each handover once, and exactly 1,000 briefs reach
/// the SMTP server, none twice.
#[test]
fn three_daemons_on_one_postgres_database_brief_each_handover_exactly_once() {
    use crate::crash::{accepted, daemon, wait_until};
    use std::time::Duration;
    const CUSTOMERS: usize = 1_000;
    let peer = crate::peer::Peer::start(crate::peer::PeerOptions::default());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plans")).unwrap();
    let plan = |i: usize, primary: &str| {
        format!(
            "[customer]\nid = \"c{i:04}\"\nname = \"C{i}\"\nsince = 2015-06-01\nowner = \"sales@example.com\"\ntimezone = \"Europe/Berlin\"\nlanguage = \"en\"\nphase = \"growth\"\n\n[[contact]]\nid = \"p\"\nname = \"Pat Doe\"\nemail = \"p{i}@example.net\"\ntone = \"formal\"\nprimary = {}\n\n[[contact]]\nid = \"q\"\nname = \"Quinn Roe\"\nemail = \"q{i}@example.net\"\ntone = \"formal\"\nprimary = {}\n\n[[occasion]]\nname = \"brief\"\non = \"handover\"\nsend = \"task\"\ntemplate = \"handover_brief\"\nat = \"00:00\"\n",
            primary == "p",
            primary == "q"
        )
    };
    let write_all = |primary: &str| {
        for i in 0..CUSTOMERS {
            let tmp = dir.path().join(format!("plans/.c{i:04}.tmp"));
            std::fs::write(&tmp, plan(i, primary)).unwrap();
            std::fs::rename(&tmp, dir.path().join(format!("plans/c{i:04}.toml"))).unwrap();
        }
    };
    write_all("p");
    let config = dir.path().join("contactplan.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"sqlite://outbox.db\"\nhttp_bind = \"127.0.0.1:0\"\ntemplates = \"{}\"\nbatch_size = 100\n[sender]\nemail = \"team@example.com\"\nname = \"Team\"\n[ops]\nemail = \"ops@example.com\"\n[delivery]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ntimeout_secs = 10\nconnections = 2\n",
            crate::helpers::templates_dir().display(),
            peer.port
        ),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(crate::store::TestDb::postgres());
    let store = rt.block_on(db.connect());
    let pool = rt.block_on(sqlx::PgPool::connect(db.url())).unwrap();
    let count = |table: &str| -> i64 {
        rt.block_on(sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"))).fetch_one(&pool))
            .unwrap_or(0)
    };
    let mut daemons: Vec<_> = (0..3).map(|_| daemon(&config, Some(db.url()))).collect();
    let seen = wait_until(Duration::from_secs(120), || count("customer_state") >= CUSTOMERS as i64);
    // Every daemon has loaded the plans and compared them once before the edit.
    std::thread::sleep(Duration::from_secs(3));
    assert!(seen, "the daemons recorded the customers");
    assert_eq!(count("customer_changes"), 0, "new customers are not handovers");

    write_all("q");
    let done = wait_until(Duration::from_secs(180), || {
        let counts = rt.block_on(store.counts()).unwrap();
        counts.iter().find(|(s, _)| *s == RowState::Accepted).map_or(0, |(_, n)| *n) as usize >= CUSTOMERS
    });
    // Settle: anything recorded or sent twice would show now (the watcher reloads on every
    // daemon, perhaps several times during the edit).
    std::thread::sleep(Duration::from_secs(3));
    for d in &mut daemons {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(d.id().to_string()).status();
    }
    for d in &mut daemons {
        assert!(d.wait().unwrap().success(), "each daemon exits 0 on SIGTERM");
    }
    assert!(done, "all briefs accepted within 180 s");
    assert_eq!(count("customer_changes"), CUSTOMERS as i64, "each handover recorded once");
    let counts = rt.block_on(store.counts()).unwrap();
    let get = |s: RowState| counts.iter().find(|(x, _)| *x == s).map_or(0, |(_, n)| *n);
    assert_eq!(get(RowState::Accepted), CUSTOMERS as i64, "{counts:?}");
    let accepted = accepted(&peer);
    assert_eq!(accepted.len(), CUSTOMERS, "every brief reached the server");
    let twice: Vec<_> = accepted.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "accepted more than once: {twice:?}");
}
