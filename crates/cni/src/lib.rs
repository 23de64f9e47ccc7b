//! The CNI protocol, spec versions 0.1.0 to 1.1.0, for calico-cni and calico-ipam.
//!
//! - [`skel::run`] is a plugin's `main`: it validates the CNI_* environment ([`Env`]), reads
//!   the config on stdin, checks its `cniVersion`, dispatches to a [`skel::Plugin`] and prints
//!   exactly one JSON document: the [`CniResult`] in the requested version, or a [`Failure`].
//! - [`parse_config`] reads a plugin's config with errors naming the JSON path of the field.
//! - [`delegate`] runs another plugin (IPAM) as libcni does.
//! - Every crate's error enum implements [`CniCode`], the one place its variants map to CNI
//!   error codes.

pub mod args;
pub mod delegate;
pub mod env;
pub mod error;
pub mod logging;
pub mod netconf;
pub mod object;
pub mod result;
pub mod skel;
pub mod version;

pub use args::{parse_pairs, CniArgs};
pub use env::{Command, Env};
pub use error::{code, CniCode, Error, Failure};
pub use netconf::{parse_config, parse_plugin_config, NetConf};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use skel::{Plugin, Request};
pub use version::{version_info, Version};
