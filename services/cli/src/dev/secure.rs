//! `runnel dev --secure`: a throwaway CA and certificates under
//! `<data-dir>/tls/`, and the admin user's password.
//!
//! Each service gets its own certificate (subject `CN=<service>`, for the
//! loopback names and the addresses it listens on), which it serves and
//! presents to the others; `ca.pem` is what clients trust. They are made
//! once and kept, so clients that trust `ca.pem` keep working across
//! restarts; deleting `<data-dir>/tls/` makes new ones.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use runnel_client::{Admin, ClientConfig, DEFAULT_ITERATIONS, ScramMechanism};
use runnel_common::certs::DevCa;
use runnel_common::tls::ClientTls;

/// The services with a certificate of their own.
const SERVICES: [&str; 4] = ["broker", "controller", "coordinator", "connect"];

/// `CN=broker` is `User:broker`.
pub const PRINCIPAL_RULES: &str = "RULE:^CN=([^,]+)$/$1/,DEFAULT";

/// Who may call the services' internal RPCs.
pub const SERVICE_PRINCIPALS: &str = "User:broker;User:controller;User:coordinator";

/// The admin, and the connect worker (it writes every connector's topics).
pub const SUPER_USERS: &str = "User:admin;User:connect";

/// The admin user's name.
const ADMIN: &str = "admin";

/// Where the admin's password comes from.
#[derive(Debug)]
enum PasswordSource {
    /// `RUNNEL_ADMIN_PASSWORD`.
    Environment,
    /// Made now and written to the file: printed once, in the banner.
    Generated,
    /// Made by an earlier start and read from the file.
    File,
}

/// The certificates and the admin's password of a secure dev cluster.
#[derive(Debug)]
pub struct Secure {
    dir: PathBuf,
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    password: String,
    source: PasswordSource,
}

impl Secure {
    /// Makes the certificates (unless an earlier start did) and finds or
    /// makes the admin's password. `ips`: addresses the services listen on,
    /// which their certificates name beside `localhost` and `127.0.0.1`.
    pub fn prepare(data_dir: &Path, ips: &[IpAddr]) -> anyhow::Result<Secure> {
        let dir = data_dir.join("tls");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let ca = dir.join("ca.pem");
        let complete = ca.exists()
            && SERVICES
                .iter()
                .all(|s| dir.join(format!("{s}.pem")).exists());
        if !complete {
            let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
            for ip in ips {
                let ip = ip.to_string();
                if !ip_is_unspecified(&ip) && !hosts.contains(&ip) {
                    hosts.push(ip);
                }
            }
            let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
            let authority = DevCa::new("runnel dev CA").context("making the dev CA")?;
            for service in SERVICES {
                let keystore = authority
                    .service_keystore(service, &hosts)
                    .with_context(|| format!("making the {service} certificate"))?;
                write_private(&dir.join(format!("{service}.pem")), &keystore)?;
            }
            std::fs::write(&ca, authority.ca_pem())
                .with_context(|| format!("cannot write {}", ca.display()))?;
        }
        let file = dir.join("admin.password");
        let (password, source) = match std::env::var("RUNNEL_ADMIN_PASSWORD") {
            Ok(p) if !p.is_empty() => (p, PasswordSource::Environment),
            _ => match std::fs::read_to_string(&file) {
                Ok(p) if !p.trim().is_empty() => (p.trim().to_owned(), PasswordSource::File),
                _ => {
                    let password = generate_password();
                    write_private(&file, &password)?;
                    (password, PasswordSource::Generated)
                }
            },
        };
        Ok(Secure {
            dir,
            ca,
            password,
            source,
        })
    }

    /// The keystore (certificate and key) of `service`.
    pub fn keystore(&self, service: &str) -> PathBuf {
        self.dir.join(format!("{service}.pem"))
    }

    /// Gives `User:admin` the password, for both SCRAM mechanisms (PLAIN
    /// checks it against them too), signed in with the controller's
    /// certificate, as a service.
    pub async fn create_admin(&self, bootstrap: &str) -> anyhow::Result<()> {
        let tls = ClientTls::client(Some(self.ca.clone()), Some(self.keystore("controller")))?;
        let admin = Admin::new(ClientConfig {
            tls: Some(tls),
            ..ClientConfig::new(bootstrap)
        });
        for mechanism in ScramMechanism::ALL {
            admin
                .upsert_scram_credential(ADMIN, mechanism, &self.password, DEFAULT_ITERATIONS)
                .await?;
        }
        Ok(())
    }

    /// The banner's lines on security: what is on, and the settings
    /// clients use.
    pub fn banner(&self) -> String {
        let ca = self.ca.display();
        let file = self.dir.join("admin.password");
        let (password, shown) = match self.source {
            PasswordSource::Generated => (
                format!("{} (also in {}; shown once)", self.password, file.display()),
                self.password.clone(),
            ),
            PasswordSource::File => (
                format!("in {}", file.display()),
                format!("$(cat {})", file.display()),
            ),
            PasswordSource::Environment => (
                "from RUNNEL_ADMIN_PASSWORD".to_owned(),
                "$RUNNEL_ADMIN_PASSWORD".to_owned(),
            ),
        };
        format!(
            "  security    SASL_SSL on kafka (SCRAM-SHA-512, SCRAM-SHA-256, PLAIN), TLS with sign-in on gRPC, mutual TLS inside; CA {ca}
  admin user  {ADMIN}, password {password}
  runnel CLI  RUNNEL_CA_FILE={ca} RUNNEL_USER={ADMIN} RUNNEL_PASSWORD={shown} runnel topics list
  kafka conf  security.protocol=SASL_SSL sasl.mechanism=SCRAM-SHA-512 sasl.username={ADMIN} sasl.password={shown} ssl.ca.location={ca}
"
        )
    }
}

fn ip_is_unspecified(ip: &str) -> bool {
    ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

/// 24 random letters and digits (about 143 bits).
fn generate_password() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// Writes `contents` to `path` readable by this user alone (mode 0600).
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // A file from before keeps its mode through `open`: set it anyway.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
