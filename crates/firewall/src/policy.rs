//! Security profiles on nftables, in a table of their own, `inet calico-policy`, so that
//! calico-node can replace the whole policy in one transaction (delete the table and build
//! it again, in one batch) while the NAT table stays as it is.
//!
//! ```text
//! table inet calico-policy {
//!   map from-ep { type ifname : verdict }      # host veth -> jump eo-<veth>
//!   map to-ep   { type ifname : verdict }      # host veth -> jump ei-<veth>
//!   set tag4-<T> { type ipv4_addr }            # and tag6-<T>: the addresses of every
//!                                              # endpoint with a profile carrying tag T
//!   chain from-workloads { type filter hook prerouting priority filter; policy accept;
//!     ct state established,related accept
//!     meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 133-136 accept   # NDP
//!     iifname vmap @from-ep
//!     iifname "cali*" drop }                   # a veth without its policy yet
//!   chain to-workloads { type filter hook forward priority filter; policy accept;
//!     ct state established,related accept
//!     oifname vmap @to-ep
//!     oifname "cali*" drop }
//!   chain ei-<veth> { jump pi-<P1>; jump pi-<P2> }   # the endpoint's profiles in order;
//!   chain eo-<veth> { jump po-<P1>; jump po-<P2> }   # returning means no rule matched: drop
//!   chain pi-<P> { <inbound rules: allow = accept, deny = drop> }
//!   chain po-<P> { <outbound rules> }
//! }
//! ```
//!
//! Traffic from the host itself to its local containers leaves through the output hook, not
//! forward, so it is allowed (health checks); `host_to_workloads = false` adds
//! `chain host-to-workloads { type filter hook output priority filter; ... oifname vmap
//! @to-ep; oifname "cali*" drop }` that holds it to the profiles too.
//!
//! Tag membership is set elements, so an endpoint coming or going never rewrites a rule.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use model::profile::{Action, PortRange, Profile, Protocol, Rule};

use crate::netlink::*;
use crate::nft::{cmp, comment, expr, meta, parse_comment, payload, value, Nftables};
use crate::{Error, Result};

pub const TABLE: &str = "calico-policy";
/// The prefix of every host veth calico-cni makes.
pub const VETH_PREFIX: &str = "cali";

const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_DESTROYTABLE: u16 = 26;
const NFT_MSG_DESTROYCHAIN: u16 = 27;
const NFT_MSG_DESTROYSETELEM: u16 = 30;
const NLM_F_APPEND: u16 = 0x800;
const T_IFNAME: u32 = 41;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_JUMP: i32 = -3;

/// One local endpoint as the policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The host end of its veth.
    pub veth: String,
    pub addrs: Vec<IpAddr>,
    /// Its profiles' names, in order.
    pub profiles: Vec<String>,
}

/// Everything the policy table holds, as calico-node computes it from the datastore.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub profiles: Vec<Profile>,
    /// Tag → the addresses of every endpoint (on any host) with a profile carrying it.
    pub members: BTreeMap<String, BTreeSet<IpAddr>>,
    /// This host's endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Whether the host itself may reach its containers whatever their profiles.
    pub host_to_workloads: bool,
}

impl State {
    /// The state for `profiles` and every endpoint (local ones are those in `local`): tag
    /// members from the profiles each endpoint has.
    pub fn build<'a>(
        profiles: Vec<Profile>,
        all: impl IntoIterator<Item = (&'a [String], Vec<IpAddr>)>,
        endpoints: Vec<Endpoint>,
        host_to_workloads: bool,
    ) -> State {
        let tags_of: BTreeMap<&str, &[String]> = profiles.iter().map(|p| (p.name.as_str(), &p.tags[..])).collect();
        let mut members: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
        for (names, addrs) in all {
            for tag in names.iter().filter_map(|n| tags_of.get(n.as_str())).flat_map(|t| t.iter()) {
                members.entry(tag.clone()).or_default().extend(addrs.iter().copied());
            }
        }
        State { profiles, members, endpoints, host_to_workloads }
    }
}

fn is4(ip: &IpAddr) -> bool {
    ip.is_ipv4()
}

fn tag_set(tag: &str, v4: bool) -> String {
    format!("tag{}-{tag}", if v4 { 4 } else { 6 })
}

fn chain_in(profile: &str) -> String {
    format!("pi-{profile}")
}

fn chain_out(profile: &str) -> String {
    format!("po-{profile}")
}

fn ep_in(veth: &str) -> String {
    format!("ei-{veth}")
}

fn ep_out(veth: &str) -> String {
    format!("eo-{veth}")
}

