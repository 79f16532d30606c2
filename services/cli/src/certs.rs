//! `runnel certs create`: a throwaway CA and a certificate per service, for
//! a secure test or demo cluster (the compose stack's secure variant, a
//! cluster on a few machines). Production certificates come from the
//! operator's own CA; Runnel only needs their PEM files.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use runnel_common::certs::DevCa;

use crate::outln;

/// `runnel certs` commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make a CA (`ca.pem`) and, for each NAME, `NAME.pem`: a certificate
    /// with subject `CN=NAME` (principal `User:NAME` under the rule
    /// `RULE:^CN=([^,]+)$/$1/`) and its key, for serving TLS and for
    /// mutual TLS between services.
    Create {
        /// Where to write the files (created; must not hold a `ca.pem`).
        #[arg(long)]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "runnel CA")]
        ca_name: String,
        /// Host names and addresses every certificate is also valid for
        /// (repeatable), beside the service's own name.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Keys readable by every user (mode 0644, not 0600), for
        /// containers that run as another user than the one making them.
        #[arg(long)]
        world_readable_keys: bool,
        /// The services: `NAME` (valid for the host NAME) or
        /// `NAME=HOST,HOST...`.
        #[arg(required = true)]
        services: Vec<String>,
    },
}

/// Runs a `runnel certs` command.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Create {
            dir,
            ca_name,
            hosts,
            world_readable_keys,
            services,
        } => create(&dir, &ca_name, &hosts, world_readable_keys, &services),
    }
}

fn create(
    dir: &Path,
    ca_name: &str,
    common_hosts: &[String],
    world_readable_keys: bool,
    services: &[String],
) -> anyhow::Result<()> {
    let ca_file = dir.join("ca.pem");
    if ca_file.exists() {
        bail!(
            "{} exists: certificates from a new CA would not be trusted by its clients; remove {} to start over",
            ca_file.display(),
            dir.display()
        );
    }
    let mut planned = Vec::new();
    for service in services {
        let (name, hosts) = match service.split_once('=') {
            Some((name, hosts)) => (name, hosts.split(',').map(str::to_owned).collect()),
            None => (service.as_str(), vec![service.clone()]),
        };
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            bail!("{name:?} is not a service name (it names the file NAME.pem)");
        }
        let mut all: Vec<String> = hosts.into_iter().filter(|h| !h.is_empty()).collect();
        for host in common_hosts {
            if !all.contains(host) {
                all.push(host.clone());
            }
        }
        if all.is_empty() {
            bail!("{service:?} names no host");
        }
        planned.push((name.to_owned(), all));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca = DevCa::new(ca_name).context("making the CA")?;
    let mode = if world_readable_keys { 0o644 } else { 0o600 };
    for (name, hosts) in &planned {
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let keystore = ca
            .service_keystore(name, &hosts)
            .with_context(|| format!("making the certificate of {name}"))?;
        let file = dir.join(format!("{name}.pem"));
        write_with_mode(&file, &keystore, mode)?;
        outln!("{}  CN={name}  {}", file.display(), hosts.join(","))?;
    }
    write_with_mode(&ca_file, ca.ca_pem(), 0o644)?;
    outln!("{}  the CA clients trust", ca_file.display())?;
    Ok(())
}

/// Writes `contents` to a new `path` with `mode` (on Unix).
fn write_with_mode(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
