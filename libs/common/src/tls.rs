//! TLS for Runnel's listeners (rustls on ring, PEM files as Kafka's
//! `ssl.keystore.type=PEM`): the server's certificate chain and key, an
//! optional CA for client certificates (`ssl.client.auth`), reloaded from
//! disk when the files change; and the principal a client certificate
//! stands for (`ssl.principal.mapping.rules` over the subject's RFC 2253
//! name, as Kafka's `SslPrincipalMapper`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use rustls::RootCertStore;
use rustls::client::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use tokio_util::sync::CancellationToken;

/// Kafka's `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// Clients are not asked for a certificate.
    #[default]
    None,
    /// Clients may present one; it is verified if they do.
    Requested,
    /// Clients must present one the CA signed.
    Required,
}

impl ClientAuth {
    /// `none`, `requested` or `required`.
    pub fn parse(s: &str) -> Result<ClientAuth, TlsError> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "" => Ok(ClientAuth::None),
            "requested" => Ok(ClientAuth::Requested),
            "required" => Ok(ClientAuth::Required),
            other => Err(TlsError::Config(format!(
                "ssl.client.auth must be none, requested or required, not {other:?}"
            ))),
        }
    }
}

/// Where a listener's TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `ssl.keystore.location`: PEM with the certificate chain (leaf first)
    /// and the private key.
    pub keystore: PathBuf,
    /// `ssl.truststore.location`: PEM with the CA certificates client
    /// certificates must chain to.
    pub truststore: Option<PathBuf>,
    /// `ssl.client.auth`.
    pub client_auth: ClientAuth,
    /// ALPN protocols to offer (`h2` for gRPC; none for Kafka).
    pub alpn: Vec<Vec<u8>>,
}

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read or holds no usable PEM.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The settings do not fit together.
    #[error("{0}")]
    Config(String),
    /// rustls refused the material.
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// The certificates in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The crypto provider: ring, which builds without a C toolchain beyond
/// cc. rustls marks it deprecated for lacking post-quantum key exchange,
/// which needs aws-lc-rs (cmake and a long C build).
#[allow(deprecated)]
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A server config from the files as they are now.
fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(provider());
    let chain = load_certs(&files.keystore)?;
    let key = PrivateKeyDer::from_pem_file(&files.keystore)
        .map_err(|e| file_error(&files.keystore, format!("no private key: {e}")))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match (files.client_auth, &files.truststore) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(TlsError::Config(
                "ssl.client.auth needs ssl.truststore.location (the CA of client certificates)"
                    .into(),
            ));
        }
        (auth, Some(truststore)) => {
            let mut roots = RootCertStore::empty();
            for ca in load_certs(truststore)? {
                roots.add(ca).map_err(|e| file_error(truststore, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder
                .with_client_cert_verifier(verifier.build().map_err(|e| file_error(truststore, e))?)
        }
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = files.alpn.clone();
    Ok(config)
}

/// TLS material built from files, rebuilt when the files change on disk.
pub struct Reloading<T> {
    /// The files the material is built from, for their modification times.
    paths: Vec<PathBuf>,
    build: Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>,
    current: RwLock<(Arc<T>, Vec<Option<SystemTime>>)>,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

/// A listener's TLS config, reloaded when its files change on disk.
pub type ReloadingTls = Reloading<ServerConfig>;

/// The TLS config of outgoing connections (the CA that server certificates
/// must chain to, and this process's own certificate when it has one),
/// reloaded when its files change on disk.
pub type ClientTls = Reloading<ClientConfig>;

impl Reloading<ServerConfig> {
    /// Loads the files; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Arc<ReloadingTls>, TlsError> {
        let paths = std::iter::once(files.keystore.clone())
            .chain(files.truststore.clone())
            .collect();
        Reloading::new(paths, move || server_config(&files))
    }
}

impl Reloading<ClientConfig> {
    /// Outgoing TLS trusting the CAs in `ca_file` (the system's roots when
    /// `None`), presenting the certificate and key in `identity` (PEM) to
    /// servers that ask for one.
    pub fn client(
        ca_file: Option<PathBuf>,
        identity: Option<PathBuf>,
    ) -> Result<Arc<ClientTls>, TlsError> {
        let paths = ca_file.iter().chain(identity.iter()).cloned().collect();
        Reloading::new(paths, move || {
            client_config(ca_file.as_deref(), identity.as_deref())
        })
    }
}

impl<T> Reloading<T> {
    fn new(
        paths: Vec<PathBuf>,
        build: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Arc<Reloading<T>>, TlsError> {
        let stamps = stamps(&paths);
        let config = Arc::new(build()?);
        Ok(Arc::new(Reloading {
            paths,
            build: Box::new(build),
            current: RwLock::new((config, stamps)),
        }))
    }

    /// The config to make a connection with now.
    pub fn config(&self) -> Arc<T> {
        Arc::clone(&self.current.read().0)
    }

    /// Reloads if a file changed since the last load; true if it did. A
    /// change that does not load (a half-written file) keeps the old config
    /// and is tried again next time.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamps(&self.paths);
        if now == self.current.read().1 {
            return Ok(false);
        }
        let config = Arc::new((self.build)()?);
        *self.current.write() = (config, now);
        Ok(true)
    }

    /// Checks the files every `period` until `shutdown`.
    pub async fn watch(self: Arc<Self>, period: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(period) => {}
            }
            match self.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(files = ?self.paths, "TLS certificates reloaded")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "TLS files changed but do not load; keeping the old ones")
                }
            }
        }
    }
}

