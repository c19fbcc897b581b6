//! The outbox store contract, run against both engines: every test is written once as
//! `async fn name(store: Store)` (or `name(db: &TestDb)` when it needs several connections, like
//! several daemons) and instantiated as `sqlite_name` and `postgres_name`.
//!
//! SQLite runs on a temp file. PostgreSQL runs on `CONTACTPLAN_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), one fresh schema per test, dropped afterwards.
//! When PostgreSQL is unreachable the `postgres_*` tests fail; they never pass silently.

use contactplan::occasion::OutboxKey;
use contactplan::plan::{Action, DeliveryPolicy, TriggerKind};
use contactplan::store::{Claimed, Materialized, NewItem, Outcome, Recovered, Row, RowState, Store, UnixSecs};
use sqlx::Connection;
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

/// "Now" for every test (2023-11-14T22:13:20Z): the node clock passed to the store. Leases use
/// the database clock instead, so they are independent of it.
const T: UnixSecs = UnixSecs(1_700_000_000);

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn postgres_url() -> String {
    std::env::var("CONTACTPLAN_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_string())
}

/// A database for one test: a temp SQLite file or a fresh PostgreSQL schema.
pub struct TestDb {
    url: String,
    /// Keeps the SQLite directory alive.
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL: (base URL, schema) to drop when the test ends, even on panic.
    schema: Option<(String, String)>,
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
        TestDb { url, _dir: Some(dir), schema: None }
    }

    pub(crate) async fn postgres() -> TestDb {
        let base = postgres_url();
        let mut conn = sqlx::PgConnection::connect(&base).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL store tests need a server at {base} (set CONTACTPLAN_TEST_POSTGRES_URL, or start one: \
                 pg_ctlcluster --skip-systemctl-redirect 15 main start): {e}"
            )
        });
        let schema = unique_schema();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        // libpq `options`: every connection of the store runs with this search_path, so its
        // migrations and queries stay inside the schema.
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        TestDb { url, _dir: None, schema: Some((base, schema)) }
    }

    /// The database URL (PostgreSQL: with the test's schema as search_path).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// One more store on the same database: what another daemon would see.
    pub async fn connect(&self) -> Store {
        Store::connect(&self.url).await.unwrap_or_else(|e| panic!("connecting the store at {}: {e:#}", self.url))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((base, schema)) = self.schema.take() else { return };
        // Drop cannot await; clean up on a thread with its own runtime. Failures are ignored:
        // a leftover schema is harmless.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&base).await {
                    let sql = format!("SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {schema} CASCADE");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

fn unique_schema() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let h = RandomState::new().hash_one((std::process::id(), nanos, n));
    format!("t_{h:016x}")
}

/// Generates `sqlite_<name>` and `postgres_<name>` for each test function.
macro_rules! both_engines {
    ($(store: $name:ident),* $(,)? ; $(db: $dbname:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let db = super::TestDb::sqlite().await;
                    super::$name(db.connect().await).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $dbname() {
                    let db = super::TestDb::sqlite().await;
                    drop(db.connect().await); // migrated before the "daemons" start
                    super::$dbname(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let db = super::TestDb::postgres().await;
                    super::$name(db.connect().await).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $dbname() {
                    let db = super::TestDb::postgres().await;
                    drop(db.connect().await);
                    super::$dbname(&db).await;
                }
            )*
        }
    };
}

both_engines!(
    store: materialize_is_idempotent,
    store: claim_takes_only_due_rows_in_due_order_up_to_the_limit,
    store: claimed_rows_are_not_claimed_again,
    store: retry_waits_for_next_attempt,
    store: finish_with_current_fence_records_the_outcome,
    store: finish_with_stale_fence_changes_nothing,
    store: finish_batch_records_outcomes_that_hold_their_fence,
    store: release_puts_the_row_back_without_counting_an_attempt,
    store: expire_marks_overdue_open_rows_missed,
    store: recover_expired_leases_by_delivery_policy,
    store: abandon_gives_rows_up_by_state_and_policy_and_respects_the_fence,
    store: a_start_renews_the_lease_for_the_whole_send,
    store: lease_expires_in_counts_down_to_the_earliest_held_lease,
    store: renew_leases_extends_only_the_owners_open_rows,
    store: unreported_and_mark_reported,
    store: next_due_is_the_earliest_open_instant,
    store: get_and_set_value,
    store: rows_filters_by_state,
    store: purge_finished_deletes_only_old_reported_finished_rows,
    store: backlog_counts_open_rows_and_finds_the_next_due,
    store: reconcile_writes_only_rows_still_in_the_state_it_decided_on,
    store: orders_are_stored_once_per_customer_and_id_and_corrections_update_them,
    store: announced_rows_are_told_in_one_digest_per_owner_marked_only_when_sent,
    store: take_budget_counts_in_every_window_and_respects_the_pause;
    db: concurrent_ingests_keep_every_customers_totals_exact,
    db: concurrent_claimers_take_every_row_exactly_once,
    db: concurrent_digest_claimers_take_each_owners_entries_once,
);

/// PostgreSQL only (SQLite is one daemon per file): daemons starting together on an empty
/// database all come up, and the migration is applied once.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_parallel_startup_migrates_once() {
    let db = TestDb::postgres().await;
    // Concurrent on one task (`tokio::join!`): `Store::connect` cannot be `tokio::spawn`ed,
    // because sqlx's `Migrator::run` future is not `Send` for every lifetime (the HRTB
    // "implementation of `Acquire` is not general enough" error).
    let alias = db.url.replacen("postgres://", "postgresql://", 1); // both schemes select PostgreSQL
    let started = tokio::join!(
        Store::connect(&db.url),
        Store::connect(&alias),
        Store::connect(&db.url),
        Store::connect(&db.url),
        Store::connect(&db.url),
        Store::connect(&db.url),
    );
    let stores: Vec<Store> = [started.0, started.1, started.2, started.3, started.4, started.5]
        .into_iter()
        .map(|s| s.expect("concurrent start-up migrates without error"))
        .collect();
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(&mut conn).await.unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres")).unwrap().count();
    assert_eq!(applied as usize, files, "each migration applied once");
    conn.close().await.unwrap();
    stores[0].set_value("k", "v").await.unwrap();
    assert_eq!(stores[5].get_value("k").await.unwrap().as_deref(), Some("v"));
}

