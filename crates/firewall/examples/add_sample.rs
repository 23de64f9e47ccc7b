//! Adds a sample pool and port mapping to `inet calico` in the current netns, for a look with
//! `nft list table inet calico` (run it under `ip netns exec`; `remove` takes them out).

use firewall::nft::Nftables;
use firewall::{Element, Firewall, PoolSet, PortMap, Proto};

fn main() {
    let fw = Nftables::new();
    let elements = [
        Element::Pool { set: PoolSet::All, cidr: "10.65.0.0/16".parse().unwrap() },
        Element::Pool { set: PoolSet::Masq, cidr: "10.65.0.0/16".parse().unwrap() },
        Element::Port {
            map: PortMap { proto: Proto::Tcp, host_ip: None, host_port: 8080, target: "10.65.0.5:80".parse().unwrap() },
            owner: "example/eth0".into(),
        },
        Element::Hairpin { addr: "10.65.0.5".parse().unwrap(), owner: "example/eth0".into() },
    ];
    let result =
        if std::env::args().nth(1).as_deref() == Some("remove") { fw.remove(&elements) } else { fw.add(&elements) };
    if let Err(e) = result {
        eprintln!("add_sample: {e}");
        std::process::exit(1);
    }
}