fn ifname_key(name: &str) -> [u8; 16] {
    let mut k = [0u8; 16];
    let n = name.len().min(15);
    k[..n].copy_from_slice(&name.as_bytes()[..n]);
    k
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Every tag a profile's rules name.
fn referenced_tags(p: &Profile) -> impl Iterator<Item = &String> {
    p.rules
        .inbound_rules
        .iter()
        .chain(&p.rules.outbound_rules)
        .flat_map(|r| [&r.src_tag, &r.dst_tag, &r.not_src_tag, &r.not_dst_tag])
        .flatten()
}

// --- Encoding. ---

fn table_msg(b: &mut Buf, ty: u16, flags: u16) {
    b.nft(ty, flags, NFPROTO_INET);
    b.str(1, TABLE);
    if ty != NFT_MSG_DELTABLE && ty != NFT_MSG_DESTROYTABLE {
        b.be32(2, 0);
    }
    b.end_msg();
}

fn chain_msg(b: &mut Buf, name: &str, hook: Option<(u32, &str)>) {
    b.nft(NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_ACK, NFPROTO_INET);
    b.str(1, TABLE);
    b.str(3, name);
    if let Some((hook, _)) = hook {
        b.nest(4);
        b.be32(1, hook);
        b.be32(2, 0); // priority filter
        b.end_nest();
        b.be32(5, NF_ACCEPT);
        b.str(7, "filter");
    }
    b.end_msg();
}

fn flush_chain(b: &mut Buf, name: &str) {
    b.nft(NFT_MSG_DELRULE, NLM_F_ACK, NFPROTO_INET);
    b.str(1, TABLE);
    b.str(2, name);
    b.end_msg();
}

fn destroy_chain(b: &mut Buf, name: &str) {
    b.nft(NFT_MSG_DESTROYCHAIN, NLM_F_ACK, NFPROTO_INET);
    b.str(1, TABLE);
    b.str(3, name);
    b.end_msg();
}

fn set_msg(b: &mut Buf, name: &str, key_type: u32, key_len: u32, verdicts: bool) {
    b.nft(NFT_MSG_NEWSET, NLM_F_CREATE | NLM_F_ACK, NFPROTO_INET);
    b.str(1, TABLE);
    b.str(2, name);
    b.be32(3, if verdicts { SET_MAP } else { 0 });
    b.be32(4, key_type);
    b.be32(5, key_len);
    if verdicts {
        b.be32(6, NFT_DATA_VERDICT);
    }
    // NFTA_SET_ID (the kernel wants one): unique within the batch.
    b.be32(10, b.bytes.len() as u32);
    if key_type == T_IFNAME {
        // NFTA_SET_USERDATA, as nft writes it: the key is in host byte order
        // (NFTNL_UDATA_SET_KEYBYTEORDER = BYTEORDER_HOST_ENDIAN). Without it, `nft list`
        // reads the names backwards and shows every key as "".
        let mut udata = vec![0u8, 4];
        udata.extend_from_slice(&1u32.to_ne_bytes());
        b.attr(13, &udata);
    }
    b.end_msg();
}

fn tag_set_msg(b: &mut Buf, tag: &str, v4: bool) {
    let (ty, len) = if v4 { (T_IPV4, 4) } else { (T_IPV6, 16) };
    set_msg(b, &tag_set(tag, v4), ty, len, false);
}

/// Adds (or, with `ty` DESTROYSETELEM, removes) elements of one set; `jumps` gives each key
/// its verdict (a map); `owner` goes into each new element's comment.
fn elems(b: &mut Buf, ty: u16, set: &str, keys: &[Vec<u8>], jumps: Option<&[String]>, owner: Option<&str>) {
    if keys.is_empty() {
        return;
    }
    let flags = if ty == NFT_MSG_NEWSETELEM { NLM_F_CREATE | NLM_F_ACK } else { NLM_F_ACK };
    b.nft(ty, flags, NFPROTO_INET);
    b.str(1, TABLE);
    b.str(2, set);
    b.nest(3);
    for (i, k) in keys.iter().enumerate() {
        b.nest(1);
        value(b, 1, k);
        if let (Some(j), true) = (jumps, ty == NFT_MSG_NEWSETELEM) {
            b.nest(2); // NFTA_SET_ELEM_DATA
            verdict(b, NFT_JUMP as u32, Some(&j[i]));
            b.end_nest();
        }
        if let (Some(o), true) = (owner, ty == NFT_MSG_NEWSETELEM) {
            b.attr(6, &comment(o)); // NFTA_SET_ELEM_USERDATA
        }
        b.end_nest();
    }
    b.end_nest();
    b.end_msg();
}

/// NFTA_DATA_VERDICT { code, chain }.
fn verdict(b: &mut Buf, code: u32, chain: Option<&str>) {
    b.nest(2);
    b.be32(1, code);
    if let Some(c) = chain {
        b.str(2, c);
    }
    b.end_nest();
}

fn immediate(b: &mut Buf, code: u32, chain: Option<&str>) {
    expr(b, "immediate", |b| {
        b.be32(1, 0); // NFT_REG_VERDICT
        b.nest(2);
        verdict(b, code, chain);
        b.end_nest();
    });
}

fn rule_msg(b: &mut Buf, chain: &str, exprs: impl FnOnce(&mut Buf)) {
    b.nft(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK, NFPROTO_INET);
    b.str(1, TABLE);
    b.str(2, chain);
    b.nest(4);
    exprs(b);
    b.end_nest();
    b.end_msg();
}

fn lookup(b: &mut Buf, set: &str, dreg: Option<u32>, invert: bool) {
    expr(b, "lookup", |b| {
        b.str(1, set);
        b.be32(2, R);
        if let Some(d) = dreg {
            b.be32(3, d);
        }
        if invert {
            b.be32(5, 1);
        }
    });
}

fn ct_established(b: &mut Buf) {
    expr(b, "ct", |b| {
        b.be32(2, 0); // NFT_CT_STATE
        b.be32(1, R);
    });
    expr(b, "bitwise", |b| {
        b.be32(1, R);
        b.be32(2, R);
        b.be32(3, 4);
        value(b, 4, &(2u32 | 4).to_ne_bytes()); // ESTABLISHED | RELATED
        value(b, 5, &0u32.to_ne_bytes());
    });
    cmp(b, R, 1, &0u32.to_ne_bytes());
}

fn ifname(b: &mut Buf, out: bool) {
    meta(b, if out { 7 } else { 6 }, R); // NFT_META_OIFNAME / IIFNAME
}

fn base_chains(b: &mut Buf, host_to_workloads: bool) {
    set_msg(b, "from-ep", T_IFNAME, 16, true);
    set_msg(b, "to-ep", T_IFNAME, 16, true);
    let mut chains = vec![("from-workloads", 0u32, false), ("to-workloads", 2, true)];
    if !host_to_workloads {
        chains.push(("host-to-workloads", 3, true));
    }
    for (name, hook, out) in chains {
        chain_msg(b, name, Some((hook, "filter")));
        rule_msg(b, name, |b| {
            ct_established(b);
            immediate(b, NF_ACCEPT, None);
        });
        if !out {
            rule_msg(b, name, |b| {
                meta(b, 15, R);
                cmp(b, R, 0, &[10]); // ipv6
                meta(b, 16, R);
                cmp(b, R, 0, &[58]);
                payload(b, 2, 0, 1, R);
                cmp(b, R, 5, &[133]); // >= router solicitation
                cmp(b, R, 3, &[136]); // <= neighbour advertisement
                immediate(b, NF_ACCEPT, None);
            });
        }
        rule_msg(b, name, |b| {
            ifname(b, out);
            lookup(b, if out { "to-ep" } else { "from-ep" }, Some(0), false);
        });
        rule_msg(b, name, |b| {
            ifname(b, out);
            cmp(b, R, 0, VETH_PREFIX.as_bytes());
            immediate(b, NF_DROP, None);
        });
    }
}

/// The families a rule must be written for: one when a protocol, CIDR or ip_version fixes
/// it, both when it names tags (a set per family), else none needed (`None`).
fn families(r: &Rule) -> Vec<Option<bool>> {
    let nets = [&r.src_net, &r.dst_net, &r.not_src_net, &r.not_dst_net];
    let fixed = match r.protocol {
        Some(Protocol::Icmp) => Some(true),
        Some(Protocol::Icmpv6) => Some(false),
        _ => None,
    }
    .or(r.ip_version.map(|v| v == 4))
    .or(nets.iter().find_map(|n| n.map(|n| n.is_ipv4())));
    let tags = [&r.src_tag, &r.dst_tag, &r.not_src_tag, &r.not_dst_tag].iter().any(|t| t.is_some());
    match (fixed, tags) {
        (Some(v4), _) => vec![Some(v4)],
        (None, true) => vec![Some(true), Some(false)],
        (None, false) => vec![None],
    }
}

fn net_match(b: &mut Buf, net: &IpNetwork, src: bool, neq: bool) {
    let (off, len) = match (net.is_ipv4(), src) {
        (true, true) => (12, 4),
        (true, false) => (16, 4),
        (false, true) => (8, 16),
        (false, false) => (24, 16),
    };
    payload(b, 1, off, len, R);
    expr(b, "bitwise", |b| {
        b.be32(1, R);
        b.be32(2, R);
        b.be32(3, len);
        value(b, 4, &ip_bytes(&net.mask()));
        value(b, 5, &vec![0; len as usize]);
    });
    cmp(b, R, if neq { 1 } else { 0 }, &ip_bytes(&net.network()));
}

fn tag_match(b: &mut Buf, tag: &str, v4: bool, src: bool, invert: bool) {
    let (off, len) = match (v4, src) {
        (true, true) => (12, 4),
        (true, false) => (16, 4),
        (false, true) => (8, 16),
        (false, false) => (24, 16),
    };
    payload(b, 1, off, len, R);
    lookup(b, &tag_set(tag, v4), None, invert);
}

fn port_match(b: &mut Buf, p: &PortRange, src: bool, neq: bool) {
    payload(b, 2, if src { 0 } else { 2 }, 2, R);
    if p.first == p.last {
        cmp(b, R, if neq { 1 } else { 0 }, &p.first.to_be_bytes());
    } else {
        expr(b, "range", |b| {
            b.be32(1, R);
            b.be32(2, if neq { 1 } else { 0 });
            value(b, 3, &p.first.to_be_bytes());
            value(b, 4, &p.last.to_be_bytes());
        });
    }
}

/// The nftables rules of one profile rule (one per family and port range it expands to).
fn profile_rule(b: &mut Buf, chain: &str, r: &Rule) {
    let code = match r.action {
        Action::Allow | Action::NextTier => NF_ACCEPT,
        Action::Deny => NF_DROP,
        // Logging is not enforced here; the rule does not decide.
        Action::Log => return,
    };
    if [&r.src_selector, &r.dst_selector, &r.not_src_selector, &r.not_dst_selector].iter().any(|s| s.is_some()) {
        // Selectors are refused by validation; one that got in never matches.
        return;
    }
    let one = |v: &Vec<PortRange>| -> Vec<Option<PortRange>> {
        if v.is_empty() {
            vec![None]
        } else {
            v.iter().copied().map(Some).collect()
        }
    };
    for fam in families(r) {
        for sp in one(&r.src_ports) {
            for dp in one(&r.dst_ports) {
                rule_msg(b, chain, |b| {
                    if let Some(v4) = fam {
                        meta(b, 15, R);
                        cmp(b, R, 0, &[if v4 { 2 } else { 10 }]);
                    }
                    if let Some(p) = r.protocol {
                        meta(b, 16, R);
                        cmp(b, R, 0, &[p.number()]);
                    }
                    if let Some(p) = r.not_protocol {
                        meta(b, 16, R);
                        cmp(b, R, 1, &[p.number()]);
                    }
                    let v4 = fam.unwrap_or(true);
                    for (src, net, neq) in [
                        (true, &r.src_net, false),
                        (false, &r.dst_net, false),
                        (true, &r.not_src_net, true),
                        (false, &r.not_dst_net, true),
                    ] {
                        if let Some(n) = net {
                            net_match(b, n, src, neq);
                        }
                    }
                    for (src, tag, inv) in [
                        (true, &r.src_tag, false),
                        (false, &r.dst_tag, false),
                        (true, &r.not_src_tag, true),
                        (false, &r.not_dst_tag, true),
                    ] {
                        if let Some(t) = tag {
                            tag_match(b, t, v4, src, inv);
                        }
                    }
                    if let Some(p) = sp {
                        port_match(b, &p, true, false);
                    }
                    if let Some(p) = dp {
                        port_match(b, &p, false, false);
                    }
                    for p in &r.not_src_ports {
                        port_match(b, p, true, true);
                    }
                    for p in &r.not_dst_ports {
                        port_match(b, p, false, true);
                    }
                    for (off, want, neq) in [
                        (0, r.icmp_type, false),
                        (1, r.icmp_code, false),
                        (0, r.not_icmp_type, true),
                        (1, r.not_icmp_code, true),
                    ] {
                        if let Some(v) = want {
                            payload(b, 2, off, 1, R);
                            cmp(b, R, if neq { 1 } else { 0 }, &[v]);
                        }
                    }
                    immediate(b, code, None);
                });
            }
        }
    }
}

/// A profile's two chains with their rules, and the sets its rules and tags need (created
/// when missing, kept when present). `fresh`: the chains are new (no flush needed).
fn profile_objects(b: &mut Buf, p: &Profile, fresh: bool) {
    for tag in referenced_tags(p).chain(&p.tags) {
        tag_set_msg(b, tag, true);
        tag_set_msg(b, tag, false);
    }
    for (chain, rules) in [(chain_in(&p.name), &p.rules.inbound_rules), (chain_out(&p.name), &p.rules.outbound_rules)] {
        chain_msg(b, &chain, None);
        if !fresh {
            flush_chain(b, &chain);
        }
        for r in rules {
            profile_rule(b, &chain, r);
        }
    }
}

/// An endpoint's two chains (jumps to its profiles' chains, in order) and its map entries.
/// Profiles without chains are skipped (their traffic then falls to the drop).
fn endpoint_objects(b: &mut Buf, ep: &Endpoint, known: &BTreeSet<&str>, fresh: bool) {
    for (chain, to) in [(ep_in(&ep.veth), chain_in as fn(&str) -> String), (ep_out(&ep.veth), chain_out)] {
        chain_msg(b, &chain, None);
        if !fresh {
            flush_chain(b, &chain);
        }
        for p in ep.profiles.iter().filter(|p| known.contains(p.as_str())) {
            rule_msg(b, &chain, |b| immediate(b, NFT_JUMP as u32, Some(&to(p))));
        }
    }
    let key = vec![ifname_key(&ep.veth).to_vec()];
    elems(b, NFT_MSG_NEWSETELEM, "to-ep", &key, Some(&[ep_in(&ep.veth)]), None);
    elems(b, NFT_MSG_NEWSETELEM, "from-ep", &key, Some(&[ep_out(&ep.veth)]), None);
}

/// The addresses in (or out of) a tag's sets; `owner` (the veth) is each element's comment,
/// so that a DEL without the endpoint's record finds them.
fn members(b: &mut Buf, ty: u16, tag: &str, addrs: &[IpAddr], owner: Option<&str>) {
    for v4 in [true, false] {
        let keys: Vec<Vec<u8>> = addrs.iter().filter(|a| is4(a) == v4).map(ip_bytes).collect();
        elems(b, ty, &tag_set(tag, v4), &keys, None, owner);
    }
}

/// Removes `addrs` from every tag set among `sets`.
fn forget(b: &mut Buf, sets: &[String], addrs: &[IpAddr]) {
    for set in sets {
        let keys: Vec<Vec<u8>> = match (set.starts_with("tag4-"), set.starts_with("tag6-")) {
            (true, _) => addrs.iter().filter(|a| is4(a)).map(ip_bytes).collect(),
            (_, true) => addrs.iter().filter(|a| !is4(a)).map(ip_bytes).collect(),
            _ => continue,
        };
        elems(b, NFT_MSG_DESTROYSETELEM, set, &keys, None, None);
    }
}

/// What changed between two states that differ only in their endpoints and tag members
/// (an endpoint came, went or changed profiles): written as element and endpoint-chain
/// updates, so the cost is the change's, not the table's.
#[derive(Debug, Default, PartialEq, Eq)]
struct Change<'a> {
    gone: Vec<&'a str>,
    set_up: Vec<&'a Endpoint>,
    new_tags: Vec<&'a str>,
    /// Tag → (addresses to add, addresses to remove).
    members: BTreeMap<&'a str, (Vec<IpAddr>, Vec<IpAddr>)>,
}