/// An outbox an older daemon left (the first migration only) with a task about the customer as
/// a whole under the old recipient key `owner:customer`: opening it with this version migrates
/// the row to `owner`, so materialising the same occasion again finds it (no second row, no
/// second task).
async fn an_old_whole_customer_task_key_is_migrated(db: &TestDb, old: sqlx::migrate::Migrator) {
    let first = sqlx::migrate::Migrator { migrations: std::borrow::Cow::Owned(old.migrations[..1].to_vec()), ..old };
    let old_key = "acme/checkin/owner:customer/2023-11-14T09:00";
    let insert = "INSERT INTO outbox (key, customer, rule, kind, action, recipient, recipient_domain, nominal,
                  occasion_date, timezone, due_utc, deadline_utc, message_id, state, created_utc, updated_utc)
                  VALUES ('acme/checkin/owner:customer/2023-11-14T09:00', 'acme', 'checkin', 'every', 'task',
                  'owner:customer', 'example.com', '2023-11-14T09:00', '2023-11-14', 'UTC', 1, 2, '<m@x>',
                  'accepted', 0, 0)";
    if db.url().starts_with("sqlite") {
        let opts: sqlx::sqlite::SqliteConnectOptions = db.url().parse().unwrap();
        let mut conn = sqlx::SqliteConnection::connect_with(&opts.create_if_missing(true)).await.unwrap();
        first.run(&mut conn).await.unwrap();
        sqlx::query(insert).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
        first.run(&mut conn).await.unwrap();
        sqlx::query(insert).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    }
    let store = db.connect().await;
    let rows = all_rows(&store).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].key.to_string(), "acme/checkin/owner/2023-11-14T09:00");
    assert_eq!(rows[0].key.recipient.to_string(), "owner");
    assert_ne!(rows[0].key.to_string(), old_key);
    let mut again = item("x", UnixSecs(1), UnixSecs(2));
    again.key = "acme/checkin/owner/2023-11-14T09:00".parse().unwrap();
    assert_eq!(store.materialize(&[again], UnixSecs(0)).await.unwrap().inserted, 0, "the migrated row is found");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_old_whole_customer_task_key_is_migrated_on_sqlite() {
    an_old_whole_customer_task_key_is_migrated(&TestDb::sqlite().await, sqlx::migrate!("./migrations/sqlite")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_old_whole_customer_task_key_is_migrated_on_postgres() {
    an_old_whole_customer_task_key_is_migrated(&TestDb::postgres().await, sqlx::migrate!("./migrations/postgres"))
        .await;
}

/// The outbox key of test row `name`: the birthday of contact `name` of `acme`.
fn key(name: &str) -> OutboxKey {
    format!("acme/birthday/contact:{name}/2023-11-14").parse().unwrap()
}

/// The test row name of `key` (see [`key`]).
fn name(key: &OutboxKey) -> &str {
    key.recipient.contact().unwrap_or("?")
}

/// A due, pending, at-least-once item.
fn item(name: &str, due: UnixSecs, deadline: UnixSecs) -> NewItem {
    NewItem {
        key: key(name),
        kind: TriggerKind::Birthday,
        action: Action::Email,
        delivery: DeliveryPolicy::AtLeastOnce,
        state: RowState::Pending,
        reason: None,
        recipient_domain: "example.com".to_string(),
        occasion_date: chrono::NaiveDate::from_ymd_opt(2023, 11, 14).unwrap(),
        years: Some(40),
        timezone: "Europe/Berlin".to_string(),
        due,
        deadline,
        message_id: format!("<{name}@contactplan.test>"),
        facts: None,
        priority: 0,
    }
}

fn at_most_once(mut it: NewItem) -> NewItem {
    it.delivery = DeliveryPolicy::AtMostOnce;
    it
}

fn missed(mut it: NewItem) -> NewItem {
    it.state = RowState::Missed;
    it.reason = Some("due while no daemon ran".to_string());
    it
}

async fn all_rows(store: &Store) -> Vec<Row> {
    store.rows(None, 10_000).await.unwrap()
}

async fn row(store: &Store, n: &str) -> Row {
    all_rows(store).await.into_iter().find(|r| name(&r.key) == n).unwrap_or_else(|| panic!("no row {n}"))
}

fn keys(claimed: &[Claimed]) -> Vec<&str> {
    claimed.iter().map(|c| name(&c.key)).collect()
}

fn accepted(reply: &str) -> Outcome {
    Outcome::Accepted { reply: reply.to_string() }
}

async fn materialize_is_idempotent(store: Store) {
    let items = vec![item("a", T, T + 3600), item("b", T + 60, T + 3600), missed(item("c", T - 7200, T - 3600))];
    assert_eq!(
        store.materialize(&items, T).await.unwrap(),
        Materialized { inserted: 2, missed: 1, missed_kinds: vec![TriggerKind::Birthday] }
    );
    assert_eq!(store.materialize(&items, T).await.unwrap(), Materialized::default());

    // An existing key is left untouched even when the new item differs.
    let mut changed = item("a", T + 999, T + 9999);
    changed.message_id = "<other@contactplan.test>".to_string();
    // A key repeated within one call is written once (the first item wins).
    let mut second_d = item("d", T + 5, T + 3600);
    second_d.message_id = "<second@contactplan.test>".to_string();
    let batch = vec![changed, item("d", T + 5, T + 3600), second_d];
    assert_eq!(store.materialize(&batch, T + 1).await.unwrap(), Materialized { inserted: 1, ..Default::default() });

    let rows = all_rows(&store).await;
    assert_eq!(rows.len(), 4, "{rows:?}");
    let a = row(&store, "a").await;
    assert_eq!((a.state, a.due, a.message_id.as_str()), (RowState::Pending, T, "<a@contactplan.test>"));
    assert_eq!(a.attempts, 0);
    assert_eq!(a.message_id, "<a@contactplan.test>");
    assert_eq!((a.key.customer.as_str(), a.key.rule.as_str(), a.kind), ("acme", "birthday", TriggerKind::Birthday));
    assert_eq!(row(&store, "d").await.message_id, "<d@contactplan.test>");
    let c = row(&store, "c").await;
    assert_eq!((c.state.code(), c.reason.as_deref()), ("missed", Some("due while no daemon ran")));
    assert_eq!(
        store.counts().await.unwrap(),
        vec![(RowState::Missed, 1), (RowState::Pending, 3)],
        "counts by state, ordered by state"
    );
}

async fn claim_takes_only_due_rows_in_due_order_up_to_the_limit(store: Store) {
    let items = vec![
        item("due-10", T - 10, T + 3600),
        item("due-30", T - 30, T + 3600),
        item("future", T + 10, T + 3600),
        item("deadline-now", T - 50, T), // deadline must be later than now
        item("deadline-past", T - 60, T - 1),
        item("due-40", T - 40, T + 3600),
        item("due-now", T, T + 3600),
        missed(item("missed", T - 70, T + 3600)),
    ];
    store.materialize(&items, T - 100).await.unwrap();

    let first = store.claim(T, 2, "node-a", 300).await.unwrap();
    assert_eq!(keys(&first), ["due-40", "due-30"], "the two earliest due rows, in due order");
    let c = &first[0];
    assert_eq!((c.attempts, c.fence, c.due, c.deadline), (1, 1, T - 40, T + 3600));
    assert_eq!(c.key, key("due-40"), "the key is read back whole");
    assert_eq!((c.kind, c.occasion_date.to_string(), c.years), (TriggerKind::Birthday, "2023-11-14".into(), Some(40)));
    assert_eq!((c.message_id.as_str(), c.delivery), ("<due-40@contactplan.test>", DeliveryPolicy::AtLeastOnce));
    assert_eq!(row(&store, "due-40").await.state, RowState::Claimed);

    let rest = store.claim(T, 10, "node-a", 300).await.unwrap();
    assert_eq!(keys(&rest), ["due-10", "due-now"]);
    assert!(store.claim(T, 10, "node-a", 300).await.unwrap().is_empty());

    let later = store.claim(T + 10, 10, "node-a", 300).await.unwrap();
    assert_eq!(keys(&later), ["future"]);
    for key in ["deadline-now", "deadline-past", "missed"] {
        assert_ne!(row(&store, key).await.state, RowState::Claimed, "{key} must not be claimed");
    }
}

async fn claimed_rows_are_not_claimed_again(store: Store) {
    let items: Vec<NewItem> = (0..10).map(|i| item(&format!("k{i}"), T - 100 + i, T + 3600)).collect();
    store.materialize(&items, T).await.unwrap();
    let a = store.claim(T, 4, "node-a", 300).await.unwrap();
    let b = store.claim(T, 4, "node-b", 300).await.unwrap();
    let c = store.claim(T, 4, "node-c", 300).await.unwrap();
    assert_eq!((a.len(), b.len(), c.len()), (4, 4, 2));
    let ids: HashSet<i64> = a.iter().chain(&b).chain(&c).map(|c| c.id).collect();
    assert_eq!(ids.len(), 10);
    assert!(store.claim(T + 1000, 4, "node-d", 300).await.unwrap().is_empty(), "leases hold");
    // A lease that has not expired is not taken over.
    assert_eq!(store.recover_expired_leases().await.unwrap(), Recovered::default());
}

async fn retry_waits_for_next_attempt(store: Store) {
    store.materialize(&[item("r", T - 10, T + 3600)], T).await.unwrap();
    let c = store.claim(T, 10, "node-a", 300).await.unwrap().remove(0);
    let retry = Outcome::Retry { at: T + 60, reason: "451 greylisted".to_string() };
    assert!(store.finish(c.id, c.fence, &retry, T).await.unwrap());
    let r = row(&store, "r").await;
    assert_eq!((r.state.code(), r.reason.as_deref(), r.attempts), ("retry", Some("451 greylisted"), 1));
    assert_eq!(store.next_due().await.unwrap(), Some(T + 60));

    assert!(store.claim(T, 10, "node-a", 300).await.unwrap().is_empty());
    assert!(store.claim(T + 59, 10, "node-a", 300).await.unwrap().is_empty());
    let again = store.claim(T + 60, 10, "node-a", 300).await.unwrap();
    assert_eq!(keys(&again), ["r"]);
    assert_eq!((again[0].attempts, again[0].fence), (2, 2));
    assert_eq!(again[0].message_id, c.message_id, "a retry resends with the same Message-ID");
}

async fn finish_with_current_fence_records_the_outcome(store: Store) {
    let items: Vec<NewItem> =
        ["ok", "fail", "supp", "unk"].iter().enumerate().map(|(i, k)| item(k, T - 10 + i as i64, T + 3600)).collect();
    store.materialize(&items, T).await.unwrap();
    let claimed = store.claim(T, 10, "node-a", 300).await.unwrap();
    assert_eq!(keys(&claimed), ["ok", "fail", "supp", "unk"]);
    let outcomes = [
        accepted("250 2.0.0 Ok: queued as 4711"),
        Outcome::Failed { reason: "550 5.1.1 no such user".to_string() },
        Outcome::Suppressed { reason: "customer removed".to_string() },
        Outcome::Unknown { reason: "connection lost after DATA".to_string() },
    ];
    for (c, o) in claimed.iter().zip(&outcomes) {
        assert!(store.finish(c.id, c.fence, o, T + 1).await.unwrap(), "{}", c.key);
    }
    let ok = row(&store, "ok").await;
    assert_eq!(
        (ok.state.code(), ok.smtp_reply.as_deref(), ok.reason.as_deref()),
        ("accepted", Some("250 2.0.0 Ok: queued as 4711"), None)
    );
    assert_eq!(ok.attempts, 1);
    let fail = row(&store, "fail").await;
    assert_eq!(
        (fail.state.code(), fail.reason.as_deref(), fail.smtp_reply.as_deref()),
        ("failed", Some("550 5.1.1 no such user"), None)
    );
    let supp = row(&store, "supp").await;
    assert_eq!((supp.state.code(), supp.reason.as_deref()), ("suppressed", Some("customer removed")));
    let unk = row(&store, "unk").await;
    assert_eq!((unk.state.code(), unk.reason.as_deref()), ("unknown", Some("connection lost after DATA")));

    // Finished rows are out of the open set and cannot be finished twice.
    assert!(!store.finish(claimed[0].id, claimed[0].fence, &accepted("250 again"), T + 2).await.unwrap());
    assert_eq!(row(&store, "ok").await.smtp_reply.as_deref(), Some("250 2.0.0 Ok: queued as 4711"));
    assert!(store.claim(T + 10, 10, "node-a", 300).await.unwrap().is_empty());
    assert_eq!(store.next_due().await.unwrap(), None);
}

async fn finish_with_stale_fence_changes_nothing(store: Store) {
    store.materialize(&[item("s", T - 10, T + 3600)], T).await.unwrap();
    // The first sender's lease expires (on the database clock) and the row is taken over.
    let old = store.claim(T, 1, "node-a", -1).await.unwrap().remove(0);
    let started = store.finish_batch(&[], &[(old.id, old.fence)], T, -1).await.unwrap().started;
    assert_eq!(started, vec![old.id], "claimed → sending");
    assert_eq!(store.recover_expired_leases().await.unwrap(), Recovered { released: 0, retried: 1, unknown: 0 });
    let new = store.claim(T, 1, "node-b", 300).await.unwrap().remove(0);
    assert_eq!((new.id, new.fence, new.attempts), (old.id, old.fence + 1, 2));

    let before = row(&store, "s").await;
    assert!(!store.finish(old.id, old.fence, &accepted("250 late"), T + 5).await.unwrap(), "stale fence");
    assert!(!store.finish(old.id, new.fence + 1, &accepted("250 future"), T + 5).await.unwrap(), "unknown fence");
    let after = row(&store, "s").await;
    assert_eq!((after.state.code(), after.smtp_reply.as_deref(), after.attempts), ("claimed", None, 2));
    assert_eq!(after.reason, before.reason);

    assert!(store.finish(new.id, new.fence, &accepted("250 ok"), T + 6).await.unwrap());
    assert_eq!(row(&store, "s").await.state, RowState::Accepted);
}

async fn finish_batch_records_outcomes_that_hold_their_fence(store: Store) {
    let items: Vec<NewItem> = (0..4).map(|i| item(&format!("b{i}"), T - 10 + i, T + 3600)).collect();
    store.materialize(&items, T).await.unwrap();
    let c = store.claim(T, 10, "node-a", 300).await.unwrap();
    assert_eq!(c.len(), 4);
    let batch = vec![
        (c[0].id, c[0].fence, accepted("250 one")),
        (c[1].id, c[1].fence, Outcome::Retry { at: T + 300, reason: "421 try later".to_string() }),
        (c[2].id, c[2].fence + 7, accepted("250 stale")),
        (c[3].id, c[3].fence, Outcome::Failed { reason: "550 rejected".to_string() }),
    ];
    assert_eq!(store.finish_batch(&batch, &[], T + 1, 300).await.unwrap().finished, 3);
    assert_eq!(store.finish_batch(&[], &[], T + 1, 300).await.unwrap().finished, 0);

    let b0 = row(&store, "b0").await;
    assert_eq!((b0.state.code(), b0.smtp_reply.as_deref()), ("accepted", Some("250 one")));
    let b1 = row(&store, "b1").await;
    assert_eq!((b1.state.code(), b1.reason.as_deref()), ("retry", Some("421 try later")));
    let b2 = row(&store, "b2").await;
    assert_eq!((b2.state.code(), b2.smtp_reply.as_deref()), ("claimed", None));
    let b3 = row(&store, "b3").await;
    assert_eq!((b3.state.code(), b3.reason.as_deref()), ("failed", Some("550 rejected")));
    // Applying the same batch again changes nothing: no row is still `sending` under those fences
    // except b2, whose fence is wrong.
    assert_eq!(store.finish_batch(&batch, &[], T + 2, 300).await.unwrap().finished, 0);
}

async fn release_puts_the_row_back_without_counting_an_attempt(store: Store) {
    store.materialize(&[item("rel", T - 10, T + 3600)], T).await.unwrap();
    let c = store.claim(T, 1, "node-a", 300).await.unwrap().remove(0);
    assert_eq!(row(&store, "rel").await.attempts, 1);

    store.release(&[(c.id, c.fence + 1)]).await.unwrap(); // stale fence: ignored
    assert_eq!(row(&store, "rel").await.state, RowState::Claimed);

    store.release(&[(c.id, c.fence)]).await.unwrap();
    let r = row(&store, "rel").await;
    assert_eq!((r.state.code(), r.attempts), ("pending", 0));
    assert_eq!(store.next_due().await.unwrap(), Some(T - 10));

    let again = store.claim(T, 1, "node-b", 300).await.unwrap().remove(0);
    assert_eq!((again.id, again.attempts, again.fence), (c.id, 1, c.fence + 1));
    // The old fence can no longer release or finish it.
    store.release(&[(c.id, c.fence)]).await.unwrap();
    assert_eq!(row(&store, "rel").await.state, RowState::Claimed);
    assert!(!store.finish(c.id, c.fence, &accepted("250"), T).await.unwrap());
}

async fn expire_marks_overdue_open_rows_missed(store: Store) {
    let items = vec![
        item("pending-overdue", T - 100, T - 1),
        item("pending-at-deadline", T - 100, T),
        item("retry-overdue", T - 300, T - 50),
        item("sending-overdue", T - 400, T - 60),
        item("pending-ok", T - 100, T + 1),
        missed(item("already-missed", T - 500, T - 400)),
    ];
    store.materialize(&items, T - 1000).await.unwrap();
    // Put "retry-overdue" into retry and "sending-overdue" into sending before their deadlines.
    let claimed = store.claim(T - 200, 10, "node-a", 3600).await.unwrap();
    assert_eq!(keys(&claimed), ["sending-overdue", "retry-overdue"]);
    let retry = Outcome::Retry { at: T - 100, reason: "451".to_string() };
    assert!(store.finish(claimed[1].id, claimed[1].fence, &retry, T - 200).await.unwrap());
    let started = store.finish_batch(&[], &[(claimed[0].id, claimed[0].fence)], T - 200, 3600).await.unwrap().started;
    assert_eq!(started, vec![claimed[0].id]);

    let mut expired = store.expire(T).await.unwrap();
    expired.sort_by_key(|r| r.id);
    let expired_keys: Vec<&str> = expired.iter().map(|r| name(&r.key)).collect();
    assert_eq!(expired_keys, ["pending-overdue", "pending-at-deadline", "retry-overdue"]);
    for r in &expired {
        assert_eq!((r.state.code(), r.reason.as_deref()), ("missed", Some("deadline passed before it could be sent")));
    }
    for key in ["pending-overdue", "pending-at-deadline", "retry-overdue"] {
        assert_eq!(row(&store, key).await.state, RowState::Missed, "{key}");
    }
    assert_eq!(
        row(&store, "sending-overdue").await.state,
        RowState::Sending,
        "a row being sent is its sender's to finish"
    );
    assert_eq!(row(&store, "pending-ok").await.state, RowState::Pending);
    assert!(store.expire(T).await.unwrap().is_empty(), "expire is idempotent");
}

async fn a_start_renews_the_lease_for_the_whole_send(store: Store) {
    store.materialize(&[item("late-in-batch", T - 10, T + 3600)], T).await.unwrap();
    // Claimed long ago in a big batch: the claim's lease has run out by the time its turn comes.
    let c = store.claim(T, 1, "node-a", -1).await.unwrap().remove(0);
    assert_eq!(store.finish_batch(&[], &[(c.id, c.fence)], T, 300).await.unwrap().started, vec![c.id]);
    // The send starts with a fresh lease: nobody takes the row over mid-send.
    assert_eq!(store.recover_expired_leases().await.unwrap(), Recovered::default());
    assert!(store.claim(T, 1, "node-b", 300).await.unwrap().is_empty());
    assert!(store.finish(c.id, c.fence, &accepted("250"), T + 1).await.unwrap());
}

async fn lease_expires_in_counts_down_to_the_earliest_held_lease(store: Store) {
    assert_eq!(store.lease_expires_in().await.unwrap(), None, "no lease held");
    store.materialize(&[item("a", T - 20, T + 3600), item("b", T - 10, T + 3600)], T).await.unwrap();
    let long = store.claim(T, 1, "node-a", 300).await.unwrap();
    let in_secs = store.lease_expires_in().await.unwrap().unwrap();
    assert!((299..=300).contains(&in_secs), "{in_secs}");
    // A sending row's lease counts too, and the earliest one decides.
    let short = store.claim(T, 1, "node-b", 300).await.unwrap();
    store.finish_batch(&[], &[(short[0].id, short[0].fence)], T, 45).await.unwrap();
    let in_secs = store.lease_expires_in().await.unwrap().unwrap();
    assert!((44..=45).contains(&in_secs), "{in_secs}");
    // Finished rows hold no lease.
    store.finish(short[0].id, short[0].fence, &accepted("250"), T).await.unwrap();
    store.finish(long[0].id, long[0].fence, &accepted("250"), T).await.unwrap();
    assert_eq!(store.lease_expires_in().await.unwrap(), None);
}

async fn renew_leases_extends_only_the_owners_open_rows(store: Store) {
    let items = vec![item("a", T - 30, T + 3600), item("b", T - 20, T + 3600), item("c", T - 10, T + 3600)];
    store.materialize(&items, T).await.unwrap();
    // Leases of -1 s: ended already, by the database clock.
    let mine = store.claim(T, 2, "node-a", -1).await.unwrap();
    assert_eq!(keys(&mine), ["a", "b"]);
    store.finish_batch(&[], &[(mine[1].id, mine[1].fence)], T, -1).await.unwrap();
    let theirs = store.claim(T, 1, "node-b", -1).await.unwrap();
    // The live owner renews: its claimed and its sending row keep their owner; the other
    // owner's row is taken over.
    let batch: Vec<i64> = mine.iter().map(|c| c.id).collect();
    assert_eq!(store.renew_leases("node-a", &batch, 45).await.unwrap(), 2);
    assert_eq!(store.recover_expired_leases().await.unwrap(), Recovered { released: 1, retried: 0, unknown: 0 });
    assert_eq!(row(&store, "c").await.state, RowState::Pending);
    assert_eq!((row(&store, "a").await.state.code(), row(&store, "b").await.state.code()), ("claimed", "sending"));
    let in_secs = store.lease_expires_in().await.unwrap().unwrap();
    assert!((44..=45).contains(&in_secs), "{in_secs}");
    // The renewed rows are still the owner's to finish; finished rows are not renewed.
    for c in &mine {
        assert!(store.finish(c.id, c.fence, &accepted("250"), T).await.unwrap());
    }
    assert!(!store.finish(theirs[0].id, theirs[0].fence, &accepted("250"), T).await.unwrap());
    assert_eq!(store.renew_leases("node-a", &batch, 45).await.unwrap(), 0);
    // Only the rows named are renewed: another claimed row of the same owner is not.
    let other = store.materialize(&[item("d", T - 5, T + 3600)], T).await.unwrap();
    assert_eq!(other.inserted, 1);
    let d = store.claim(T, 1, "node-a", -1).await.unwrap();
    assert_eq!(store.renew_leases("node-a", &batch, 45).await.unwrap(), 0);
    assert_eq!(store.recover_expired_leases().await.unwrap().released, 1, "{d:?} was not renewed");
}

async fn abandon_gives_rows_up_by_state_and_policy_and_respects_the_fence(store: Store) {
    let items = vec![
        item("claimed", T - 30, T + 3600),
        item("alo", T - 20, T + 3600),
        at_most_once(item("amo", T - 10, T + 3600)),
        item("theirs", T - 5, T + 3600),
    ];
    store.materialize(&items, T).await.unwrap();
    let mine = store.claim(T, 3, "node-a", 300).await.unwrap();
    assert_eq!(keys(&mine), ["claimed", "alo", "amo"]);
    let started = store.finish_batch(&[], &[(mine[1].id, mine[1].fence), (mine[2].id, mine[2].fence)], T, 300).await;
    assert_eq!(started.unwrap().started.len(), 2);
    let theirs = store.claim(T, 1, "node-b", 300).await.unwrap();
    let mut rows: Vec<(i64, i64)> = mine.iter().map(|c| (c.id, c.fence)).collect();
    // A stale fence: another claim holds the row now; it must stay untouched.
    rows.push((theirs[0].id, theirs[0].fence - 1));
    let r = store.abandon(&rows, T, T + 30).await.unwrap();
    assert_eq!(r, Recovered { released: 1, retried: 1, unknown: 1 });
    let claimed = row(&store, "claimed").await;
    assert_eq!((claimed.state.code(), claimed.attempts), ("pending", 0), "never attempted: the attempt is undone");
    let alo = row(&store, "alo").await;
    assert_eq!(alo.state, RowState::Retry);
    assert!(alo.reason.as_deref().unwrap().contains("same Message-ID"), "{:?}", alo.reason);
    assert_eq!(row(&store, "amo").await.state, RowState::Unknown);
    assert_eq!(row(&store, "theirs").await.state, RowState::Claimed, "another owner's claim is not given up");
    assert_eq!(store.abandon(&rows, T, T + 30).await.unwrap(), Recovered::default(), "settled rows stay settled");
    // Given up at once: the untouched row is claimable now, the resend after its pause, not
    // after a lease.
    assert_eq!(keys(&store.claim(T, 10, "node-c", 300).await.unwrap()), ["claimed"]);
    assert_eq!(keys(&store.claim(T + 30, 10, "node-c", 300).await.unwrap()), ["alo"]);
}

async fn recover_expired_leases_by_delivery_policy(store: Store) {
    let items = vec![
        item("alo", T - 30, T + 3600),
        at_most_once(item("amo", T - 20, T + 3600)),
        item("held", T - 10, T + 3600),
        at_most_once(item("amo-held", T - 5, T + 3600)),
    ];
    store.materialize(&items, T).await.unwrap();
    // Lease of -1 s: already expired by the database clock, whatever the node clock says.
    let crashed = store.claim(T, 2, "node-a", -1).await.unwrap();
    assert_eq!(keys(&crashed), ["alo", "amo"]);
    let held = store.claim(T, 2, "node-b", 300).await.unwrap();
    assert_eq!(keys(&held), ["held", "amo-held"]);
    // Both crashed rows had started their SMTP transaction (and their send lease ran out too);
    // the held ones started with a live lease.
    let starts = |rows: &[Claimed]| rows.iter().map(|c| (c.id, c.fence)).collect::<Vec<_>>();
    assert_eq!(store.finish_batch(&[], &starts(&crashed), T, -1).await.unwrap().started.len(), 2);
    assert_eq!(store.finish_batch(&[], &starts(&held), T, 300).await.unwrap().started.len(), 2);

    assert_eq!(store.recover_expired_leases().await.unwrap(), Recovered { released: 0, retried: 1, unknown: 1 });
    let alo = row(&store, "alo").await;
    assert_eq!(alo.state, RowState::Retry);
    assert!(alo.reason.as_deref().unwrap().contains("same Message-ID"), "{:?}", alo.reason);
    let amo = row(&store, "amo").await;
    assert_eq!(amo.state, RowState::Unknown);
    assert!(amo.reason.as_deref().unwrap().contains("at_most_once"), "{:?}", amo.reason);
    assert_eq!(row(&store, "held").await.state, RowState::Sending);
    assert_eq!(row(&store, "amo-held").await.state, RowState::Sending);
    assert_eq!(store.recover_expired_leases().await.unwrap(), Recovered::default());

    // The at-least-once row is resent at once, with the same Message-ID; the unknown one never.
    let resent = store.claim(T, 10, "node-c", 300).await.unwrap();
    assert_eq!(keys(&resent), ["alo"]);
    assert_eq!((resent[0].message_id.as_str(), resent[0].attempts), ("<alo@contactplan.test>", 2));
    let unreported: Vec<String> =
        store.unreported(10).await.unwrap().into_iter().map(|r| name(&r.key).to_string()).collect();
    assert_eq!(unreported, ["amo"]);
    // The live senders still hold their fences.
    for c in &held {
        assert!(store.finish(c.id, c.fence, &accepted("250"), T + 1).await.unwrap());
    }

    // A claimed row that never started its transaction goes back to `pending` under either
    // policy: it was never attempted, so even at_most_once may send it.
    store.materialize(&[at_most_once(item("amo-untouched", T - 1, T + 3600))], T).await.unwrap();
    let untouched = store.claim(T, 1, "node-d", -1).await.unwrap();
    assert_eq!(keys(&untouched), ["amo-untouched"]);
    assert_eq!(store.recover_expired_leases().await.unwrap(), Recovered { released: 1, retried: 0, unknown: 0 });
    let r = row(&store, "amo-untouched").await;
    assert_eq!((r.state.code(), r.attempts), ("pending", 0));
    store.materialize(&[], T).await.unwrap();
}

async fn unreported_and_mark_reported(store: Store) {
    let items = vec![
        item("acc", T - 40, T + 3600),
        item("fail", T - 30, T + 3600),
        missed(item("miss", T - 9000, T - 8000)),
        item("unk", T - 20, T + 3600),
        item("supp", T - 10, T + 3600),
    ];
    store.materialize(&items, T).await.unwrap();
    let c = store.claim(T, 10, "node-a", 300).await.unwrap();
    assert_eq!(keys(&c), ["acc", "fail", "unk", "supp"]);
    let batch = vec![
        (c[0].id, c[0].fence, accepted("250")),
        (c[1].id, c[1].fence, Outcome::Failed { reason: "550".to_string() }),
        (c[2].id, c[2].fence, Outcome::Unknown { reason: "lost".to_string() }),
        (c[3].id, c[3].fence, Outcome::Suppressed { reason: "removed".to_string() }),
    ];
    assert_eq!(store.finish_batch(&batch, &[], T + 1, 300).await.unwrap().finished, 4);

    let all = store.unreported(10).await.unwrap();
    let all_keys: Vec<&str> = all.iter().map(|r| name(&r.key)).collect();
    assert_eq!(all_keys, ["fail", "miss", "unk"], "failed, missed and unknown, oldest (by id) first");
    let first_two = store.unreported(2).await.unwrap();
    assert_eq!(first_two.iter().map(|r| r.id).collect::<Vec<_>>(), [all[0].id, all[1].id]);

    store.mark_reported(&[all[0].id, all[1].id], T + 2).await.unwrap();
    store.mark_reported(&[], T + 2).await.unwrap();
    let left: Vec<String> = store.unreported(10).await.unwrap().into_iter().map(|r| name(&r.key).to_string()).collect();
    assert_eq!(left, ["unk"]);
    store.mark_reported(&[all[2].id], T + 3).await.unwrap();
    assert!(store.unreported(10).await.unwrap().is_empty());
    assert_eq!(row(&store, "fail").await.state, RowState::Failed, "reporting does not change the state");
}

async fn next_due_is_the_earliest_open_instant(store: Store) {
    assert_eq!(store.next_due().await.unwrap(), None);
    store.materialize(&[item("late", T + 100, T + 3600), item("early", T - 10, T + 3600)], T).await.unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(T - 10));

    let c = store.claim(T, 1, "node-a", 300).await.unwrap().remove(0);
    assert_eq!(name(&c.key), "early");
    assert_eq!(store.next_due().await.unwrap(), Some(T + 100), "a claimed row is not open");
    let retry = Outcome::Retry { at: T + 50, reason: "451".to_string() };
    assert!(store.finish(c.id, c.fence, &retry, T).await.unwrap());
    assert_eq!(store.next_due().await.unwrap(), Some(T + 50), "a retry is due at its next attempt");

    store.materialize(&[item("mid", T + 20, T + 3600), missed(item("gone", T - 500, T - 400))], T).await.unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(T + 20), "missed rows are not open");
}

