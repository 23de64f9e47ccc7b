//! The skeleton both plugin mains call: environment, stdin, version checks, dispatch, and
//! exactly one JSON document on stdout.
//!
//! Version rules, as libcni's skel:
//! - a config without `cniVersion` is version 0.1.0 (libcni's `ConfigDecoder`);
//! - an unknown `cniVersion` is code 1;
//! - CHECK below 0.4.0 and GC/STATUS below 1.1.0 are code 1 ("config version … does not
//!   allow …");
//! - VERSION needs no stdin; it answers in the stdin's `cniVersion` when one is given and
//!   known, else in [`Version::LATEST`].
//!
//! The network name must be present and match `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$` (code 7).
//! Not done here: libcni's check that CNI_NETNS is not the plugin's own netns.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

use serde::Deserialize;

use crate::error::code;
use crate::{parse_config, CniCode, CniResult, Command, Env, Error, Failure, Version};

/// One invocation: the validated environment, the config's version, and the raw config.
pub struct Request {
    pub env: Env,
    pub version: Version,
    pub stdin: Vec<u8>,
}

/// A CNI plugin: one method per command. VERSION is answered by the skeleton.
pub trait Plugin {
    type Error: CniCode;
    fn add(&self, req: &Request) -> Result<CniResult, Self::Error>;
    fn del(&self, req: &Request) -> Result<(), Self::Error>;
    fn check(&self, req: &Request) -> Result<(), Self::Error>;
    fn gc(&self, req: &Request) -> Result<(), Self::Error>;
    fn status(&self, req: &Request) -> Result<(), Self::Error>;

    /// One sentence saying what the plugin does, for `--help`.
    fn about(&self) -> &'static str {
        "a CNI plugin"
    }
}

/// The most stdin a plugin accepts (4 MiB); more is [`Error::StdinTooLarge`].
pub const STDIN_LIMIT: usize = 4 << 20;

/// Whether this process has written its one document to stdout.
static EMITTED: AtomicBool = AtomicBool::new(false);
/// Index in [`Version::ALL`] of the version errors are printed in (for the panic hook).
static ERROR_VERSION: AtomicUsize = AtomicUsize::new(Version::ALL.len() - 1);
static HOOK: Once = Once::new();

/// The plugin's `main`: reads the process environment and stdin, dispatches to `plugin`,
/// prints the result (ADD) in exactly the requested version or the error JSON, and returns
/// the exit status (0 ok, 1 error).
///
/// Also installs a panic hook that prints error JSON (code 100) on stdout, for panics on any
/// thread; a panic never produces a second document.
///
/// Run by hand, without CNI_COMMAND, with `--help`, `-h` or `--version`, it prints what it
/// is (see [`usage`]) on stdout and exits 0.
pub fn run<P: Plugin>(plugin: &P) -> ExitCode {
    if std::env::var_os("CNI_COMMAND").is_none_or(|c| c.is_empty()) {
        let program = std::env::args_os()
            .next()
            .map(std::path::PathBuf::from)
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "plugin".into());
        let flag = std::env::args().nth(1).unwrap_or_default();
        if let Some(text) = usage(&program, plugin.about(), &flag) {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
    }
    install_panic_hook();
    // SAFETY: isatty only inspects the descriptor.
    let stdin_is_tty = unsafe { libc::isatty(libc::STDIN_FILENO) } == 1;
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut doc = Vec::new();
    let status = run_inner(
        plugin,
        |name: &str| std::env::var(name).ok(),
        (!stdin_is_tty).then_some(&mut input as &mut dyn Read),
        &mut doc,
        &|v| ERROR_VERSION.store(version_index(v), Ordering::Relaxed),
    );
    if let Err(err) = emit_once(&doc) {
        eprintln!("failed to write the reply to stdout: {err}");
        return ExitCode::FAILURE;
    }
    status
}