impl<'a> Change<'a> {
    /// `None` when more than endpoints and members changed (a profile or the host setting):
    /// that takes the whole table.
    fn between(old: &'a State, new: &'a State) -> Option<Change<'a>> {
        if old.profiles != new.profiles || old.host_to_workloads != new.host_to_workloads {
            return None;
        }
        let by_veth = |s: &'a State| s.endpoints.iter().map(|e| (e.veth.as_str(), e)).collect::<BTreeMap<_, _>>();
        let (before, after) = (by_veth(old), by_veth(new));
        let mut change = Change {
            gone: before.keys().filter(|v| !after.contains_key(*v)).copied().collect(),
            set_up: after.iter().filter(|(v, e)| before.get(*v) != Some(*e)).map(|(_, e)| *e).collect(),
            ..Change::default()
        };
        let empty = BTreeSet::new();
        for tag in old.members.keys().chain(new.members.keys()).collect::<BTreeSet<_>>() {
            let (o, n) = (old.members.get(tag).unwrap_or(&empty), new.members.get(tag).unwrap_or(&empty));
            if !old.members.contains_key(tag) {
                change.new_tags.push(tag);
            }
            let add: Vec<IpAddr> = n.difference(o).copied().collect();
            let remove: Vec<IpAddr> = o.difference(n).copied().collect();
            if !add.is_empty() || !remove.is_empty() {
                change.members.insert(tag, (add, remove));
            }
        }
        Some(change)
    }

    fn is_empty(&self) -> bool {
        self.gone.is_empty() && self.set_up.is_empty() && self.new_tags.is_empty() && self.members.is_empty()
    }

    fn write(&self, b: &mut Buf, known: &BTreeSet<&str>) {
        for veth in &self.gone {
            // The map entries first: they jump to the chains.
            let key = vec![ifname_key(veth).to_vec()];
            elems(b, NFT_MSG_DESTROYSETELEM, "to-ep", &key, None, None);
            elems(b, NFT_MSG_DESTROYSETELEM, "from-ep", &key, None, None);
            destroy_chain(b, &ep_in(veth));
            destroy_chain(b, &ep_out(veth));
        }
        for ep in &self.set_up {
            endpoint_objects(b, ep, known, false);
        }
        for tag in &self.new_tags {
            tag_set_msg(b, tag, true);
            tag_set_msg(b, tag, false);
        }
        for (tag, (add, remove)) in &self.members {
            members(b, NFT_MSG_DESTROYSETELEM, tag, remove, None);
            members(b, NFT_MSG_NEWSETELEM, tag, add, None);
        }
    }
}