async fn get_and_set_value(store: Store) {
    assert_eq!(store.get_value("materialized_until").await.unwrap(), None);
    store.set_value("materialized_until", "2024-01-01T00:00:00Z").await.unwrap();
    assert_eq!(store.get_value("materialized_until").await.unwrap().as_deref(), Some("2024-01-01T00:00:00Z"));
    store.set_value("materialized_until", "2024-02-01T00:00:00Z").await.unwrap();
    assert_eq!(store.get_value("materialized_until").await.unwrap().as_deref(), Some("2024-02-01T00:00:00Z"));
    store.set_value("other", "").await.unwrap();
    assert_eq!(store.get_value("other").await.unwrap().as_deref(), Some(""));
    assert_eq!(store.get_value("materialized_until").await.unwrap().as_deref(), Some("2024-02-01T00:00:00Z"));
}

async fn rows_filters_by_state(store: Store) {
    let items: Vec<NewItem> = (0..5).map(|i| item(&format!("r{i}"), T + 50 - 10 * i, T + 3600)).collect();
    store.materialize(&items, T).await.unwrap();
    store.materialize(&[missed(item("m", T - 5000, T - 4000))], T).await.unwrap();
    let all: Vec<String> = all_rows(&store).await.into_iter().map(|r| name(&r.key).to_string()).collect();
    assert_eq!(all, ["m", "r4", "r3", "r2", "r1", "r0"], "ordered by due time");
    let pending: Vec<String> =
        store.rows(Some(RowState::Pending), 3).await.unwrap().into_iter().map(|r| name(&r.key).to_string()).collect();
    assert_eq!(pending, ["r4", "r3", "r2"]);
    let missed_rows = store.rows(Some(RowState::Missed), 10).await.unwrap();
    assert_eq!(missed_rows.len(), 1);
    assert!(store.rows(Some(RowState::Accepted), 10).await.unwrap().is_empty());
}

