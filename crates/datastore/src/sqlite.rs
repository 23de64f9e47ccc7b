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
//! # Durability: `synchronous = NORMAL`
//! In WAL mode, NORMAL loses no committed transaction when a process dies (kill -9, panic, OOM
//! kill): the commit is in the WAL, in the kernel's page cache. A power loss or kernel crash
//! may lose the last commits since the previous checkpoint, never the file's consistency.
//! FULL also survives power loss, at one fsync of the WAL per commit. Measured on the
//! development machine (2-core VM, ext4 on virtio, release build, shared and noisy;
//! `cargo run --release -p datastore --example embedded_bench`):
//!
//! | per commit (one txn)      | median      | p90          |
//! |---------------------------|-------------|--------------|
//! | `synchronous = NORMAL`    | 35–55 µs    | 80–130 µs    |
//! | `synchronous = FULL`      | 300–575 µs  | 0.6–1.8 ms   |
//!
//! The default is NORMAL ([`EmbeddedOptions`] selects FULL). calico-ipam commits once per
//! ADD and once per DEL: FULL would add 0.6–1 ms to an ADD+DEL cycle, half its budget, for
//! the sake of a power loss after which every container on the host is gone anyway and comes
//! back through a new ADD (a lost allocation is then free again; a lost release is a leak
//! that IPAM garbage collection reclaims).
//!
//! # Watching
//! Every txn ends by appending one row to a change log (`log`: the commit's revision, and the
//! keys it wrote, each with whether it was deleted), in the same transaction; that row is
//! also the store revision (the log's last row), so the log costs a commit no page and no
//! statement more than the revision counter it replaced. A watch has its own connection and
//! polls the store revision every [`POLL_INTERVAL`] (an idle watch measured 4-8 ms of CPU a
//! second in a debug build here, most of it the thread's wake-ups); when it moved, it reads
//! the log from where it was, and the values from `kv`, in one read transaction. Changes of
//! one key between two polls are coalesced into the last. The log keeps the last
//! [`CHANGE_LOG_REVISIONS`] revisions (commits whose revision is a multiple of 1000 trim it;
//! [`EmbeddedStore::compact`] trims it on demand), and its first row marks the oldest
//! revision it no longer holds: a watch that needs it or older gets [`Error::Compacted`].
//!
//! Measured with callgrind on the release build (one steady-state ADD from an empty WAL), the
//! first version of the log (schema 3: a counter row, and one log row per key in a table of
//! its own) cost a calico-cni ADD 1.45 M instructions and 8 WAL pages against 1.32 M and 6
//! without it, and calico-ipam ADD 1.02 M and 4 pages against 0.90 M and 3; this one costs
//! 1.33 M and 6, 0.90 M and 3.
//!
//! # Checkpoints, and the cost of a short-lived process
//! A process that opens the store while no other has it open rebuilds the WAL index by
//! reading the whole WAL. So the WAL is kept short: after a commit that leaves it at 64
//! pages or more, the committing process checkpoints it and truncates it to zero (see
//! `checkpoint_if_large`; a calico-cni ADD+DEL cycle writes about 12 pages, 6 for each
//! verb, so about one cycle in five pays for it: two fsyncs). Closing does not checkpoint (`SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE`), which would cost every writing
//! process an fsync. Opening runs no DDL and sets no persistent PRAGMA: one `stat`,
//! `sqlite3_open`, `PRAGMA synchronous` and a read of `PRAGMA user_version`.
//!
//! Measured as above: in a warm process, open + first get 170 µs, get 4 µs, list of 100 keys
//! 60 µs. In a fresh process, as a plugin runs, an ADD's store work (open, `read_many` of 3,
//! get, one txn, close) takes 0.9–1.05 ms, on top of 0.9 ms for the bare exec; an ADD+DEL
//! pair of processes takes 4.0–4.8 ms. Most of the store work is SQLite's cold start: an
//! anonymous page fault costs about 4 µs in this VM, and SQLite's page-cache bulk
//! allocation and lookaside touch about 60 pages. Building SQLite with
//! `LIBSQLITE3_FLAGS="-DSQLITE_DEFAULT_PCACHE_INITSZ=0 -DSQLITE_DEFAULT_LOOKASIDE=0,0"` and
//! without the unused extensions (FTS3/5, R*Tree, dbstat, load_extension) brings the store
//! work to about 0.8 ms.

mod file;
mod log;
mod ops;
mod schema;
mod watch;

pub use watch::POLL_INTERVAL;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::Error;
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
    /// The per-connection setting (it does not persist in the file).
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "PRAGMA synchronous = NORMAL",
            Synchronous::Full => "PRAGMA synchronous = FULL",
        }
    }
}

/// Checkpoint and truncate the WAL once it holds about this many pages. Fewer means more
/// fsyncs; more means a longer WAL for the next process to read when it opens the store.
/// A checkpoint costs 2-2.5 ms here (its fsyncs, and the WAL header's on the next commit);
/// re-reading the WAL costs each opening process about 2 µs a page. Measured on calico-ipam
/// ADD+DEL cycles, 400 runs each, twice: mean 3.87/3.78 ms at 32 pages, 3.74/3.50 at 64,
/// 3.67/3.61 at 128.
const CHECKPOINT_WAL_PAGES: u64 = 64;
/// The size of a WAL holding `CHECKPOINT_WAL_PAGES` pages of 4 KiB (24-byte frame headers).
const CHECKPOINT_WAL_BYTES: u64 = 32 + CHECKPOINT_WAL_PAGES * (24 + 4096);
/// How long a checkpoint waits for readers of the WAL to finish before giving up.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(100);

