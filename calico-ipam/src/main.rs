//! calico-ipam: allocates container addresses from Calico IP pools (CNI IPAM plugin).
//! All logic lives in the `ipam` crate; this only hands the plugin to the CNI skeleton.

fn main() -> std::process::ExitCode {
    cni::skel::run(&ipam::plugin::CalicoIpam)
}
