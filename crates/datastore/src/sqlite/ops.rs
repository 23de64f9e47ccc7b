//! [`Datastore`] on the embedded store: the SQL of get, list and txn.
//!
//! A plugin process lives for about a millisecond and prepares every statement it runs once,
//! so the set of distinct statements is kept small: the compare of a txn reuses the get
//! statement, and `BEGIN IMMEDIATE` / `COMMIT` are cached like the rest.

use rusqlite::{params, Connection, OptionalExtension};

use super::log::{self, Change};
use super::{EmbeddedStore, CHANGE_LOG_REVISIONS, TRIM_EVERY};
use crate::{Compare, Datastore, Error, KeyValue, Op, Read, TxnOutcome, Watch};

impl EmbeddedStore {
    /// Forget the change log before `revision` (at most the current revision), as etcd's
    /// compact does. The store also does this by itself, keeping the last
    /// [`CHANGE_LOG_REVISIONS`] revisions.
    pub fn compact(&self, revision: i64) -> Result<(), Error> {
        compact(&self.lock(), revision).map_err(|e| self.err(e))
    }
}

const GET: &str = "SELECT key, value, mod_revision FROM kv WHERE key = ?1";
const LIST_RANGE: &str = "SELECT key, value, mod_revision FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key";
const LIST_FROM: &str = "SELECT key, value, mod_revision FROM kv WHERE key >= ?1 ORDER BY key";
/// A put takes the revision its commit will get: one more than the last in the change log,
/// which only the log row written at the end of the txn ([`LOG_COMMIT`]) moves.
const PUT: &str = "INSERT INTO kv (key, value, mod_revision) \
     VALUES (?1, ?2, (SELECT max(revision) FROM log) + 1) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value, mod_revision = excluded.mod_revision";
const DELETE: &str = "DELETE FROM kv WHERE key = ?1";
/// The commit's row of the change log, which is also what moves the store revision.
const LOG_COMMIT: &str = "INSERT INTO log (keys) VALUES (?1) RETURNING revision";
const REVISION: &str = "SELECT max(revision) FROM log";
/// Keeps the row of `?1 - 1`: the oldest row marks where the log starts, its changes are
/// no longer delivered (see `schema`).
const TRIM_LOG: &str = "DELETE FROM log WHERE revision < ?1 - 1";

fn key_value(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue { key: row.get(0)?, value: row.get(1)?, mod_revision: row.get(2)? })
}

pub(super) fn get(conn: &Connection, key: &str) -> rusqlite::Result<Option<KeyValue>> {
    conn.prepare_cached(GET)?.query_row([key], key_value).optional()
}

/// The least string greater than every string starting with `prefix`, or `None` when there
/// is none (empty prefix, or only `char::MAX`). UTF-8 byte order is code point order, so
/// bumping the last char that can be bumped gives the exclusive upper bound of the range.
pub(super) fn prefix_end(prefix: &str) -> Option<String> {
    let mut end = prefix.to_owned();
    while let Some(last) = end.pop() {
        if let Some(next) = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32) {
            end.push(next);
            return Some(end);
        }
    }
    None
}

/// An explicit transaction, rolled back on drop unless committed, so that no error path
/// leaves it open.
struct Txn<'c> {
    conn: &'c Connection,
}

impl<'c> Txn<'c> {
    /// A write transaction: `BEGIN IMMEDIATE` takes the write lock before the compares are
    /// read, so nobody writes between them and our writes.
    fn write(conn: &'c Connection) -> rusqlite::Result<Self> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(Txn { conn })
    }

    /// A read transaction: every read sees the same snapshot, and no writer waits for it.
    fn read(conn: &'c Connection) -> rusqlite::Result<Self> {
        conn.prepare_cached("BEGIN")?.execute([])?;
        Ok(Txn { conn })
    }

    fn commit(self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        // After a successful COMMIT the connection is back in autocommit mode.
        if !self.conn.is_autocommit() {
            // Nothing better to do with a failed rollback; SQLite then rolls back itself when
            // the connection closes.
            let _ = self.conn.prepare_cached("ROLLBACK").and_then(|mut s| s.execute([]));
        }
    }
}

/// Take the write lock and give it back at once: the check of STATUS that a write could
/// start. True when SQLite has the file open read-only.
pub(super) fn begin_and_roll_back(conn: &Connection) -> rusqlite::Result<bool> {
    let txn = Txn::write(conn)?;
    let read_only = conn.is_readonly(rusqlite::MAIN_DB)?;
    drop(txn);
    Ok(read_only)
}

