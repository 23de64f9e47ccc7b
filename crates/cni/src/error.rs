//! CNI error codes, the wire form of an error ([`Failure`]), and this crate's error enum.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::env::Command;
use crate::version::Version;

/// The error codes of the CNI specification (section "Error").
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables, like CNI_COMMAND, CNI_CONTAINERID.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// The plugin is not available (STATUS).
    pub const NOT_AVAILABLE: u32 = 50;
    /// The plugin can only offer limited connectivity (STATUS).
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// Anything else; also used for a panic.
    pub const INTERNAL: u32 = 100;
}

/// The wire form of an error: `{"cniVersion","code","msg","details"}`; printed on stdout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl Failure {
    /// A failure with no details and no version (the skeleton fills the version in).
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Failure { cni_version: String::new(), code, msg: msg.into(), details: String::new() }
    }

    /// `msg` is `err`'s message; `details` is its `source()` chain joined by `": "`.
    pub fn from_error(code: u32, err: &dyn std::error::Error) -> Self {
        let mut causes = Vec::new();
        let mut next = err.source();
        while let Some(cause) = next {
            causes.push(cause.to_string());
            next = cause.source();
        }
        Failure { cni_version: String::new(), code, msg: err.to_string(), details: causes.join(": ") }
    }

    /// The JSON document, one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            // Serializing strings and integers cannot fail; keep a valid document regardless.
            format!(r#"{{"code":{},"msg":"unprintable error"}}"#, self.code)
        })
    }
}

impl std::fmt::Display for Failure {
    /// Like Go's `types.Error`: `msg` then `; details` when there are details.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)?;
        if !self.details.is_empty() {
            write!(f, "; {}", self.details)?;
        }
        Ok(())
    }
}

/// Every crate's error enum implements this: the one place where its variants map to CNI codes.
pub trait CniCode: std::error::Error {
    /// The CNI error code printed with this error (see [`code`]).
    fn cni_code(&self) -> u32;

    /// The reply for this error: its code, its message, and its causes as `details`
    /// ([`Failure::from_error`]). An error with more to say than its causes overrides this
    /// (calico-cni's incomplete rollback names what it could not undo).
    fn failure(&self) -> Failure
    where
        Self: Sized,
    {
        Failure::from_error(self.cni_code(), self)
    }
}

/// Errors of the CNI protocol layer. [`CniCode`] gives each one's code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `cniVersion` this crate does not know. Code 1.
    #[error(
        "incompatible CNI version {version:?}: supported versions are 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"
    )]
    IncompatibleVersion { version: String },

    /// The command does not exist in the requested version (CHECK before 0.4.0, GC and STATUS
    /// before 1.1.0). Code 1, as in libcni's skel.
    #[error("config version {version} does not allow {}", .command.as_str())]
    CommandNotSupported { command: Command, version: Version },

    /// A config field the plugin does not support. Code 2.
    #[error("unsupported field {field}: {reason}")]
    UnsupportedField { field: String, reason: String },

    /// A required CNI_* variable is absent or empty. Code 4.
    #[error("required environment variable {var} is missing")]
    MissingEnv { var: &'static str },

    /// A CNI_* variable has a value that is not allowed. Code 4.
    #[error("invalid environment variable {var}={value:?}: {reason}")]
    InvalidEnv { var: &'static str, value: String, reason: String },

    /// The config is not JSON at all (syntax error, truncated). Code 6.
    #[error("failed to decode network config: malformed JSON")]
    Decode {
        #[source]
        source: serde_json::Error,
    },

    /// The config is JSON but a field has the wrong type or value, or is missing. Code 7.
    /// `field` is the JSON path, like `ipam.ipv4_pools[0]`.
    #[error("invalid network config field {field}: {reason}")]
    InvalidConfig { field: String, reason: String },

    /// Stdin held more than [`crate::skel::STDIN_LIMIT`] bytes. Code 7: no valid network
    /// config is that large.
    #[error("network config on stdin is larger than the limit of {limit} bytes")]
    StdinTooLarge { limit: usize },

    /// An I/O operation failed. Code 5.
    #[error("I/O error: {context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// No file named `plugin` in any directory of CNI_PATH. Code 7: the config names a plugin
    /// that is not installed.
    #[error("plugin {plugin:?} not found in CNI_PATH {}", display_path(path))]
    PluginNotFound { plugin: String, path: Vec<PathBuf> },

    /// The plugin to delegate to is the running plugin's own executable. Code 7.
    #[error(
        "the IPAM type {plugin:?} names this plugin itself ({}): a plugin cannot be its own IPAM plugin",
        path.display()
    )]
    DelegatesToItself { plugin: String, path: PathBuf },

    /// The plugin could not be started, or talking to it over its pipes failed. Code 5.
    #[error("failed to execute plugin {plugin}")]
    PluginExec {
        plugin: String,
        #[source]
        source: std::io::Error,
    },

    /// The delegated plugin failed; its code is passed through unchanged.
    #[error("plugin {plugin} failed: {failure}")]
    Delegated { plugin: String, failure: Failure },

    /// A result (a delegated plugin's output or a `prevResult`) could not be decoded. Code 6:
    /// "failed to decode content". `plugin` is empty when the source is not a plugin; `source`
    /// is the JSON error when there is one (`reason` then says where: `field ips[0].address`).
    #[error("invalid CNI result{}: {reason}", from_plugin(plugin))]
    InvalidResult {
        plugin: String,
        reason: String,
        #[source]
        source: Option<serde_json::Error>,
    },
}

