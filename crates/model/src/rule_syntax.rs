//! Calico v0.x's rule grammar, as `calicoctl profile <P> rule add|remove|show` speaks it:
//!
//! ```text
//! (allow|deny) [(tcp|udp|sctp|udplite) [from [ports P] [tag T] [cidr C]] [to [ports P] [tag T] [cidr C]]
//!              | (icmp|icmpv6) [type N [code N]] [from [tag T] [cidr C]] [to [tag T] [cidr C]]
//!              | [from [tag T] [cidr C]] [to [tag T] [cidr C]]]
//! ```
//!
//! Ports are comma lists of ports and `first:last` ranges. `cidr` may be left out before the
//! CIDR itself, as v0.x allowed. [`parse`] turns words into a [`Rule`], and a rule's
//! [`fmt::Display`] writes it back in the same words, so what `rule show` prints can be given
//! to `rule remove`. [`validate`] holds a rule (also one read from JSON) to what can be enforced.

use std::fmt;

use ipnetwork::IpNetwork;

use crate::profile::{is_valid_name, Action, PortRange, Protocol, Rule, Rules};
use crate::Error;

/// Traffic to an endpoint, or from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn parse(word: &str) -> Option<Direction> {
        match word {
            "inbound" => Some(Direction::Inbound),
            "outbound" => Some(Direction::Outbound),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl Rules {
    pub fn of(&self, d: Direction) -> &Vec<Rule> {
        match d {
            Direction::Inbound => &self.inbound_rules,
            Direction::Outbound => &self.outbound_rules,
        }
    }

    pub fn of_mut(&mut self, d: Direction) -> &mut Vec<Rule> {
        match d {
            Direction::Inbound => &mut self.inbound_rules,
            Direction::Outbound => &mut self.outbound_rules,
        }
    }
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Rule(reason.into())
}

/// A rule from its words (`["allow", "tcp", "to", "ports", "80,443"]`). The result is
/// [`validate`]d.
pub fn parse<S: AsRef<str>>(words: &[S]) -> Result<Rule, Error> {
    let words: Vec<&str> = words.iter().map(AsRef::as_ref).collect();
    let mut it = words.iter().copied().peekable();
    let mut rule = Rule {
        action: match it.next() {
            Some("allow") => Action::Allow,
            Some("deny") => Action::Deny,
            Some(other) => return Err(bad(format!("a rule starts with allow or deny, not {other:?}"))),
            None => return Err(bad("a rule starts with allow or deny")),
        },
        ..Rule::default()
    };
    if let Some(&w) = it.peek() {
        if w != "from" && w != "to" {
            let proto = match w {
                "tcp" | "udp" | "sctp" | "udplite" | "icmp" | "icmpv6" => Protocol::parse(w),
                _ => None,
            };
            let Some(proto) = proto else {
                return Err(bad(format!(
                    "expected tcp, udp, sctp, udplite, icmp, icmpv6, from or to after {:?}, got {w:?}",
                    words[0]
                )));
            };
            it.next();
            rule.protocol = Some(proto);
        }
    }
    if matches!(rule.protocol, Some(Protocol::Icmp | Protocol::Icmpv6)) && it.peek() == Some(&"type") {
        it.next();
        rule.icmp_type = Some(number(it.next(), "type", 255)? as u8);
        if it.peek() == Some(&"code") {
            it.next();
            rule.icmp_code = Some(number(it.next(), "code", 255)? as u8);
        }
    }
    let mut seen_to = false;
    while let Some(side) = it.next() {
        let src = match side {
            "from" if !seen_to && rule.src_tag.is_none() && rule.src_net.is_none() && rule.src_ports.is_empty() => true,
            "to" if !seen_to => false,
            other => return Err(bad(format!("unexpected {other:?} (from comes before to, each at most once)"))),
        };
        seen_to |= !src;
        let mut any = false;
        while let Some(&w) = it.peek() {
            if w == "from" || w == "to" {
                break;
            }
            it.next();
            any = true;
            let (ports, tag, net) = if src {
                (&mut rule.src_ports, &mut rule.src_tag, &mut rule.src_net)
            } else {
                (&mut rule.dst_ports, &mut rule.dst_tag, &mut rule.dst_net)
            };
            match w {
                "ports" if ports.is_empty() => *ports = parse_ports(it.next().unwrap_or(""))?,
                "tag" if tag.is_none() => {
                    let t = it.next().ok_or_else(|| bad("tag needs a tag name"))?;
                    *tag = Some(t.to_owned());
                }
                "cidr" if net.is_none() => *net = Some(parse_cidr(it.next().unwrap_or(""))?),
                w if net.is_none() && w.contains(['.', ':']) => *net = Some(parse_cidr(w)?),
                w => return Err(bad(format!("unexpected {w:?} after {side} (ports, tag and cidr, each once)"))),
            }
        }
        if !any {
            return Err(bad(format!("{side} needs ports, tag or cidr")));
        }
    }
    validate(&rule)?;
    Ok(rule)
}

fn number(word: Option<&str>, what: &str, max: u32) -> Result<u32, Error> {
    let word = word.ok_or_else(|| bad(format!("{what} needs a number")))?;
    word.parse::<u32>()
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| bad(format!("invalid {what} {word:?}: a number 0-{max}")))
}