fn get_chains(b: &mut Buf, chains: &[String]) {
    for c in chains {
        b.nft(NFT_MSG_GETCHAIN, 0, NFPROTO_INET);
        b.str(1, TABLE);
        b.str(3, c);
        b.end_msg();
    }
}

/// The answers to [`get_chains`]: whether each chain exists.
fn chains_found(errnos: &[i32]) -> Result<Vec<bool>> {
    errnos
        .iter()
        .map(|e| match *e {
            0 => Ok(true),
            libc::ENOENT => Ok(false),
            e => Err(Error::kernel("reading chains", e)),
        })
        .collect()
}

/// The policy table's side of the [`crate::Firewall`] trait, on the real kernel.
impl Nftables {
    /// Creates the table with its base chains and maps unless it exists (one transaction).
    /// Creates the table with its base chains and maps unless it exists, and says which of
    /// `chains` exist: the table and the chains are read in one round trip.
    fn ensure_policy_table(&self, host_to_workloads: bool, chains: &[String]) -> Result<Vec<bool>> {
        // A GET is no transaction, so the usual case (the table is there) costs one round
        // trip. A create batch refused with EEXIST is an aborted transaction, and an abort
        // waits out an RCU grace period: 14.6 ms of every calico-cni ADD, measured.
        let mut b = self.buf();
        b.nft(NFT_MSG_GETTABLE, 0, NFPROTO_INET);
        b.str(1, TABLE);
        b.end_msg();
        get_chains(&mut b, chains);
        let (errnos, _) = self.exchange("reading table inet calico-policy", &b)?;
        match errnos[0] {
            0 => return chains_found(&errnos[1..]),
            libc::ENOENT => {}
            e => return Err(Error::kernel("reading table inet calico-policy", e)),
        }
        let r = self.batch("creating table inet calico-policy", |b| {
            table_msg(b, NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK);
            base_chains(b, host_to_workloads);
        });
        match r {
            Ok(()) => Ok(vec![false; chains.len()]),
            // Another process made it first, maybe with some of the chains.
            Err(e) if e.errno() == Some(libc::EEXIST) => self.chains_present(chains),
            Err(e) => Err(e),
        }
    }