/// Four daemons (four separate stores on one database) claim from 2,000 due rows in a loop
/// until none is left: every row is claimed exactly once in total.
async fn concurrent_claimers_take_every_row_exactly_once(db: &TestDb) {
    const ROWS: usize = 2000;
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(db.connect().await);
    }
    let items: Vec<NewItem> =
        (0..ROWS).map(|i| item(&format!("c{i:05}"), T - 3600 + (i as i64 % 97), T + 3600)).collect();
    assert_eq!(
        stores[0].materialize(&items, T).await.unwrap(),
        Materialized { inserted: ROWS as u64, ..Default::default() }
    );

    let mut tasks = tokio::task::JoinSet::new();
    for (n, store) in stores.into_iter().enumerate() {
        tasks.spawn(async move {
            let owner = format!("node-{n}");
            let mut mine = Vec::new();
            loop {
                let batch = store.claim(T, 25, &owner, 300).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                for c in &batch {
                    assert_eq!((c.fence, c.attempts), (1, 1), "{} was claimed before", c.key);
                }
                let outcomes: Vec<(i64, i64, Outcome)> =
                    batch.iter().map(|c| (c.id, c.fence, accepted(&format!("250 {owner}")))).collect();
                assert_eq!(store.finish_batch(&outcomes, &[], T, 300).await.unwrap().finished, batch.len() as u64);
                mine.extend(batch.iter().map(|c| c.id));
            }
            (store, mine)
        });
    }
    let mut claimed = Vec::new();
    let mut per_node = Vec::new();
    let mut store = None;
    while let Some(done) = tasks.join_next().await {
        let (s, mine) = done.unwrap();
        per_node.push(mine.len());
        claimed.extend(mine);
        store = Some(s);
    }
    let unique: HashSet<i64> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), ROWS, "claims in total (per node: {per_node:?})");
    assert_eq!(unique.len(), ROWS, "distinct rows claimed");
    let store = store.unwrap();
    assert_eq!(store.counts().await.unwrap(), vec![(RowState::Accepted, ROWS as i64)]);
    assert!(all_rows(&store).await.iter().all(|r| r.attempts == 1));
}

