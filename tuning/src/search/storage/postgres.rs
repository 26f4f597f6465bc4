//! PostgreSQL: one study database shared by workers on many machines, in Optuna's schema (the
//! tables, enum types, sequences and constraints SQLAlchemy creates for Optuna 5.1).
//!
//! Trial numbers are allocated under `SELECT ... FROM studies ... FOR UPDATE`, the lock Optuna's
//! own workers take, so Python and Rust workers can share a study. Times and heartbeats come from
//! the server (`clock_timestamp() AT TIME ZONE 'UTC'`, Optuna's naive-UTC convention). Statements
//! are prepared once per connection; a dropped connection is replaced and the transaction retried.

use std::collections::HashMap;
use std::error::Error;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::types::{FromSql, IsNull, Kind, ToSql, Type};
use postgres::{Client, NoTls, Statement};

use super::rdb::{Backend, Conn, DbError, DbErrorKind, RdbStorage, Sealed, Sql};
use super::sqlite::{check_schema, Found, ALEMBIC_HEAD, VERSION_INFO};
use crate::search::error::SearchError;

/// Optuna's schema for PostgreSQL.
const SCHEMA: &str = include_str!("optuna_postgres.sql");
/// A key for `pg_advisory_xact_lock`, so that workers starting together create the schema once.
const SCHEMA_LOCK: i64 = 0x6665_7272_6f67;

/// The PostgreSQL engine (see [`PostgresStorage`]).
pub struct Postgres {
    config: postgres::Config,
    location: String,
}

impl Sealed for Postgres {}

/// A study store in a PostgreSQL database: `PostgresStorage::connect(url)`, with a URL such as
/// `postgresql://user:password@host:5432/dbname` (libpq's forms are accepted).
pub type PostgresStorage = RdbStorage<Postgres>;

/// A connection and its prepared statements.
pub struct PgConn {
    client: Client,
    statements: HashMap<String, Statement>,
    broken: bool,
}

fn db_error(e: &postgres::Error) -> DbError {
    let kind = match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => DbErrorKind::Unique,
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::LOCK_NOT_AVAILABLE
                || *c == SqlState::TOO_MANY_CONNECTIONS =>
        {
            DbErrorKind::Transient
        }
        Some(c)
            if *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
                || c.code().starts_with("08") =>
        {
            DbErrorKind::Reconnect
        }
        Some(_) => DbErrorKind::Other,
        // No SQLSTATE: the connection failed (closed, reset, refused).
        None => DbErrorKind::Reconnect,
    };
    let message = match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => e.to_string(),
    };
    DbError { message, kind }
}

