//! SCRAM credentials as Kafka keeps them (RFC 5802, KIP-554): a user's
//! password is never stored, only a random salt, an iteration count and the
//! two keys derived from the salted password. The hash arithmetic is
//! rsasl's (`rsasl::mechanisms::scram::tools`), the same code that runs the
//! SCRAM exchanges on the Kafka listener.

// rsasl's SCRAM tools take generic-array 0.14 arrays, which that crate's
// last release marks deprecated in favour of 1.x.
#![allow(deprecated)]

use digest::Digest;
use digest::generic_array::GenericArray;
use rsasl::mechanisms::scram::tools::{derive_keys, hash_password};
use sha2::{Sha256, Sha512};

/// The SCRAM mechanisms Kafka supports, with Kafka's wire codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    /// `SCRAM-SHA-256` (code 1).
    ScramSha256,
    /// `SCRAM-SHA-512` (code 2).
    ScramSha512,
}

/// Kafka's bounds on SCRAM iterations (`ScramMechanism`'s minimum and the
/// maximum AlterUserScramCredentials accepts).
pub const MIN_ITERATIONS: u32 = 4096;
/// The largest iteration count accepted.
pub const MAX_ITERATIONS: u32 = 16384;

impl Mechanism {
    /// Both mechanisms.
    pub const ALL: [Mechanism; 2] = [Mechanism::ScramSha256, Mechanism::ScramSha512];

    /// The SASL mechanism name (`SCRAM-SHA-256`).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// Kafka's code for it in the SCRAM credential APIs.
    pub fn code(self) -> i8 {
        match self {
            Mechanism::ScramSha256 => 1,
            Mechanism::ScramSha512 => 2,
        }
    }

    /// The mechanism with Kafka's `code`.
    pub fn from_code(code: i8) -> Option<Mechanism> {
        match code {
            1 => Some(Mechanism::ScramSha256),
            2 => Some(Mechanism::ScramSha512),
            _ => None,
        }
    }

    /// The mechanism named `name` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// `Hi(password, salt, iterations)`: the salted password a client sends
    /// in AlterUserScramCredentials.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Mechanism::ScramSha256 => {
                let mut out = GenericArray::default();
                hash_password::<Sha256>(password, iterations, salt, &mut out);
                out.to_vec()
            }
            Mechanism::ScramSha512 => {
                let mut out = GenericArray::default();
                hash_password::<Sha512>(password, iterations, salt, &mut out);
                out.to_vec()
            }
        }
    }

    /// `(StoredKey, ServerKey)` of a salted password.
    fn keys(self, salted_password: &[u8]) -> (Vec<u8>, Vec<u8>) {
        match self {
            Mechanism::ScramSha256 => {
                let (client, server) = derive_keys::<Sha256>(salted_password);
                (Sha256::digest(client).to_vec(), server.to_vec())
            }
            Mechanism::ScramSha512 => {
                let (client, server) = derive_keys::<Sha512>(salted_password);
                (Sha512::digest(client).to_vec(), server.to_vec())
            }
        }
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a server keeps of one user's password for one mechanism.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    /// Which hash.
    pub mechanism: Mechanism,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// The random salt.
    pub salt: Vec<u8>,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

// The keys stand in for the password: they stay out of logs.
impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Why a credential cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Iterations outside Kafka's bounds.
    #[error("iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, got {0}")]
    Iterations(i64),
    /// An empty salt or salted password.
    #[error("the salt and the salted password must not be empty")]
    Empty,
    /// A salted password of the wrong length for the mechanism.
    #[error("a {mechanism} salted password is {expected} bytes, got {got}")]
    SaltedLength {
        /// The mechanism.
        mechanism: Mechanism,
        /// Its hash length.
        expected: usize,
        /// What came.
        got: usize,
    },
}

impl ScramCredential {
    /// A credential for `password` with a fresh random salt.
    pub fn new(
        mechanism: Mechanism,
        password: &str,
        iterations: u32,
    ) -> Result<ScramCredential, CredentialError> {
        check_iterations(i64::from(iterations))?;
        let salt: [u8; 32] = rand::random();
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
        ScramCredential::from_salted(mechanism, &salt, &salted, i64::from(iterations))
    }