/// The modification times of the files (None where one cannot be read).
fn stamps(paths: &[PathBuf]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// A client config from the files as they are now.
fn client_config(
    ca_file: Option<&Path>,
    identity: Option<&Path>,
) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for ca in load_certs(path)? {
                roots.add(ca).map_err(|e| file_error(path, e))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(TlsError::Config(
                    "no CA file given and the system has no trusted CA certificates".into(),
                ));
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match identity {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let chain = load_certs(path)?;
            let key = PrivateKeyDer::from_pem_file(path)
                .map_err(|e| file_error(path, format!("no private key: {e}")))?;
            builder.with_client_auth_cert(chain, key)?
        }
    })
}

/// A certificate's subject as Java's `X500Principal.getName()` prints it
/// (RFC 2253: the last RDN first, `CN=alice,OU=eng,O=Acme`), which is what
/// Kafka maps to a principal; `None` if the certificate does not parse.
pub fn subject_name(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let rdns: Vec<String> = parsed
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let key = match oid.as_str() {
                        "2.5.4.3" => "CN".to_owned(),
                        "2.5.4.6" => "C".to_owned(),
                        "2.5.4.7" => "L".to_owned(),
                        "2.5.4.8" => "ST".to_owned(),
                        "2.5.4.9" => "STREET".to_owned(),
                        "2.5.4.10" => "O".to_owned(),
                        "2.5.4.11" => "OU".to_owned(),
                        "0.9.2342.19200300.100.1.25" => "DC".to_owned(),
                        "0.9.2342.19200300.100.1.1" => "UID".to_owned(),
                        other => other.to_owned(),
                    };
                    let value = match atv.as_str() {
                        Ok(v) => escape_rfc2253(v),
                        // Not a string type: RFC 2253's #hex of the DER value.
                        Err(_) => format!(
                            "#{}",
                            atv.attr_value()
                                .data
                                .iter()
                                .map(|b| format!("{b:02x}"))
                                .collect::<String>()
                        ),
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    Some(rdns.into_iter().rev().collect::<Vec<_>>().join(","))
}

fn escape_rfc2253(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Kafka's `ssl.principal.mapping.rules`: `RULE:pattern/replacement/[LU]`
/// entries tried in order, and `DEFAULT` (the whole name), separated by commas.
#[derive(Debug, Clone)]
pub struct PrincipalMapper {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Replace {
        pattern: regex::Regex,
        replacement: String,
        case: Option<char>,
    },
}

impl PrincipalMapper {
    /// Parses the rules (`DEFAULT` alone when empty).
    pub fn parse(rules: &str) -> Result<PrincipalMapper, TlsError> {
        let bad = |why: &str| {
            TlsError::Config(format!(
                "invalid ssl.principal.mapping.rules {rules:?}: {why}"
            ))
        };
        let mut parsed = Vec::new();
        let mut rest = rules.trim();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                parsed.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) =
                    until_slash(after).ok_or_else(|| bad("no / after the pattern"))?;
                let (replacement, after) =
                    until_slash(after).ok_or_else(|| bad("no / after the replacement"))?;
                let (case, after) = match after.chars().next() {
                    Some(c @ ('L' | 'U')) => (Some(c), &after[1..]),
                    _ => (None, after),
                };
                let pattern = regex::Regex::new(&pattern).map_err(|e| bad(&e.to_string()))?;
                parsed.push(Rule::Replace {
                    pattern,
                    replacement: java_replacement(&replacement),
                    case,
                });
                rest = after;
            } else {
                return Err(bad("each rule is DEFAULT or RULE:pattern/replacement/[LU]"));
            }
            rest = rest.trim_start();
            match rest.strip_prefix(',') {
                Some(after) => rest = after.trim_start(),
                None if rest.is_empty() => {}
                None => return Err(bad("rules are separated by commas")),
            }
        }
        if parsed.is_empty() {
            parsed.push(Rule::Default);
        }
        Ok(PrincipalMapper { rules: parsed })
    }

    /// The principal name of a certificate subject: the first rule that
    /// matches; `None` when none does (Kafka then refuses the connection).
    pub fn map(&self, subject: &str) -> Option<String> {
        self.rules.iter().find_map(|rule| match rule {
            Rule::Default => Some(subject.to_owned()),
            Rule::Replace {
                pattern,
                replacement,
                case,
            } => {
                // Kafka's rules match the whole name.
                let m = pattern.captures(subject)?;
                if m.get(0).map(|w| w.as_str().len()) != Some(subject.len()) {
                    return None;
                }
                let mut out = String::new();
                m.expand(replacement, &mut out);
                Some(match case {
                    Some('L') => out.to_lowercase(),
                    Some('U') => out.to_uppercase(),
                    _ => out,
                })
            }
        })
    }
}

