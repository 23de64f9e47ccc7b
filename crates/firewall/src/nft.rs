//! The real [`Firewall`]: the `inet calico` table over NETLINK_NETFILTER, from this process.
//!
//! ```text
//! table inet calico {
//!   set all-pools4 { type ipv4_addr; flags interval }      # and all-pools6 (ipv6_addr)
//!   set masq-pools4 { type ipv4_addr; flags interval }     # and masq-pools6
//!   map ports4 { type inet_proto . inet_service : ipv4_addr . inet_service }    # and ports6
//!   map hostports4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }
//!   set hairpin4 { type ipv4_addr . ipv4_addr }            # and hostports6, hairpin6
//!   chain prerouting { type nat hook prerouting priority dstnat; policy accept;
//!     meta nfproto ipv4 fib daddr type local ip daddr & 255.0.0.0 != 127.0.0.0
//!       dnat ip to ip daddr . meta l4proto . th dport map @hostports4
//!     meta nfproto ipv4 fib daddr type local ip daddr & 255.0.0.0 != 127.0.0.0
//!       dnat ip to meta l4proto . th dport map @ports4
//!     (the same for ipv6, ip6 daddr != ::1) }
//!   chain output { type nat hook output priority dstnat; the same rules, but 127.0.0.0/8
//!     is mapped (not ::1) }
//!   chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     meta nfproto ipv4 ip saddr . ip daddr @hairpin4 masquerade
//!     meta nfproto ipv4 ip saddr @masq-pools4 ip daddr != @all-pools4 masquerade fully-random
//!     (the same for ipv6)
//!     meta nfproto ipv4 ip saddr 127.0.0.0/8 ct status dnat masquerade
//!     meta nfproto ipv4 oifname "tunl0" fib saddr . oif type != local fib saddr type local
//!       masquerade                                         # and oifname "vxlan.calico" }
//! }
//! ```
//!
//! Elements are added in one batch (one transaction, one round trip); checks and removals
//! first read the elements concerned with one GET each, all sent at once.

use std::cell::{Cell, OnceCell};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnetwork::IpNetwork;

use crate::netlink::*;
use crate::{Element, Error, Firewall, PoolSet, PortMap, Proto, Result};

pub const TABLE: &str = "calico";
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

const SET_INTERVAL: u32 = 0x4;
const ELEM_INTERVAL_END: u32 = 0x1;

// More of nft's datatype numbers (with T_IPV4 and T_IPV6 in `netlink`).
const T_PROTO: u32 = 12;
const T_SERVICE: u32 = 13;
const fn cat(a: u32, b: u32) -> u32 {
    (a << 6) | b
}

struct SetDef {
    name: &'static str,
    flags: u32,
    key_type: u32,
    key_len: u32,
    data: Option<(u32, u32)>,
}

const SETS: [SetDef; 10] = [
    SetDef { name: "all-pools4", flags: SET_INTERVAL, key_type: T_IPV4, key_len: 4, data: None },
    SetDef { name: "masq-pools4", flags: SET_INTERVAL, key_type: T_IPV4, key_len: 4, data: None },
    SetDef { name: "all-pools6", flags: SET_INTERVAL, key_type: T_IPV6, key_len: 16, data: None },
    SetDef { name: "masq-pools6", flags: SET_INTERVAL, key_type: T_IPV6, key_len: 16, data: None },
    SetDef {
        name: "ports4",
        flags: SET_MAP,
        key_type: cat(T_PROTO, T_SERVICE),
        key_len: 8,
        data: Some((cat(T_IPV4, T_SERVICE), 8)),
    },
    SetDef {
        name: "hostports4",
        flags: SET_MAP,
        key_type: cat(cat(T_IPV4, T_PROTO), T_SERVICE),
        key_len: 12,
        data: Some((cat(T_IPV4, T_SERVICE), 8)),
    },
    SetDef {
        name: "ports6",
        flags: SET_MAP,
        key_type: cat(T_PROTO, T_SERVICE),
        key_len: 8,
        data: Some((cat(T_IPV6, T_SERVICE), 20)),
    },
    SetDef {
        name: "hostports6",
        flags: SET_MAP,
        key_type: cat(cat(T_IPV6, T_PROTO), T_SERVICE),
        key_len: 24,
        data: Some((cat(T_IPV6, T_SERVICE), 20)),
    },
    SetDef { name: "hairpin4", flags: 0, key_type: cat(T_IPV4, T_IPV4), key_len: 8, data: None },
    SetDef { name: "hairpin6", flags: 0, key_type: cat(T_IPV6, T_IPV6), key_len: 32, data: None },
];

