//! CHECK: the IPAM allocation, the endpoint record, the dataplane as the prevResult
//! describes it, the endpoint's policy, and its port mappings.

use std::net::IpAddr;

use cni::skel::Request;
use cni::CniResult;
use dataplane::CheckSpec;

use crate::context::Context;
use crate::deps::{Dataplane, Deps};
use crate::Error;
use crate::{edge, endpoint};

pub fn check<D: Dataplane>(req: &Request, ctx: &Context, deps: &Deps<'_, D>) -> Result<(), Error> {
    let prev = ctx
        .conf
        .common
        .prev_result
        .as_ref()
        .ok_or_else(|| Error::Check("the netconf has no prevResult to check against".into()))?;
    let prev = CniResult::from_json(prev)?;
    deps.ipam.check(req)?;

    let key = ctx.endpoint_key(req);
    let ep = endpoint::get(deps.store, &key)?
        .filter(|ep| ep.container_id == req.env.container_id)
        .ok_or_else(|| Error::Check(format!("no workload endpoint record {key}")))?;
    let container_index = prev.interfaces.iter().position(|i| i.name == req.env.ifname);
    let addresses: Vec<IpAddr> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none() || ip.interface == container_index)
        .map(|ip| ip.address.ip())
        .collect();
    for ip in &addresses {
        if !ep.ips.iter().any(|e| e.split('/').next() == Some(&ip.to_string())) {
            return Err(Error::Check(format!("address {ip} of prevResult is not in the endpoint record {key}")));
        }
    }
    let netns = req.env.netns.as_deref().unwrap_or(std::path::Path::new(""));
    let container = deps
        .dataplane
        .open_netns(netns)
        .map_err(|source| Error::Netns { path: netns.display().to_string(), source })?;
    deps.dataplane
        .check(&container, &CheckSpec { host_veth: &ep.host_veth, ifname: &req.env.ifname, addresses: &addresses })
        .map_err(|source| Error::Dataplane { step: "checking the dataplane", source })?;
    // The endpoint's policy: without it, its traffic is dropped (`iifname "cali*" drop`).
    if let Some(missing) = deps.firewall.check_policy(&ep.host_veth).map_err(edge::error("checking the policy"))? {
        return Err(Error::Check(format!("{missing} is missing from table inet calico-policy")));
    }
    let ports = edge::port_elements(&ep.port_mappings, &edge::owner(&ep.network, &ep.container_id, &ep.ifname));
    if !ports.is_empty() {
        let missing = deps.firewall.missing(&ports).map_err(edge::error("checking the port mappings"))?;
        if let Some(first) = missing.first() {
            return Err(Error::Check(format!("{first} is missing from table inet calico")));
        }
    }
    Ok(())
}