    /// Which of `chains` exist (one round trip).
    fn chains_present(&self, chains: &[String]) -> Result<Vec<bool>> {
        let mut b = self.buf();
        get_chains(&mut b, chains);
        let (errnos, _) = self.exchange("reading chains", &b)?;
        chains_found(&errnos)
    }

    /// The names of the table's sets (empty when there is no table).
    fn set_names(&self) -> Result<Vec<String>> {
        let mut b = self.buf();
        b.nft(NFT_MSG_GETSET, NLM_F_DUMP, NFPROTO_INET);
        b.str(1, TABLE);
        b.end_msg();
        let (errnos, data) = self.exchange("listing sets", &b)?;
        match errnos[0] {
            0 | libc::ENOENT => {}
            e => return Err(Error::kernel("listing sets", e)),
        }
        Ok(data
            .iter()
            .filter(|(_, p)| attr(p, 1).is_some_and(|t| t.strip_suffix(&[0]) == Some(TABLE.as_bytes())))
            .filter_map(|(_, p)| attr(p, 2))
            .map(|n| String::from_utf8_lossy(n.strip_suffix(&[0]).unwrap_or(n)).into_owned())
            .collect())
    }

    pub(crate) fn policy_attach(&self, ep: &Endpoint, profiles: &[Profile]) -> Result<()> {
        let chains: Vec<String> = profiles.iter().map(|p| chain_in(&p.name)).collect();
        let present = self.ensure_policy_table(true, &chains)?;
        let known: BTreeSet<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
        self.batch("attaching the endpoint's policy", |b| {
            for (p, present) in profiles.iter().zip(present) {
                if present {
                    // calico-node keeps it; only the sets its tags need, for the members.
                    for tag in &p.tags {
                        tag_set_msg(b, tag, true);
                        tag_set_msg(b, tag, false);
                    }
                } else {
                    profile_objects(b, p, true);
                }
            }
            endpoint_objects(b, ep, &known, false);
            for tag in profiles.iter().flat_map(|p| &p.tags).collect::<BTreeSet<_>>() {
                members(b, NFT_MSG_NEWSETELEM, tag, &ep.addrs, Some(&ep.veth));
            }
        })
    }

