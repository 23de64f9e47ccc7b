//! The schema of the embedded store and its creation. Opening an existing store reads one
//! header field (`PRAGMA user_version`) and runs no DDL.

use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

/// The schema this code reads and writes; stored in `PRAGMA user_version`.
pub(super) const SCHEMA_VERSION: i64 = 4;

/// The change log (version 4), in a new store and in the migrations alike; `$first` gives
/// its first row: the current revision, with no changes.
macro_rules! log_table {
    ($first:literal) => {
        concat!(
            "
CREATE TABLE log (
    revision INTEGER PRIMARY KEY,
    keys BLOB NOT NULL
);
INSERT INTO log (revision, keys) ",
            $first,
            ";
"
        )
    };
}

/// Keys ordered by their UTF-8 bytes (SQLite's BINARY collation), as in etcd and in Rust's
/// `str` ordering.
///
/// `log` is the change log that watchers read (version 4): one row per commit, keyed by the
/// commit's revision, listing the keys it wrote (see `log.rs`). Its last row is the store
/// revision, and the commit writes it instead of a separate counter: the log costs a commit
/// no page it would not write anyway (the row lands on the table's last leaf page, which the
/// previous commits wrote too), and no statement (the revision's `UPDATE` became the row's
/// `INSERT`). Its first row marks where the log starts: watches can start from the revision
/// after it (its own changes are not kept). Version 3 had a counter row (`meta`) and one log
/// row per key (`changes`): one more page and one more statement per key for every commit.
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
",
    log_table!("VALUES (0, x'')")
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

/// From version 2: a change log that starts at the current revision (`meta`'s counter). The
/// changes up to now were never logged: a watch from an older revision gets `Compacted`.
const MIGRATE_FROM_V2: &str = concat!(log_table!("SELECT revision, x'' FROM meta"), "DROP TABLE meta;\n");

/// From version 3: the same, its log of one row per key dropped with it. A watch from a
/// revision before the migration gets `Compacted` once, and lists again.
const MIGRATE_FROM_V3: &str =
    concat!(log_table!("SELECT revision, x'' FROM meta"), "DROP TABLE meta;\nDROP TABLE changes;\n");

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
/// version 1, 2 or 3. Safe when many processes open a fresh file at once: the check is repeated
/// under `BEGIN IMMEDIATE`, so exactly one of them runs the DDL.
pub(super) fn ensure(conn: &mut Connection, busy_timeout: Duration) -> Result<(), SchemaError> {
    match user_version(conn)? {
        SCHEMA_VERSION => return Ok(()),
        0..=3 => {}
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
        3 => tx.execute_batch(MIGRATE_FROM_V3)?,
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
