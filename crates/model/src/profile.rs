//! Security profiles, in Calico's v1 layout: each profile is three keys,
//! `/calico/v1/policy/profile/<name>/rules` ([`Rules`]), `/tags` (a JSON list of tag names)
//! and `/labels` (a JSON object of label names to values), which [`Profile`] gathers.
//!
//! A rule matches on protocol, source and destination (tag, selector, CIDR, ports) and ICMP
//! type and code, each also negated (`"!protocol"`, `"!src_net"`...), and says what to do
//! ([`Action`]). Fields this crate does not know are ignored when read.

use std::collections::BTreeMap;
use std::fmt;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::keys;

/// Which of a profile's keys a key is ([`keys::parse_profile`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProfilePart {
    Rules,
    Tags,
    Labels,
}

/// A profile with its three parts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub rules: Rules,
    /// Classifiers every endpoint with the profile carries; rules of any profile refer to
    /// them (`src_tag`, `dst_tag`).
    pub tags: Vec<String>,
    /// Labels every endpoint with the profile inherits (for selectors).
    pub labels: BTreeMap<String, String>,
}

impl Profile {
    /// What `calicoctl profile add` creates in Calico: tagged with its own name, accepting
    /// traffic from endpoints with that tag and sending anywhere.
    pub fn new(name: &str) -> Profile {
        Profile {
            name: name.to_owned(),
            rules: Rules {
                id: Some(name.to_owned()),
                inbound_rules: vec![Rule { src_tag: Some(name.to_owned()), ..Rule::allow() }],
                outbound_rules: vec![Rule::allow()],
            },
            tags: vec![name.to_owned()],
            labels: BTreeMap::new(),
        }
    }

    /// Every profile in `records` (the keys under [`keys::PROFILE_PREFIX`]), by name. A
    /// profile is there when its rules key is; missing tags or labels are empty.
    pub fn gather<'a>(records: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<Vec<Profile>, crate::Error> {
        let mut by_name: BTreeMap<String, (Option<Rules>, Profile)> = BTreeMap::new();
        for (key, value) in records {
            let Some((name, part)) = keys::parse_profile(key) else { continue };
            let (rules, p) = by_name
                .entry(name.to_owned())
                .or_insert_with(|| (None, Profile { name: name.to_owned(), ..Profile::default() }));
            match part {
                ProfilePart::Rules => *rules = Some(crate::decode(key, value)?),
                ProfilePart::Tags => p.tags = crate::decode(key, value)?,
                ProfilePart::Labels => p.labels = crate::decode(key, value)?,
            }
        }
        Ok(by_name.into_values().filter_map(|(rules, p)| Some(Profile { rules: rules?, ..p })).collect())
    }

    /// The keys and values to write: rules, tags, labels. An empty labels object is still
    /// written, so the profile's three keys come and go together.
    pub fn records(&self) -> [(String, Vec<u8>); 3] {
        [
            (keys::profile_rules(&self.name), crate::encode(&self.rules)),
            (keys::profile_tags(&self.name), crate::encode(&self.tags)),
            (keys::profile_labels(&self.name), crate::encode(&self.labels)),
        ]
    }
}

/// Whether `name` can name a profile: letters, digits, `.`, `_` and `-`, as Calico allows
/// (a `/` would change the key's shape).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The `rules` key: ordered rules for traffic to the endpoint and from it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// The profile's name, as libcalico writes it (Felix ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Traffic to the endpoint.
    #[serde(default)]
    pub inbound_rules: Vec<Rule>,
    /// Traffic from the endpoint.
    #[serde(default)]
    pub outbound_rules: Vec<Rule>,
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    #[default]
    Allow,
    Deny,
    /// In tiered policy, skip to the next tier; in a profile, the same as allow.
    NextTier,
    /// Log the packet and carry on with the next rule.
    Log,
}