/// One kernel element: the set it lives in, its key, data, flags and comment.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Raw {
    set: &'static str,
    key: Vec<u8>,
    data: Option<Vec<u8>>,
    flags: u32,
    owner: Option<String>,
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// A 32-bit register slot: the value, zero-padded to 4 bytes.
fn slot(v: &[u8]) -> [u8; 4] {
    let mut s = [0; 4];
    s[..v.len()].copy_from_slice(v);
    s
}

fn v4(ip: IpAddr) -> bool {
    ip.is_ipv4()
}

fn pool_set(set: PoolSet, v4: bool) -> &'static str {
    match (set, v4) {
        (PoolSet::All, true) => "all-pools4",
        (PoolSet::Masq, true) => "masq-pools4",
        (PoolSet::All, false) => "all-pools6",
        (PoolSet::Masq, false) => "masq-pools6",
    }
}

/// The kernel elements of `e`: a pool is its interval's start and (unless it reaches the
/// end of the address space) its end marker.
fn encode(e: &Element) -> Vec<Raw> {
    match e {
        Element::Pool { set, cidr } => {
            let name = pool_set(*set, cidr.is_ipv4());
            let start = Raw { set: name, key: ip_bytes(cidr.network()), data: None, flags: 0, owner: None };
            let end = match cidr {
                IpNetwork::V4(n) => {
                    u32::from(n.broadcast()).checked_add(1).map(|x| Ipv4Addr::from(x).octets().to_vec())
                }
                IpNetwork::V6(n) => {
                    let last = u128::from(n.network()) | (u128::MAX.checked_shr(n.prefix() as u32).unwrap_or(0));
                    last.checked_add(1).map(|x| Ipv6Addr::from(x).octets().to_vec())
                }
            };
            let mut out = vec![start];
            if let Some(key) = end {
                out.push(Raw { set: name, key, data: None, flags: ELEM_INTERVAL_END, owner: None });
            }
            out
        }
        Element::Port { map, owner } => {
            let is4 = v4(map.target.ip());
            let mut key = Vec::new();
            let set = match map.host_ip {
                Some(ip) => {
                    key.extend(ip_bytes(ip));
                    if is4 {
                        "hostports4"
                    } else {
                        "hostports6"
                    }
                }
                None if is4 => "ports4",
                None => "ports6",
            };
            key.extend(slot(&[map.proto.number()]));
            key.extend(slot(&map.host_port.to_be_bytes()));
            let mut data = ip_bytes(map.target.ip());
            data.extend(slot(&map.target.port().to_be_bytes()));
            vec![Raw { set, key, data: Some(data), flags: 0, owner: Some(owner.clone()) }]
        }
        Element::Hairpin { addr, owner } => {
            let mut key = ip_bytes(*addr);
            key.extend(ip_bytes(*addr));
            let set = if v4(*addr) { "hairpin4" } else { "hairpin6" };
            vec![Raw { set, key, data: None, flags: 0, owner: Some(owner.clone()) }]
        }
    }
}