async fn purge_finished_deletes_only_old_reported_finished_rows(store: Store) {
    let items = vec![
        item("acc", T - 40, T + 3600),
        item("fail", T - 30, T + 3600),
        item("unk", T - 20, T + 3600),
        item("supp", T - 10, T + 3600),
        item("late", T - 5, T + 90_000),
        missed(item("miss", T - 9000, T - 8000)),
        item("open", T + 100, T + 3600),
    ];
    store.materialize(&items, T).await.unwrap();
    let c = store.claim(T, 10, "node-a", 300).await.unwrap();
    assert_eq!(keys(&c), ["acc", "fail", "unk", "supp", "late"]);
    let batch = vec![
        (c[0].id, c[0].fence, accepted("250")),
        (c[1].id, c[1].fence, Outcome::Failed { reason: "550".to_string() }),
        (c[2].id, c[2].fence, Outcome::Unknown { reason: "lost".to_string() }),
        (c[3].id, c[3].fence, Outcome::Suppressed { reason: "removed".to_string() }),
        (c[4].id, c[4].fence, accepted("250")),
    ];
    store.finish_batch(&batch, &[], T + 1, 300).await.unwrap();
    store.mark_reported(&[c[1].id], T + 2).await.unwrap();

    let remaining =
        |rows: Vec<Row>| -> HashSet<String> { rows.into_iter().map(|r| name(&r.key).to_string()).collect() };
    assert_eq!(store.purge_finished(T).await.unwrap(), 0, "nothing is older than its deadline yet");
    // After every deadline but `late`'s: accepted, suppressed and the reported failure go;
    // unreported failures (unknown, missed), open rows and rows still before their deadline stay.
    assert_eq!(store.purge_finished(T + 3700).await.unwrap(), 3);
    let left = remaining(all_rows(&store).await);
    assert_eq!(left, HashSet::from(["unk", "miss", "open", "late"].map(String::from)));
    assert_eq!(store.purge_finished(T + 3700).await.unwrap(), 0, "idempotent");

    let unreported: Vec<i64> = store.unreported(10).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(unreported.len(), 2);
    store.mark_reported(&unreported, T + 3).await.unwrap();
    assert_eq!(store.purge_finished(T + 3700).await.unwrap(), 2, "reported rows may go");
    assert_eq!(remaining(all_rows(&store).await), HashSet::from(["open", "late"].map(String::from)));
    assert_eq!(store.purge_finished(T + 100_000).await.unwrap(), 1, "late goes after its deadline; open never");
    assert_eq!(remaining(all_rows(&store).await), HashSet::from(["open".to_string()]));
}