/// One rule. Every match is optional; all present must hold. `!` fields negate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    #[serde(default)]
    pub action: Action,
    /// 4 or 6: the rule applies to that IP version only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(rename = "!protocol", default, skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<Protocol>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_tag: Option<String>,
    #[serde(rename = "!src_tag", default, skip_serializing_if = "Option::is_none")]
    pub not_src_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_selector: Option<String>,
    #[serde(rename = "!src_selector", default, skip_serializing_if = "Option::is_none")]
    pub not_src_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_net: Option<IpNetwork>,
    #[serde(rename = "!src_net", default, skip_serializing_if = "Option::is_none")]
    pub not_src_net: Option<IpNetwork>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub src_ports: Vec<PortRange>,
    #[serde(rename = "!src_ports", default, skip_serializing_if = "Vec::is_empty")]
    pub not_src_ports: Vec<PortRange>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_tag: Option<String>,
    #[serde(rename = "!dst_tag", default, skip_serializing_if = "Option::is_none")]
    pub not_dst_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_selector: Option<String>,
    #[serde(rename = "!dst_selector", default, skip_serializing_if = "Option::is_none")]
    pub not_dst_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_net: Option<IpNetwork>,
    #[serde(rename = "!dst_net", default, skip_serializing_if = "Option::is_none")]
    pub not_dst_net: Option<IpNetwork>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst_ports: Vec<PortRange>,
    #[serde(rename = "!dst_ports", default, skip_serializing_if = "Vec::is_empty")]
    pub not_dst_ports: Vec<PortRange>,

    /// ICMP type (with `protocol` icmp or icmpv6); `icmp_code` needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    #[serde(rename = "!icmp_type", default, skip_serializing_if = "Option::is_none")]
    pub not_icmp_type: Option<u8>,
    #[serde(rename = "!icmp_code", default, skip_serializing_if = "Option::is_none")]
    pub not_icmp_code: Option<u8>,

    /// Also log matching packets with this prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_prefix: Option<String>,
}

impl Rule {
    /// A rule that allows everything.
    pub fn allow() -> Rule {
        Rule::default()
    }
}

/// An IP protocol: a name Calico knows, or a number (1-255).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    Sctp,
    Udplite,
    Number(u8),
}

impl Protocol {
    /// The protocol number (icmp is 1, icmpv6 58...).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Icmp => 1,
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmpv6 => 58,
            Protocol::Sctp => 132,
            Protocol::Udplite => 136,
            Protocol::Number(n) => n,
        }
    }

    /// Whether the protocol has ports (`src_ports` and `dst_ports` need one that has).
    pub fn has_ports(self) -> bool {
        matches!(self.number(), 6 | 17 | 132 | 136)
    }

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Icmpv6 => "icmpv6",
            Protocol::Sctp => "sctp",
            Protocol::Udplite => "udplite",
            Protocol::Number(_) => return None,
        })
    }

    pub(crate) fn parse(text: &str) -> Option<Protocol> {
        Some(match text.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "icmp" => Protocol::Icmp,
            "icmpv6" => Protocol::Icmpv6,
            "sctp" => Protocol::Sctp,
            "udplite" => Protocol::Udplite,
            n => Protocol::Number(n.parse().ok().filter(|n| *n > 0)?),
        })
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => self.number().fmt(f),
        }
    }
}

/// A name as a string, a number as a number, as Calico writes them.
impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(name) => s.serialize_str(name),
            None => s.serialize_u8(self.number()),
        }
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = match NumberOrText::deserialize(d)? {
            NumberOrText::Number(n) => n.to_string(),
            NumberOrText::Text(s) => s,
        };
        Protocol::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "expected tcp, udp, icmp, icmpv6, sctp, udplite or a number 1-255, got {text:?}"
            ))
        })
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

