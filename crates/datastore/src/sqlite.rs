//! The embedded backend: one SQLite file shared by every plugin process on the host.
//!
//! # Safety under concurrency and crashes
//! - WAL journal: readers never block the writer; a `kill -9` at any instant leaves either
//!   the whole transaction or none of it.
//! - Every [`Datastore::txn`] is `BEGIN IMMEDIATE` … `COMMIT`: it takes the write lock before
//!   reading its compares, so check-and-write is atomic and isolated across processes.
//! - A bounded busy timeout (10 s by default). A store that stays locked longer gives
//!   [`Error::Unavailable`] (CNI code 11, "try again later").
//! - The file, `-wal` and `-shm` are mode 0600, in a directory created 0700.
//!
//! # Durability: `synchronous`
//! MEASURED_FIGURES
//!
//! # Cost of opening
//! Opening runs no DDL and sets no persistent PRAGMA: one `stat`, `sqlite3_open`, `PRAGMA
//! synchronous` and a read of `PRAGMA user_version`. Closing does not checkpoint
//! (`SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE`): a plugin process that exits would otherwise pay a
//! checkpoint and an fsync each time; SQLite's auto-checkpoint (every 1000 WAL pages) runs in
//! some later commit instead.

mod file;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::{Compare, Datastore, Error, KeyValue, Op, TxnOutcome};
use schema::SchemaError;

/// How long a process waits for another one's write lock before giving up.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLite's `PRAGMA synchronous` in WAL mode: what a commit survives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// No fsync per commit: survives a crash of any process, may lose the last commits (never
    /// consistency) on power loss or kernel crash.
    #[default]
    Normal,
    /// One fsync of the WAL per commit: also survives power loss.
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "PRAGMA synchronous = NORMAL",
            Synchronous::Full => "PRAGMA synchronous = FULL",
        }
    }
}

/// Tuning of [`EmbeddedStore::open_with`]; [`EmbeddedStore::open`] uses the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// How long to wait for a lock held by another process before reporting `Unavailable`.
    pub busy_timeout: Duration,
    pub synchronous: Synchronous,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions { busy_timeout: DEFAULT_BUSY_TIMEOUT, synchronous: Synchronous::default() }
    }
}

/// A [`Datastore`] in one SQLite file, safe to share between processes.
pub struct EmbeddedStore {
    conn: Mutex<Connection>,
    path: PathBuf,
    busy_timeout: Duration,
}

impl EmbeddedStore {
    /// Open (creating if needed) the store at `path` with the default options.
    pub fn open(path: &Path) -> Result<EmbeddedStore, Error> {
        Self::open_with(path, EmbeddedOptions::default())
    }

    /// Open (creating if needed) the store at `path`.
    pub fn open_with(path: &Path, options: EmbeddedOptions) -> Result<EmbeddedStore, Error> {
        file::prepare(path)?;
        let sql_err = |e| sqlite_error(path, options.busy_timeout, e);
        // No SQLITE_OPEN_CREATE: `file::prepare` made the file with the right mode.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(sql_err)?;
        conn.busy_timeout(options.busy_timeout).map_err(sql_err)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).map_err(sql_err)?;
        conn.execute_batch(options.synchronous.pragma()).map_err(sql_err)?;
        schema::ensure(&mut conn, options.busy_timeout).map_err(|e| match e {
            SchemaError::Sqlite(e) => sql_err(e),
            SchemaError::TooNew(v) => Error::Protocol(format!(
                "embedded datastore {}: schema version {v} is newer than the supported {}",
                path.display(),
                schema::SCHEMA_VERSION
            )),
            SchemaError::NotWal(mode) => Error::Protocol(format!(
                "embedded datastore {}: cannot switch to WAL journal (still {mode})",
                path.display()
            )),
        })?;
        Ok(EmbeddedStore {
            conn: Mutex::new(conn),
            path: path.to_owned(),
            busy_timeout: options.busy_timeout,
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `PRAGMA integrity_check`: `Ok(())` when SQLite reports "ok", else its findings.
    pub fn integrity_check(&self) -> Result<(), Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare("PRAGMA integrity_check").map_err(|e| self.err(e))?;
        let findings = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        if findings.len() == 1 && findings[0] == "ok" {
            Ok(())
        } else {
            Err(Error::Protocol(format!(
                "embedded datastore {}: integrity check failed: {}",
                self.path.display(),
                findings.join("; ")
            )))
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no open transaction behind (Transaction rolls
        // back on drop), so the connection is still usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        sqlite_error(&self.path, self.busy_timeout, e)
    }
}

/// Busy and locked mean another process held the lock past the timeout: `Unavailable`.
fn sqlite_error(path: &Path, busy_timeout: Duration, source: rusqlite::Error) -> Error {
    match source.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Unavailable {
            reason: format!(
                "embedded datastore {} stayed locked for more than {busy_timeout:?}",
                path.display()
            ),
            source: Some(Box::new(source)),
        },
        _ => Error::Sqlite { path: path.to_owned(), source },
    }
}

fn key_value(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue { key: row.get(0)?, value: row.get(1)?, mod_revision: row.get(2)? })
}

/// The least string greater than every string starting with `prefix`, or `None` when there
/// is none (empty prefix, or only `char::MAX`). UTF-8 byte order is code point order, so
/// bumping the last char that can be bumped gives the exclusive upper bound of the range.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut end = prefix.to_owned();
    while let Some(last) = end.pop() {
        if let Some(next) = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32) {
            end.push(next);
            return Some(end);
        }
    }
    None
}

