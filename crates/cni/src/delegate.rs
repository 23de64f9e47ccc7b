//! Delegation to another plugin (IPAM), as libcni's `invoke` package does it.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::thread;
use std::time::Duration;

use crate::{CniResult, Command, Env, Error, Failure};

/// How often to retry a spawn that fails with ETXTBSY, and the pause before each retry.
const TXTBSY_RETRIES: [Duration; 5] = [
    Duration::from_millis(2),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
];

/// Above this much stdin, write it from a second thread so a plugin that writes before it
/// reads cannot deadlock us (a pipe holds 64 KiB).
const INLINE_STDIN_MAX: usize = 16 * 1024;

/// The first regular file named `name` in the directories of `path`.
///
/// `name` must be a bare file name: empty, `.`, `..` or containing `/` is
/// [`Error::InvalidConfig`]. Not found is [`Error::PluginNotFound`].
pub fn find_plugin(name: &str, path: &[PathBuf]) -> Result<PathBuf, Error> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(Error::InvalidConfig {
            field: "type".into(),
            reason: format!("plugin name {name:?} must be a file name in CNI_PATH"),
        });
    }
    path.iter()
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| Error::PluginNotFound { plugin: name.to_string(), path: path.to_vec() })
}

/// Runs CNI_PATH/`plugin` with this process's environment, the CNI_* variables set from `env`
/// (CNI_COMMAND replaced by `command`; empty ones removed), `stdin` on its stdin. Its stderr
/// passes through; its stdout is captured.
///
/// Exit 0 gives its stdout. Otherwise [`Error::Delegated`] with the plugin's own [`Failure`],
/// or [`Error::InvalidResult`] when its stdout is not one. A spawn failing with ETXTBSY
/// ("text file busy") is retried a few times with short sleeps.
pub fn exec(plugin: &str, command: Command, env: &Env, stdin: &[u8]) -> Result<Vec<u8>, Error> {
    let binary = find_plugin(plugin, &env.path)?;
    refuse_self(plugin, &binary)?;
    let exec_err = |source: io::Error| Error::PluginExec { plugin: plugin.to_string(), source };

    let mut child = spawn(&binary, command, env).map_err(exec_err)?;
    let pipe = child.stdin.take();
    let output = if stdin.len() > INLINE_STDIN_MAX {
        thread::scope(|scope| {
            let writer = scope.spawn(|| write_stdin(pipe, stdin));
            let output = child.wait_with_output();
            let written = writer.join().unwrap_or_else(|_| Err(io::Error::other("stdin writer thread panicked")));
            written.and(output)
        })
    } else {
        write_stdin(pipe, stdin).and_then(|()| child.wait_with_output())
    }
    .map_err(exec_err)?;

    if output.status.success() {
        return Ok(output.stdout);
    }
    match serde_json::from_slice::<Failure>(&output.stdout) {
        Ok(failure) => Err(Error::Delegated { plugin: plugin.to_string(), failure }),
        Err(_) => Err(Error::InvalidResult {
            plugin: plugin.to_string(),
            source: None,
            reason: format!(
                "it failed ({}) without a CNI error on stdout; stdout was {:?}",
                output.status,
                String::from_utf8_lossy(&output.stdout[..output.stdout.len().min(512)])
            ),
        }),
    }
}

/// [`Error::DelegatesToItself`] when `binary` is this process's own executable (same device
/// and inode as /proc/self/exe, so also through a link or another name): it would exec
/// itself, which would exec itself again, without end. Costs two stats, on a path that execs
/// anyway; without /proc there is nothing to compare and nothing is refused.
fn refuse_self(plugin: &str, binary: &Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let (Ok(own), Ok(other)) = (std::fs::metadata("/proc/self/exe"), std::fs::metadata(binary)) else {
        return Ok(());
    };
    if (own.dev(), own.ino()) == (other.dev(), other.ino()) {
        return Err(Error::DelegatesToItself { plugin: plugin.to_string(), path: binary.to_path_buf() });
    }
    Ok(())
}

fn spawn(binary: &Path, command: Command, env: &Env) -> io::Result<Child> {
    let mut cmd = std::process::Command::new(binary);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).env("CNI_COMMAND", command.as_str());
    let path = std::env::join_paths(&env.path).unwrap_or_default();
    let netns = env.netns.as_deref().map(Path::as_os_str).unwrap_or_default();
    for (var, value) in [
        ("CNI_CONTAINERID", OsStr::new(&env.container_id)),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", OsStr::new(&env.ifname)),
        ("CNI_ARGS", OsStr::new(&env.args)),
        ("CNI_PATH", path.as_os_str()),
    ] {
        if value.is_empty() {
            cmd.env_remove(var);
        } else {
            cmd.env(var, value);
        }
    }

    let mut retries = TXTBSY_RETRIES.iter();
    loop {
        match cmd.spawn() {
            Err(err) if err.raw_os_error() == Some(libc::ETXTBSY) => match retries.next() {
                Some(pause) => thread::sleep(*pause),
                None => return Err(err),
            },
            other => return other,
        }
    }
}

/// Writes all of `data` and closes the pipe. A plugin that exits without reading is not our
/// failure: its exit status tells.
fn write_stdin(pipe: Option<ChildStdin>, data: &[u8]) -> io::Result<()> {
    let Some(mut pipe) = pipe else {
        return Ok(());
    };
    match pipe.write_all(data) {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// ADD through `plugin`; its stdout parsed as a result of any version.
pub fn delegate_add(plugin: &str, env: &Env, stdin: &[u8]) -> Result<CniResult, Error> {
    let stdout = exec(plugin, Command::Add, env, stdin)?;
    let invalid = |reason: String, source| Error::InvalidResult { plugin: plugin.to_string(), reason, source };
    let value: serde_json::Value =
        serde_json::from_slice(&stdout).map_err(|err| invalid("output is not JSON".into(), Some(err)))?;
    CniResult::from_json(&value).map_err(|err| match err {
        Error::InvalidResult { reason, source, .. } => invalid(reason, source),
        other => other,
    })
}

/// DEL through `plugin`.
pub fn delegate_del(plugin: &str, env: &Env, stdin: &[u8]) -> Result<(), Error> {
    exec(plugin, Command::Del, env, stdin).map(drop)
}

/// CHECK through `plugin`.
pub fn delegate_check(plugin: &str, env: &Env, stdin: &[u8]) -> Result<(), Error> {
    exec(plugin, Command::Check, env, stdin).map(drop)
}

/// GC through `plugin`.
pub fn delegate_gc(plugin: &str, env: &Env, stdin: &[u8]) -> Result<(), Error> {
    exec(plugin, Command::Gc, env, stdin).map(drop)
}

/// STATUS through `plugin`.
pub fn delegate_status(plugin: &str, env: &Env, stdin: &[u8]) -> Result<(), Error> {
    exec(plugin, Command::Status, env, stdin).map(drop)
}

#[cfg(test)]
#[path = "delegate_tests.rs"]
mod tests;