fn list(conn: &Connection, prefix: &str) -> rusqlite::Result<Vec<KeyValue>> {
    match prefix_end(prefix) {
        Some(end) => conn.prepare_cached(LIST_RANGE)?.query_map(params![prefix, end], key_value)?.collect(),
        None => conn.prepare_cached(LIST_FROM)?.query_map([prefix], key_value)?.collect(),
    }
}

fn read_many(conn: &Connection, reads: &[Read]) -> rusqlite::Result<Vec<Vec<KeyValue>>> {
    let txn = Txn::read(conn)?;
    let found = read_all(conn, reads)?;
    txn.commit()?;
    Ok(found)
}

fn read_all(conn: &Connection, reads: &[Read]) -> rusqlite::Result<Vec<Vec<KeyValue>>> {
    reads
        .iter()
        .map(|read| match read {
            Read::Key(key) => get(conn, key).map(|kv| kv.into_iter().collect()),
            Read::Prefix(prefix) => list(conn, prefix),
        })
        .collect()
}

/// The reads and the store revision, in one read transaction.
fn read_many_at(conn: &Connection, reads: &[Read]) -> rusqlite::Result<(Vec<Vec<KeyValue>>, i64)> {
    let txn = Txn::read(conn)?;
    let revision = conn.prepare_cached(REVISION)?.query_row([], |row| row.get(0))?;
    let found = read_all(conn, reads)?;
    txn.commit()?;
    Ok((found, revision))
}

/// Drop the change log before `revision`; watches that still need it get `Compacted`.
fn trim_changes(conn: &Connection, revision: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(TRIM_LOG)?.execute([revision])?;
    Ok(())
}

fn compact(conn: &Connection, revision: i64) -> rusqlite::Result<()> {
    let txn = Txn::write(conn)?;
    let current: i64 = conn.prepare_cached(REVISION)?.query_row([], |row| row.get(0))?;
    trim_changes(conn, revision.min(current))?;
    txn.commit()
}

fn holds(conn: &Connection, compare: &Compare) -> rusqlite::Result<bool> {
    Ok(match compare {
        Compare::Absent(key) => get(conn, key)?.is_none(),
        Compare::Revision(key, revision) => get(conn, key)?.is_some_and(|kv| kv.mod_revision == *revision),
    })
}

fn txn(conn: &Connection, compares: &[Compare], ops: &[Op]) -> rusqlite::Result<TxnOutcome> {
    let txn = Txn::write(conn)?;
    for compare in compares {
        if !holds(conn, compare)? {
            return Ok(TxnOutcome::Conflict); // rolled back by the drop of `txn`
        }
    }
    let mut changes = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            Op::Put { key, value } => {
                conn.prepare_cached(PUT)?.execute(params![key, value])?;
                changes.push(Change { key, deleted: false });
            }
            Op::Delete { key } => {
                // As in etcd, deleting nothing is no change; the key may have been put earlier
                // in this txn, though, and then its delete is.
                if conn.prepare_cached(DELETE)?.execute([key])? > 0 {
                    changes.push(Change { key, deleted: true });
                }
            }
        }
    }
    let revision: i64 = conn.prepare_cached(LOG_COMMIT)?.query_row([log::encode(&changes)], |row| row.get(0))?;
    if revision % TRIM_EVERY == 0 && revision > CHANGE_LOG_REVISIONS {
        trim_changes(conn, revision - CHANGE_LOG_REVISIONS + 1)?;
    }
    txn.commit()?;
    Ok(TxnOutcome::Committed { revision })
}

impl Datastore for EmbeddedStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, Error> {
        get(&self.lock(), key).map_err(|e| self.err(e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, Error> {
        list(&self.lock(), prefix).map_err(|e| self.err(e))
    }

    /// All reads in one read transaction: one snapshot, as etcd's read-only Txn gives.
    fn read_many(&self, reads: &[Read]) -> Result<Vec<Vec<KeyValue>>, Error> {
        read_many(&self.lock(), reads).map_err(|e| self.err(e))
    }

    fn read_many_at(&self, reads: &[Read]) -> Result<(Vec<Vec<KeyValue>>, i64), Error> {
        read_many_at(&self.lock(), reads).map_err(|e| self.err(e))
    }

    fn watch(&self, prefixes: &[String], from_revision: i64) -> Result<Box<dyn Watch>, Error> {
        Ok(Box::new(self.open_watch(prefixes, from_revision)?))
    }

    fn txn(&self, compares: &[Compare], ops: &[Op]) -> Result<TxnOutcome, Error> {
        let conn = self.lock();
        let outcome = txn(&conn, compares, ops).map_err(|e| self.err(e))?;
        if outcome.committed() {
            self.checkpoint_if_large(&conn);
        }
        Ok(outcome)
    }

    fn check_writable(&self) -> Result<(), Error> {
        EmbeddedStore::check_writable(self)
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
