//! The outbox store contract, run against both engines: every test is written once as
//! `async fn name(store: Store)` (or `name(db: &TestDb)` when it needs several connections, like
//! several daemons) and instantiated as `sqlite_name` and `postgres_name`.
//!
//! SQLite runs on a temp file. PostgreSQL runs on `CONTACTPLAN_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), one fresh schema per test, dropped afterwards.
//! When PostgreSQL is unreachable the `postgres_*` tests fail; they never pass silently.

use contactplan::store::{Claimed, Materialized, NewItem, Outcome, Recovered, Row, Store};
use sqlx::Connection;
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

/// "Now" for every test (2023-11-14T22:13:20Z): the node clock passed to the store. Leases use
/// the database clock instead, so they are independent of it.
const T: i64 = 1_700_000_000;

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
    store: backlog_counts_open_rows_and_finds_the_next_due;
    db: concurrent_claimers_take_every_row_exactly_once,
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
    assert_eq!((rows[0].key.as_str(), rows[0].recipient.as_str()), ("acme/checkin/owner/2023-11-14T09:00", "owner"));
    assert_ne!(rows[0].key, old_key);
    let mut again = item("acme/checkin/owner/2023-11-14T09:00", 1, 2);
    again.recipient = "owner".into();
    assert_eq!(store.materialize(&[again], 0).await.unwrap().inserted, 0, "the migrated row is found");
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

/// A due, pending, at-least-once item.
fn item(key: &str, due: i64, deadline: i64) -> NewItem {
    NewItem {
        key: key.to_string(),
        customer: "acme".to_string(),
        rule: "birthday".to_string(),
        kind: "birthday",
        action: "email",
        recipient: format!("{key}@example.com"),
        recipient_domain: "example.com".to_string(),
        nominal: "2023-11-14".to_string(),
        occasion_date: "2023-11-14".to_string(),
        years: Some(40),
        timezone: "Europe/Berlin".to_string(),
        due,
        deadline,
        message_id: format!("<{key}@contactplan.test>"),
        delivery: "at_least_once",
        state: "pending",
        reason: None,
    }
}

fn at_most_once(mut it: NewItem) -> NewItem {
    it.delivery = "at_most_once";
    it
}

fn missed(mut it: NewItem) -> NewItem {
    it.state = "missed";
    it.reason = Some("due while no daemon ran".to_string());
    it
}

async fn all_rows(store: &Store) -> Vec<Row> {
    store.rows(None, 10_000).await.unwrap()
}

async fn row(store: &Store, key: &str) -> Row {
    all_rows(store).await.into_iter().find(|r| r.key == key).unwrap_or_else(|| panic!("no row {key}"))
}

fn keys(claimed: &[Claimed]) -> Vec<&str> {
    claimed.iter().map(|c| c.key.as_str()).collect()
}

fn accepted(reply: &str) -> Outcome {
    Outcome::Accepted { reply: reply.to_string() }
}

