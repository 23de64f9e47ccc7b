//! The schema of the embedded store and its creation. Opening an existing store reads one
//! header field (`PRAGMA user_version`) and runs no DDL.

use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

/// The schema this code reads and writes; stored in `PRAGMA user_version`.
pub(super) const SCHEMA_VERSION: i64 = 3;

/// The change log a watch reads (one row per key written), in a new store and in the
/// migration from version 2 alike.
macro_rules! changes_table {
    () => {
        "
CREATE TABLE changes (
    revision INTEGER NOT NULL,
    key TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    PRIMARY KEY (revision, key)
) WITHOUT ROWID;
"
    };
}

/// Keys ordered by their UTF-8 bytes (SQLite's BINARY collation), as in etcd and in Rust's
/// `str` ordering. `meta` holds the single store-wide revision, and the oldest revision the
/// change log still holds (`compact_revision`).
///
/// `changes` is the change log that watchers read (version 3): one row per key written, in
/// the transaction that writes it. Rows are small (no value: a watcher reads the key's value
/// from `kv`), and appended in revision order, so an insert lands on the last leaf page.
///
/// `kv` is a rowid table with a unique index on `key`: a lookup descends the index, whose
/// cells hold only keys, then fetches one row. Version 1 made `key` the primary key of a
/// WITHOUT ROWID table, whose interior cells carry whole rows; a row longer than about
/// 1 KB (an IPAM block: up to 4 KB) spills into overflow pages, and SQLite reads a spilled
/// cell in full for every comparison of a seek. With 10,000 handles and 157 blocks in a
/// pool, that was a quarter of an ADD's instructions.
const DDL: &str = concat!(
    "
CREATE TABLE kv (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    value BLOB NOT NULL,
    mod_revision INTEGER NOT NULL
);
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    revision INTEGER NOT NULL,
    compact_revision INTEGER NOT NULL DEFAULT 0
);
INSERT INTO meta (id, revision, compact_revision) VALUES (0, 0, 1);
",
    changes_table!()
);

/// From version 1 (see [`DDL`]): the same rows, keys, values and revisions, in the new table.
const MIGRATE_FROM_V1: &str = "
ALTER TABLE kv RENAME TO kv_v1;
CREATE TABLE kv (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    value BLOB NOT NULL,
    mod_revision INTEGER NOT NULL
);
INSERT INTO kv (key, value, mod_revision) SELECT key, value, mod_revision FROM kv_v1 ORDER BY key;
DROP TABLE kv_v1;
";

/// From version 2: an empty change log. The changes up to now were never logged, so the log
/// starts after the current revision: a watch from an older revision gets `Compacted`.
const MIGRATE_FROM_V2: &str = concat!(
    "
ALTER TABLE meta ADD COLUMN compact_revision INTEGER NOT NULL DEFAULT 0;
UPDATE meta SET compact_revision = revision + 1;
",
    changes_table!()
);

/// Why the schema could not be settled.
pub(super) enum SchemaError {
    Sqlite(rusqlite::Error),
    /// The store was written by a newer version of this code.
    TooNew(i64),
    /// The file refused to switch to WAL (e.g. a read-only medium); holds the mode it kept.
    NotWal(String),
}

impl From<rusqlite::Error> for SchemaError {
    fn from(e: rusqlite::Error) -> Self {
        SchemaError::Sqlite(e)
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Check the schema version, create the schema when the file is new, and migrate a store of
/// version 1 or 2. Safe when many processes open a fresh file at once: the check is repeated
/// under `BEGIN IMMEDIATE`, so exactly one of them runs the DDL.
pub(super) fn ensure(conn: &mut Connection, busy_timeout: Duration) -> Result<(), SchemaError> {
    match user_version(conn)? {
        SCHEMA_VERSION => return Ok(()),
        0..=2 => {}
        newer => return Err(SchemaError::TooNew(newer)),
    }
    // Persistent: only the openers of a fresh file pay for it.
    let mode = switch_to_wal(conn, busy_timeout)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SchemaError::NotWal(mode));
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    match user_version(&tx)? {
        0 => tx.execute_batch(DDL)?,
        1 => {
            tx.execute_batch(MIGRATE_FROM_V1)?;
            tx.execute_batch(MIGRATE_FROM_V2)?;
        }
        2 => tx.execute_batch(MIGRATE_FROM_V2)?,
        SCHEMA_VERSION => return Ok(tx.commit()?),
        newer => return Err(SchemaError::TooNew(newer)),
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// `PRAGMA journal_mode = WAL` needs an exclusive lock, and SQLite does not call the busy
/// handler for it: when several processes open a fresh file at once, the losers get
/// `SQLITE_BUSY` at once. Retry, with a growing pause, until `busy_timeout` has passed.
fn switch_to_wal(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<String> {
    let deadline = Instant::now() + busy_timeout;
    // Vary the first pause between processes so that they do not retry in lockstep.
    let mut pause = Duration::from_micros(200 + u64::from(std::process::id() % 300));
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)) {
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) && Instant::now() + pause < deadline => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}
