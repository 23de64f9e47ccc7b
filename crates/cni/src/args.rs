//! `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`, and the keys Calico understands.

use std::net::IpAddr;

use crate::Error;

const VAR: &str = "CNI_ARGS";

/// Splits `"K=V;K=V"` into pairs. An empty string (or empty segments) gives no pairs; a
/// segment without exactly one `=`, or with an empty key, is [`Error::InvalidEnv`].
pub fn parse_pairs(raw: &str) -> Result<Vec<(String, String)>, Error> {
    raw.split(';')
        .filter(|segment| !segment.is_empty())
        .map(|segment| match segment.split_once('=') {
            Some((key, value)) if !key.is_empty() && !value.contains('=') => Ok((key.to_string(), value.to_string())),
            _ => Err(invalid(segment, "expected KEY=VALUE")),
        })
        .collect()
}

/// The `CNI_ARGS` keys Calico reads (see [`CniArgs::parse`]).
#[derive(Clone, Debug, Default)]
pub struct CniArgs {
    /// `IP`: one address or a comma-separated list.
    pub ips: Vec<IpAddr>,
    pub k8s_pod_namespace: Option<String>,
    pub k8s_pod_name: Option<String>,
    pub k8s_pod_infra_container_id: Option<String>,
    pub k8s_pod_uid: Option<String>,
    pub mac: Option<String>,
}

impl CniArgs {
    /// Parses `raw`. Keys are case-sensitive, as in libcni. `IgnoreUnknown` (`1`/`true`/`0`/
    /// `false`, case-insensitive) anywhere in the list allows keys other than `IP`,
    /// `K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_INFRA_CONTAINER_ID`, `K8S_POD_UID` and
    /// `MAC`; without it an unknown key is [`Error::InvalidEnv`] (code 4), as is a bad IP.
    pub fn parse(raw: &str) -> Result<CniArgs, Error> {
        let pairs = parse_pairs(raw)?;
        let mut ignore_unknown = false;
        for (key, value) in &pairs {
            if key == "IgnoreUnknown" {
                ignore_unknown =
                    parse_bool(value).ok_or_else(|| invalid(value, "IgnoreUnknown must be 1, 0, true or false"))?;
            }
        }

        let mut args = CniArgs::default();
        for (key, value) in pairs {
            let slot = match key.as_str() {
                "IgnoreUnknown" => continue,
                "IP" => {
                    args.ips = parse_ips(&value)?;
                    continue;
                }
                "K8S_POD_NAMESPACE" => &mut args.k8s_pod_namespace,
                "K8S_POD_NAME" => &mut args.k8s_pod_name,
                "K8S_POD_INFRA_CONTAINER_ID" => &mut args.k8s_pod_infra_container_id,
                "K8S_POD_UID" => &mut args.k8s_pod_uid,
                "MAC" => &mut args.mac,
                _ if ignore_unknown => continue,
                _ => {
                    return Err(invalid(
                        &format!("{key}={value}"),
                        &format!("unknown key {key:?} (set IgnoreUnknown=1 to allow it)"),
                    ))
                }
            };
            *slot = Some(value);
        }
        Ok(args)
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn parse_ips(value: &str) -> Result<Vec<IpAddr>, Error> {
    value
        .split(',')
        .map(str::trim)
        .filter(|ip| !ip.is_empty())
        .map(|ip| ip.parse::<IpAddr>().map_err(|_| invalid(ip, &format!("IP {ip:?} is not an IP address"))))
        .collect()
}

fn invalid(value: &str, reason: &str) -> Error {
    Error::InvalidEnv { var: VAR, value: value.to_string(), reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CniCode;

    #[test]
    fn pairs() {
        assert!(parse_pairs("").unwrap().is_empty());
        assert_eq!(
            parse_pairs("A=1;B=;C=x").unwrap(),
            vec![
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), String::new()),
                ("C".to_string(), "x".to_string())
            ]
        );
        assert_eq!(parse_pairs("A=1;").unwrap().len(), 1);
        for bad in ["A", "A=1;B", "=1", "A=1=2"] {
            let err = parse_pairs(bad).unwrap_err();
            assert_eq!(err.cni_code(), 4, "{bad}");
            assert!(err.to_string().contains("CNI_ARGS"), "{err}");
        }
    }

    #[test]
    fn kubelet_args() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=nginx;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;SOMETHING=else",
        )
        .unwrap();
        assert_eq!(a.k8s_pod_namespace.as_deref(), Some("default"));
        assert_eq!(a.k8s_pod_name.as_deref(), Some("nginx"));
        assert_eq!(a.k8s_pod_infra_container_id.as_deref(), Some("abc"));
        assert_eq!(a.k8s_pod_uid.as_deref(), Some("u-1"));
        assert!(a.ips.is_empty());
        assert_eq!(a.mac, None);
    }

    #[test]
    fn ignore_unknown_spellings() {
        for on in ["1", "true", "TRUE", "True"] {
            let raw = format!("FOO=bar;IgnoreUnknown={on}");
            assert!(CniArgs::parse(&raw).is_ok(), "{on}");
        }
        for off in ["0", "false", "FALSE"] {
            let raw = format!("IgnoreUnknown={off};FOO=bar");
            let err = CniArgs::parse(&raw).unwrap_err();
            assert_eq!(err.cni_code(), 4);
            assert!(err.to_string().contains("FOO"), "{err}");
        }
        assert_eq!(CniArgs::parse("IgnoreUnknown=yes").unwrap_err().cni_code(), 4);
    }

    #[test]
    fn unknown_key_without_ignore() {
        let err = CniArgs::parse("K8S_POD_NAME=x;BOGUS=1").unwrap_err();
        assert_eq!(err.cni_code(), 4);
        assert!(err.to_string().contains("BOGUS"), "{err}");
        // Keys are case-sensitive, as in libcni.
        assert!(CniArgs::parse("k8s_pod_name=x").is_err());
    }

    #[test]
    fn ip_lists_and_mac() {
        let a = CniArgs::parse("IP=10.0.0.5").unwrap();
        assert_eq!(a.ips, vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
        let a = CniArgs::parse("IP=10.0.0.5,fd00::5;MAC=aa:bb:cc:dd:ee:ff").unwrap();
        assert_eq!(a.ips, vec!["10.0.0.5".parse::<IpAddr>().unwrap(), "fd00::5".parse().unwrap()]);
        assert_eq!(a.mac.as_deref(), Some("aa:bb:cc:dd:ee:ff"));
        let err = CniArgs::parse("IP=10.0.0.5,10.0.0.300").unwrap_err();
        assert_eq!(err.cni_code(), 4);
        assert!(err.to_string().contains("10.0.0.300"), "{err}");
        assert!(CniArgs::parse("IP=10.0.0.0/24").is_err());
    }
}
