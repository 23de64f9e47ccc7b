//! The CNI_* environment of a plugin invocation, validated like libcni's skel.

use std::path::PathBuf;

use crate::Error;

/// The operation a runtime asks for (`CNI_COMMAND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    /// The wire spelling: `"ADD"`, `"DEL"`, `"CHECK"`, `"GC"`, `"STATUS"`, `"VERSION"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }

    /// Every verb of the spec.
    pub const ALL: [Command; 6] = [
        Command::Add,
        Command::Del,
        Command::Check,
        Command::Gc,
        Command::Status,
        Command::Version,
    ];

    fn parse(s: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The validated CNI_* variables. Variables not given are empty (or `None`/empty `Vec`).
#[derive(Clone, Debug)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// Raw `CNI_ARGS`; parse with [`crate::CniArgs::parse`].
    pub args: String,
    /// `CNI_PATH` split on `:`, empty entries skipped.
    pub path: Vec<PathBuf>,
}

/// Linux's IFNAMSIZ minus the terminating NUL.
const MAX_IFNAME_LEN: usize = 15;

impl Env {
    /// Reads the process environment.
    pub fn from_process() -> Result<Env, Error> {
        Env::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `get`; an empty value counts as absent.
    ///
    /// Required per command, as in libcni's skel: CNI_CONTAINERID and CNI_IFNAME for
    /// ADD/CHECK/DEL, CNI_NETNS for ADD/CHECK, CNI_PATH for ADD/CHECK/DEL/GC; nothing for
    /// VERSION and STATUS.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Env, Error> {
        let get = |name: &str| get(name).filter(|v| !v.is_empty());

        let raw_command = get("CNI_COMMAND").ok_or(Error::MissingEnv { var: "CNI_COMMAND" })?;
        let command = Command::parse(&raw_command).ok_or_else(|| Error::InvalidEnv {
            var: "CNI_COMMAND",
            reason: "unknown command; expected ADD, DEL, CHECK, GC, STATUS or VERSION".into(),
            value: raw_command.clone(),
        })?;

        use Command::*;
        let required = |var: &'static str, commands: &[Command]| -> Result<String, Error> {
            match get(var) {
                Some(value) => Ok(value),
                None if commands.contains(&command) => Err(Error::MissingEnv { var }),
                None => Ok(String::new()),
            }
        };
        let container_id = required("CNI_CONTAINERID", &[Add, Check, Del])?;
        let netns = required("CNI_NETNS", &[Add, Check])?;
        let ifname = required("CNI_IFNAME", &[Add, Check, Del])?;
        let path = required("CNI_PATH", &[Add, Check, Del, Gc])?;
        let args = get("CNI_ARGS").unwrap_or_default();

        if !container_id.is_empty() {
            validate_container_id(&container_id)?;
        }
        if !ifname.is_empty() {
            validate_ifname(&ifname)?;
        }

