//! ADD: IPAM, then the veth pair, the container side, the host side, the firewall (pool
//! sets, port mappings) and the endpoint record, each undone by the rollback guard if a
//! later step fails.

use std::net::IpAddr;
use std::path::Path;

use cni::skel::Request;
use cni::{CniResult, Interface};
use dataplane::{ContainerConfig, Rollback, VethEnd};
use datastore::Read;
use model::endpoint::Endpoint;
use model::profile::Profile;

use crate::context::Context;
use crate::deps::{Dataplane, Deps};
use crate::Error;
use crate::{edge, endpoint, profile};

pub fn add<D: Dataplane>(req: &Request, ctx: &Context, deps: &Deps<'_, D>) -> Result<CniResult, Error> {
    if req.env.ifname == "lo" {
        return Err(cni::Error::InvalidEnv {
            var: "CNI_IFNAME",
            value: req.env.ifname.clone(),
            reason: "the container's loopback interface cannot be the workload's".into(),
        }
        .into());
    }
    // Before anything is set up: a bad mapping leaves nothing behind.
    let requested = edge::requested(ctx)?;
    // A bad profile name is the netconf's error, before anything is set up.
    let profiles = profile::wanted(ctx)?;
    let key = ctx.endpoint_key(req);
    // The endpoint record and the profiles, in one request.
    let mut reads = vec![Read::Key(key.clone())];
    reads.extend(profile::reads(&profiles));
    let found = deps.store.read_many(&reads)?;
    let (record, found_profiles) = found.split_first().map_or((None, &[][..]), |(r, p)| (r.first(), p));
    // A repeated ADD for an attachment that is already set up answers from the record.
    if let Some(ep) = record.map(endpoint::decode).transpose()? {
        if ep.container_id == req.env.container_id {
            tracing::info!(%key, "endpoint exists; returning its result");
            return Ok(CniResult::from_json(&ep.result)?);
        }
        tracing::info!(%key, old = %ep.container_id, "replacing the endpoint of an earlier sandbox");
    }
    let container_mac = container_mac(ctx)?;
    let netns_path = req.env.netns.as_deref().unwrap_or(Path::new(""));
    let container = deps
        .dataplane
        .open_netns(netns_path)
        .map_err(|source| Error::Netns { path: netns_path.display().to_string(), source })?;

    let found_profiles = profile::gather(&profiles, found_profiles)?;
    let prepared = Prepared { container_mac, requested, profiles, found_profiles };
    let mut undo = Rollback::new();
    match attach(req, ctx, deps, &container, prepared, &mut undo) {
        Ok(result) => {
            undo.disarm();
            tracing::debug!(netlink_requests = deps.dataplane.netlink_requests(&container), "ADD cost");
            Ok(result)
        }
        Err(error) => Err(Error::rolled_back(error, undo.rollback())),
    }
}

/// What ADD read and checked before changing anything.
struct Prepared {
    container_mac: Option<[u8; 6]>,
    requested: Vec<edge::Requested>,
    /// The endpoint's profile names, and those of them the store holds.
    profiles: Vec<String>,
    found_profiles: Vec<Profile>,
}

