//! Writing this node's record, after checking that no other node claims its addresses.

use datastore::{Compare, Datastore, KeyValue, Op, Read, TxnOutcome};
use model::keys;
use model::node::{self, Node, BGP_HOST_PREFIX};

use crate::{Error, Result};

/// How many times registration starts over when another writer changed what it read.
const ATTEMPTS: u32 = 8;

/// Write `me` (every key of its record; the fields it no longer has are deleted), refusing
/// an address another node's record holds.
///
/// Each address also has a claim key ([`keys::node_address_claim`]) naming its node, written
/// in the same transaction with compare-and-swap: two nodes starting at the same instant with
/// one address cannot both pass, since only one transaction can create (or take over) the
/// claim. A claim whose node no longer has the address (it moved, or was removed) is taken
/// over; the claims of addresses this node gave up are released.
pub fn register(store: &dyn Datastore, me: &Node) -> Result<()> {
    node::validate_name(&me.name)?;
    for _ in 0..ATTEMPTS {
        if try_register(store, me)? {
            return Ok(());
        }
    }
    Err(Error::Store(datastore::Error::Conflict { key: keys::node_bgp_key(&me.name, "ip_addr_v4") }))
}

/// One attempt: false when a compare failed (someone wrote meanwhile).
fn try_register(store: &dyn Datastore, me: &Node) -> Result<bool> {
    let found = store.read_many(&[Read::Prefix(BGP_HOST_PREFIX.to_owned())])?;
    let listing = found.into_iter().next().unwrap_or_default();
    let (nodes, _unreadable) = node::decode_all(listing.iter().map(|kv| (kv.key.as_str(), kv.value.as_slice())));
    let holder = |ip: &std::net::IpAddr| nodes.values().find(|n| n.name != me.name && n.addrs().contains(ip));
    for ip in me.addrs() {
        if let Some(other) = holder(&ip) {
            let field = if ip.is_ipv4() { node::Field::Ipv4Addr } else { node::Field::Ipv6Addr };
            return Err(Error::DuplicateAddress { other: other.name.clone(), ip, key: field.key(&other.name) });
        }
    }

    // The claims of the addresses this node has now, and of those its stored record had.
    let previous = nodes.get(&me.name).map(Node::addrs).unwrap_or_default();
    let mut claimed: Vec<std::net::IpAddr> = me.addrs();
    claimed.extend(previous.iter().filter(|ip| !me.addrs().contains(ip)));
    let reads: Vec<Read> = claimed.iter().map(|ip| Read::Key(keys::node_address_claim(ip))).collect();
    let claims: Vec<Option<KeyValue>> = store.read_many(&reads)?.into_iter().map(|mut kvs| kvs.pop()).collect();

    let mut compares = Vec::new();
    let mut ops: Vec<Op> = Vec::new();
    for (ip, claim) in claimed.iter().zip(&claims) {
        let key = keys::node_address_claim(ip);
        let keep = me.addrs().contains(ip);
        match claim {
            None if keep => {
                compares.push(Compare::Absent(key.clone()));
                ops.push(Op::Put { key, value: me.name.as_bytes().to_vec() });
            }
            None => {}
            Some(kv) => {
                let owner = String::from_utf8_lossy(&kv.value);
                if keep && owner != me.name {
                    // Its node's record no longer held the address when we listed the nodes
                    // (checked above): take it over, provided that node's address key is still
                    // as listed (the listing and this claim were read at different moments).
                    let field = if ip.is_ipv4() { node::Field::Ipv4Addr } else { node::Field::Ipv6Addr };
                    let owner_key = field.key(&owner);
                    compares.push(match listing.iter().find(|kv| kv.key == owner_key) {
                        Some(listed) => Compare::Revision(owner_key, listed.mod_revision),
                        None => Compare::Absent(owner_key),
                    });
                    compares.push(Compare::Revision(key.clone(), kv.mod_revision));
                    ops.push(Op::Put { key, value: me.name.as_bytes().to_vec() });
                } else if keep {
                    // Ours already; the compare makes a concurrent takeover fail one of us.
                    compares.push(Compare::Revision(key, kv.mod_revision));
                } else if owner == me.name {
                    compares.push(Compare::Revision(key.clone(), kv.mod_revision));
                    ops.push(Op::Delete { key });
                }
            }
        }
    }

    let entries = me.entries();
    ops.extend(entries.iter().map(|(key, value)| Op::Put { key: key.clone(), value: value.clone() }));
    for key in node::keys_of(&me.name) {
        if !entries.iter().any(|(k, _)| *k == key) {
            ops.push(Op::Delete { key });
        }
    }
    Ok(matches!(store.txn(&compares, &ops)?, TxnOutcome::Committed { .. }))
}

