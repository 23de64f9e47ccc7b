//! The etcd backend's tests on the shared harness (`testkit`): stores connected to its
//! members.

use testkit::etcd::EtcdCluster;

use super::EtcdStore;
use crate::Config;

/// A store on every member of `cluster`.
pub(super) fn store(cluster: &EtcdCluster) -> EtcdStore {
    connect(vec![cluster.endpoints()])
}

/// A store on the members of `cluster` at `order`, tried in that order.
pub(super) fn store_on(cluster: &EtcdCluster, order: &[usize]) -> EtcdStore {
    connect(order.iter().map(|&i| cluster.members[i].client_url.clone()).collect())
}

fn connect(etcd_endpoints: Vec<String>) -> EtcdStore {
    EtcdStore::connect(&Config { etcd_endpoints, ..Config::default() }).expect("connect to the test cluster")
}