/// The steps that change something, each followed by its undo: IPAM, the veth pair, the
/// container side, the host side, the firewall, the endpoint record.
fn attach<'a, D: Dataplane>(
    req: &'a Request,
    ctx: &Context,
    deps: &'a Deps<'a, D>,
    container: &D::Netns,
    prepared: Prepared,
    undo: &mut Rollback<'a>,
) -> Result<CniResult, Error> {
    let Prepared { container_mac, requested, profiles, found_profiles } = prepared;
    let dp = deps.dataplane;
    let host_veth = ctx.host_veth(req);
    // The profiles first (created when missing; shared, so never undone).
    let profiles = profile::ensure(deps.store, &profiles, found_profiles)?;
    let allocation = deps.ipam.add(req)?;
    let ipam_result = allocation.result;
    undo.push("releasing the IPAM allocation", || deps.ipam.del(req));
    let addresses: Vec<IpAddr> = ipam_result.ips.iter().map(|c| c.address.ip()).collect();
    if addresses.is_empty() {
        return Err(Error::NoAddress { plugin: ctx.ipam_type.clone() });
    }

    let step = |step: &'static str| move |source| Error::Dataplane { step, source };
    let mtu = ctx.conf.workload_mtu();
    let host_end = VethEnd::host(&host_veth, Some(mtu));
    let peer = VethEnd { name: req.env.ifname.clone(), mac: container_mac, mtu: Some(mtu) };
    let create = || dp.create_veth(&host_end, &peer, container);
    match create() {
        // A host end left by an ADD that died half-way, or by an earlier sandbox of this pod
        // (same workload, same name): remove it and try once more. Checked only on EEXIST,
        // so the usual ADD pays no extra netlink request.
        Err(e) if e.is_exists() && dp.delete_host_link(&host_veth).map_err(step("removing a stale host veth"))? => {
            tracing::warn!(%host_veth, "removed a stale host veth");
            create()
        }
        other => other,
    }
    .map_err(step("creating the veth pair"))?;
    let veth = host_veth.clone();
    undo.push("deleting the veth pair", move || dp.delete_host_link(&veth).map(|_| ()));

    // The endpoint's policy, before either end is up: no moment without it.
    let member = firewall::policy::Endpoint {
        veth: host_veth.clone(),
        addrs: addresses.clone(),
        profiles: profiles.iter().map(|p| p.name.clone()).collect(),
    };
    deps.firewall.attach_policy(&member, &profiles).map_err(edge::error("programming the endpoint's profiles"))?;
    let (veth, addrs) = (host_veth.clone(), addresses.clone());
    undo.push("removing the endpoint's profiles", move || deps.firewall.detach_policy(&veth, &addrs));

    let info = dp
        .setup_container(
            container,
            &ContainerConfig {
                ifname: &req.env.ifname,
                addresses: &addresses,
                ip_forward: ctx.conf.container_settings.allow_ip_forwarding,
            },
        )
        .map_err(step("configuring the container interface"))?;
    dp.setup_host(&host_veth, &addresses).map_err(step("configuring the host side"))?;

    // The firewall: the container's pools in the pool sets (read first, added only when
    // missing: they are shared, so never undone), and its port mappings, in one batch.
    let port_mappings = edge::mappings(&requested, &addresses);
    if port_mappings.iter().any(|m| m.container_ip.is_ipv4()) {
        // The host's own connections to 127.0.0.1:<hostPort> go out through this veth.
        dp.route_localnet(&host_veth).map_err(step("allowing mapped localhost connections"))?;
    }
    let owner = edge::owner(&ctx.conf.common.name, &req.env.container_id, &req.env.ifname);
    let ports = edge::port_elements(&port_mappings, &owner);
    // calico-ipam in this process says which pools; only another IPAM costs a listing.
    let pools = match allocation.pools {
        Some(pools) => pools,
        None => edge::pools(deps.store, &addresses)?,
    };
    let pool_elements = edge::pool_elements(&pools, &addresses);
    let mut elements = match pool_elements.is_empty() {
        true => Vec::new(),
        false => deps.firewall.missing(&pool_elements).map_err(edge::error("checking the pool sets"))?,
    };
    if !elements.is_empty() || !ports.is_empty() {
        elements.extend(ports.iter().cloned());
        deps.firewall.add(&elements).map_err(edge::error("adding the pools and port mappings"))?;
        if !ports.is_empty() {
            undo.push("removing the port mappings", move || deps.firewall.remove(&ports));
        }
    }

    let netns_path = req.env.netns.as_deref().unwrap_or(Path::new("")).display().to_string();
    let result = CniResult {
        interfaces: vec![
            Interface {
                name: host_veth.clone(),
                mac: Some(dataplane::naming::format_mac(dataplane::HOST_VETH_MAC)),
                ..Default::default()
            },
            Interface {
                name: req.env.ifname.clone(),
                mac: Some(dataplane::naming::format_mac(info.mac)),
                sandbox: Some(netns_path.clone()),
                ..Default::default()
            },
        ],
        ips: ipam_result
            .ips
            .iter()
            .map(|ip| cni::IpConfig {
                address: ipnetwork::IpNetwork::from(ip.address.ip()),
                gateway: None,
                interface: Some(1),
            })
            .collect(),
        dns: ipam_result.dns.clone(),
        ..Default::default()
    };
    let ep = Endpoint {
        node: ctx.node.clone(),
        orchestrator: ctx.orchestrator().into(),
        workload_id: ctx.workload_id(req),
        container_id: req.env.container_id.clone(),
        ifname: req.env.ifname.clone(),
        netns: netns_path,
        network: ctx.conf.common.name.clone(),
        host_veth: host_veth.clone(),
        mac: dataplane::naming::format_mac(info.mac),
        ips: result.ips.iter().map(|c| c.address.to_string()).collect(),
        result: result.to_json(cni::Version::LATEST),
        port_mappings,
        profiles: profiles.iter().map(|p| p.name.clone()).collect(),
    };
    endpoint::put(deps.store, &ep)?;
    tracing::info!(container = %req.env.container_id, %host_veth, ips = ?addresses, "workload attached");
    Ok(result)
}

/// `runtimeConfig.mac`, else CNI_ARGS `MAC`, else a random one from the kernel.
fn container_mac(ctx: &Context) -> Result<Option<[u8; 6]>, Error> {
    let (field, value) = match (&ctx.conf.common.runtime_config.mac, &ctx.args.mac) {
        (Some(m), _) => ("runtimeConfig.mac", m),
        (None, Some(m)) => ("CNI_ARGS MAC", m),
        (None, None) => return Ok(None),
    };
    parse_mac(value).map(Some).ok_or_else(|| Error::InvalidMac { field, value: value.clone() })
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in mac.iter_mut() {
        let p = parts.next()?;
        // Exactly two hex digits: from_str_radix alone would take a sign ("+a").
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    // A multicast address cannot be an interface's own.
    (parts.next().is_none() && mac[0] & 1 == 0).then_some(mac)
}

#[cfg(test)]
mod tests {
    #[test]
    fn macs() {
        assert_eq!(super::parse_mac("0a:58:0a:f4:00:05"), Some([0x0a, 0x58, 0x0a, 0xf4, 0, 5]));
        assert_eq!(super::parse_mac("0a:58:0a:f4:00"), None);
        assert_eq!(super::parse_mac("0a:58:0a:f4:00:05:06"), None);
        assert_eq!(super::parse_mac("01:00:5e:00:00:01"), None, "multicast");
        assert_eq!(super::parse_mac("zz:58:0a:f4:00:05"), None);
        for signed in ["+a:58:0a:f4:00:05", "0a:58:0a:f4:00:-5", "0a:+8:0a:f4:00:05", "0a:58:0a:f4:00: 5"] {
            assert_eq!(super::parse_mac(signed), None, "{signed}");
        }
        assert_eq!(super::parse_mac("0A:58:0a:F4:00:05"), Some([0x0a, 0x58, 0x0a, 0xf4, 0, 5]));
    }
}