/// [`run`] over the given environment lookup, stdin (`None`: not available) and stdout, for
/// tests and embedding. Catches panics (code 100) but installs no hook.
pub fn run_with<P: Plugin>(
    plugin: &P,
    lookup: impl Fn(&str) -> Option<String>,
    stdin: Option<&mut dyn Read>,
    stdout: &mut dyn Write,
) -> ExitCode {
    run_inner(plugin, lookup, stdin, stdout, &|_| {})
}

/// What `program --help` (`-h`) and `program --version` print; `None` for any other
/// argument (the plugin then runs as usual and reports the missing CNI_COMMAND).
pub fn usage(program: &str, about: &str, flag: &str) -> Option<String> {
    let version = format!("{program} {}", env!("CARGO_PKG_VERSION"));
    let specs: Vec<&str> = Version::ALL.iter().map(|v| v.as_str()).collect();
    match flag {
        "--version" => Some(format!("{version} (CNI spec versions {}); --help says more\n", specs.join(", "))),
        "--help" | "-h" => Some(format!(
            "{version}: {about}.\n\n\
             This is a CNI plugin: a container runtime (containerd, CRI-O, podman, cnitool...)\n\
             runs it with CNI_COMMAND (ADD, DEL, CHECK, GC, STATUS or VERSION), CNI_CONTAINERID,\n\
             CNI_NETNS, CNI_IFNAME, CNI_ARGS and CNI_PATH in the environment and the network\n\
             config (JSON) on stdin, and reads one JSON document from its stdout: the result, or\n\
             an error with its CNI code. CNI spec versions: {}.\n\n\
             Try it:   echo '{{\"cniVersion\":\"1.0.0\"}}' | CNI_COMMAND=VERSION {program}\n\
             Netconf fields, error codes and examples: README.md of calico-cni.\n",
            specs.join(", ")
        )),
        _ => None,
    }
}

/// Prints `result` as version `v` on stdout, unless a document was already printed.
/// [`run`] does this itself for ADD; this is for mains that do not use [`run`].
pub fn print_result(result: &CniResult, v: Version) -> Result<(), Error> {
    let mut doc = result.to_json(v).to_string().into_bytes();
    doc.push(b'\n');
    emit_once(&doc).map_err(|source| Error::Io { context: "writing the result to stdout".into(), source })
}

fn run_inner<P: Plugin>(
    plugin: &P,
    lookup: impl Fn(&str) -> Option<String>,
    stdin: Option<&mut dyn Read>,
    stdout: &mut dyn Write,
    on_version: &dyn Fn(Version),
) -> ExitCode {
    let version = Cell::new(Version::LATEST);
    let set_version = |v: Version| {
        version.set(v);
        on_version(v);
    };
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| dispatch(plugin, &lookup, stdin, &set_version)));
    let (doc, status) = match outcome {
        Ok(Ok(doc)) => (doc, ExitCode::SUCCESS),
        Ok(Err(mut failure)) => {
            failure.cni_version = version.get().to_string();
            (Some(failure.to_json()), ExitCode::FAILURE)
        }
        Err(payload) => {
            let mut failure = Failure::new(code::INTERNAL, panic_message(payload.as_ref()));
            failure.cni_version = version.get().to_string();
            (Some(failure.to_json()), ExitCode::FAILURE)
        }
    };
    if let Some(doc) = doc {
        if writeln!(stdout, "{doc}").and_then(|()| stdout.flush()).is_err() {
            return ExitCode::FAILURE;
        }
    }
    status
}

/// The config fields the skeleton reads.
#[derive(Deserialize)]
struct Header {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    #[serde(default)]
    name: String,
}

