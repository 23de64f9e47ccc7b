//! Writing this node's record, after checking that no other node claims its addresses.

use datastore::{Datastore, Op, Read};
use model::node::{self, Node, BGP_HOST_PREFIX};

use crate::{Error, Result};

/// Write `me` (every key of its record; the fields it no longer has are deleted), refusing
/// an address another node's record holds. The check and the write are two steps, so two
/// nodes started at the same instant with one address can both pass; every later start of
/// either is refused.
pub fn register(store: &dyn Datastore, me: &Node) -> Result<()> {
    node::validate_name(&me.name)?;
    let found = store.read_many(&[Read::Prefix(BGP_HOST_PREFIX.to_owned())])?;
    let listing = found.into_iter().next().unwrap_or_default();
    let (nodes, _unreadable) = node::decode_all(listing.iter().map(|kv| (kv.key.as_str(), kv.value.as_slice())));
    for other in nodes.values().filter(|n| n.name != me.name) {
        for ip in me.addrs() {
            if other.addrs().contains(&ip) {
                let field = if ip.is_ipv4() { node::Field::Ipv4Addr } else { node::Field::Ipv6Addr };
                return Err(Error::DuplicateAddress { other: other.name.clone(), ip, key: field.key(&other.name) });
            }
        }
    }
    let entries = me.entries();
    let mut ops: Vec<Op> =
        entries.iter().map(|(key, value)| Op::Put { key: key.clone(), value: value.clone() }).collect();
    for key in node::keys_of(&me.name) {
        if !entries.iter().any(|(k, _)| *k == key) {
            ops.push(Op::Delete { key });
        }
    }
    store.txn(&[], &ops)?;
    Ok(())
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