fn compare_holds(conn: &Connection, compare: &Compare) -> rusqlite::Result<bool> {
    let (key, want) = match compare {
        Compare::Absent(key) => (key, None),
        Compare::Revision(key, revision) => (key, Some(*revision)),
    };
    let found: Option<i64> = conn
        .prepare_cached("SELECT mod_revision FROM kv WHERE key = ?1")?
        .query_row([key], |row| row.get(0))
        .optional()?;
    Ok(found == want)
}

impl Datastore for EmbeddedStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, Error> {
        let conn = self.lock();
        conn.prepare_cached("SELECT key, value, mod_revision FROM kv WHERE key = ?1")
            .and_then(|mut stmt| stmt.query_row([key], key_value).optional())
            .map_err(|e| self.err(e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, Error> {
        let conn = self.lock();
        let result = match prefix_end(prefix) {
            Some(end) => conn
                .prepare_cached(
                    "SELECT key, value, mod_revision FROM kv \
                     WHERE key >= ?1 AND key < ?2 ORDER BY key",
                )
                .and_then(|mut stmt| stmt.query_map(params![prefix, end], key_value)?.collect()),
            None => conn
                .prepare_cached(
                    "SELECT key, value, mod_revision FROM kv WHERE key >= ?1 ORDER BY key",
                )
                .and_then(|mut stmt| stmt.query_map([prefix], key_value)?.collect()),
        };
        result.map_err(|e| self.err(e))
    }

    fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<TxnOutcome, Error> {
        let mut conn = self.lock();
        let run = |conn: &mut Connection| -> rusqlite::Result<TxnOutcome> {
            // The write lock first, so that nobody writes between our compares and our writes.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for compare in compares {
                if !compare_holds(&tx, compare)? {
                    tx.rollback()?;
                    return Ok(TxnOutcome::Conflict);
                }
            }
            let revision: i64 = tx
                .prepare_cached("UPDATE meta SET revision = revision + 1 RETURNING revision")?
                .query_row([], |row| row.get(0))?;
            for op in ops {
                match op {
                    Op::Put { key, value } => tx
                        .prepare_cached(
                            "INSERT INTO kv (key, value, mod_revision) VALUES (?1, ?2, ?3) \
                             ON CONFLICT (key) DO UPDATE \
                             SET value = excluded.value, mod_revision = excluded.mod_revision",
                        )?
                        .execute(params![key, value, revision])?,
                    Op::Delete { key } => {
                        tx.prepare_cached("DELETE FROM kv WHERE key = ?1")?.execute([key])?
                    }
                };
            }
            tx.commit()?;
            Ok(TxnOutcome::Committed { revision })
        };
        run(&mut conn).map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_bumps_the_last_char() {
        assert_eq!(prefix_end("/a/").as_deref(), Some("/a0"));
        assert_eq!(prefix_end("/a/b").as_deref(), Some("/a/c"));
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("\u{10FFFF}\u{10FFFF}"), None);
    }
}