fn ip_from(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

fn port_from(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

/// The owned element a raw map or hairpin element is (pools are rebuilt by [`pools`]).
fn decode_owned(r: &Raw) -> Option<Element> {
    let owner = r.owner.clone().unwrap_or_default();
    let (host_ip, rest) = match r.set {
        "ports4" | "ports6" => (None, &r.key[..]),
        "hostports4" => (ip_from(&r.key[..4]), &r.key[4..]),
        "hostports6" => (ip_from(&r.key[..16]), &r.key[16..]),
        "hairpin4" | "hairpin6" => {
            return Some(Element::Hairpin { addr: ip_from(&r.key[..r.key.len() / 2])?, owner });
        }
        _ => return None,
    };
    let proto = Proto::from_number(*rest.first()?)?;
    let host_port = port_from(rest.get(4..)?)?;
    let data = r.data.as_deref()?;
    let alen = if r.set.ends_with('4') { 4 } else { 16 };
    let target = SocketAddr::new(ip_from(data.get(..alen)?)?, port_from(data.get(alen..)?)?);
    Some(Element::Port { map: PortMap { proto, host_ip, host_port, target }, owner })
}

/// The pools of an interval set's elements.
fn pools(set: PoolSet, mut raws: Vec<Raw>) -> Vec<Element> {
    let num = |k: &[u8]| -> u128 { k.iter().fold(0u128, |acc, b| (acc << 8) | *b as u128) };
    raws.sort_by_key(|r| (num(&r.key), r.flags & ELEM_INTERVAL_END == 0));
    let mut out = Vec::new();
    for (i, r) in raws.iter().enumerate() {
        if r.flags & ELEM_INTERVAL_END != 0 {
            continue;
        }
        let bits = r.key.len() as u32 * 8;
        let start = num(&r.key);
        let size = match raws.get(i + 1) {
            Some(next) if next.flags & ELEM_INTERVAL_END != 0 => num(&next.key) - start,
            _ => (1u128 << (bits - 1)) * 2 - start,
        };
        let prefix = bits - size.trailing_zeros().min(bits);
        if let Some(ip) = ip_from(&r.key) {
            if let Ok(cidr) = IpNetwork::new(ip, prefix as u8) {
                out.push(Element::Pool { set, cidr });
            }
        }
    }
    out
}

/// nft's comment encoding in element userdata: type 0 (comment), length, NUL-terminated.
pub(crate) fn comment(owner: &str) -> Vec<u8> {
    let mut s: Vec<u8> = owner.bytes().take(250).collect();
    s.push(0);
    let mut v = vec![0u8, s.len() as u8];
    v.extend(s);
    v
}

pub(crate) fn parse_comment(udata: &[u8]) -> Option<String> {
    let mut b = udata;
    while b.len() >= 2 {
        let (ty, len) = (b[0], b[1] as usize);
        let v = b.get(2..2 + len)?;
        if ty == 0 {
            return Some(String::from_utf8_lossy(v.strip_suffix(&[0]).unwrap_or(v)).into_owned());
        }
        b = &b[2 + len..];
    }
    None
}

// Attribute numbers (linux/netfilter/nf_tables.h).
const LIST_ELEM: u16 = 1;
const DATA_VALUE: u16 = 1;
const SETELEM_TABLE: u16 = 1;
const SETELEM_SET: u16 = 2;
const SETELEM_ELEMENTS: u16 = 3;
const ELEM_KEY: u16 = 1;
const ELEM_DATA: u16 = 2;
const ELEM_FLAGS: u16 = 3;
const ELEM_USERDATA: u16 = 6;

/// What came back for a request: the errno per message (0: success), and the data
/// messages with their sequence numbers.
pub(crate) type Answers = (Vec<i32>, Vec<(u32, Vec<u8>)>);

/// The `inet calico` table of the netns this is first used in.
#[derive(Default)]
pub struct Nftables {
    sock: OnceCell<Socket>,
    seq: Cell<u32>,
}

/// The socket is closed by a helper ([`Socket::close_detached`]): releasing any netfilter
/// socket waits for the grace period of whatever a transaction removed before, this
/// process's or another's (the next ADD after a DEL would pay it).
impl Drop for Nftables {
    fn drop(&mut self) {
        if let Some(sock) = self.sock.take() {
            sock.close_detached();
        }
    }
}

impl Nftables {
    pub fn new() -> Nftables {
        Nftables::default()
    }

    /// The netlink round trips made so far (the log's cost line, the tests' budget).
    pub fn round_trips(&self) -> u64 {
        self.sock.get().map_or(0, |s| s.round_trips.get())
    }

    fn sock(&self) -> Result<&Socket> {
        if let Some(s) = self.sock.get() {
            return Ok(s);
        }
        let s = Socket::open().map_err(Error::Socket)?;
        Ok(self.sock.get_or_init(|| s))
    }

    pub(crate) fn buf(&self) -> Buf {
        let first = self.seq.get().wrapping_add(1);
        self.seq.set(first.wrapping_add(1 << 12));
        Buf::new(first)
    }

    /// Sends `buf` and collects one answer per message that expects one; the errnos by
    /// message (0 for success) and the data messages.
    pub(crate) fn exchange(&self, op: &'static str, buf: &Buf) -> Result<Answers> {
        let sock = self.sock()?;
        sock.reserve(buf.seqs.len());
        sock.send(buf).map_err(|source| Error::Kernel { op, source })?;
        let mut errnos: Vec<Option<i32>> = vec![None; buf.seqs.len()];
        let mut data = Vec::new();
        while errnos.iter().any(Option::is_none) {
            for reply in sock.recv().map_err(|source| Error::Kernel { op, source })? {
                let (seq, errno) = match reply {
                    Reply::Ack { seq, errno } => (seq, errno),
                    Reply::Data { seq, payload } => {
                        data.push((seq, payload));
                        (seq, 0)
                    }
                    Reply::Done { seq } => (seq, 0),
                };
                match buf.seqs.iter().position(|s| *s == seq) {
                    Some(i) => errnos[i] = Some(errnos[i].map_or(errno, |e| if e == 0 { errno } else { e })),
                    // The batch itself refused (e.g. EPERM): nothing else will come.
                    None if errno != 0 => return Err(Error::kernel(op, errno)),
                    None => {}
                }
            }
        }
        Ok((errnos.into_iter().map(|e| e.unwrap_or(0)).collect(), data))
    }

    /// Sends a batch; the first error aborts the whole transaction and is returned.
    pub(crate) fn batch(&self, op: &'static str, fill: impl FnOnce(&mut Buf)) -> Result<()> {
        let mut b = self.buf();
        b.msg(NFNL_MSG_BATCH_BEGIN, 0, 0, NFNL_SUBSYS_NFTABLES);
        b.end_msg();
        fill(&mut b);
        b.msg(NFNL_MSG_BATCH_END, 0, 0, NFNL_SUBSYS_NFTABLES);
        b.end_msg();
        let (errnos, _) = self.exchange(op, &b)?;
        match errnos.into_iter().find(|e| *e != 0) {
            Some(e) => Err(Error::kernel(op, e)),
            None => Ok(()),
        }
    }

    /// The kernel's copy of each of `raws` (`None`: absent, or no table).
    fn get(&self, raws: &[Raw]) -> Result<Vec<Option<Raw>>> {
        if raws.is_empty() {
            return Ok(Vec::new());
        }
        let mut b = self.buf();
        for r in raws {
            b.nft(NFT_MSG_GETSETELEM, 0, NFPROTO_INET);
            b.str(SETELEM_TABLE, TABLE);
            b.str(SETELEM_SET, r.set);
            b.nest(SETELEM_ELEMENTS);
            b.nest(LIST_ELEM);
            value(&mut b, ELEM_KEY, &r.key);
            if r.flags != 0 {
                b.be32(ELEM_FLAGS, r.flags);
            }
            b.end_nest();
            b.end_nest();
            b.end_msg();
        }
        let (errnos, data) = self.exchange("reading elements", &b)?;
        let mut out = Vec::with_capacity(raws.len());
        for (i, (r, errno)) in raws.iter().zip(errnos).enumerate() {
            match errno {
                0 => {
                    let seq = b.seqs[i];
                    let found = data
                        .iter()
                        .filter(|(s, _)| *s == seq)
                        .flat_map(|(_, p)| parse_elems(r.set, p))
                        .find(|k| k.key == r.key);
                    out.push(found);
                }
                libc::ENOENT => out.push(None),
                e => return Err(Error::kernel("reading elements", e)),
            }
        }
        Ok(out)
    }

    fn add_raw(&self, raws: &[Raw]) -> Result<()> {
        self.batch("adding elements", |b| {
            for r in raws {
                // Owned elements must not silently replace another owner's.
                let excl = if r.owner.is_some() { NLM_F_EXCL } else { 0 };
                elem_msg(b, NFT_MSG_NEWSETELEM, NLM_F_CREATE | excl | NLM_F_ACK, r);
            }
        })
    }

    fn del_raw(&self, raws: &[Raw]) -> Result<()> {
        if raws.is_empty() {
            return Ok(());
        }
        self.batch("removing elements", |b| {
            for r in raws {
                elem_msg(b, NFT_MSG_DELSETELEM, NLM_F_ACK, r);
            }
        })
    }

    /// One dump of a set's elements.
    fn dump(&self, set: &'static str) -> Result<Vec<Raw>> {
        let mut b = self.buf();
        b.nft(NFT_MSG_GETSETELEM, NLM_F_DUMP, NFPROTO_INET);
        b.str(SETELEM_TABLE, TABLE);
        b.str(SETELEM_SET, set);
        b.end_msg();
        let (errnos, data) = self.exchange("listing elements", &b)?;
        match errnos[0] {
            0 => Ok(data.iter().flat_map(|(_, p)| parse_elems(set, p)).collect()),
            libc::ENOENT => Ok(Vec::new()),
            e => Err(Error::kernel("listing elements", e)),
        }
    }
}

pub(crate) fn value(b: &mut Buf, ty: u16, v: &[u8]) {
    b.nest(ty);
    b.attr(DATA_VALUE, v);
    b.end_nest();
}

fn elem_msg(b: &mut Buf, ty: u16, flags: u16, r: &Raw) {
    b.nft(ty, flags, NFPROTO_INET);
    b.str(SETELEM_TABLE, TABLE);
    b.str(SETELEM_SET, r.set);
    b.nest(SETELEM_ELEMENTS);
    b.nest(LIST_ELEM);
    value(b, ELEM_KEY, &r.key);
    if let Some(d) = &r.data {
        if ty == NFT_MSG_NEWSETELEM {
            value(b, ELEM_DATA, d);
        }
    }
    if r.flags != 0 {
        b.be32(ELEM_FLAGS, r.flags);
    }
    if let (Some(o), true) = (&r.owner, ty == NFT_MSG_NEWSETELEM) {
        b.attr(ELEM_USERDATA, &comment(o));
    }
    b.end_nest();
    b.end_nest();
    b.end_msg();
}

fn parse_elems(set: &'static str, payload: &[u8]) -> Vec<Raw> {
    let Some(list) = attr(payload, SETELEM_ELEMENTS) else { return Vec::new() };
    attrs(list)
        .into_iter()
        .filter(|(t, _)| *t == LIST_ELEM)
        .filter_map(|(_, e)| {
            let key = attr(attr(e, ELEM_KEY)?, DATA_VALUE)?.to_vec();
            let data = attr(e, ELEM_DATA).and_then(|d| attr(d, DATA_VALUE)).map(<[u8]>::to_vec);
            let flags = attr(e, ELEM_FLAGS).map_or(0, |f| u32::from_be_bytes(f.try_into().unwrap_or([0; 4])));
            let owner = attr(e, ELEM_USERDATA).and_then(parse_comment);
            Some(Raw { set, key, data, flags, owner })
        })
        .collect()
}

/// Whether the kernel's copy is the element as wanted (pools: present at all).
fn same(want: &Raw, have: &Raw) -> bool {
    want.owner.is_none() || (want.owner == have.owner && want.data == have.data)
}

impl Firewall for Nftables {
    fn ensure_table(&self) -> Result<bool> {
        // A GET first (no transaction): the usual answer is "there, and ours".
        let mut b = self.buf();
        b.nft(NFT_MSG_GETTABLE, 0, NFPROTO_INET);
        b.str(1, TABLE);
        b.end_msg();
        let (errnos, data) = self.exchange("reading table inet calico", &b)?;
        match errnos.first().copied().unwrap_or(0) {
            0 => {
                let userdata = data.iter().find_map(|(_, p)| attr(p, 6));
                if userdata == Some(&table_userdata()[..]) {
                    return Ok(false);
                }
                // Another build's layout: this one's in its place, in one transaction (the
                // agent then puts back the pools and the port mappings).
                tracing::info!("replacing table inet calico of another version");
                self.batch("replacing table inet calico", |b| {
                    b.nft(NFT_MSG_DELTABLE, NLM_F_ACK, NFPROTO_INET);
                    b.str(1, TABLE);
                    b.end_msg();
                    table_batch(b);
                })?;
                Ok(true)
            }
            libc::ENOENT => match self.batch("creating table inet calico", table_batch) {
                Ok(()) => Ok(true),
                // Another process created it first, in one transaction: complete.
                Err(e) if e.errno() == Some(libc::EEXIST) => Ok(false),
                Err(e) => Err(e),
            },
            e => Err(Error::kernel("reading table inet calico", e)),
        }
    }

    fn missing(&self, elements: &[Element]) -> Result<Vec<Element>> {
        // A pool is checked by its interval's start.
        let firsts: Vec<Raw> = elements.iter().map(|e| encode(e).remove(0)).collect();
        let have = self.get(&firsts)?;
        Ok(elements
            .iter()
            .zip(firsts.iter().zip(have))
            .filter(|(_, (want, have))| !have.as_ref().is_some_and(|h| same(want, h)))
            .map(|(e, _)| e.clone())
            .collect())
    }

    fn add(&self, elements: &[Element]) -> Result<()> {
        let raws: Vec<Raw> = elements.iter().flat_map(encode).collect();
        if raws.is_empty() {
            return Ok(());
        }
        let mut created = false;
        let mut replaced = false;
        loop {
            match self.add_raw(&raws) {
                Ok(()) => return Ok(()),
                Err(e) if e.errno() == Some(libc::ENOENT) && !created => {
                    let _ = self.ensure_table()?;
                    created = true;
                }
                Err(e) if e.errno() == Some(libc::EEXIST) && !replaced => {
                    let owned: Vec<Raw> = raws.iter().filter(|r| r.owner.is_some()).cloned().collect();
                    let have = self.get(&owned)?;
                    let mut ours = Vec::new();
                    for (want, have) in owned.iter().zip(have) {
                        let Some(have) = have else { continue };
                        if have.owner != want.owner {
                            let mapping = decode_owned(want).map_or_else(
                                || format!("{want:?}"),
                                |e| match e {
                                    Element::Port { map, .. } => map.to_string(),
                                    other => other.to_string(),
                                },
                            );
                            let holder = have.owner.unwrap_or_else(|| "another owner".into());
                            return Err(Error::PortTaken { mapping, holder });
                        }
                        ours.push(have);
                    }
                    // Our own, from an ADD that did not finish: replace them.
                    self.del_raw(&ours)?;
                    replaced = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn remove(&self, elements: &[Element]) -> Result<()> {
        let raws: Vec<Raw> = elements.iter().flat_map(encode).collect();
        let have = self.get(&raws)?;
        let present: Vec<Raw> = raws
            .into_iter()
            .zip(have)
            .filter(|(want, have)| have.as_ref().is_some_and(|h| want.owner.is_none() || want.owner == h.owner))
            .map(|(want, _)| want)
            .collect();
        self.del_raw(&present)
    }

    fn list(&self) -> Result<Vec<Element>> {
        let mut out = Vec::new();
        for (set, name4, name6) in
            [(PoolSet::All, "all-pools4", "all-pools6"), (PoolSet::Masq, "masq-pools4", "masq-pools6")]
        {
            out.extend(pools(set, self.dump(name4)?));
            out.extend(pools(set, self.dump(name6)?));
        }
        for set in ["ports4", "hostports4", "ports6", "hostports6", "hairpin4", "hairpin6"] {
            out.extend(self.dump(set)?.iter().filter_map(decode_owned));
        }
        Ok(out)
    }

    // --- Security profiles: see crate::policy (table inet calico-policy). ---
    fn attach_policy(&self, ep: &crate::policy::Endpoint, profiles: &[model::profile::Profile]) -> Result<()> {
        self.policy_attach(ep, profiles)
    }

    fn detach_policy(&self, veth: &str, addrs: &[IpAddr]) -> Result<()> {
        self.policy_detach(veth, addrs)
    }

    fn forget_addresses(&self, addrs: &[IpAddr]) -> Result<()> {
        self.policy_forget(addrs)
    }

    fn check_policy(&self, veth: &str) -> Result<Option<String>> {
        self.policy_check(veth)
    }

    fn update_policy(&self, old: &crate::policy::State, new: &crate::policy::State) -> Result<bool> {
        self.policy_update(old, new)
    }

    fn replace_policy(&self, state: &crate::policy::State) -> Result<()> {
        self.policy_replace(state)
    }
    // --- end of security profiles ---
}

// --- The table, created in one transaction. ---

const NFT_MSG_NEWTABLE_FLAGS: u16 = NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK;

/// What this build's table says of itself: its comment, in nft's userdata form
/// (NFTNL_UDATA_TABLE_COMMENT). Change it whenever the table's chains, rules or sets change:
/// calico-node replaces a table whose comment differs (one built by another version).
const TABLE_COMMENT: &str = "calico: pool sets and port maps, layout 2";

fn table_userdata() -> Vec<u8> {
    let mut u = vec![0u8, TABLE_COMMENT.len() as u8 + 1];
    u.extend_from_slice(TABLE_COMMENT.as_bytes());
    u.push(0);
    u
}

fn table_batch(b: &mut Buf) {
    b.nft(NFT_MSG_NEWTABLE, NFT_MSG_NEWTABLE_FLAGS, NFPROTO_INET);
    b.str(1, TABLE); // NFTA_TABLE_NAME
    b.be32(2, 0); // NFTA_TABLE_FLAGS
    b.attr(6, &table_userdata()); // NFTA_TABLE_USERDATA
    b.end_msg();
    for (name, hook, prio) in [("prerouting", 0u32, -100i32), ("output", 3, -100), ("postrouting", 4, 100)] {
        b.nft(NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_ACK, NFPROTO_INET);
        b.str(1, TABLE); // NFTA_CHAIN_TABLE
        b.str(3, name); // NFTA_CHAIN_NAME
        b.nest(4); // NFTA_CHAIN_HOOK
        b.be32(1, hook);
        b.be32(2, prio as u32);
        b.end_nest();
        b.be32(5, 1); // NFTA_CHAIN_POLICY: accept
        b.str(7, "nat"); // NFTA_CHAIN_TYPE
        b.end_msg();
    }
    for (id, s) in SETS.iter().enumerate() {
        b.nft(NFT_MSG_NEWSET, NLM_F_CREATE | NLM_F_ACK, NFPROTO_INET);
        b.str(1, TABLE); // NFTA_SET_TABLE
        b.str(2, s.name); // NFTA_SET_NAME
        b.be32(3, s.flags); // NFTA_SET_FLAGS
        b.be32(4, s.key_type);
        b.be32(5, s.key_len);
        if let Some((ty, len)) = s.data {
            b.be32(6, ty);
            b.be32(7, len);
        }
        b.be32(10, id as u32 + 1); // NFTA_SET_ID
        b.end_msg();
    }
    for chain in ["prerouting", "output"] {
        for is4 in [true, false] {
            let (fam, alen, daddr) = if is4 { (NFPROTO_IPV4, 4, 16) } else { (NFPROTO_IPV6, 16, 24) };
            let suffix = if is4 { "4" } else { "6" };
            for host in [true, false] {
                rule(b, chain, |b| {
                    nfproto(b, fam);
                    fib_local(b);
                    // The host's own connections to 127.0.0.0/8 are mapped too (calico-cni
                    // sets route_localnet on the mapped container's veth, postrouting
                    // masquerades them); ::1 cannot leave the host, nor can anything
                    // arriving for 127/8 from outside.
                    if !(is4 && chain == "output") {
                        not_loopback(b, is4);
                    }
                    let mut reg = R;
                    if host {
                        payload(b, 1, daddr, alen, reg);
                        reg += alen / 4;
                    }
                    meta(b, 16, reg); // NFT_META_L4PROTO
                    payload(b, 2, 2, 2, reg + 1); // th dport
                    let set = if host { format!("hostports{suffix}") } else { format!("ports{suffix}") };
                    lookup(b, &set, R, Some(R), false);
                    dnat(b, fam, R, R + alen / 4);
                });
            }
        }
    }
    for is4 in [true, false] {
        let (fam, alen, saddr, daddr) = if is4 { (NFPROTO_IPV4, 4, 12, 16) } else { (NFPROTO_IPV6, 16, 8, 24) };
        let suffix = if is4 { "4" } else { "6" };
        rule(b, "postrouting", |b| {
            nfproto(b, fam);
            payload(b, 1, saddr, alen, R);
            payload(b, 1, daddr, alen, R + alen / 4);
            lookup(b, &format!("hairpin{suffix}"), R, None, false);
            masq(b, 0);
        });
        rule(b, "postrouting", |b| {
            nfproto(b, fam);
            payload(b, 1, saddr, alen, R);
            lookup(b, &format!("masq-pools{suffix}"), R, None, false);
            payload(b, 1, daddr, alen, R);
            lookup(b, &format!("all-pools{suffix}"), R, None, true);
            masq(b, 0x10); // NF_NAT_RANGE_PROTO_RANDOM_FULLY
        });
    }
    // Mapped connections from the host's 127.0.0.0/8: from the host's address instead, so
    // the container can answer.
    rule(b, "postrouting", |b| {
        nfproto(b, NFPROTO_IPV4);
        payload(b, 1, 12, 1, R); // the first byte of ip saddr
        cmp(b, R, 0, &[127]);
        expr(b, "ct", |b| {
            b.be32(2, 2); // NFTA_CT_KEY: NFT_CT_STATUS
            b.be32(1, R); // NFTA_CT_DREG
        });
        expr(b, "bitwise", |b| {
            b.be32(1, R);
            b.be32(2, R);
            b.be32(3, 4);
            value(b, 4, &0x20u32.to_ne_bytes()); // IPS_DST_NAT
            value(b, 5, &[0, 0, 0, 0]);
        });
        cmp(b, R, 1, &[0, 0, 0, 0]);
        masq(b, 0);
    });
    // The host's own traffic into a tunnel with a source that is not the tunnel's (e.g.
    // the uplink's address): masqueraded to the tunnel address, so the far end answers
    // into the tunnel (Felix's `-o tunl0 -m addrtype ! --src-type LOCAL --limit-iface-out
    // -m addrtype --src-type LOCAL -j MASQUERADE`).
    for dev in TUNNELS {
        rule(b, "postrouting", |b| {
            nfproto(b, NFPROTO_IPV4);
            meta(b, 7, R); // NFT_META_OIFNAME
            let mut name = [0u8; 16];
            name[..dev.len()].copy_from_slice(dev.as_bytes());
            cmp(b, R, 0, &name);
            fib_saddr(b, 1 | 16, 1); // saddr . oif: not local on the tunnel
            fib_saddr(b, 1, 0); // saddr: local to the host
            masq(b, 0);
        });
    }
}

/// The tunnel devices of calico-node whose host-originated traffic is masqueraded.
pub const TUNNELS: [&str; 2] = ["tunl0", "vxlan.calico"];

/// `fib saddr [. oif] type [!=] local` (`flags`: NFTA_FIB_F_SADDR, | NFTA_FIB_F_OIF).
fn fib_saddr(b: &mut Buf, flags: u32, op: u32) {
    expr(b, "fib", |b| {
        b.be32(1, R); // NFTA_FIB_DREG
        b.be32(2, 3); // NFTA_FIB_RESULT: NFT_FIB_RESULT_ADDRTYPE
        b.be32(3, flags);
    });
    cmp(b, R, op, &2u32.to_ne_bytes()); // RTN_LOCAL
}

fn rule(b: &mut Buf, chain: &str, exprs: impl FnOnce(&mut Buf)) {
    b.nft(NFT_MSG_NEWRULE, NLM_F_CREATE | 0x800 | NLM_F_ACK, NFPROTO_INET); // NLM_F_APPEND
    b.str(1, TABLE); // NFTA_RULE_TABLE
    b.str(2, chain); // NFTA_RULE_CHAIN
    b.nest(4); // NFTA_RULE_EXPRESSIONS
    exprs(b);
    b.end_nest();
    b.end_msg();
}

pub(crate) fn expr(b: &mut Buf, name: &str, body: impl FnOnce(&mut Buf)) {
    b.nest(LIST_ELEM);
    b.str(1, name); // NFTA_EXPR_NAME
    b.nest(2); // NFTA_EXPR_DATA
    body(b);
    b.end_nest();
    b.end_nest();
}

pub(crate) fn meta(b: &mut Buf, key: u32, dreg: u32) {
    expr(b, "meta", |b| {
        b.be32(2, key); // NFTA_META_KEY
        b.be32(1, dreg); // NFTA_META_DREG
    });
}

pub(crate) fn cmp(b: &mut Buf, sreg: u32, op: u32, data: &[u8]) {
    expr(b, "cmp", |b| {
        b.be32(1, sreg);
        b.be32(2, op); // NFT_CMP_EQ 0, NEQ 1
        value(b, 3, data);
    });
}

fn nfproto(b: &mut Buf, fam: u8) {
    meta(b, 15, R); // NFT_META_NFPROTO
    cmp(b, R, 0, &[fam]);
}

/// `fib daddr type local`.
fn fib_local(b: &mut Buf) {
    expr(b, "fib", |b| {
        b.be32(1, R); // NFTA_FIB_DREG
        b.be32(2, 3); // NFTA_FIB_RESULT: NFT_FIB_RESULT_ADDRTYPE
        b.be32(3, 2); // NFTA_FIB_FLAGS: NFTA_FIB_F_DADDR
    });
    cmp(b, R, 0, &2u32.to_ne_bytes()); // RTN_LOCAL
}

/// Loopback destinations are left alone: a container cannot answer 127.0.0.1 or ::1.
fn not_loopback(b: &mut Buf, is4: bool) {
    if is4 {
        payload(b, 1, 16, 4, R);
        expr(b, "bitwise", |b| {
            b.be32(1, R);
            b.be32(2, R);
            b.be32(3, 4);
            value(b, 4, &[255, 0, 0, 0]);
            value(b, 5, &[0, 0, 0, 0]);
        });
        cmp(b, R, 1, &[127, 0, 0, 0]);
    } else {
        payload(b, 1, 24, 16, R);
        cmp(b, R, 1, &Ipv6Addr::LOCALHOST.octets());
    }
}

pub(crate) fn payload(b: &mut Buf, base: u32, offset: u32, len: u32, dreg: u32) {
    expr(b, "payload", |b| {
        b.be32(1, dreg);
        b.be32(2, base); // 1 network header, 2 transport header
        b.be32(3, offset);
        b.be32(4, len);
    });
}

fn lookup(b: &mut Buf, set: &str, sreg: u32, dreg: Option<u32>, invert: bool) {
    let id = SETS.iter().position(|s| s.name == set).map_or(0, |i| i as u32 + 1);
    expr(b, "lookup", |b| {
        b.str(1, set); // NFTA_LOOKUP_SET
        b.be32(2, sreg);
        if let Some(d) = dreg {
            b.be32(3, d);
        }
        b.be32(4, id); // NFTA_LOOKUP_SET_ID
        if invert {
            b.be32(5, 1); // NFT_LOOKUP_F_INV
        }
    });
}

fn dnat(b: &mut Buf, fam: u8, addr: u32, port: u32) {
    expr(b, "nat", |b| {
        b.be32(1, 1); // NFT_NAT_DNAT
        b.be32(2, fam as u32);
        b.be32(3, addr); // NFTA_NAT_REG_ADDR_MIN
        b.be32(5, port); // NFTA_NAT_REG_PROTO_MIN
    });
}

fn masq(b: &mut Buf, flags: u32) {
    expr(b, "masq", |b| {
        if flags != 0 {
            b.be32(1, flags);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_round_trip_through_intervals() {
        for cidr in ["10.0.0.0/24", "10.1.0.0/16", "0.0.0.0/0", "fd00::/64", "255.255.255.0/24"] {
            let e = Element::Pool { set: PoolSet::Masq, cidr: cidr.parse().unwrap() };
            assert_eq!(pools(PoolSet::Masq, encode(&e)), vec![e], "{cidr}");
        }
    }

    #[test]
    fn port_maps_round_trip() {
        for (host_ip, target) in
            [(None, "10.0.0.5:80"), (Some("192.168.1.1"), "10.0.0.5:80"), (Some("fd00::1"), "[fd00::5]:8080")]
        {
            let map = PortMap {
                proto: Proto::Sctp,
                host_ip: host_ip.map(|h| h.parse().unwrap()),
                host_port: 8080,
                target: target.parse().unwrap(),
            };
            let e = Element::Port { map, owner: "c1/eth0".into() };
            let raw = encode(&e).remove(0);
            assert_eq!(raw.key.len() as u32, SETS.iter().find(|s| s.name == raw.set).unwrap().key_len);
            assert_eq!(decode_owned(&raw), Some(e));
        }
        assert_eq!(parse_comment(&comment("abc")), Some("abc".into()));
    }
}
