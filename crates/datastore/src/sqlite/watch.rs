//! Watching the embedded store: a poll of the store revision on a connection of the watch's
//! own, then a read of the change log (`log`) when it moved.
//!
//! A poll is one `SELECT` of the log's first and last revisions, every [`POLL_INTERVAL`]: a
//! read transaction that takes and drops a read mark in the `-shm` file and, when nothing
//! was committed, finds the pages in the connection's cache. Between polls the connection holds
//! no transaction, so it never keeps a checkpoint from truncating the WAL.

use std::collections::HashMap;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::{log, ops, sqlite_error, EmbeddedStore};
use crate::watch::{self, Event, EventKind, Watch};
use crate::Error;

/// How often an idle watch looks at the store revision: a change is seen within this much.
pub const POLL_INTERVAL: Duration = Duration::from_millis(40);

/// The store revision (the log's last row), and the first revision the log still delivers
/// (the one after its first row: see `schema`).
const REVISIONS: &str = "SELECT (SELECT max(revision) FROM log), (SELECT min(revision) FROM log) + 1";
const CHANGES: &str = "SELECT revision, keys FROM log WHERE revision >= ?1 AND revision <= ?2";

/// A watch on an [`EmbeddedStore`].
pub(super) struct EmbeddedWatch {
    conn: Connection,
    path: PathBuf,
    busy_timeout: Duration,
    prefixes: Vec<String>,
    /// The first revision not delivered yet.
    next: i64,
}

impl EmbeddedStore {
    pub(super) fn open_watch(&self, prefixes: &[String], from_revision: i64) -> Result<EmbeddedWatch, Error> {
        let prefixes = watch::normalize(prefixes, from_revision)?;
        let sql_err = |e| sqlite_error(&self.path, self.busy_timeout, e);
        // The store is open, so the file exists with its schema: no create, no DDL.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(sql_err)?;
        conn.busy_timeout(self.busy_timeout).map_err(sql_err)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).map_err(sql_err)?;
        let watch = EmbeddedWatch {
            conn,
            path: self.path.clone(),
            busy_timeout: self.busy_timeout,
            prefixes,
            next: from_revision,
        };
        watch.revisions()?;
        Ok(watch)
    }
}

impl EmbeddedWatch {
    fn err(&self, e: rusqlite::Error) -> Error {
        sqlite_error(&self.path, self.busy_timeout, e)
    }

    /// The store revision, after checking that the change log still reaches back to `next`.
    fn revisions(&self) -> Result<i64, Error> {
        let (revision, compact_revision): (i64, i64) = self
            .conn
            .prepare_cached(REVISIONS)
            .and_then(|mut s| s.query_row([], |row| Ok((row.get(0)?, row.get(1)?))))
            .map_err(|e| self.err(e))?;
        if self.next < compact_revision {
            return Err(Error::Compacted { requested: self.next, compact_revision });
        }
        Ok(revision)
    }

    /// The changes from `next` on, in one read transaction; `next` moves past them. Several
    /// changes of one key are coalesced into the last one, whose value `kv` then holds.
    fn read_changes(&mut self) -> Result<Vec<Event>, Error> {
        let tx = self.conn.transaction().map_err(|e| sqlite_error(&self.path, self.busy_timeout, e))?;
        let events = {
            let (revision, compact_revision): (i64, i64) = tx
                .prepare_cached(REVISIONS)
                .and_then(|mut s| s.query_row([], |row| Ok((row.get(0)?, row.get(1)?))))
                .map_err(|e| sqlite_error(&self.path, self.busy_timeout, e))?;
            if self.next < compact_revision {
                return Err(Error::Compacted { requested: self.next, compact_revision });
            }
            let rows: Vec<(i64, Vec<u8>)> = tx
                .prepare_cached(CHANGES)
                .and_then(|mut s| s.query_map([self.next, revision], |row| Ok((row.get(0)?, row.get(1)?)))?.collect())
                .map_err(|e| sqlite_error(&self.path, self.busy_timeout, e))?;
            // The last change of each key under the prefixes, in revision order.
            let mut last: HashMap<&str, (i64, bool)> = HashMap::new();
            for (rev, keys) in &rows {
                let changes = log::decode(keys).ok_or_else(|| {
                    Error::Protocol(format!(
                        "embedded datastore {}: the change log's row of revision {rev} is malformed",
                        self.path.display()
                    ))
                })?;
                for change in changes {
                    if watch::matches(&self.prefixes, change.key) {
                        last.insert(change.key, (*rev, change.deleted));
                    }
                }
            }
            let mut changed: Vec<(i64, &str, bool)> =
                last.into_iter().map(|(key, (rev, del))| (rev, key, del)).collect();
            changed.sort_unstable();
            let mut events = Vec::with_capacity(changed.len());
            for (rev, key, deleted) in changed {
                let kind = if deleted {
                    EventKind::Delete
                } else {
                    let kv = ops::get(&tx, key).map_err(|e| sqlite_error(&self.path, self.busy_timeout, e))?;
                    match kv {
                        Some(kv) if kv.mod_revision == rev => EventKind::Put { value: kv.value },
                        _ => {
                            return Err(Error::Protocol(format!(
                                "embedded datastore {}: the change log has {key} at revision \
                                 {rev}, the key itself does not",
                                self.path.display()
                            )))
                        }
                    }
                };
                events.push(Event { key: key.to_owned(), kind, mod_revision: rev });
            }
            self.next = revision + 1;
            events
        };
        tx.commit().map_err(|e| sqlite_error(&self.path, self.busy_timeout, e))?;
        Ok(events)
    }
}

impl Watch for EmbeddedWatch {
    fn next(&mut self, timeout: Duration) -> Result<Option<Vec<Event>>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.revisions()? >= self.next {
                let events = self.read_changes()?;
                if !events.is_empty() {
                    return Ok(Some(events));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            thread::sleep(left.min(POLL_INTERVAL));
        }
    }
}
