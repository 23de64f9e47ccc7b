//! A minimal plugin on the skeleton: ADD returns the addresses asked for in
//! `runtimeConfig.ips`/`args.cni.ips`; `"panic": true` in the config panics (to see the
//! code-100 reply). Try it:
//!
//! ```sh
//! echo '{"cniVersion":"0.4.0","name":"n","runtimeConfig":{"ips":["10.0.0.5/24"]}}' |
//!   CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_NETNS=/x CNI_IFNAME=eth0 CNI_PATH=/bin \
//!   target/debug/examples/static_plugin
//! ```

use std::process::ExitCode;

use cni::skel::{Plugin, Request};
use cni::{CniResult, Error, IpConfig};

struct Static;

#[derive(serde::Deserialize)]
struct Conf {
    #[serde(flatten)]
    common: cni::NetConf,
    #[serde(default)]
    panic: bool,
}

impl Plugin for Static {
    type Error = Error;

    fn add(&self, req: &Request) -> Result<CniResult, Error> {
        let conf: Conf = cni::parse_config(&req.stdin)?;
        assert!(!conf.panic, "asked to panic");
        let ips = conf.common.requested_ips()?;
        Ok(CniResult {
            ips: ips.into_iter().map(|ip| IpConfig { address: ip.into(), gateway: None, interface: None }).collect(),
            ..CniResult::default()
        })
    }

    fn del(&self, _: &Request) -> Result<(), Error> {
        Ok(())
    }

    fn check(&self, _: &Request) -> Result<(), Error> {
        Ok(())
    }

    fn gc(&self, _: &Request) -> Result<(), Error> {
        Ok(())
    }

    fn status(&self, _: &Request) -> Result<(), Error> {
        Ok(())
    }
}

fn main() -> ExitCode {
    cni::skel::run(&Static)
}