/// The statement for PostgreSQL: tokens expanded, `?` numbered.
fn translate(sql: &str) -> String {
    let sql = sql
        .replace("{now}", "(clock_timestamp() AT TIME ZONE 'UTC')")
        .replace("{ids}", "(SELECT unnest(CAST(CAST(? AS TEXT) AS INTEGER[])))")
        .replace("{lock}", " FOR UPDATE");
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

type BoxError = Box<dyn Error + Sync + Send>;

impl ToSql for Sql {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Sql::Null => Ok(IsNull::Yes),
            Sql::Int(i) => match *ty {
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)
                    .map_err(|_| format!("{i} does not fit Optuna's 32-bit INTEGER column"))?
                    .to_sql(ty, out),
                Type::INT8 => i.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                _ => Err(format!("an integer for a {ty} parameter").into()),
            },
            Sql::Real(x) => match *ty {
                Type::FLOAT8 => x.to_sql(ty, out),
                Type::FLOAT4 => (*x as f32).to_sql(ty, out),
                _ => Err(format!("a float for a {ty} parameter").into()),
            },
            // An enum's binary form is its label.
            Sql::Text(s) if matches!(ty.kind(), Kind::Enum(_)) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            Sql::Text(s) => s.as_str().to_sql(ty, out),
            Sql::Time(t) => t.to_sql(ty, out),
            Sql::Ids(ids) => {
                let list: Vec<String> = ids.iter().map(i64::to_string).collect();
                format!("{{{}}}", list.join(",")).as_str().to_sql(ty, out)
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

impl<'a> FromSql<'a> for Sql {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(match *ty {
            Type::INT2 => Sql::Int(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => Sql::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => Sql::Int(i64::from_sql(ty, raw)?),
            Type::FLOAT4 => Sql::Real(f32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Sql::Real(f64::from_sql(ty, raw)?),
            Type::BOOL => Sql::Int(bool::from_sql(ty, raw)?.into()),
            Type::TIMESTAMP | Type::TIMESTAMPTZ => Sql::Time(SystemTime::from_sql(ty, raw)?),
            _ if matches!(ty.kind(), Kind::Enum(_)) => Sql::Text(std::str::from_utf8(raw)?.to_string()),
            _ => Sql::Text(String::from_sql(ty, raw)?),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Sql::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

impl PgConn {
    fn statement(&mut self, sql: &str) -> Result<Statement, DbError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(&translate(sql)).map_err(|e| self.fail(&e))?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    fn fail(&mut self, e: &postgres::Error) -> DbError {
        let err = db_error(e);
        if err.kind == DbErrorKind::Reconnect || self.client.is_closed() {
            self.broken = true;
        }
        err
    }
}

fn refs(params: &[Sql]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl Conn for PgConn {
    fn execute(&mut self, sql: &str, params: &[Sql]) -> Result<u64, DbError> {
        let stmt = self.statement(sql)?;
        self.client.execute(&stmt, &refs(params)).map_err(|e| self.fail(&e))
    }

    fn query(&mut self, sql: &str, params: &[Sql]) -> Result<Vec<Vec<Sql>>, DbError> {
        let stmt = self.statement(sql)?;
        let rows = self.client.query(&stmt, &refs(params)).map_err(|e| self.fail(&e))?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        r.try_get::<_, Sql>(i).map_err(|e| DbError { message: e.to_string(), kind: DbErrorKind::Other })
                    })
                    .collect()
            })
            .collect()
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.client.batch_execute(sql).map_err(|e| self.fail(&e))
    }

    fn broken(&self) -> bool {
        self.broken || self.client.is_closed()
    }
}

impl Backend for Postgres {
    type Conn = PgConn;
    const BEGIN_WRITE: &'static str = "BEGIN";

    fn connect(&self) -> Result<PgConn, DbError> {
        let client = self.config.connect(NoTls).map_err(|e| db_error(&e))?;
        Ok(PgConn { client, statements: HashMap::new(), broken: false })
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn error(&self, message: String) -> SearchError {
        SearchError::Database { location: self.location.clone(), message }
    }
}

impl RdbStorage<Postgres> {
    /// Connects to the database at `url` and creates Optuna's schema if the database has no
    /// tables (several workers may do so at once). Errors: `Database` when the server cannot be
    /// reached (after retries) or the URL is malformed; `ForeignDatabase` / `SchemaVersion` for a
    /// database holding other tables or another Optuna schema revision.
    pub fn connect(url: &str) -> Result<PostgresStorage, SearchError> {
        let mut config = postgres::Config::from_str(url)
            .map_err(|e| SearchError::Database { location: "(unparsed URL)".into(), message: e.to_string() })?;
        config.connect_timeout(Duration::from_secs(10)).keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("ferrograd");
        }
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                postgres::config::Host::Tcp(s) => s.clone(),
                postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
        let location = format!(
            "postgresql://{}@{}:{}/{}",
            config.get_user().unwrap_or(""),
            hosts.join(","),
            ports.join(","),
            config.get_dbname().unwrap_or("")
        );
        let storage = RdbStorage::with_backend(Postgres { config, location });
        storage.init_schema()?;
        Ok(storage)
    }

    fn init_schema(&self) -> Result<(), SearchError> {
        self.transaction(|tx| {
            tx.query("SELECT pg_advisory_xact_lock(CAST(? AS BIGINT))", &[Sql::Int(SCHEMA_LOCK)])?;
            let tables: Vec<String> = tx
                .query(
                    "SELECT CAST(table_name AS TEXT) FROM information_schema.tables WHERE table_schema = current_schema()",
                    &[],
                )?
                .into_iter()
                .filter_map(|mut r| std::mem::replace(&mut r[0], Sql::Null).into_text())
                .collect();
            let version = if tables.iter().any(|t| t == "alembic_version") {
                tx.query("SELECT version_num FROM alembic_version", &[])?
                    .into_iter()
                    .next()
                    .and_then(|mut r| std::mem::replace(&mut r[0], Sql::Null).into_text())
            } else {
                None
            };
            if let Found::Empty = check_schema(&self.backend.location, &tables, version.as_deref())? {
                tx.batch(SCHEMA)?;
                tx.exec(
                    "INSERT INTO version_info (version_info_id, schema_version, library_version) VALUES (1, ?, ?)",
                    &[Sql::Int(VERSION_INFO.0), Sql::Text(VERSION_INFO.1.into())],
                )?;
                tx.exec("INSERT INTO alembic_version (version_num) VALUES (?)", &[Sql::Text(ALEMBIC_HEAD.into())])?;
            }
            Ok(())
        })
    }
}