    /// The keys of the tag set elements whose comment is `owner`, by set (one round trip).
    fn owned_members(&self, sets: &[String], owner: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let tags: Vec<&String> = sets.iter().filter(|s| s.starts_with("tag4-") || s.starts_with("tag6-")).collect();
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        let mut b = self.buf();
        for set in &tags {
            b.nft(NFT_MSG_GETSETELEM, NLM_F_DUMP, NFPROTO_INET);
            b.str(1, TABLE);
            b.str(2, set);
            b.end_msg();
        }
        let (_, data) = self.exchange("listing tag members", &b)?;
        let mut out = Vec::new();
        for (seq, payload) in &data {
            let Some(i) = b.seqs.iter().position(|s| s == seq) else { continue };
            let Some(list) = attr(payload, 3) else { continue };
            for (_, e) in attrs(list).into_iter().filter(|(t, _)| *t == 1) {
                let key = attr(e, 1).and_then(|k| attr(k, 1));
                let who = attr(e, 6).and_then(parse_comment);
                if let (Some(key), Some(who)) = (key, who) {
                    if who == owner {
                        out.push((tags[i].clone(), key.to_vec()));
                    }
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn policy_detach(&self, veth: &str, addrs: &[IpAddr]) -> Result<()> {
        let sets = self.set_names()?;
        if sets.is_empty() {
            return Ok(());
        }
        // Without the addresses (an ADD that died before its record), by the elements' owner.
        let owned = if addrs.is_empty() { self.owned_members(&sets, veth)? } else { Vec::new() };
        self.batch("detaching the endpoint's policy", |b| {
            let key = vec![ifname_key(veth).to_vec()];
            elems(b, NFT_MSG_DESTROYSETELEM, "to-ep", &key, None, None);
            elems(b, NFT_MSG_DESTROYSETELEM, "from-ep", &key, None, None);
            destroy_chain(b, &ep_in(veth));
            destroy_chain(b, &ep_out(veth));
            forget(b, &sets, addrs);
            for (set, key) in &owned {
                elems(b, NFT_MSG_DESTROYSETELEM, set, std::slice::from_ref(key), None, None);
            }
        })
    }

    /// The first of the endpoint's objects that is missing (its two chains, its two map
    /// entries), in one round trip; `None` when all are there.
    pub(crate) fn policy_check(&self, veth: &str) -> Result<Option<String>> {
        let mut b = self.buf();
        for chain in [ep_in(veth), ep_out(veth)] {
            b.nft(NFT_MSG_GETCHAIN, 0, NFPROTO_INET);
            b.str(1, TABLE);
            b.str(3, &chain);
            b.end_msg();
        }
        for map in ["to-ep", "from-ep"] {
            b.nft(NFT_MSG_GETSETELEM, 0, NFPROTO_INET);
            b.str(1, TABLE);
            b.str(2, map);
            b.nest(3);
            b.nest(1);
            value(&mut b, 1, &ifname_key(veth));
            b.end_nest();
            b.end_nest();
            b.end_msg();
        }
        let (errnos, _) = self.exchange("reading the endpoint's policy", &b)?;
        let what = [
            format!("chain {}", ep_in(veth)),
            format!("chain {}", ep_out(veth)),
            format!("map to-ep's entry for {veth}"),
            format!("map from-ep's entry for {veth}"),
        ];
        for (what, errno) in what.into_iter().zip(errnos) {
            match errno {
                0 => {}
                libc::ENOENT => return Ok(Some(what)),
                e => return Err(Error::kernel("reading the endpoint's policy", e)),
            }
        }
        Ok(None)
    }

    pub(crate) fn policy_forget(&self, addrs: &[IpAddr]) -> Result<()> {
        let sets = self.set_names()?;
        if sets.iter().any(|s| s.starts_with("tag4-") || s.starts_with("tag6-")) {
            self.batch("removing addresses from the tag sets", |b| forget(b, &sets, addrs))?;
        }
        Ok(())
    }

    pub(crate) fn policy_update(&self, old: &State, new: &State) -> Result<bool> {
        let Some(change) = Change::between(old, new) else { return Ok(false) };
        if change.is_empty() {
            return Ok(true);
        }
        let known: BTreeSet<&str> = new.profiles.iter().map(|p| p.name.as_str()).collect();
        self.batch("updating the policy", |b| change.write(b, &known))?;
        Ok(true)
    }

    pub(crate) fn policy_replace(&self, state: &State) -> Result<()> {
        let known: BTreeSet<&str> = state.profiles.iter().map(|p| p.name.as_str()).collect();
        self.batch("replacing the policy", |b| {
            // `add table; delete table; table ...`: one transaction, whatever was there.
            table_msg(b, NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_ACK);
            table_msg(b, NFT_MSG_DELTABLE, NLM_F_ACK);
            table_msg(b, NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_ACK);
            for tag in state.members.keys() {
                tag_set_msg(b, tag, true);
                tag_set_msg(b, tag, false);
            }
            for p in &state.profiles {
                profile_objects(b, p, true);
            }
            base_chains(b, state.host_to_workloads);
            for ep in &state.endpoints {
                endpoint_objects(b, ep, &known, true);
            }
            for (tag, addrs) in &state.members {
                members(b, NFT_MSG_NEWSETELEM, tag, &addrs.iter().copied().collect::<Vec<_>>(), None);
            }
        })
    }

    /// Removes the policy table (tests, and a node told to stop enforcing).
    pub fn policy_remove(&self) -> Result<()> {
        self.batch("removing table inet calico-policy", |b| table_msg(b, NFT_MSG_DESTROYTABLE, NLM_F_ACK))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(words: &str) -> Rule {
        model::rule_syntax::parse(&words.split_whitespace().collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn a_rule_is_written_once_per_family_it_needs() {
        assert_eq!(families(&rule("allow")), [None], "no address match: both families at once");
        assert_eq!(families(&rule("allow tcp to ports 80")), [None]);
        assert_eq!(families(&rule("allow from tag a")), [Some(true), Some(false)], "a set per family");
        assert_eq!(families(&rule("allow icmp")), [Some(true)]);
        assert_eq!(families(&rule("allow icmpv6 from tag a")), [Some(false)]);
        assert_eq!(families(&rule("deny from cidr fd00::/8 to tag b")), [Some(false)]);
    }

    #[test]
    fn a_port_list_expands_to_one_rule_per_range_and_log_rules_to_none() {
        let count = |r: &Rule| {
            let mut b = Buf::new(1);
            profile_rule(&mut b, "pi-x", r);
            b.seqs.len()
        };
        assert_eq!(count(&rule("allow tcp from ports 1,2:3 to ports 80,443,8000:8080")), 6);
        assert_eq!(count(&rule("allow udp from tag a to ports 53")), 2);
        assert_eq!(count(&Rule { action: Action::Log, ..Rule::default() }), 0);
        let sel = Rule { src_selector: Some("has(x)".into()), ..Rule::default() };
        assert_eq!(count(&sel), 0, "a selector never matches");
    }

    #[test]
    fn an_endpoint_coming_or_going_is_an_update_and_a_profile_change_a_replacement() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let ep =
            |veth: &str, addr: &str| Endpoint { veth: veth.into(), addrs: vec![ip(addr)], profiles: vec!["a".into()] };
        let state = |eps: Vec<(Endpoint, &[String])>| {
            let all: Vec<(&[String], Vec<IpAddr>)> = eps.iter().map(|(e, p)| (*p, e.addrs.clone())).collect();
            State::build(vec![Profile::new("a")], all, eps.iter().map(|(e, _)| e.clone()).collect(), true)
        };
        let pa = ["a".to_owned()];
        let old = state(vec![(ep("cali1", "10.0.0.1"), &pa), (ep("cali2", "10.0.0.2"), &pa)]);
        let new = state(vec![(ep("cali2", "10.0.0.2"), &pa), (ep("cali3", "10.0.0.3"), &pa)]);
        let change = Change::between(&old, &new).expect("only endpoints changed");
        assert_eq!(change.gone, ["cali1"]);
        assert_eq!(change.set_up.iter().map(|e| e.veth.as_str()).collect::<Vec<_>>(), ["cali3"]);
        assert_eq!(change.members["a"], (vec![ip("10.0.0.3")], vec![ip("10.0.0.1")]));
        assert!(change.new_tags.is_empty());
        assert!(Change::between(&new, &new).unwrap().is_empty(), "nothing to write");
        // The batch's size follows the change, not the table.
        let (mut b, known) = (Buf::new(1), BTreeSet::from(["a"]));
        change.write(&mut b, &known);
        assert!(b.seqs.len() < 16, "{} messages", b.seqs.len());

        let mut other = new.clone();
        other.profiles[0].tags.push("t".into());
        assert!(Change::between(&new, &other).is_none(), "a profile change replaces the table");
        let mut host = new.clone();
        host.host_to_workloads = false;
        assert!(Change::between(&new, &host).is_none());
    }

    #[test]
    fn members_come_from_the_profiles_each_endpoint_has() {
        let mut a = Profile::new("a");
        a.tags.push("shared".into());
        let b = Profile::new("b");
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let pa = ["a".to_owned()];
        let pab = ["a".to_owned(), "b".to_owned(), "gone".to_owned()];
        let state =
            State::build(vec![a, b], [(&pa[..], vec![ip("10.0.0.1")]), (&pab[..], vec![ip("10.0.0.2")])], vec![], true);
        assert_eq!(state.members["a"].len(), 2);
        assert_eq!(state.members["shared"].len(), 2);
        assert_eq!(state.members["b"].iter().copied().collect::<Vec<_>>(), [ip("10.0.0.2")]);
        assert!(!state.members.contains_key("gone"));
    }
}
