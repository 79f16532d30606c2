//! A throwaway certificate authority for `runnel dev --secure` and tests:
//! a CA, server certificates for the hosts services are reached by, and
//! client certificates whose subject becomes a principal. Never for
//! production, where certificates come from the operator's own CA.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Why a certificate cannot be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make a certificate: {0}")]
pub struct CertError(#[from] rcgen::Error);

/// A CA that signs certificates in memory.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new CA named `CN=<name>`.
    pub fn new(name: &str) -> Result<DevCa, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(DevCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate (what clients trust: `ssl.ca.location`).
    pub fn ca_pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for `hosts` (DNS names or IP addresses) with its
    /// key, as one PEM (`ssl.keystore.location`).
    pub fn server_keystore(&self, hosts: &[&str]) -> Result<String, CertError> {
        let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let mut params = CertificateParams::new(names)?;
        if let Some(first) = hosts.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign(params).map(|(cert, key)| format!("{cert}{key}"))
    }

    /// A service's certificate and key as one PEM: subject `CN=<name>` (its
    /// principal `User:<name>`), valid for `hosts`, for serving TLS and for
    /// presenting to the services it calls (mutual TLS).
    pub fn service_keystore(&self, name: &str, hosts: &[&str]) -> Result<String, CertError> {
        let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign(params).map(|(cert, key)| format!("{cert}{key}"))
    }

    /// A client certificate with subject `CN=<common_name>` (plus
    /// `OU=<unit>` when given) and its key, as two PEMs.
    pub fn client(
        &self,
        common_name: &str,
        unit: Option<&str>,
    ) -> Result<(String, String), CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        if let Some(unit) = unit {
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, unit);
        }
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> Result<(String, String), CertError> {
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}