/// A port or an inclusive range of ports: `80` or `"2048:4000"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn port(port: u16) -> PortRange {
        PortRange { first: port, last: port }
    }

    pub(crate) fn parse(text: &str) -> Option<PortRange> {
        let (first, last) = text.split_once(':').unwrap_or((text, text));
        let range = PortRange { first: first.trim().parse().ok()?, last: last.trim().parse().ok()? };
        (range.first <= range.last).then_some(range)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

/// A single port as a number, a range as `"first:last"`.
impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.first == self.last {
            s.serialize_u16(self.first)
        } else {
            s.collect_str(self)
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = match NumberOrText::deserialize(d)? {
            NumberOrText::Number(n) => n.to_string(),
            NumberOrText::Text(s) => s,
        };
        PortRange::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("expected a port or a range \"first:last\" of ports, got {text:?}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode};

    /// Calico's data model document's rule, every field set (`log_prefix` and `action` as it
    /// lists them).
    const CALICO_RULE: &str = r#"{
        "protocol": "tcp", "src_tag": "web", "src_selector": "role == 'frontend'",
        "src_net": "10.0.0.0/16", "src_ports": [1234, "2048:4000"],
        "dst_tag": "db", "dst_selector": "has(db)", "dst_net": "10.1.0.0/24", "dst_ports": [5432],
        "!protocol": "udp", "!src_tag": "bad", "!src_selector": "bad == 'yes'", "!src_net": "10.0.9.0/24",
        "!src_ports": ["1:1023"], "!dst_tag": "other", "!dst_selector": "x == 'y'",
        "!dst_net": "10.1.0.128/25", "!dst_ports": [5433],
        "log_prefix": "calico-drop", "action": "deny", "ip_version": 4
    }"#;

    #[test]
    fn rules_read_calicos_rule() {
        let rule: Rule = decode("k", CALICO_RULE.as_bytes()).unwrap();
        assert_eq!(rule.action, Action::Deny);
        assert_eq!(rule.protocol, Some(Protocol::Tcp));
        assert_eq!(rule.not_protocol, Some(Protocol::Udp));
        assert_eq!(rule.src_ports, vec![PortRange::port(1234), PortRange { first: 2048, last: 4000 }]);
        assert_eq!(rule.not_src_ports, vec![PortRange { first: 1, last: 1023 }]);
        assert_eq!(rule.src_net, Some("10.0.0.0/16".parse().unwrap()));
        assert_eq!(rule.not_dst_net, Some("10.1.0.128/25".parse().unwrap()));
        assert_eq!(rule.dst_selector.as_deref(), Some("has(db)"));
        assert_eq!(rule.ip_version, Some(4));
        assert_eq!(decode::<Rule>("k", &encode(&rule)).unwrap(), rule);
        // Written back, it is the same document (field order aside).
        let written: serde_json::Value = serde_json::from_slice(&encode(&rule)).unwrap();
        let calico: serde_json::Value = serde_json::from_str(CALICO_RULE).unwrap();
        assert_eq!(written, calico);
    }

    #[test]
    fn icmp_and_numbers() {
        let rule: Rule =
            decode("k", br#"{"action":"allow","protocol":"ICMP","icmp_type":8,"icmp_code":0,"!icmp_type":3}"#).unwrap();
        assert_eq!(
            (rule.protocol, rule.icmp_type, rule.icmp_code, rule.not_icmp_type),
            (Some(Protocol::Icmp), Some(8), Some(0), Some(3))
        );
        assert_eq!(
            encode(&rule),
            br#"{"action":"allow","protocol":"icmp","icmp_type":8,"icmp_code":0,"!icmp_type":3}"#
        );
        let numbered: Rule = decode("k", br#"{"action":"next-tier","protocol":47,"!protocol":"50"}"#).unwrap();
        assert_eq!(
            (numbered.action, numbered.protocol, numbered.not_protocol),
            (Action::NextTier, Some(Protocol::Number(47)), Some(Protocol::Number(50)))
        );
        assert_eq!(encode(&numbered), br#"{"action":"next-tier","protocol":47,"!protocol":50}"#);
        assert!(Protocol::Tcp.has_ports() && !Protocol::Icmp.has_ports() && Protocol::Number(17).has_ports());
        for bad in [r#"{"protocol":0}"#, r#"{"protocol":256}"#, r#"{"protocol":"gre"}"#, r#"{"action":"drop"}"#] {
            assert!(decode::<Rule>("k", bad.as_bytes()).is_err(), "{bad}");
        }
        for bad in [
            r#"{"dst_ports":[65536]}"#,
            r#"{"dst_ports":["10:5"]}"#,
            r#"{"dst_ports":["http"]}"#,
            r#"{"dst_ports":[-1]}"#,
        ] {
            assert!(decode::<Rule>("k", bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(decode::<Rule>("k", b"{}").unwrap(), Rule::allow(), "no action is allow");
    }

    #[test]
    fn profile_is_three_keys_as_in_calico() {
        let mut profile = Profile::new("web");
        profile.labels.insert("role".into(), "frontend".into());
        let [(rules_key, rules), (tags_key, tags), (labels_key, labels)] = profile.records();
        assert_eq!(rules_key, "/calico/v1/policy/profile/web/rules");
        // pycalico's create_profile writes exactly this.
        assert_eq!(
            String::from_utf8(rules).unwrap(),
            r#"{"id":"web","inbound_rules":[{"action":"allow","src_tag":"web"}],"outbound_rules":[{"action":"allow"}]}"#
        );
        assert_eq!((tags_key.as_str(), tags.as_slice()), ("/calico/v1/policy/profile/web/tags", &br#"["web"]"#[..]));
        assert_eq!(labels_key, "/calico/v1/policy/profile/web/labels");
        assert_eq!(labels, br#"{"role":"frontend"}"#);
        // Felix's own documents carry no id.
        let felix: Rules = decode("k", br#"{"inbound_rules":[{"action":"deny"}],"outbound_rules":[]}"#).unwrap();
        assert_eq!(felix.id, None);
        assert_eq!(felix.inbound_rules[0].action, Action::Deny);
        assert_eq!(decode::<Vec<String>>("k", br#"["A", "B", "C"]"#).unwrap(), ["A", "B", "C"]);
        assert!(is_valid_name("web-1.prod_x") && !is_valid_name("a/b") && !is_valid_name(""));
    }
}