/// Runs one command; `Ok(Some(doc))` is the ADD result or VERSION answer.
fn dispatch<P: Plugin>(
    plugin: &P,
    lookup: &dyn Fn(&str) -> Option<String>,
    stdin: Option<&mut dyn Read>,
    set_version: &dyn Fn(Version),
) -> Result<Option<String>, Failure> {
    let env = Env::from_lookup(lookup).map_err(|e| failure(&e))?;
    let stdin = read_stdin(stdin).map_err(|e| failure(&e))?;

    if env.command == Command::Version {
        let version = serde_json::from_slice::<Header>(&stdin)
            .ok()
            .and_then(|h| Version::parse(&h.cni_version).ok())
            .unwrap_or(Version::LATEST);
        set_version(version);
        return Ok(Some(crate::version_info(version).to_string()));
    }

    let version = parse_header(&stdin, set_version).map_err(|e| failure(&e))?;
    let command = env.command;
    let unsupported = match command {
        Command::Check => !version.supports_check(),
        Command::Gc | Command::Status => !version.supports_gc_status(),
        _ => false,
    };
    if unsupported {
        return Err(failure(&Error::CommandNotSupported { command, version }));
    }

    let req = Request { env, version, stdin };
    let done = |r: Result<(), P::Error>| r.map(|()| None).map_err(|e| failure(&e));
    match command {
        Command::Add => {
            plugin.add(&req).map(|result| Some(result.to_json(version).to_string())).map_err(|e| failure(&e))
        }
        Command::Del => done(plugin.del(&req)),
        Command::Check => done(plugin.check(&req)),
        Command::Gc => done(plugin.gc(&req)),
        Command::Status => done(plugin.status(&req)),
        Command::Version => Ok(None),
    }
}

/// Reads the version (reporting it at once, so later errors print in it) and checks the name.
fn parse_header(stdin: &[u8], set_version: &dyn Fn(Version)) -> Result<Version, Error> {
    let header: Header = parse_config(stdin)?;
    let version = if header.cni_version.is_empty() { Version::V0_1_0 } else { Version::parse(&header.cni_version)? };
    set_version(version);
    if header.name.is_empty() {
        return Err(Error::InvalidConfig { field: "name".into(), reason: "missing network name".into() });
    }
    if !crate::env::is_valid_id(&header.name) {
        return Err(Error::InvalidConfig {
            field: "name".into(),
            reason: format!(
                "network name {:?} must start with a letter or digit and contain only \
                 letters, digits, '_', '.' and '-'",
                header.name
            ),
        });
    }
    Ok(version)
}

fn read_stdin(stdin: Option<&mut dyn Read>) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    if let Some(stdin) = stdin {
        stdin
            .take(STDIN_LIMIT as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|source| Error::Io { context: "reading the network config from stdin".into(), source })?;
    }
    if buf.len() > STDIN_LIMIT {
        return Err(Error::StdinTooLarge { limit: STDIN_LIMIT });
    }
    Ok(buf)
}

fn failure<E: CniCode>(err: &E) -> Failure {
    err.failure()
}

fn version_index(v: Version) -> usize {
    Version::ALL.iter().position(|x| *x == v).unwrap_or(Version::ALL.len() - 1)
}

/// Writes `doc` to stdout if nothing was written yet.
fn emit_once(doc: &[u8]) -> io::Result<()> {
    if doc.is_empty() || EMITTED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let mut out = io::stdout().lock();
    out.write_all(doc)?;
    out.flush()
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("unknown panic");
    format!("internal error: plugin panicked: {what}")
}

fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            previous(info); // the usual message on stderr
            let mut failure = Failure::new(code::INTERNAL, panic_message(info.payload()));
            if let Some(location) = info.location() {
                failure.details = format!("at {location}");
            }
            let index = ERROR_VERSION.load(Ordering::Relaxed);
            failure.cni_version = Version::ALL.get(index).copied().unwrap_or(Version::LATEST).to_string();
            let _ = emit_once(format!("{}\n", failure.to_json()).as_bytes());
        }));
    });
}

#[cfg(test)]
#[path = "skel_tests.rs"]
mod tests;
