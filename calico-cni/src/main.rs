//! calico-cni: gives a container its Calico network (CNI plugin). Installed also as
//! `calico`, so existing netconfs with `"type": "calico"` work. All logic lives in the
//! library; this only hands the plugin to the CNI skeleton.

fn main() -> std::process::ExitCode {
    cni::skel::run(&calico_cni::CalicoCni)
}