/// The record of node `name` as stored, if it has any key.
pub fn read(store: &dyn Datastore, name: &str) -> Result<Option<Node>> {
    let reads: Vec<Read> = node::keys_of(name).into_iter().map(Read::Key).collect();
    let found = store.read_many(&reads)?;
    let (mut nodes, _unreadable) =
        node::decode_all(found.iter().flatten().map(|kv| (kv.key.as_str(), kv.value.as_slice())));
    Ok(nodes.remove(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datastore::memory::MemoryStore;

    fn node(name: &str, ip: &str) -> Node {
        Node { ipv4: Some(ip.parse().unwrap()), ..Node::new(name) }
    }

    #[test]
    fn a_second_node_with_the_same_address_is_refused() {
        let store = MemoryStore::new();
        register(&store, &node("a", "10.0.0.1/24")).unwrap();
        register(&store, &node("a", "10.0.0.1/24")).expect("the same node again");
        let err = register(&store, &node("b", "10.0.0.1/24")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("node \"a\" already claims 10.0.0.1"), "{text}");
        assert!(text.contains("/calico/bgp/v1/host/a/ip_addr_v4"), "{text}");
        register(&store, &node("b", "10.0.0.2/24")).unwrap();
    }

    #[test]
    fn two_nodes_registering_one_address_at_once_never_both_pass() {
        for round in 0..50 {
            let store = std::sync::Arc::new(MemoryStore::new());
            let ip = format!("10.0.{round}.1/24");
            let results: Vec<bool> = ["a", "b"]
                .map(|name| {
                    let (store, ip) = (store.clone(), ip.clone());
                    std::thread::spawn(move || register(&*store, &node(name, &ip)).is_ok())
                })
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect();
            assert_eq!(results.iter().filter(|ok| **ok).count(), 1, "round {round}: {results:?}");
        }
    }

    #[test]
    fn a_claim_follows_its_node_and_is_taken_over_when_stale() {
        let store = MemoryStore::new();
        let claim = |ip: &str| store.get(&keys::node_address_claim(&ip.parse().unwrap())).unwrap().map(|kv| kv.value);
        register(&store, &node("a", "10.0.0.1/24")).unwrap();
        assert_eq!(claim("10.0.0.1").as_deref(), Some(&b"a"[..]));
        // a moves: its old claim is released, the new one made.
        register(&store, &node("a", "10.0.0.9/24")).unwrap();
        assert_eq!(claim("10.0.0.1"), None);
        assert_eq!(claim("10.0.0.9").as_deref(), Some(&b"a"[..]));
        // A claim left by a node whose record no longer has the address is taken over.
        store
            .txn(
                &[],
                &[Op::Put { key: keys::node_address_claim(&"10.0.0.7".parse().unwrap()), value: b"gone".to_vec() }],
            )
            .unwrap();
        register(&store, &node("b", "10.0.0.7/24")).unwrap();
        assert_eq!(claim("10.0.0.7").as_deref(), Some(&b"b"[..]));
    }

    #[test]
    fn fields_the_node_lost_are_deleted() {
        let store = MemoryStore::new();
        let mut me = node("a", "10.0.0.1/24");
        me.as_number = Some(64512);
        me.ipv6 = Some("fd00::1/64".parse().unwrap());
        register(&store, &me).unwrap();
        assert!(store.get("/calico/bgp/v1/host/a/as_num").unwrap().is_some());
        me.as_number = None;
        me.ipv6 = None;
        register(&store, &me).unwrap();
        assert!(store.get("/calico/bgp/v1/host/a/as_num").unwrap().is_none());
        assert!(store.get("/calico/bgp/v1/host/a/ip_addr_v6").unwrap().is_none());
        let value = store.get("/calico/bgp/v1/host/a/network_v4").unwrap().unwrap().value;
        assert_eq!(value, b"10.0.0.0/24");
    }
}