/// `80,443,8000:8080`.
pub fn parse_ports(text: &str) -> Result<Vec<PortRange>, Error> {
    if text.is_empty() {
        return Err(bad("ports needs a list such as 80,443 or 8000:8080"));
    }
    text.split(',')
        .map(|p| {
            PortRange::parse(p).ok_or_else(|| {
                bad(format!("invalid port {p:?} in {text:?}: ports are 0-65535, ranges first:last with first <= last"))
            })
        })
        .collect()
}

fn parse_cidr(text: &str) -> Result<IpNetwork, Error> {
    text.parse::<IpNetwork>().map_err(|_| bad(format!("invalid CIDR {text:?}")))
}

/// Whether the rule can be stored and enforced: ports only with a protocol that has them,
/// ICMP type and code only with icmp/icmpv6 (a code only with a type), tags that are valid
/// names, a CIDR of the rule's IP version, no selectors (this Calico enforces tags).
pub fn validate(rule: &Rule) -> Result<(), Error> {
    let ports = !(rule.src_ports.is_empty()
        && rule.dst_ports.is_empty()
        && rule.not_src_ports.is_empty()
        && rule.not_dst_ports.is_empty());
    if ports && !rule.protocol.is_some_and(Protocol::has_ports) {
        let got = rule.protocol.map_or_else(|| "no protocol".to_owned(), |p| p.to_string());
        return Err(bad(format!("ports need tcp, udp, sctp or udplite, not {got}")));
    }
    let icmp = rule.icmp_type.is_some()
        || rule.icmp_code.is_some()
        || rule.not_icmp_type.is_some()
        || rule.not_icmp_code.is_some();
    if icmp && !matches!(rule.protocol, Some(Protocol::Icmp | Protocol::Icmpv6)) {
        return Err(bad("an ICMP type or code needs icmp or icmpv6"));
    }
    if rule.icmp_code.is_some() && rule.icmp_type.is_none() {
        return Err(bad("an ICMP code needs a type"));
    }
    for tag in [&rule.src_tag, &rule.dst_tag, &rule.not_src_tag, &rule.not_dst_tag].into_iter().flatten() {
        if !is_valid_name(tag) {
            return Err(bad(format!("invalid tag name {tag:?}: letters, digits, '.', '_' and '-' only")));
        }
    }
    if [&rule.src_selector, &rule.dst_selector, &rule.not_src_selector, &rule.not_dst_selector]
        .iter()
        .any(|s| s.is_some())
    {
        return Err(bad("selectors are not supported; use tags"));
    }
    let version = match rule.protocol {
        Some(Protocol::Icmp) => Some(4),
        Some(Protocol::Icmpv6) => Some(6),
        _ => None,
    }
    .or(rule.ip_version);
    if rule.ip_version.is_some_and(|v| v != 4 && v != 6) {
        return Err(bad("ip_version is 4 or 6"));
    }
    let mut nets = [&rule.src_net, &rule.dst_net, &rule.not_src_net, &rule.not_dst_net].into_iter().flatten();
    let first = nets.next().map(|n| if n.is_ipv4() { 4 } else { 6 });
    for v in first.into_iter().chain(nets.map(|n| if n.is_ipv4() { 4 } else { 6 })) {
        if version.is_some_and(|want| want != v) || first != Some(v) {
            return Err(bad("the rule's CIDRs and protocol are of different IP versions"));
        }
    }
    Ok(())
}

fn ports(p: &[PortRange]) -> String {
    p.iter().map(PortRange::to_string).collect::<Vec<_>>().join(",")
}