        Ok(Env {
            command,
            container_id,
            netns: (!netns.is_empty()).then(|| PathBuf::from(netns)),
            ifname,
            args,
            path: path
                .split(':')
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from)
                .collect(),
        })
    }
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`: libcni's rule for container IDs and network names.
pub(crate) fn is_valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// As libcni's `ValidateContainerID`.
fn validate_container_id(id: &str) -> Result<(), Error> {
    if is_valid_id(id) {
        return Ok(());
    }
    Err(Error::InvalidEnv {
        var: "CNI_CONTAINERID",
        value: id.to_string(),
        reason:
            "must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
                .into(),
    })
}

/// As libcni's `ValidateInterfaceName`.
fn validate_ifname(name: &str) -> Result<(), Error> {
    let reason = if name.len() > MAX_IFNAME_LEN {
        format!("longer than {MAX_IFNAME_LEN} bytes")
    } else if name == "." || name == ".." {
        "'.' and '..' are reserved names".to_string()
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        "contains '/', ':' or whitespace".to_string()
    } else {
        return Ok(());
    };
    Err(Error::InvalidEnv {
        var: "CNI_IFNAME",
        value: name.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CniCode;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, Error> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_lookup(|k| map.get(k).cloned())
    }

    fn full(command: &str) -> Vec<(&str, &str)> {
        vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "abc-123_x.y"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni:"),
            ("CNI_ARGS", "K8S_POD_NAME=a"),
        ]
    }

    fn without<'a>(
        mut vars: Vec<(&'a str, &'a str)>,
        name: &'a str,
        replace: Option<&'a str>,
    ) -> Vec<(&'a str, &'a str)> {
        vars.retain(|(k, _)| *k != name);
        vars.extend(replace.map(|v| (name, v)));
        vars
    }

    #[test]
    fn full_add_parses() {
        let e = env(&full("ADD")).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.container_id, "abc-123_x.y");
        assert_eq!(e.netns, Some(PathBuf::from("/var/run/netns/x")));
        assert_eq!(e.ifname, "eth0");
        assert_eq!(e.args, "K8S_POD_NAME=a");
        assert_eq!(
            e.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
    }

    #[test]
    fn missing_required_vars_name_the_variable() {
        let table: &[(&str, &str)] = &[
            ("ADD", "CNI_CONTAINERID"),
            ("ADD", "CNI_NETNS"),
            ("ADD", "CNI_IFNAME"),
            ("ADD", "CNI_PATH"),
            ("CHECK", "CNI_CONTAINERID"),
            ("CHECK", "CNI_NETNS"),
            ("CHECK", "CNI_IFNAME"),
            ("CHECK", "CNI_PATH"),
            ("DEL", "CNI_CONTAINERID"),
            ("DEL", "CNI_IFNAME"),
            ("DEL", "CNI_PATH"),
            ("GC", "CNI_PATH"),
            ("ADD", "CNI_COMMAND"),
        ];
        for (command, var) in table {
            for replacement in [None, Some("")] {
                let err = env(&without(full(command), var, replacement)).unwrap_err();
                assert_eq!(err.cni_code(), 4, "{command} {var}");
                assert!(
                    matches!(err, Error::MissingEnv { var: v } if v == *var),
                    "{command} {var}: {err}"
                );
                assert!(err.to_string().contains(var));
            }
        }
    }

    #[test]
    fn optional_vars_per_command() {
        let e = env(&without(full("DEL"), "CNI_NETNS", None)).unwrap();
        assert_eq!(e.netns, None);
        let e = env(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/bin")]).unwrap();
        assert_eq!(e.command, Command::Gc);
        assert_eq!(e.container_id, "");
        let e = env(&[("CNI_COMMAND", "VERSION")]).unwrap();
        assert_eq!(e.command, Command::Version);
        assert!(e.path.is_empty());
        let e = env(&[("CNI_COMMAND", "STATUS")]).unwrap();
        assert_eq!(e.command, Command::Status);
        assert_eq!(e.args, "");
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let long = "a234567890123456";
        let table: &[(&str, &str)] = &[
            ("CNI_COMMAND", "add"),
            ("CNI_COMMAND", "FOO"),
            ("CNI_CONTAINERID", "-abc"),
            ("CNI_CONTAINERID", "_abc"),
            ("CNI_CONTAINERID", "ab/c"),
            ("CNI_CONTAINERID", "ab c"),
            ("CNI_CONTAINERID", "abc\u{e9}"),
            ("CNI_IFNAME", long),
            ("CNI_IFNAME", "."),
            ("CNI_IFNAME", ".."),
            ("CNI_IFNAME", "eth/0"),
            ("CNI_IFNAME", "eth:0"),
            ("CNI_IFNAME", "eth 0"),
            ("CNI_IFNAME", "eth\t0"),
        ];
        for (var, value) in table {
            let err = env(&without(full("ADD"), var, Some(value))).unwrap_err();
            assert_eq!(err.cni_code(), 4, "{var}={value}");
            assert!(
                matches!(&err, Error::InvalidEnv { var: v, .. } if v == var),
                "{var}={value}: {err}"
            );
            assert!(err.to_string().contains(var), "{err}");
        }
        // Fifteen bytes is the limit, not over it.
        assert!(env(&without(full("ADD"), "CNI_IFNAME", Some(&long[1..]))).is_ok());
    }

    #[test]
    fn command_spelling_round_trips() {
        for c in Command::ALL {
            assert_eq!(Command::parse(c.as_str()), Some(c));
        }
    }
}
