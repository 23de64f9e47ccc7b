//! Throwaway TLS certificates for etcd members and their clients.

use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

/// A CA, a server certificate and a client certificate (EC P-256, valid two days), made with
/// the openssl command-line tool in a temporary directory.
pub struct Certs {
    pub dir: TempDir,
}

impl Certs {
    /// The server certificate is for 127.0.0.1.
    pub fn generate() -> Certs {
        Self::generate_for(&["127.0.0.1"])
    }

    /// The server certificate is for the addresses `ips` (a member in a netns listens on one
    /// of that netns's addresses).
    pub fn generate_for(ips: &[&str]) -> Certs {
        let dir = tempfile::Builder::new().prefix("calico-certs-").tempdir().expect("tempdir for certificates");
        let run = |args: String| {
            let out = Command::new("openssl")
                .args(args.split_whitespace())
                .current_dir(dir.path())
                .output()
                .expect("run openssl (apt-get install openssl)");
            assert!(out.status.success(), "openssl {args}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        run(format!(
            "req -x509 {ec} -keyout ca.key -out ca.crt -days 2 -subj /CN=calico-test-CA \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
        ));
        let san = ips.iter().map(|ip| format!("IP:{ip}")).collect::<Vec<_>>().join(",");
        for (name, ext) in [
            ("server", format!("subjectAltName={san}\nextendedKeyUsage=serverAuth\n")),
            ("client", "extendedKeyUsage=clientAuth\n".to_owned()),
        ] {
            std::fs::write(dir.path().join(format!("{name}.ext")), ext).expect("write extensions");
            run(format!("req {ec} -keyout {name}.key -out {name}.csr -subj /CN={name}"));
            run(format!(
                "x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out {name}.crt -days 2 \
                 -extfile {name}.ext"
            ));
        }
        Certs { dir }
    }

    /// A file of the set: `ca.crt`, `server.crt`, `server.key`, `client.crt`, `client.key`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }

    pub fn client_cert(&self) -> PathBuf {
        self.path("client.crt")
    }

    pub fn client_key(&self) -> PathBuf {
        self.path("client.key")
    }
}
