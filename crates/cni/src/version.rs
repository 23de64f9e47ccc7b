//! The CNI specification versions this crate speaks, and the `VERSION` command's answer.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// One released version of the CNI specification. Ordered oldest to newest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V0_1_0,
    V0_2_0,
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl Version {
    /// Every supported version, oldest first.
    pub const ALL: [Version; 7] = [
        Version::V0_1_0,
        Version::V0_2_0,
        Version::V0_3_0,
        Version::V0_3_1,
        Version::V0_4_0,
        Version::V1_0_0,
        Version::V1_1_0,
    ];

    /// The newest version; used when the caller did not say which one it wants.
    pub const LATEST: Version = Version::V1_1_0;

    /// The wire spelling, e.g. `"0.3.1"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_1_0 => "0.1.0",
            Version::V0_2_0 => "0.2.0",
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// Parses the wire spelling. Anything else is [`Error::IncompatibleVersion`] (CNI code 1).
    pub fn parse(s: &str) -> Result<Version, Error> {
        Version::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| Error::IncompatibleVersion { version: s.to_string() })
    }

    /// Whether the `CHECK` command exists in this version (0.4.0 and later).
    pub fn supports_check(self) -> bool {
        self >= Version::V0_4_0
    }

    /// Whether the `GC` and `STATUS` commands exist in this version (1.1.0 and later).
    pub fn supports_gc_status(self) -> bool {
        self >= Version::V1_1_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Version {
    type Err = Error;

    fn from_str(s: &str) -> Result<Version, Error> {
        Version::parse(s)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Version, D::Error> {
        let s = String::deserialize(deserializer)?;
        Version::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The answer to the `VERSION` command: `{"cniVersion": v, "supportedVersions": [all seven]}`.
pub fn version_info(v: Version) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": v.as_str(),
        "supportedVersions": Version::ALL.map(Version::as_str),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CniCode;

    #[test]
    fn parses_all_seven() {
        for v in Version::ALL {
            assert_eq!(Version::parse(v.as_str()).ok(), Some(v));
            assert_eq!(v.as_str().parse::<Version>().ok(), Some(v));
            assert_eq!(v.to_string(), v.as_str());
        }
        assert_eq!(Version::LATEST, Version::V1_1_0);
    }

    #[test]
    fn unknown_version_is_code_1() {
        for bad in ["", "0.5.0", "1.0", "v1.0.0", "2.0.0", " 1.0.0"] {
            let err = Version::parse(bad).unwrap_err();
            assert_eq!(err.cni_code(), 1, "{bad:?}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn ordering_and_capabilities() {
        assert!(Version::ALL.windows(2).all(|w| w[0] < w[1]));
        assert!(!Version::V0_3_1.supports_check());
        assert!(Version::V0_4_0.supports_check());
        assert!(!Version::V1_0_0.supports_gc_status());
        assert!(Version::V1_1_0.supports_gc_status());
    }

    #[test]
    fn serde_as_string() {
        let json = serde_json::to_string(&Version::V0_3_1).unwrap();
        assert_eq!(json, "\"0.3.1\"");
        let back: Version = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Version::V0_3_1);
        assert!(serde_json::from_str::<Version>("\"9.9.9\"").is_err());
    }

    #[test]
    fn version_info_lists_all() {
        let info = version_info(Version::V0_4_0);
        assert_eq!(
            info,
            serde_json::json!({
                "cniVersion": "0.4.0",
                "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
            })
        );
    }
}
