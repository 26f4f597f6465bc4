//! PostgreSQL storage (feature `postgres`): the storage suite, Optuna's schema, bad rows,
//! reconnection and lock timeouts, and 16 processes on one study. Needs `FERROGRAD_PG_URL`
//! (`scripts/with-postgres.sh` starts a throwaway server and sets it); without it every test
//! fails, saying so.
#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::suite::unique;
use common::workers::{self, Plan};
use ferrograd_tuning::search::{PostgresStorage, SearchError, Storage, Study, TrialState};
use postgres::{Client, NoTls};
use serde_json::Value;

fn url() -> String {
    std::env::var("FERROGRAD_PG_URL").expect(
        "FERROGRAD_PG_URL must name a PostgreSQL database for the postgres feature's tests \
         (run them through scripts/with-postgres.sh)",
    )
}

fn pg() -> Arc<dyn Storage> {
    Arc::new(PostgresStorage::connect(&url()).unwrap())
}

#[test]
fn worker_entry() {
    workers::worker_main();
}

storage_suite!(pg);

/// A database of its own for tests that look at the whole schema; dropped at the end.
struct TempDb {
    admin: Client,
    name: String,
    url: String,
}

impl TempDb {
    fn new() -> TempDb {
        let mut admin = Client::connect(&url(), NoTls).unwrap();
        let name = unique("db").to_lowercase();
        admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let base = url();
        let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
        TempDb { admin, name, url }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = self.admin.batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.name));
    }
}

#[test]
fn a_new_database_has_the_schema_optuna_creates() {
    let db = TempDb::new();
    drop(PostgresStorage::connect(&db.url).unwrap());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/optuna");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("schema_postgres.json")).unwrap()).unwrap();
    let mut c = Client::connect(&db.url, NoTls).unwrap();
    let rows: Vec<Value> = c
        .query(&std::fs::read_to_string(dir.join("pg_catalog.sql")).unwrap(), &[])
        .unwrap()
        .iter()
        .map(|r| (0..5).map(|i| Value::from(r.get::<_, String>(i))).collect())
        .collect();
    let expected_rows = expected["catalog"].as_array().unwrap();
    for (got, want) in rows.iter().zip(expected_rows) {
        assert_eq!(got, want);
    }
    assert_eq!(rows.len(), expected_rows.len());
    let alembic: String = c.query_one("SELECT version_num FROM alembic_version", &[]).unwrap().get(0);
    assert_eq!(Value::from(vec![alembic]), expected["alembic_version"]);
    // Workers connecting to a fresh database together create the schema once.
    let db = TempDb::new();
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| PostgresStorage::connect(&db.url).unwrap());
        }
    });
}

#[test]
fn foreign_and_other_revision_databases_are_refused() {
    let db = TempDb::new();
    let mut c = Client::connect(&db.url, NoTls).unwrap();
    c.batch_execute("CREATE TABLE invoices (id integer)").unwrap();
    let err = PostgresStorage::connect(&db.url).err().unwrap();
    assert!(matches!(err, SearchError::ForeignDatabase { .. }), "{err}");
    let db = TempDb::new();
    drop(PostgresStorage::connect(&db.url).unwrap());
    let mut c = Client::connect(&db.url, NoTls).unwrap();
    c.batch_execute("UPDATE alembic_version SET version_num = 'v3.0.0.d'").unwrap();
    let err = PostgresStorage::connect(&db.url).err().unwrap();
    assert!(
        matches!(&err, SearchError::SchemaVersion { message, .. } if message.contains("optuna storage upgrade")),
        "{err}"
    );
    let err = PostgresStorage::connect("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1").err().unwrap();
    assert!(matches!(err, SearchError::Database { .. }), "{err}");
}

#[test]
fn bad_rows_are_typed_errors() {
    for (sql, needle) in [
        ("UPDATE trial_values SET value = NULL WHERE trial_id = {id}", "NULL value"),
        ("DELETE FROM trial_values WHERE trial_id = {id}", "COMPLETE with 0 value"),
        ("UPDATE trials SET number = 7 WHERE trial_id = {id}", "trial numbers jump"),
        ("UPDATE trial_params SET distribution_json = 'nonsense' WHERE trial_id = {id}", "not JSON"),
    ] {
        let storage = pg();
        let name = unique("bad");
        let study = Study::builder().storage(storage.clone()).create(&name).unwrap();
        study.optimize(3, |t| t.suggest_float("x", 0.0, 1.0, false)).unwrap();
        let study_id = storage.find_study(&name).unwrap().unwrap();
        let id = storage.read_trials(study_id, 0, &[]).unwrap()[1].id;
        let mut c = Client::connect(&url(), NoTls).unwrap();
        c.batch_execute(&sql.replace("{id}", &id.to_string())).unwrap();
        let err = Study::builder().storage(storage).load(&name).err().unwrap();
        assert!(matches!(&err, SearchError::Corrupt { what, .. } if what.contains(needle)), "{sql}: {err}");
    }
}

/// Connections killed by the server are replaced and the operation retried; a lock held longer
/// than the session's `lock_timeout` fails the statement, which is retried with backoff.
#[test]
fn dropped_connections_and_lock_timeouts_are_retried() {
    let app = unique("victim");
    let sep = if url().contains('?') { '&' } else { '?' };
    let storage: Arc<dyn Storage> = Arc::new(
        PostgresStorage::connect(&format!("{}{sep}application_name={app}&options=-c%20lock_timeout%3D50ms", url()))
            .unwrap(),
    );
    let name = unique("retry");
    let study = Study::builder().storage(storage.clone()).create(&name).unwrap();
    study.optimize(2, |t| t.suggest_float("x", 0.0, 1.0, false)).unwrap();
    let mut admin = Client::connect(&url(), NoTls).unwrap();
    let killed = admin
        .query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", &[&app])
        .unwrap()
        .len();
    assert!(killed >= 1);
    study.optimize(2, |t| t.suggest_float("x", 0.0, 1.0, false)).unwrap();
    // Another session holds the study's row for 400 ms: trial creation meets lock timeouts.
    let study_id = storage.find_study(&name).unwrap().unwrap();
    let holder = std::thread::spawn(move || {
        let mut c = Client::connect(&url(), NoTls).unwrap();
        let mut tx = c.transaction().unwrap();
        tx.execute("SELECT 1 FROM studies WHERE study_id = $1 FOR UPDATE", &[&(study_id as i32)]).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        tx.commit().unwrap();
    });
    std::thread::sleep(Duration::from_millis(100));
    study.optimize(1, |t| t.suggest_float("x", 0.0, 1.0, false)).unwrap();
    holder.join().unwrap();
    let trials = study.trials();
    assert_eq!(trials.len(), 5);
    assert!(trials.iter().all(|t| t.state == TrialState::Complete));
}

/// Sixteen processes started at once on a new study, four more joining, three killed mid-trial.
#[test]
fn sixteen_processes_share_a_study_through_kills_and_joins() {
    workers::many_workers(&format!("postgres:{}", url()), Plan { first: 16, join: 4, kill: 3, trials: 8 });
}
