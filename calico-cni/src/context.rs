//! What every verb needs from the request: the parsed netconf and CNI_ARGS, this node's
//! name and the workload's identity.

use calico_netconf::CalicoConf;
use cni::skel::Request;
use cni::CniArgs;
use datastore::Datastore;
use model::keys;

use crate::Error;

/// The names calico-cni is installed under: never an IPAM type. (Any other name that
/// resolves to this executable is refused by [`cni::delegate::exec`].)
const SELF_NAMES: [&str; 2] = ["calico", "calico-cni"];

pub struct Context {
    pub conf: CalicoConf,
    pub args: CniArgs,
    pub node: String,
    /// The IPAM plugin to delegate to (`ipam.type`).
    pub ipam_type: String,
}

impl Context {
    pub fn load(req: &Request) -> Result<Context, Error> {
        let conf = CalicoConf::parse(&req.stdin)?;
        cni::logging::init(conf.log_level.as_deref(), conf.log_file_path.as_deref());
        let args = CniArgs::parse(&req.env.args)?;
        if conf.ipam.plugin_type.is_empty() {
            return Err(cni::Error::InvalidConfig {
                field: "ipam.type".into(),
                reason: "an IPAM plugin is required (e.g. calico-ipam or host-local)".into(),
            }
            .into());
        }
        if SELF_NAMES.contains(&conf.ipam.plugin_type.as_str()) {
            // It would exec itself as its IPAM plugin, which would exec itself again...
            return Err(cni::Error::InvalidConfig {
                field: "ipam.type".into(),
                reason: format!(
                    "the IPAM type {:?} names this plugin itself (calico-cni); use calico-ipam",
                    conf.ipam.plugin_type
                ),
            }
            .into());
        }
        let node = conf.nodename()?;
        Ok(Context { ipam_type: conf.ipam.plugin_type.clone(), conf, args, node })
    }

    /// The datastore the netconf selects (etcd, else the embedded store).
    pub fn open_store(&self) -> Result<Box<dyn Datastore>, Error> {
        Ok(datastore::config::open(&self.conf.store_config())?)
    }

    /// `k8s` when the runtime names the pod, else `cni`.
    pub fn orchestrator(&self) -> &'static str {
        if self.k8s_pod().is_some() {
            "k8s"
        } else {
            "cni"
        }
    }

    fn k8s_pod(&self) -> Option<(&str, &str)> {
        Some((self.args.k8s_pod_namespace.as_deref()?, self.args.k8s_pod_name.as_deref()?))
    }

    /// `<namespace>.<pod>` for Kubernetes, else the container id.
    pub fn workload_id(&self, req: &Request) -> String {
        match self.k8s_pod() {
            Some((ns, pod)) => format!("{ns}.{pod}"),
            None => req.env.container_id.clone(),
        }
    }

    pub fn endpoint_key(&self, req: &Request) -> String {
        keys::endpoint(&self.node, self.orchestrator(), &self.workload_id(req), &req.env.ifname)
    }

    /// `cali` + 11 hex characters of the workload identity (plus the interface when it is
    /// not eth0, so a container's interfaces get distinct host ends).
    pub fn host_veth(&self, req: &Request) -> String {
        let mut id = self.workload_id(req);
        if req.env.ifname != "eth0" {
            id.push('.');
            id.push_str(&req.env.ifname);
        }
        dataplane::host_veth_name(&id)
    }
}