async fn materialize_is_idempotent(store: Store) {
    let items = vec![item("a", T, T + 3600), item("b", T + 60, T + 3600), missed(item("c", T - 7200, T - 3600))];
    assert_eq!(
        store.materialize(&items, T).await.unwrap(),
        Materialized { inserted: 2, missed: 1, missed_kinds: vec!["birthday".into()] }
    );
    assert_eq!(store.materialize(&items, T).await.unwrap(), Materialized::default());

    // An existing key is left untouched even when the new item differs.
    let mut changed = item("a", T + 999, T + 9999);
    changed.recipient = "other@example.com".to_string();
    // A key repeated within one call is written once (the first item wins).
    let mut second_d = item("d", T + 5, T + 3600);
    second_d.recipient = "second@example.com".to_string();
    let batch = vec![changed, item("d", T + 5, T + 3600), second_d];
    assert_eq!(store.materialize(&batch, T + 1).await.unwrap(), Materialized { inserted: 1, ..Default::default() });

    let rows = all_rows(&store).await;
    assert_eq!(rows.len(), 4, "{rows:?}");
    let a = row(&store, "a").await;
    assert_eq!((a.state.as_str(), a.due_utc, a.recipient.as_str()), ("pending", T, "a@example.com"));
    assert_eq!(a.attempts, 0);
    assert_eq!(a.message_id, "<a@contactplan.test>");
    assert_eq!((a.customer.as_str(), a.rule.as_str(), a.kind.as_str()), ("acme", "birthday", "birthday"));
    assert_eq!(row(&store, "d").await.recipient, "d@example.com");
    let c = row(&store, "c").await;
    assert_eq!((c.state.as_str(), c.reason.as_deref()), ("missed", Some("due while no daemon ran")));
    assert_eq!(
        store.counts().await.unwrap(),
        vec![("missed".to_string(), 1), ("pending".to_string(), 3)],
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
    assert_eq!((c.attempts, c.fence, c.due_utc, c.deadline_utc), (1, 1, T - 40, T + 3600));
    assert_eq!(
        (c.customer.as_str(), c.rule.as_str(), c.recipient.as_str()),
        ("acme", "birthday", "due-40@example.com")
    );
    assert_eq!((c.nominal.as_str(), c.occasion_date.as_str(), c.years), ("2023-11-14", "2023-11-14", Some(40)));
    assert_eq!((c.message_id.as_str(), c.delivery.as_str()), ("<due-40@contactplan.test>", "at_least_once"));
    assert_eq!(row(&store, "due-40").await.state, "claimed");

    let rest = store.claim(T, 10, "node-a", 300).await.unwrap();
    assert_eq!(keys(&rest), ["due-10", "due-now"]);
    assert!(store.claim(T, 10, "node-a", 300).await.unwrap().is_empty());

    let later = store.claim(T + 10, 10, "node-a", 300).await.unwrap();
    assert_eq!(keys(&later), ["future"]);
    for key in ["deadline-now", "deadline-past", "missed"] {
        assert_ne!(row(&store, key).await.state, "claimed", "{key} must not be claimed");
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
    assert_eq!((r.state.as_str(), r.reason.as_deref(), r.attempts), ("retry", Some("451 greylisted"), 1));
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
        (ok.state.as_str(), ok.smtp_reply.as_deref(), ok.reason.as_deref()),
        ("accepted", Some("250 2.0.0 Ok: queued as 4711"), None)
    );
    assert_eq!(ok.attempts, 1);
    let fail = row(&store, "fail").await;
    assert_eq!(
        (fail.state.as_str(), fail.reason.as_deref(), fail.smtp_reply.as_deref()),
        ("failed", Some("550 5.1.1 no such user"), None)
    );
    let supp = row(&store, "supp").await;
    assert_eq!((supp.state.as_str(), supp.reason.as_deref()), ("suppressed", Some("customer removed")));
    let unk = row(&store, "unk").await;
    assert_eq!((unk.state.as_str(), unk.reason.as_deref()), ("unknown", Some("connection lost after DATA")));

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
    assert_eq!((after.state.as_str(), after.smtp_reply.as_deref(), after.attempts), ("claimed", None, 2));
    assert_eq!(after.reason, before.reason);

    assert!(store.finish(new.id, new.fence, &accepted("250 ok"), T + 6).await.unwrap());
    assert_eq!(row(&store, "s").await.state, "accepted");
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
    assert_eq!((b0.state.as_str(), b0.smtp_reply.as_deref()), ("accepted", Some("250 one")));
    let b1 = row(&store, "b1").await;
    assert_eq!((b1.state.as_str(), b1.reason.as_deref()), ("retry", Some("421 try later")));
    let b2 = row(&store, "b2").await;
    assert_eq!((b2.state.as_str(), b2.smtp_reply.as_deref()), ("claimed", None));
    let b3 = row(&store, "b3").await;
    assert_eq!((b3.state.as_str(), b3.reason.as_deref()), ("failed", Some("550 rejected")));
    // Applying the same batch again changes nothing: no row is still `sending` under those fences
    // except b2, whose fence is wrong.
    assert_eq!(store.finish_batch(&batch, &[], T + 2, 300).await.unwrap().finished, 0);
}

async fn release_puts_the_row_back_without_counting_an_attempt(store: Store) {
    store.materialize(&[item("rel", T - 10, T + 3600)], T).await.unwrap();
    let c = store.claim(T, 1, "node-a", 300).await.unwrap().remove(0);
    assert_eq!(row(&store, "rel").await.attempts, 1);

    store.release(c.id, c.fence + 1).await.unwrap(); // stale fence: ignored
    assert_eq!(row(&store, "rel").await.state, "claimed");

    store.release(c.id, c.fence).await.unwrap();
    let r = row(&store, "rel").await;
    assert_eq!((r.state.as_str(), r.attempts), ("pending", 0));
    assert_eq!(store.next_due().await.unwrap(), Some(T - 10));

    let again = store.claim(T, 1, "node-b", 300).await.unwrap().remove(0);
    assert_eq!((again.id, again.attempts, again.fence), (c.id, 1, c.fence + 1));
    // The old fence can no longer release or finish it.
    store.release(c.id, c.fence).await.unwrap();
    assert_eq!(row(&store, "rel").await.state, "claimed");
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
    let expired_keys: Vec<&str> = expired.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(expired_keys, ["pending-overdue", "pending-at-deadline", "retry-overdue"]);
    for r in &expired {
        assert_eq!(
            (r.state.as_str(), r.reason.as_deref()),
            ("missed", Some("deadline passed before it could be sent"))
        );
    }
    for key in ["pending-overdue", "pending-at-deadline", "retry-overdue"] {
        assert_eq!(row(&store, key).await.state, "missed", "{key}");
    }
    assert_eq!(row(&store, "sending-overdue").await.state, "sending", "a row being sent is its sender's to finish");
    assert_eq!(row(&store, "pending-ok").await.state, "pending");
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
    assert_eq!(row(&store, "c").await.state, "pending");
    assert_eq!((row(&store, "a").await.state.as_str(), row(&store, "b").await.state.as_str()), ("claimed", "sending"));
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
    assert_eq!((claimed.state.as_str(), claimed.attempts), ("pending", 0), "never attempted: the attempt is undone");
    let alo = row(&store, "alo").await;
    assert_eq!(alo.state, "retry");
    assert!(alo.reason.as_deref().unwrap().contains("same Message-ID"), "{:?}", alo.reason);
    assert_eq!(row(&store, "amo").await.state, "unknown");
    assert_eq!(row(&store, "theirs").await.state, "claimed", "another owner's claim is not given up");
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
    assert_eq!(alo.state, "retry");
    assert!(alo.reason.as_deref().unwrap().contains("same Message-ID"), "{:?}", alo.reason);
    let amo = row(&store, "amo").await;
    assert_eq!(amo.state, "unknown");
    assert!(amo.reason.as_deref().unwrap().contains("at_most_once"), "{:?}", amo.reason);
    assert_eq!(row(&store, "held").await.state, "sending");
    assert_eq!(row(&store, "amo-held").await.state, "sending");
    assert_eq!(store.recover_expired_leases().await.unwrap(), Recovered::default());

    // The at-least-once row is resent at once, with the same Message-ID; the unknown one never.
    let resent = store.claim(T, 10, "node-c", 300).await.unwrap();
    assert_eq!(keys(&resent), ["alo"]);
    assert_eq!((resent[0].message_id.as_str(), resent[0].attempts), ("<alo@contactplan.test>", 2));
    let unreported: Vec<String> = store.unreported(10).await.unwrap().into_iter().map(|r| r.key).collect();
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
    assert_eq!((r.state.as_str(), r.attempts), ("pending", 0));
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
    let all_keys: Vec<&str> = all.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(all_keys, ["fail", "miss", "unk"], "failed, missed and unknown, oldest (by id) first");
    let first_two = store.unreported(2).await.unwrap();
    assert_eq!(first_two.iter().map(|r| r.id).collect::<Vec<_>>(), [all[0].id, all[1].id]);

    store.mark_reported(&[all[0].id, all[1].id], T + 2).await.unwrap();
    store.mark_reported(&[], T + 2).await.unwrap();
    let left: Vec<String> = store.unreported(10).await.unwrap().into_iter().map(|r| r.key).collect();
    assert_eq!(left, ["unk"]);
    store.mark_reported(&[all[2].id], T + 3).await.unwrap();
    assert!(store.unreported(10).await.unwrap().is_empty());
    assert_eq!(row(&store, "fail").await.state, "failed", "reporting does not change the state");
}

async fn next_due_is_the_earliest_open_instant(store: Store) {
    assert_eq!(store.next_due().await.unwrap(), None);
    store.materialize(&[item("late", T + 100, T + 3600), item("early", T - 10, T + 3600)], T).await.unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(T - 10));

    let c = store.claim(T, 1, "node-a", 300).await.unwrap().remove(0);
    assert_eq!(c.key, "early");
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
    let all: Vec<String> = all_rows(&store).await.into_iter().map(|r| r.key).collect();
    assert_eq!(all, ["m", "r4", "r3", "r2", "r1", "r0"], "ordered by due time");
    let pending: Vec<String> = store.rows(Some("pending"), 3).await.unwrap().into_iter().map(|r| r.key).collect();
    assert_eq!(pending, ["r4", "r3", "r2"]);
    let missed_rows = store.rows(Some("missed"), 10).await.unwrap();
    assert_eq!(missed_rows.len(), 1);
    assert!(store.rows(Some("accepted"), 10).await.unwrap().is_empty());
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
    assert_eq!(store.counts().await.unwrap(), vec![("accepted".to_string(), ROWS as i64)]);
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

    let remaining = |rows: Vec<Row>| -> HashSet<String> { rows.into_iter().map(|r| r.key).collect() };
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
    let zero: Vec<(String, i64)> =
        ["pending", "retry", "claimed", "sending"].iter().map(|s| (s.to_string(), 0)).collect();
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
    let depth: Vec<(String, i64)> = [("pending", 2), ("retry", 0), ("claimed", 1), ("sending", 0)]
        .iter()
        .map(|(s, n)| (s.to_string(), *n))
        .collect();
    assert_eq!(b.depth, depth);
    assert_eq!(b.oldest_due, Some(T - 100), "a claimed row is still waiting to be sent");
    let next = b.next.unwrap();
    assert_eq!(
        (next.key.as_str(), next.kind.as_str(), next.due_utc, next.state.as_str()),
        ("second", "birthday", T - 50, "pending")
    );
}