async fn backlog_counts_open_rows_and_finds_the_next_due(store: Store) {
    let empty = store.backlog(T).await.unwrap();
    let zero: Vec<(RowState, i64)> =
        [RowState::Pending, RowState::Retry, RowState::Claimed, RowState::Sending].map(|s| (s, 0)).to_vec();
    assert_eq!(empty.depth, zero);
    assert_eq!((empty.oldest_due, empty.next), (None, None));

    let items = vec![
        item("first", T - 100, T + 3600),
        item("second", T - 50, T + 3600),
        item("future", T + 500, T + 3600),
        missed(item("gone", T - 9000, T - 8000)),
    ];
    store.materialize(&items, T).await.unwrap();
    assert_eq!(keys(&store.claim(T, 1, "node-a", 300).await.unwrap()), ["first"]);
    let b = store.backlog(T).await.unwrap();
    let depth = vec![(RowState::Pending, 2), (RowState::Retry, 0), (RowState::Claimed, 1), (RowState::Sending, 0)];
    assert_eq!(b.depth, depth);
    assert_eq!(b.oldest_due, Some(T - 100), "a claimed row is still waiting to be sent");
    let next = b.next.unwrap();
    assert_eq!(
        (name(&next.key), next.kind, next.due_utc, next.state),
        ("second", TriggerKind::Birthday, T - 50, RowState::Pending)
    );
}

