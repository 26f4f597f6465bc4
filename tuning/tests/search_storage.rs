//! The storage suite on the two backends that need no server: in memory and SQLite (a fresh file
//! per test). PostgreSQL runs the same suite in `search_postgres.rs`.

use crate::common;

use std::sync::Arc;

use ferrograd_tuning::search::{InMemoryStorage, SqliteStorage, Storage};

fn sqlite() -> Arc<dyn Storage> {
    let path = std::env::temp_dir().join(format!("{}.db", common::suite::unique("suite")));
    Arc::new(SqliteStorage::open(path).unwrap())
}

mod memory {
    use super::*;
    crate::storage_suite!(|| Arc::new(InMemoryStorage::new()) as Arc<dyn Storage>);
}

mod sqlite {
    use super::*;
    crate::storage_suite!(sqlite);
}
