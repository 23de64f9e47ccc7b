//! A host with no default route (only loopback addresses): the kernel's proxy ARP answers
//! for 169.254.1.1 only when the host has a route to it, so containers there reached
//! nothing. They resolve the gateway through a permanent neighbour entry now; CHECK verifies
//! it. Every spec version, IPv4, and dual-stack once.

use calico_tests::cni_host::CniHost;
use calico_tests::netns::{bare_host, BARE_HOST_V4, BARE_HOST_V6};
use serde_json::json;

/// A bare host with the pools 10.124.0.0/16 and fd00:124::/112.
fn env() -> CniHost {
    let host = bare_host();
    let routes = host.routes();
    assert!(!routes.contains("default"), "the bare host has a default route:\n{routes}");
    CniHost::new(host, &["10.124.0.0/16", "fd00:124::/112"], json!({"name": "barenet"}))
}

/// Two containers: the gateway's permanent neighbour entry, pings to the host's address and
/// between them, CHECK (0.4.0 on) before and after the entry is deleted, DEL, DEL again.
fn reaches_host_and_neighbour(v: &str) {
    let env = env();
    let pair = env.add_pair("cn", v, json!({}));
    let [c1, c2] = &pair.netns;
    assert_eq!(pair.results[0]["cniVersion"], v, "{}", pair.results[0]);
    let (ip1, ip2) = (pair.ips(0)[0].clone(), pair.ips(1)[0].clone());
    let neigh = c1.ip(&["-4", "neigh", "show", "dev", "eth0"]);
    assert!(neigh.contains("169.254.1.1 lladdr ee:ee:ee:ee:ee:ee PERMANENT"), "{v}: {neigh}");
    assert!(c1.ping(BARE_HOST_V4), "{v}: container cannot reach the host's address");
    assert!(c1.ping(&ip2) && c2.ping(&ip1), "{v}: containers cannot reach each other");
    if v >= "0.4.0" {
        env.check(&pair, 0).expect_ok();
        c1.ip(&["neigh", "del", "169.254.1.1", "dev", "eth0"]);
        let err = env.check(&pair, 0).expect_err(122);
        let msg = err["msg"].as_str().unwrap_or_default().to_owned() + err["details"].as_str().unwrap_or_default();
        assert!(msg.contains("neighbour") && msg.contains("169.254.1.1"), "{v}: {err}");
    }
    env.del_pair_twice(&pair, v);
}

calico_tests::spec_version_tests!(reaches_host_and_neighbour);

#[test]
fn dual_stack_reaches_host_and_neighbour_without_a_default_route() {
    let env = env();
    let pair = env.add_pair("cn", "1.0.0", json!({"assign_ipv4": "true", "assign_ipv6": "true"}));
    let ([c1, c2], ips1, ips2) = (&pair.netns, pair.ips(0), pair.ips(1));
    let neigh = c1.ip(&["-6", "neigh", "show", "dev", "eth0"]);
    assert!(neigh.contains("fe80::ecee:eeff:feee:eeee lladdr ee:ee:ee:ee:ee:ee PERMANENT"), "{neigh}");
    assert!(c1.ping(BARE_HOST_V4) && c1.ping(BARE_HOST_V6), "container cannot reach the host");
    assert!(c1.ping(&ips2[0]) && c2.ping(&ips1[0]), "IPv4 between containers");
    assert!(c1.ping(&ips2[1]) && c2.ping(&ips1[1]), "IPv6 between containers");
    env.check(&pair, 0).expect_ok();
    c1.ip(&["-6", "neigh", "del", "fe80::ecee:eeff:feee:eeee", "dev", "eth0"]);
    let err = env.check(&pair, 0).expect_err(122);
    assert!(err.to_string().contains("fe80::ecee:eeff:feee:eeee"), "{err}");
    env.del_pair_twice(&pair, "dual-stack");
}
