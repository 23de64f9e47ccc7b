//! From [`Config`] to the list of etcd members to try: URLs checked, TLS files read once, one
//! tonic [`Endpoint`] per member with the connect and request timeouts applied.

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::config::Config;
use crate::error::redact_url;
use crate::Error;

/// One etcd member as the client reaches it.
pub(super) struct Target {
    /// The URL as configured (normalised with a scheme) without its credentials, for error
    /// messages and logs.
    pub url: String,
    pub endpoint: Endpoint,
}

/// Every configured endpoint, in order. Entries may themselves be comma-separated lists, as in
/// Calico's `etcd_endpoints = "http://a:2379,http://b:2379"`. An entry without a scheme gets
/// `https://` when TLS files are configured and `http://` otherwise.
pub(super) fn targets(
    cfg: &Config,
    connect_timeout: Duration,
    request_timeout: Duration,
) -> Result<Vec<Target>, Error> {
    let tls = tls_config(cfg)?;
    let urls: Vec<String> = cfg
        .etcd_endpoints
        .iter()
        .flat_map(|entry| Config::parse_endpoints(entry))
        .map(|url| with_scheme(url, tls.is_some()))
        .collect();
    if urls.is_empty() {
        return Err(config_error("no etcd endpoints are configured".into()));
    }
    urls.into_iter()
        .map(|configured| {
            // Every message names the member by `url`, never by the configured form, which
            // may hold a user name and password.
            let url = redact_url(&configured);
            let mut endpoint = Endpoint::from_shared(configured)
                .map_err(|source| Error::EtcdEndpoint { url: url.clone(), problem: "is not a valid URL", source })?
                .connect_timeout(connect_timeout)
                .timeout(request_timeout)
                // Tonic's default, spelled out: each HTTP/2 frame is its own small write, and
                // with Nagle the request body would wait for the server's delayed ACK (~40 ms).
                .tcp_nodelay(true);
            if url.starts_with("https://") {
                let Some(tls) = &tls else {
                    return Err(config_error(format!(
                        "endpoint {url} uses https but no etcd_ca_cert_file is configured \
                         (this build has no system trust store)"
                    )));
                };
                endpoint = endpoint.tls_config(tls.clone()).map_err(|source| Error::EtcdEndpoint {
                    url: url.clone(),
                    problem: "cannot take the TLS settings",
                    source,
                })?;
            } else if !url.starts_with("http://") {
                return Err(config_error(format!("endpoint {url:?}: only http:// and https:// URLs are supported")));
            }
            Ok(Target { url, endpoint })
        })
        .collect()
}

fn with_scheme(url: String, tls: bool) -> String {
    if url.contains("://") {
        url
    } else if tls {
        format!("https://{url}")
    } else {
        format!("http://{url}")
    }
}

/// The client TLS settings from the three Calico options, or `None` when none is set. The CA
/// bundle is required for TLS; the client key and certificate go together or not at all.
fn tls_config(cfg: &Config) -> Result<Option<ClientTlsConfig>, Error> {
    let (ca, cert, key) = (&cfg.etcd_ca_cert_file, &cfg.etcd_cert_file, &cfg.etcd_key_file);
    if ca.is_none() && cert.is_none() && key.is_none() {
        return Ok(None);
    }
    let Some(ca) = ca else {
        return Err(config_error("etcd_cert_file / etcd_key_file are set but etcd_ca_cert_file is not".into()));
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
    match (cert, key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        (None, None) => {}
        (Some(_), None) => return Err(config_error("etcd_cert_file is set without etcd_key_file".into())),
        (None, Some(_)) => return Err(config_error("etcd_key_file is set without etcd_cert_file".into())),
    }
    Ok(Some(tls))
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::EtcdFile { path: path.to_owned(), source })
}

fn config_error(reason: String) -> Error {
    Error::EtcdConfig { reason }
}