async fn reconcile_writes_only_rows_still_in_the_state_it_decided_on(store: Store) {
    use contactplan::store::{Change, Reconciled, Retiming};
    let items = vec![
        item("open", T + 100, T + 3600),
        item("claimed", T - 10, T + 3600),
        item("dropped", T - 5, T + 3600),
        item("old", T - 7200, T - 3600),
        at_most_once(item("other", T + 100, T + 3600)),
    ];
    store.materialize(&items, T).await.unwrap();
    let claimed = store.claim(T, 2, "node-a", 300).await.unwrap();
    assert_eq!(keys(&claimed), ["claimed", "dropped"]);
    // Dropped at send time because its contact left: suppressed by the plans.
    let dropped = &claimed[1];
    let gone = Outcome::Suppressed { reason: "contact `dropped` is no longer in the plan of `acme`".into() };
    assert!(store.finish(dropped.id, dropped.fence, &gone, T).await.unwrap());

    let listed: Vec<(String, RowState)> =
        store.reconcilable(T, 0, 100).await.unwrap().into_iter().map(|r| (name(&r.key).to_string(), r.state)).collect();
    assert_eq!(
        listed,
        [
            ("open".into(), RowState::Pending),
            ("dropped".into(), RowState::Suppressed),
            ("old".into(), RowState::Pending),
            ("other".into(), RowState::Pending)
        ],
        "open rows not in a batch (an overdue one too: expiry is separate), and rows the plans suppressed before their deadline"
    );
    let first = store.reconcilable(T, 0, 1).await.unwrap();
    let next = store.reconcilable(T, first[0].id, 1).await.unwrap();
    assert_eq!(name(&next[0].key), "dropped", "pages by id");

    let later = Retiming {
        due: T + 500,
        deadline: T + 4000,
        occasion_date: chrono::NaiveDate::from_ymd_opt(2023, 11, 15).unwrap(),
        years: Some(41),
    };
    let open = row(&store, "open").await.id;
    let claimed_id = row(&store, "claimed").await.id;
    let dropped_id = row(&store, "dropped").await.id;
    let other = row(&store, "other").await.id;
    let changes = vec![
        (open, Change::Retime(later)),
        (claimed_id, Change::Retime(later)), // in a batch: left to it
        (claimed_id, Change::Suppress { reason: "x".into() }),
        (other, Change::Revive(later)), // not suppressed: nothing to revive
        (dropped_id, Change::Revive(later)),
        (other, Change::Suppress { reason: "rule `birthday` removed from the plan of `acme`".into() }),
    ];
    let done = store.reconcile(&changes, T + 1).await.unwrap();
    assert_eq!(done, Reconciled { retimed: 1, suppressed: 1, revived: 1 });
    let open = row(&store, "open").await;
    assert_eq!((open.state, open.due), (RowState::Pending, T + 500));
    let claimed = row(&store, "claimed").await;
    assert_eq!((claimed.state, claimed.due), (RowState::Claimed, T - 10));
    let revived = row(&store, "dropped").await;
    assert_eq!((revived.state, revived.due, revived.reason), (RowState::Pending, T + 500, None));
    let other = row(&store, "other").await;
    assert_eq!(
        (other.state, other.reason.as_deref()),
        (RowState::Suppressed, Some("rule `birthday` removed from the plan of `acme`"))
    );
    // The re-timed row is claimed at its new time with its new occasion date and years.
    assert!(store.claim(T + 499, 10, "node-a", 300).await.unwrap().iter().all(|c| name(&c.key) != "open"));
    let now_due = store.claim(T + 500, 10, "node-a", 300).await.unwrap();
    let open = now_due.iter().find(|c| name(&c.key) == "open").expect("due at its new time");
    assert_eq!((open.deadline, open.occasion_date, open.years), (T + 4000, later.occasion_date, Some(41)));
    // A row in a batch stays untouched however often it is asked.
    let again = store.reconcile(&changes[1..3], T + 2).await.unwrap();
    assert_eq!(again, Reconciled::default());
}

fn order(customer: &str, id: &str, date: &str, amount: Option<&str>) -> contactplan::orders::Order {
    use contactplan::money::{Currency, Money};
    contactplan::orders::Order {
        customer: customer.into(),
        id: id.into(),
        date: date.parse().unwrap(),
        amount: amount.map(|a| Money { amount: a.parse().unwrap(), currency: Currency::EUR }),
        reference: None,
    }
}

fn eur(totals: &contactplan::store::CustomerTotals) -> String {
    totals.revenue.get(&contactplan::money::Currency::EUR).map(|d| d.normalize().to_string()).unwrap_or_default()
}

async fn orders_are_stored_once_per_customer_and_id_and_corrections_update_them(store: Store) {
    use contactplan::store::Ingested;
    let first = [
        order("acme", "A-1", "2025-03-01", Some("1000.50")),
        order("acme", "A-2", "2026-01-10", Some("200")),
        order("acme", "A-3", "2026-02-10", None),
        order("zeta", "Z-1", "2026-02-10", Some("5")),
    ];
    let done = store.ingest_orders(&first, "test import", T).await.unwrap();
    assert_eq!(done, Ingested { inserted: 4, updated: 0, unchanged: 0, changed_customers: 2 });
    let acme = store.order_totals("acme").await.unwrap();
    assert_eq!((acme.count, eur(&acme)), (3, "1200.5".to_string()));

    // The same file again: nothing changes, no change rows.
    let again = store.ingest_orders(&first, "test import", T + 1).await.unwrap();
    assert_eq!(again, Ingested { inserted: 0, updated: 0, unchanged: 4, changed_customers: 0 });
    // A correction: same id, new amount; the count stays, the revenue follows.
    let fix = [order("acme", "A-2", "2026-01-10", Some("250.00"))];
    assert_eq!(store.ingest_orders(&fix, "api", T + 2).await.unwrap().updated, 1);
    let acme = store.order_totals("acme").await.unwrap();
    assert_eq!((acme.count, eur(&acme)), (3, "1250.5".to_string()));
    assert_eq!(
        store.revenue_by_year("acme", contactplan::money::Currency::EUR).await.unwrap(),
        [(2025, "1000.50".parse().unwrap()), (2026, "250.00".parse().unwrap())]
    );

    let changes = store.unevaluated_changes(10).await.unwrap();
    let seen: Vec<(String, u64, u64, String, String)> = changes
        .iter()
        .map(|c| (c.customer.clone(), c.before.count, c.after.count, eur(&c.before), eur(&c.after)))
        .collect();
    assert_eq!(
        seen,
        [
            ("acme".into(), 0, 3, "".into(), "1200.5".into()),
            ("zeta".into(), 0, 1, "".into(), "5".into()),
            ("acme".into(), 3, 3, "1200.5".into(), "1250.5".into()),
        ]
    );
    assert_eq!((changes[2].source.as_str(), changes[2].at), ("api", T + 2));
    store.mark_evaluated(&[changes[0].seq, changes[1].seq], T + 3).await.unwrap();
    let left = store.unevaluated_changes(10).await.unwrap();
    assert_eq!(left.iter().map(|c| c.seq).collect::<Vec<_>>(), [changes[2].seq]);
    assert_eq!(store.order_totals("nobody").await.unwrap(), Default::default());
}

/// Four ingests at once (four connections, like the CLI, the API and other instances), each
/// adding orders for the same 20 customers: every customer ends with the exact count and
/// revenue, and its change rows chain (each change's before is the previous one's after).
async fn concurrent_ingests_keep_every_customers_totals_exact(db: &TestDb) {
    let stores: Vec<Store> = futures_util::future::join_all((0..4).map(|_| db.connect())).await;
    let writers = stores.iter().enumerate().map(|(w, store)| async move {
        for round in 0..5 {
            let batch: Vec<_> = (0..20)
                .map(|c| order(&format!("c{c:02}"), &format!("w{w}-r{round}"), "2026-11-30", Some("1.25")))
                .collect();
            store.ingest_orders(&batch, "test", T).await.unwrap();
        }
    });
    futures_util::future::join_all(writers).await;
    for c in 0..20 {
        let t = stores[0].order_totals(&format!("c{c:02}")).await.unwrap();
        assert_eq!((t.count, eur(&t)), (20, "25".to_string()), "c{c:02}");
    }
    let changes = stores[0].unevaluated_changes(1000).await.unwrap();
    assert_eq!(changes.len(), 4 * 5 * 20);
    for c in 0..20 {
        let mine: Vec<_> = changes.iter().filter(|x| x.customer == format!("c{c:02}")).collect();
        for pair in mine.windows(2) {
            assert_eq!(pair[0].after, pair[1].before, "changes chain in seq order");
        }
        assert_eq!(mine.last().unwrap().after.count, 20);
    }
}

/// Announces rows `names` missed; each told to `owner_of(name)` in English (none: nobody).
async fn announce(store: &Store, names: &[&str], owner_of: impl Fn(&str) -> Option<&'static str>) -> Vec<Row> {
    use contactplan::store::{Announcement, Tell};
    let all = all_rows(store).await;
    let marks: Vec<Announcement> = names
        .iter()
        .map(|n| {
            let r = all.iter().find(|r| name(&r.key) == *n).unwrap();
            Announcement {
                id: r.id,
                reason: "would not fit".into(),
                deadline: T + 3600,
                tell: owner_of(n).map(|o| Tell { owner: o.into(), language: contactplan::plan::Language::En }),
            }
        })
        .collect();
    store.announce_missed(&marks, T).await.unwrap()
}