/// The text up to an unescaped `/`, unescaped, and what follows it.
fn until_slash(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, next)) = chars.next() {
                    if next != '/' {
                        out.push('\\');
                    }
                    out.push(next);
                }
            }
            '/' => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// Java's `$1` group references in regex's `${1}` form.
fn java_replacement(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut n = String::new();
            while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                n.push(d);
                chars.next();
            }
            out.push_str(&format!("${{{n}}}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// How long a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_mapping_follows_kafkas_rules() {
        let m = PrincipalMapper::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/, RULE:^CN=(.*?),OU=(.*?),O=.*$/$1@$2/L, DEFAULT",
        )
        .unwrap();
        assert_eq!(
            m.map("CN=kafka-broker,OU=ServiceUsers,O=Acme").as_deref(),
            Some("kafka-broker")
        );
        assert_eq!(
            m.map("CN=Alice,OU=Eng,O=Acme").as_deref(),
            Some("alice@eng")
        );
        assert_eq!(m.map("CN=bob").as_deref(), Some("CN=bob"));
        let upper = PrincipalMapper::parse("RULE:^CN=([a-z]+)$/$1/U").unwrap();
        assert_eq!(upper.map("CN=carol").as_deref(), Some("CAROL"));
        assert_eq!(upper.map("CN=carol,O=x"), None, "no rule matches: refused");
        assert_eq!(
            PrincipalMapper::parse("").unwrap().map("CN=x").as_deref(),
            Some("CN=x")
        );
        let slash = PrincipalMapper::parse(r"RULE:^CN=(.*)$/a\/$1/").unwrap();
        assert_eq!(slash.map("CN=x").as_deref(), Some("a/x"));
        for bad in [
            "RULE:^CN=(.*)$",
            "NOPE",
            "RULE:(/x/ DEFAULT",
            "DEFAULT DEFAULT",
        ] {
            assert!(PrincipalMapper::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subjects_print_as_rfc_2253() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "US");
        dn.push(rcgen::DnType::OrganizationName, "Acme, Inc.");
        dn.push(rcgen::DnType::OrganizationalUnitName, "eng");
        dn.push(rcgen::DnType::CommonName, "alice");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let name = subject_name(cert.der()).unwrap();
        assert_eq!(name, r"CN=alice,OU=eng,O=Acme\, Inc.,C=US");
        assert_eq!(subject_name(&CertificateDer::from(vec![1, 2, 3])), None);
    }
}