/// The rule in the grammar's words; negated matches (from JSON) are written with a `!`.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.action {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::NextTier => "next-tier",
            Action::Log => "log",
        })?;
        if let Some(p) = self.protocol {
            write!(f, " {p}")?;
        }
        if let Some(p) = self.not_protocol {
            write!(f, " !{p}")?;
        }
        if let Some(t) = self.icmp_type {
            write!(f, " type {t}")?;
        }
        if let Some(c) = self.icmp_code {
            write!(f, " code {c}")?;
        }
        if let Some(t) = self.not_icmp_type {
            write!(f, " !type {t}")?;
        }
        if let Some(c) = self.not_icmp_code {
            write!(f, " !code {c}")?;
        }
        let sides = [
            (
                "from",
                &self.src_ports,
                &self.src_tag,
                &self.src_net,
                &self.not_src_ports,
                &self.not_src_tag,
                &self.not_src_net,
            ),
            (
                "to",
                &self.dst_ports,
                &self.dst_tag,
                &self.dst_net,
                &self.not_dst_ports,
                &self.not_dst_tag,
                &self.not_dst_net,
            ),
        ];
        for (word, p, t, n, np, nt, nn) in sides {
            if p.is_empty() && t.is_none() && n.is_none() && np.is_empty() && nt.is_none() && nn.is_none() {
                continue;
            }
            write!(f, " {word}")?;
            if !p.is_empty() {
                write!(f, " ports {}", ports(p))?;
            }
            if let Some(t) = t {
                write!(f, " tag {t}")?;
            }
            if let Some(n) = n {
                write!(f, " cidr {n}")?;
            }
            if !np.is_empty() {
                write!(f, " !ports {}", ports(np))?;
            }
            if let Some(t) = nt {
                write!(f, " !tag {t}")?;
            }
            if let Some(n) = nn {
                write!(f, " !cidr {n}")?;
            }
        }
        if let Some(v) = self.ip_version {
            write!(f, " (IPv{v} only)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Rule, Error> {
        parse(&s.split_whitespace().collect::<Vec<_>>())
    }

    #[test]
    fn parses_and_prints_the_grammar() {
        for text in [
            "allow",
            "deny",
            "allow from tag WEB",
            "allow tcp to ports 80",
            "allow tcp from ports 1024:65535 tag web cidr 10.0.0.0/8 to ports 80,443,8000:8080 tag db",
            "deny udp to ports 53 cidr fd00::/64",
            "allow icmp",
            "allow icmp type 8",
            "allow icmp type 3 code 4 from tag x",
            "deny icmpv6 type 128 to cidr fd00::1/128",
            "allow to cidr 192.168.0.0/16",
            "allow from cidr 10.1.0.0/16 to tag b",
        ] {
            let rule = p(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(rule.to_string(), text);
            assert_eq!(p(&rule.to_string()).unwrap(), rule);
        }
        let r = p("allow tcp from 10.0.0.0/8 to ports 80").unwrap();
        assert_eq!(r.src_net, Some("10.0.0.0/8".parse().unwrap()), "cidr keyword is optional");
        assert_eq!(r.dst_ports, vec![PortRange::port(80)]);
        assert_eq!(r.to_string(), "allow tcp from cidr 10.0.0.0/8 to ports 80");
        assert_eq!(p("allow from tag A").unwrap(), Profile::new("A").rules.inbound_rules[0]);
    }

    use crate::profile::Profile;

    #[test]
    fn refuses_malformed_rules_clearly() {
        for (text, says) in [
            ("", "allow or deny"),
            ("accept", "allow or deny"),
            ("allow gre", "expected tcp"),
            ("allow tcp to ports 99999", "invalid port"),
            ("allow tcp to ports 10:5", "invalid port"),
            ("allow tcp to ports http", "invalid port"),
            ("allow tcp to ports", "ports needs"),
            ("allow icmp to ports 80", "ports need tcp"),
            ("allow to ports 80", "ports need tcp"),
            ("allow tcp type 8", "unexpected"),
            ("allow icmp type 256", "invalid type"),
            ("allow icmp type x", "invalid type"),
            ("allow from tag a/b", "invalid tag name"),
            ("allow from tag", "tag needs"),
            ("allow from", "from needs"),
            ("allow to tag a from tag b", "from comes before to"),
            ("allow from tag a from tag b", "from comes before to"),
            ("allow from tag a tag b", "each once"),
            ("allow from cidr 10.0.0.0/33", "invalid CIDR"),
            ("allow from bogus", "unexpected"),
            ("allow icmp to cidr fd00::/64", "different IP versions"),
            ("allow from cidr 10.0.0.0/8 to cidr fd00::/8", "different IP versions"),
        ] {
            let err = p(text).expect_err(text).to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }

    #[test]
    fn validates_json_rules() {
        let ok: Rule = crate::decode("k", br#"{"action":"deny","protocol":"tcp","!dst_ports":[22]}"#).unwrap();
        validate(&ok).unwrap();
        assert_eq!(ok.to_string(), "deny tcp to !ports 22");
        for bad in [
            r#"{"protocol":"icmp","dst_ports":[1]}"#,
            r#"{"icmp_type":8}"#,
            r#"{"protocol":"icmp","icmp_code":1}"#,
            r#"{"src_tag":"a b"}"#,
            r#"{"src_selector":"has(x)"}"#,
            r#"{"ip_version":5}"#,
        ] {
            let rule: Rule = crate::decode("k", bad.as_bytes()).unwrap();
            assert!(validate(&rule).is_err(), "{bad}");
        }
    }
}