async fn announced_rows_are_told_in_one_digest_per_owner_marked_only_when_sent(store: Store) {
    let items: Vec<NewItem> = ["a1", "a2", "a3", "b1", "nobody", "sent"].iter().map(|n| item(n, T, T + 3600)).collect();
    store.materialize(&items, T - 10).await.unwrap();
    let c = store.claim(T, 10, "node-a", 60).await.unwrap();
    let sent = c.iter().find(|c| name(&c.key) == "sent").unwrap();
    for other in c.iter().filter(|c| name(&c.key) != "sent") {
        store.release(&[(other.id, other.fence)]).await.unwrap();
    }
    let owner_of = |n: &str| match n {
        "nobody" => None,
        n if n.starts_with('a') => Some("a@example.com"),
        _ => Some("b@example.com"),
    };
    let missed = announce(&store, &["a1", "a2", "a3", "b1", "nobody", "sent"], owner_of).await;
    assert_eq!(missed.len(), 5, "only open rows: {missed:?}");
    assert_eq!(row(&store, "sent").await.state, RowState::Claimed);
    assert_eq!(sent.attempts, 1);
    assert!(announce(&store, &["a1"], owner_of).await.is_empty(), "announced once");
    assert_eq!(store.untold_call_owners().await.unwrap(), 2);
    let entries = store.call_entries(100).await.unwrap();
    assert_eq!(entries.len(), 4, "no entry for a row without an owner: {entries:?}");
    assert_eq!(entries[0].key, key("a1"));
    assert_eq!((entries[0].deadline, entries[0].announced, entries[0].told), (T + 3600, T, None));

    // a's oldest two (the limit), leased: b's digest next, then nothing while leased.
    let a = store.claim_call_digest("node-a", 60, 2).await.unwrap().unwrap();
    assert_eq!(a.owner, "a@example.com");
    assert_eq!(a.entries.iter().map(|e| name(&e.key)).collect::<Vec<_>>(), ["a1", "a2"]);
    let b = store.claim_call_digest("node-b", 60, 2).await.unwrap().unwrap();
    assert_eq!((b.owner.as_str(), b.entries.len()), ("b@example.com", 1));
    assert_eq!(store.claim_call_digest("node-c", 60, 2).await.unwrap(), None, "a3 waits: a is being told");

    // a's send failed: given back, the same digest (entries and id) goes again.
    assert_eq!(store.release_call_digest(&a.id, "node-b", 0).await.unwrap(), 0, "only its holder gives it back");
    assert_eq!(store.release_call_digest(&a.id, "node-a", 0).await.unwrap(), 2);
    let again = store.claim_call_digest("node-c", 60, 200).await.unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.entries.len()), (a.id.as_str(), 2), "not widened to a3");
    assert_eq!(store.mark_call_told(&a.id, T + 5).await.unwrap(), 2);
    assert_eq!(store.mark_call_told(&b.id, T + 5).await.unwrap(), 1);
    assert_eq!(store.mark_call_told(&b.id, T + 6).await.unwrap(), 0, "told once");
    // a3 in the next digest. Its holder stops (a lease already over): another daemon takes the
    // same digest over.
    let held = store.claim_call_digest("node-a", -1, 200).await.unwrap().unwrap();
    assert_eq!(held.entries.iter().map(|e| name(&e.key)).collect::<Vec<_>>(), ["a3"]);
    assert_ne!(held.id, a.id);
    let taken = store.claim_call_digest("node-b", 60, 200).await.unwrap().unwrap();
    assert_eq!(held.id, taken.id);
    // The relay refuses it: given back to wait before it is tried again.
    assert_eq!(store.release_call_digest(&taken.id, "node-b", 600).await.unwrap(), 1);
    assert_eq!(store.claim_call_digest("node-c", 60, 200).await.unwrap(), None, "refused: later");
    assert_eq!(store.untold_call_owners().await.unwrap(), 1);

    // Retention: told entries go with their cut-off, untold ones stay.
    store.purge_finished(T + 6).await.unwrap();
    let left = store.call_entries(100).await.unwrap();
    assert_eq!((left.len(), left[0].told), (1, None), "{left:?}");
}

async fn take_budget_counts_in_every_window_and_respects_the_pause(store: Store) {
    use contactplan::store::Budget;
    let budget = Budget { per_hour: Some(2), per_day: Some(100), ..Budget::default() };
    assert_eq!(store.take_budget(1, &budget).await.unwrap(), None);
    assert_eq!(store.take_budget(1, &budget).await.unwrap(), None);
    let wait = store.take_budget(1, &budget).await.unwrap();
    assert!(wait.is_some_and(|ms| ms > 0 && ms <= 3_600_000), "{wait:?}");
    let (usage, db_now) = store.relay_usage().await.unwrap();
    let used = |kind: &str| usage.iter().find(|(k, _, _)| k == kind).map(|(_, start, u)| (*start, *u));
    assert_eq!(used("hour"), Some((db_now.0 / 3600 * 3600, 2)), "{usage:?}");
    assert_eq!(used("day"), Some((db_now.0 / 86_400 * 86_400, 2)), "{usage:?}");
    // The claim sees what was taken: nothing left this hour.
    store.materialize(&[item("greeting", T, T + 3600)], T).await.unwrap();
    let claim = store.claim_within(T, 10, "node-a", 60, &budget).await.unwrap();
    assert!(claim.rows.is_empty() && claim.wait_ms.is_some(), "{claim:?}");
    // No caps: only the shared pause holds.
    assert_eq!(store.take_budget(1, &Budget::default()).await.unwrap(), None);
    store.pause_relay(60, 60).await.unwrap();
    assert!(store.take_budget(1, &Budget::default()).await.unwrap().is_some_and(|ms| ms >= 60_000));
}

async fn concurrent_digest_claimers_take_each_owners_entries_once(db: &TestDb) {
    const OWNERS: usize = 20;
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(db.connect().await);
    }
    let names: Vec<String> = (0..OWNERS * 5).map(|i| format!("r{i:03}")).collect();
    let items: Vec<NewItem> = names.iter().map(|n| item(n, T, T + 3600)).collect();
    stores[0].materialize(&items, T).await.unwrap();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    fn owner(n: &str) -> Option<&'static str> {
        let i: usize = n[1..].parse().unwrap();
        Some(Box::leak(format!("o{}@example.com", i % OWNERS).into_boxed_str()))
    }
    assert_eq!(announce(&stores[0], &refs, owner).await.len(), OWNERS * 5);

    let mut tasks = tokio::task::JoinSet::new();
    for (n, store) in stores.into_iter().enumerate() {
        tasks.spawn(async move {
            let holder = format!("node-{n}");
            let mut mine = Vec::new();
            while let Some(d) = store.claim_call_digest(&holder, 300, 200).await.unwrap() {
                assert_eq!(store.mark_call_told(&d.id, T).await.unwrap(), d.entries.len() as u64);
                mine.push(d);
            }
            mine
        });
    }
    let mut digests = Vec::new();
    while let Some(done) = tasks.join_next().await {
        digests.extend(done.unwrap());
    }
    let owners: HashSet<&str> = digests.iter().map(|d| d.owner.as_str()).collect();
    assert_eq!((digests.len(), owners.len()), (OWNERS, OWNERS), "one digest per owner, never split");
    assert!(digests.iter().all(|d| d.entries.len() == 5));
}

/// After a bulk materialisation the pass refreshes the planner's statistics
/// (`Store::refresh_statistics`): on PostgreSQL the outbox is analysed at once (its `reltuples`
/// goes from -1, "never analysed", to the rows written), so the claims that follow plan with the
/// deadline index instead of waiting for autovacuum.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_statistics_are_refreshed_on_request() {
    let db = TestDb::postgres().await;
    let store = db.connect().await;
    // Fewer rows than autovacuum's analyse threshold (50), so only the refresh analyses them.
    let items: Vec<NewItem> = (0..40).map(|i| item(&format!("c{i}"), T, T + 3600)).collect();
    store.materialize(&items, T).await.unwrap();
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let tuples = || async {
        sqlx::query_scalar::<_, f32>("SELECT reltuples FROM pg_class WHERE oid = 'outbox'::regclass")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(tuples().await, -1.0, "not analysed yet");
    store.refresh_statistics().await.unwrap();
    assert_eq!(tuples().await, 40.0);
    pool.close().await;
}
