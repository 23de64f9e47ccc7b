//! BIRD as a child process: the config checked with `bird -p`, written atomically, loaded
//! with `configure` over BIRD's control socket; BIRD started again when it dies.
//!
//! The control socket speaks lines of text: a four-digit code, then `-` when more lines of
//! the reply follow or a space on its last line; a line starting with a space continues the
//! code before it. Codes from 8000 are errors (9000 and up: parse errors).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a control-socket exchange may take.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new BIRD has to open its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong with BIRD.
#[derive(Debug, thiserror::Error)]
pub enum BirdError {
    #[error("BIRD rejected the config ({path}): {message}")]
    Rejected { path: PathBuf, message: String },
    #[error("cannot run {program}")]
    Spawn { program: String, source: std::io::Error },
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("BIRD's control socket {path}")]
    Socket { path: PathBuf, source: std::io::Error },
    #[error("BIRD answered {code}: {message}")]
    Reply { code: u16, message: String },
    #[error("BIRD did not open its control socket {path} within {START_TIMEOUT:?} (it exited: {exited})")]
    NotStarted { path: PathBuf, exited: String },
}

/// One line of a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub code: u16,
    pub text: String,
}

/// Send `command` on the control socket at `path`; the reply's lines. An error code is an
/// error.
pub fn command(path: &Path, command: &str) -> Result<Vec<Line>, BirdError> {
    let io = |source| BirdError::Socket { path: path.to_owned(), source };
    let stream = UnixStream::connect(path).map_err(io)?;
    stream.set_read_timeout(Some(SOCKET_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(SOCKET_TIMEOUT)).map_err(io)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(io)?);
    let hello = read_reply(&mut reader).map_err(io)?;
    if let Some(bad) = hello.iter().find(|l| l.code >= 8000) {
        return Err(BirdError::Reply { code: bad.code, message: bad.text.clone() });
    }
    (&stream).write_all(format!("{command}\n").as_bytes()).map_err(io)?;
    let lines = read_reply(&mut reader).map_err(io)?;
    if let Some(bad) = lines.iter().find(|l| l.code >= 8000) {
        return Err(BirdError::Reply { code: bad.code, message: bad.text.clone() });
    }
    Ok(lines)
}

/// Lines until one with a code followed by a space.
fn read_reply(reader: &mut impl BufRead) -> std::io::Result<Vec<Line>> {
    let mut lines = Vec::new();
    let mut code = 0u16;
    loop {
        let mut raw = String::new();
        if reader.read_line(&mut raw)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "BIRD closed the connection"));
        }
        let raw = raw.trim_end_matches(['\n', '\r']);
        let (head, last) = match raw.as_bytes() {
            [a, b, c, d, sep, ..]
                if [a, b, c, d].iter().all(|x| x.is_ascii_digit()) && (*sep == b'-' || *sep == b' ') =>
            {
                code = raw[..4].parse().unwrap_or(0);
                (5, *sep == b' ')
            }
            [a, b, c, d] if [a, b, c, d].iter().all(|x| x.is_ascii_digit()) => {
                code = raw.parse().unwrap_or(0);
                (4, true)
            }
            _ => (usize::from(raw.starts_with(' ')), false),
        };
        lines.push(Line { code, text: raw[head..].to_owned() });
        if last {
            return Ok(lines);
        }
    }
}

/// One row of `show protocols`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub proto: String,
    pub state: String,
    pub since: String,
    pub info: String,
}

/// `show protocols`, parsed.
pub fn protocols(socket: &Path) -> Result<Vec<Protocol>, BirdError> {
    let lines = command(socket, "show protocols")?;
    Ok(parse_protocols(&lines))
}

fn parse_protocols(lines: &[Line]) -> Vec<Protocol> {
    lines
        .iter()
        .filter(|l| l.code == 1002)
        .filter_map(|l| {
            let words: Vec<&str> = l.text.split_whitespace().collect();
            let [name, proto, _table, state, since, info @ ..] = words.as_slice() else { return None };
            Some(Protocol {
                name: (*name).into(),
                proto: (*proto).into(),
                state: (*state).into(),
                since: (*since).into(),
                info: info.join(" "),
            })
        })
        .collect()
}

/// Where BIRD lives and keeps its files.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The `bird` program.
    pub program: PathBuf,
    /// `--bird-config`.
    pub config: PathBuf,
    /// `--bird-socket`.
    pub socket: PathBuf,
}

/// A BIRD of ours.
#[derive(Debug)]
pub struct Bird {
    pub paths: Paths,
    child: Option<Child>,
    /// The text BIRD runs with.
    loaded: Option<String>,
    /// Times a running BIRD was told to load a new config.
    pub reconfigurations: u64,
    /// Times BIRD was started.
    pub starts: u64,
}