fn display_path(path: &[PathBuf]) -> String {
    let dirs: Vec<String> = path.iter().map(|p| p.display().to_string()).collect();
    format!("[{}]", dirs.join(":"))
}

fn from_plugin(plugin: &str) -> String {
    if plugin.is_empty() {
        String::new()
    } else {
        format!(" from plugin {plugin}")
    }
}

impl CniCode for Error {
    fn cni_code(&self) -> u32 {
        match self {
            Error::IncompatibleVersion { .. } | Error::CommandNotSupported { .. } => code::INCOMPATIBLE_VERSION,
            Error::UnsupportedField { .. } => code::UNSUPPORTED_FIELD,
            Error::MissingEnv { .. } | Error::InvalidEnv { .. } => code::INVALID_ENV,
            Error::Decode { .. } | Error::InvalidResult { .. } => code::DECODE,
            Error::InvalidConfig { .. }
            | Error::StdinTooLarge { .. }
            | Error::PluginNotFound { .. }
            | Error::DelegatesToItself { .. } => code::INVALID_CONFIG,
            Error::Io { .. } | Error::PluginExec { .. } => code::IO,
            Error::Delegated { failure, .. } => failure.code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_from_error_keeps_the_chain() {
        let err = Error::Io { context: "reading stdin".into(), source: std::io::Error::other("pipe closed") };
        let f = Failure::from_error(err.cni_code(), &err);
        assert_eq!(f.code, 5);
        assert_eq!(f.msg, "I/O error: reading stdin");
        assert_eq!(f.details, "pipe closed");
    }

    #[test]
    fn failure_json_omits_empty_details() {
        let mut f = Failure::new(7, "bad");
        f.cni_version = "1.0.0".into();
        assert_eq!(f.to_json(), r#"{"cniVersion":"1.0.0","code":7,"msg":"bad"}"#);
        f.details = "why".into();
        let back: Failure = serde_json::from_str(&f.to_json()).unwrap();
        assert_eq!(back, f);
        // Older plugins print no cniVersion.
        let old: Failure = serde_json::from_str(r#"{"code":11,"msg":"busy"}"#).unwrap();
        assert_eq!(old, Failure::new(11, "busy"));
    }

    #[test]
    fn delegated_passes_code_and_names_plugin() {
        let mut failure = Failure::new(11, "datastore down");
        failure.details = "connection refused".into();
        let err = Error::Delegated { plugin: "calico-ipam".into(), failure };
        assert_eq!(err.cni_code(), 11);
        assert_eq!(err.to_string(), "plugin calico-ipam failed: datastore down; connection refused");
    }

    #[test]
    fn messages_name_the_subject() {
        let err = Error::PluginNotFound {
            plugin: "host-local".into(),
            path: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
        };
        assert_eq!(err.cni_code(), 7);
        assert_eq!(err.to_string(), "plugin \"host-local\" not found in CNI_PATH [/opt/cni/bin:/usr/lib/cni]");
        let err = Error::InvalidResult { plugin: String::new(), reason: "x".into(), source: None };
        assert_eq!(err.to_string(), "invalid CNI result: x");
        let err = Error::CommandNotSupported { command: Command::Check, version: Version::V0_3_1 };
        assert_eq!(err.to_string(), "config version 0.3.1 does not allow CHECK");
        assert_eq!(err.cni_code(), 1);
    }
}