    /// The credential a client's salted password stands for (what
    /// AlterUserScramCredentials carries).
    pub fn from_salted(
        mechanism: Mechanism,
        salt: &[u8],
        salted_password: &[u8],
        iterations: i64,
    ) -> Result<ScramCredential, CredentialError> {
        let iterations = check_iterations(iterations)?;
        if salt.is_empty() || salted_password.is_empty() {
            return Err(CredentialError::Empty);
        }
        let expected = match mechanism {
            Mechanism::ScramSha256 => 32,
            Mechanism::ScramSha512 => 64,
        };
        if salted_password.len() != expected {
            return Err(CredentialError::SaltedLength {
                mechanism,
                expected,
                got: salted_password.len(),
            });
        }
        let (stored_key, server_key) = mechanism.keys(salted_password);
        Ok(ScramCredential {
            mechanism,
            iterations,
            salt: salt.to_vec(),
            stored_key,
            server_key,
        })
    }

    /// Whether `password` is the one this credential was made from (SASL
    /// PLAIN checks passwords against the SCRAM store).
    pub fn verify(&self, password: &str) -> bool {
        let salted =
            self.mechanism
                .salted_password(password.as_bytes(), &self.salt, self.iterations);
        let (stored_key, _) = self.mechanism.keys(&salted);
        constant_time_eq(&stored_key, &self.stored_key)
    }
}

fn check_iterations(iterations: i64) -> Result<u32, CredentialError> {
    u32::try_from(iterations)
        .ok()
        .filter(|i| (MIN_ITERATIONS..=MAX_ITERATIONS).contains(i))
        .ok_or(CredentialError::Iterations(iterations))
}

/// Compares without an early exit, so timing does not tell how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7677_test_vector() {
        // RFC 7677's SCRAM-SHA-256 exchange (user "user", password "pencil",
        // 4096 iterations): the server signature it prints follows from our
        // ServerKey, and the client proof from our StoredKey.
        use base64::Engine;
        use base64::engine::general_purpose::STANDARD;
        use rsasl::mechanisms::scram::tools::compute_signatures;
        let salt_b64 = "W22ZaJ0SNY7soEsUEjb6gQ==";
        let salt = STANDARD.decode(salt_b64).unwrap();
        let salted = Mechanism::ScramSha256.salted_password(b"pencil", &salt, 4096);
        let c = ScramCredential::from_salted(Mechanism::ScramSha256, &salt, &salted, 4096).unwrap();
        let (mut client_signature, mut server_signature) =
            (GenericArray::default(), GenericArray::default());
        compute_signatures::<Sha256>(
            GenericArray::from_slice(&c.stored_key),
            GenericArray::from_slice(&c.server_key),
            "user",
            b"rOprNGfwEbeRWgbNEkqO",
            b"%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            salt_b64.as_bytes(),
            b"4096",
            b"biws",
            &mut client_signature,
            &mut server_signature,
        );
        assert_eq!(
            STANDARD.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        // ClientProof = ClientKey XOR ClientSignature, and H(ClientKey) = StoredKey.
        let proof = STANDARD
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        assert_eq!(Sha256::digest(client_key).to_vec(), c.stored_key);
        assert!(c.verify("pencil"));
        assert!(!c.verify("pencil "));
    }

    #[test]
    fn credentials_verify_their_password_only() {
        for mechanism in Mechanism::ALL {
            let c = ScramCredential::new(mechanism, "s3cret", 4096).unwrap();
            assert!(c.verify("s3cret"));
            assert!(!c.verify("s3cre"));
            let again = ScramCredential::new(mechanism, "s3cret", 4096).unwrap();
            assert_ne!(c.salt, again.salt, "a fresh salt each time");
            assert!(!format!("{c:?}").contains("key"), "keys stay out of logs");
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        let m = Mechanism::ScramSha512;
        assert_eq!(
            ScramCredential::new(m, "x", 4095),
            Err(CredentialError::Iterations(4095))
        );
        assert_eq!(
            ScramCredential::from_salted(m, b"salt", &[0; 64], 16385),
            Err(CredentialError::Iterations(16385))
        );
        assert_eq!(
            ScramCredential::from_salted(m, b"", &[0; 64], 4096),
            Err(CredentialError::Empty)
        );
        assert!(matches!(
            ScramCredential::from_salted(m, b"salt", &[0; 32], 4096),
            Err(CredentialError::SaltedLength { .. })
        ));
        assert_eq!(Mechanism::from_code(2), Some(m));
        assert_eq!(Mechanism::from_code(0), None);
        assert_eq!(
            Mechanism::from_name("scram-sha-256"),
            Some(Mechanism::ScramSha256)
        );
    }
}