/// How many revisions of changes the change log keeps for watchers; a watch that falls
/// further behind gets [`Error::Compacted`]. At about 3 keys per revision and 60 bytes per
/// row, that is about 2 MB of the file.
pub const CHANGE_LOG_REVISIONS: i64 = 10_000;
/// The change log is trimmed by the commits whose revision is a multiple of this: one commit
/// in a thousand deletes a thousand revisions of rows.
const TRIM_EVERY: i64 = 1_000;

/// Tuning of [`EmbeddedStore::open_with`]; [`EmbeddedStore::open`] uses the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// How long to wait for a lock held by another process before reporting `Unavailable`.
    pub busy_timeout: Duration,
    /// What a commit survives; see the module documentation for the measured cost.
    pub synchronous: Synchronous,
    /// Create the file (and its directory) when missing; when false, a missing store is
    /// [`Error::Missing`] (SQLite is asked to open it without creating it: no race).
    pub create: bool,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions { busy_timeout: DEFAULT_BUSY_TIMEOUT, synchronous: Synchronous::default(), create: true }
    }
}

/// A [`Datastore`] in one SQLite file, safe to share between processes.
pub struct EmbeddedStore {
    conn: Mutex<Connection>,
    path: PathBuf,
    wal_path: PathBuf,
    busy_timeout: Duration,
}

impl EmbeddedStore {
    /// Open (creating if needed) the store at `path` with the default options.
    pub fn open(path: &Path) -> Result<EmbeddedStore, Error> {
        Self::open_with(path, EmbeddedOptions::default())
    }

    /// Open the store at `path`, creating it if needed unless `options.create` is false.
    pub fn open_with(path: &Path, options: EmbeddedOptions) -> Result<EmbeddedStore, Error> {
        if options.create {
            file::prepare(path)?;
        }
        let sql_err = |e| sqlite_error(path, options.busy_timeout, e);
        // No SQLITE_OPEN_CREATE: `file::prepare` made the file with the right mode, or the
        // caller wants an existing store only. NOFOLLOW: a symbolic link planted at the path
        // after `prepare` looked is refused, not followed.
        let flags =
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let mut conn = Connection::open_with_flags(path, flags).map_err(|e| {
            if !options.create && !path.exists() {
                Error::Missing { path: path.to_owned() }
            } else {
                sql_err(e)
            }
        })?;
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
            wal_path: file::with_suffix(path, "-wal"),
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

    /// Whether a write could succeed now (STATUS), writing nothing: SQLite must have opened the
    /// file for writing (it falls back to read-only on a read-only file or file system, where
    /// `BEGIN IMMEDIATE` quietly becomes a read), `BEGIN IMMEDIATE` must get the write lock
    /// (rolled back at once), and the file system must have room for a WAL of
    /// [`CHECKPOINT_WAL_PAGES`] pages, the most an ADD may need before the WAL is truncated.
    fn check_writable(&self) -> Result<(), Error> {
        let read_only = ops::begin_and_roll_back(&self.lock()).map_err(|e| self.err(e))?;
        if read_only {
            return Err(Error::Io {
                path: self.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::ReadOnlyFilesystem,
                    "opened read-only: the file, its -wal or -shm, or its file system is not writable",
                ),
            });
        }
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let free = free_bytes(dir).map_err(|source| Error::Io { path: dir.to_owned(), source })?;
        if free < CHECKPOINT_WAL_BYTES {
            return Err(Error::Io {
                path: self.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!(
                        "only {free} bytes free on its file system, less than the \
                         {CHECKPOINT_WAL_BYTES} a WAL may need"
                    ),
                ),
            });
        }
        Ok(())
    }

    /// After a commit: once the WAL holds [`CHECKPOINT_WAL_PAGES`] pages, copy them into the
    /// database and truncate the WAL.
    ///
    /// A process that opens the store while no other has it open rebuilds the WAL index by
    /// reading the whole WAL, and then cannot tell which frames were already checkpointed, so
    /// it never restarts the WAL: with SQLite's auto-checkpoint (PASSIVE, every 1000 pages)
    /// the WAL of short-lived processes only grows, and every commit pays a checkpoint. A
    /// truncated WAL is empty for the next process. The commit is durable whatever happens
    /// here, so a checkpoint that fails or finds readers (it waits [`CHECKPOINT_WAIT`]) is
    /// left to a later commit.
    fn checkpoint_if_large(&self, conn: &Connection) {
        let wal_len = std::fs::metadata(&self.wal_path).map_or(0, |m| m.len());
        if wal_len < CHECKPOINT_WAL_BYTES {
            return;
        }
        // `busy_timeout` only fails on a duration that does not fit SQLite's int milliseconds,
        // which neither of these does.
        let _ = conn.busy_timeout(CHECKPOINT_WAIT);
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        let _ = conn.busy_timeout(self.busy_timeout);
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no open transaction behind (the write
        // transaction rolls back on drop), so the connection is still usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        sqlite_error(&self.path, self.busy_timeout, e)
    }
}

/// The bytes this process may still write on the file system holding `dir` (root may also
/// use the blocks reserved for it).
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_dir = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_dir` is NUL-terminated and `st` is a valid buffer for one statvfs.
    if unsafe { libc::statvfs(c_dir.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    // SAFETY: geteuid has no preconditions.
    let blocks = if unsafe { libc::geteuid() } == 0 { st.f_bfree } else { st.f_bavail };
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    Ok(blocks as u64 * st.f_frsize as u64)
}

/// Busy and locked mean another process held the lock past the timeout: `Unavailable`.
fn sqlite_error(path: &Path, busy_timeout: Duration, source: rusqlite::Error) -> Error {
    match source.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Unavailable {
            reason: format!("embedded datastore {} stayed locked for more than {busy_timeout:?}", path.display()),
            source: Some(Box::new(source)),
        },
        _ => Error::Sqlite { path: path.to_owned(), cause: source },
    }
}