impl Bird {
    pub fn new(paths: Paths) -> Bird {
        Bird { paths, child: None, loaded: None, reconfigurations: 0, starts: 0 }
    }

    /// The text BIRD runs with, if it runs.
    pub fn loaded(&self) -> Option<&str> {
        self.loaded.as_deref()
    }

    /// Check `text` with `bird -p`; write it atomically and have BIRD load it (starting BIRD
    /// if it is not running). Returns true when BIRD was started or reconfigured. A text BIRD
    /// rejects is never loaded: BIRD keeps the one it runs.
    pub fn apply(&mut self, text: &str) -> Result<bool, BirdError> {
        let running = self.running();
        if running && self.loaded.as_deref() == Some(text) {
            return Ok(false);
        }
        let config = &self.paths.config;
        let write_err = |source| BirdError::Write { path: config.clone(), source };
        if let Some(dir) = config.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        let mut tmp = config.clone().into_os_string();
        tmp.push(".new");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, text).map_err(|source| BirdError::Write { path: tmp.clone(), source })?;
        if let Err(e) = self.check(&tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, config).map_err(write_err)?;
        if running {
            command(&self.paths.socket, "configure")?;
            self.reconfigurations += 1;
        } else {
            self.start()?;
        }
        self.loaded = Some(text.to_owned());
        Ok(true)
    }

    /// `bird -p -c path`: parse only.
    fn check(&self, path: &Path) -> Result<(), BirdError> {
        let out = Command::new(&self.paths.program)
            .args(["-p", "-c"])
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| BirdError::Spawn { program: self.paths.program.display().to_string(), source })?;
        if out.status.success() {
            return Ok(());
        }
        let message = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        Err(BirdError::Rejected { path: self.paths.config.clone(), message })
    }

    /// True while the child runs.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                tracing::error!(%status, "BIRD exited");
                self.child = None;
                self.loaded = None;
                false
            }
            Some(Err(e)) => {
                tracing::error!("cannot wait for BIRD: {e}");
                false
            }
            None => false,
        }
    }

    /// Start BIRD in the foreground on the config file, and wait for its control socket.
    /// It dies with us (a restart of calico-node restarts BIRD: graceful restart keeps the
    /// routes on both sides meanwhile).
    fn start(&mut self) -> Result<(), BirdError> {
        let _ = std::fs::remove_file(&self.paths.socket);
        if let Some(dir) = self.paths.socket.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut cmd = Command::new(&self.paths.program);
        // -R: graceful restart recovery, always (as calico/node runs BIRD): the routes BIRD
        // left in the kernel stay until it has converged again, and the peers, which kept
        // ours as stale, get our End-of-RIB only once the kernel's blocks are learned again.
        cmd.arg("-f").arg("-R").arg("-c").arg(&self.paths.config).arg("-s").arg(&self.paths.socket);
        cmd.stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe; it runs in the child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|source| BirdError::Spawn { program: self.paths.program.display().to_string(), source })?;
        tracing::info!(pid = child.id(), config = %self.paths.config.display(), socket = %self.paths.socket.display(), "BIRD started");
        self.child = Some(child);
        self.starts += 1;
        let until = Instant::now() + START_TIMEOUT;
        loop {
            if command(&self.paths.socket, "show status").is_ok() {
                return Ok(());
            }
            if !self.running() {
                return Err(BirdError::NotStarted { path: self.paths.socket.clone(), exited: "yes".into() });
            }
            if Instant::now() > until {
                self.stop();
                return Err(BirdError::NotStarted { path: self.paths.socket.clone(), exited: "no, killed".into() });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kill BIRD (SIGKILL: the peers keep our routes for the graceful-restart time).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.loaded = None;
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_and_protocols_parse() {
        let raw = "2002-Name       Proto      Table      State  Since         Info\n\
                   1002-device1    Device     ---        up     02:30:01.123  \n\
                   \x20    Mesh_10_0_0_2 BGP        ---        start  02:30:01.123  Active        Socket: Connection refused\n\
                   \x20    Node_10_0_0_254 BGP        ---        up     02:30:02.000  Established   \n\
                   0000 \n";
        let lines = read_reply(&mut raw.as_bytes()).unwrap();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[2], Line { code: 1002, text: "    Mesh_10_0_0_2 BGP        ---        start  02:30:01.123  Active        Socket: Connection refused".into() });
        let protocols = parse_protocols(&lines);
        assert_eq!(protocols.len(), 3);
        assert_eq!(protocols[1].name, "Mesh_10_0_0_2");
        assert_eq!(protocols[1].info, "Active Socket: Connection refused");
        assert_eq!(protocols[2].state, "up");
        assert_eq!(protocols[2].info, "Established");
        let err = read_reply(&mut "0001-x\n".as_bytes()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(read_reply(&mut "0003 Reconfigured\n".as_bytes()).unwrap()[0].code, 3);
    }
}
