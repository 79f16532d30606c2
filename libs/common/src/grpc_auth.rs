//! Who calls a public gRPC API, and whether they may do what they ask.
//!
//! A caller signs in with a user and password (`authorization: Basic`,
//! checked against the SCRAM credentials of the metadata log, the same
//! users the Kafka listener's SASL knows) or with a client certificate the
//! listener verified; a service certificate (`grpc_service_principals`)
//! acts for clients a broker already authorized and is trusted as a super
//! user is. Requests are then authorized against the ACLs of the metadata
//! image with Kafka's `StandardAuthorizer` rules ([`crate::acl`]), and
//! denials are logged as audit lines (target `runnel::audit`).

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use parking_lot::Mutex;
use runnel_proto::common::v1::ErrorCode;
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::acl::{AuthorizerSettings, CLUSTER_NAME, Operation, ResourceType};
use crate::errors::status;
use crate::metadata::MetadataImage;
use crate::transport::{PeerInfo, ServiceGuard};

/// The gRPC metadata key of a caller's credentials (`Basic
/// base64(user:password)`, as HTTP's basic authentication).
pub const AUTHORIZATION: &str = "authorization";

/// The principal of a caller that did not sign in.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// The metadata image a process has applied, where credentials and ACLs are.
pub trait ImageSource: Send + Sync + std::fmt::Debug + 'static {
    /// `f` of the image as it is now.
    fn with_image<R>(&self, f: impl FnOnce(&MetadataImage) -> R) -> R;
}

/// A service's authentication and authorization of public gRPC calls.
#[derive(Debug)]
pub struct GrpcAuth<I> {
    inner: Arc<Inner<I>>,
}

impl<I> Clone for GrpcAuth<I> {
    fn clone(&self) -> Self {
        GrpcAuth {
            inner: Arc::clone(&self.inner),
        }
    }
}

#[derive(Debug)]
struct Inner<I> {
    /// Security off: credentials a caller sends are not looked at.
    open: bool,
    required: bool,
    authorizer: Option<AuthorizerSettings>,
    services: ServiceGuard,
    image: Arc<I>,
    /// Passwords already checked: (user, SHA-256 of the password) to the
    /// stored key they matched, so a request costs a hash, not a PBKDF2
    /// run; a changed credential has another stored key and is checked
    /// again.
    verified: Mutex<HashMap<PasswordKey, Vec<u8>>>,
}

/// A user and the SHA-256 of a password given for them.
type PasswordKey = (String, [u8; 32]);

/// Most passwords remembered as checked; past it the memory starts over.
const VERIFIED_MAX: usize = 10_000;

impl<I: ImageSource> GrpcAuth<I> {
    /// Calls authenticated when `required` (else anonymous callers are
    /// `User:ANONYMOUS`) and authorized with `authorizer` (`None`: every
    /// call is allowed); `services` names the trusted service principals;
    /// credentials and ACLs come from `image`.
    pub fn new(
        required: bool,
        authorizer: Option<AuthorizerSettings>,
        services: ServiceGuard,
        image: Arc<I>,
    ) -> GrpcAuth<I> {
        GrpcAuth {
            inner: Arc::new(Inner {
                open: false,
                required,
                authorizer,
                services,
                image,
                verified: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The authentication and authorization a service's settings ask for.
    /// The gRPC API is secured only over TLS, where every service has an
    /// identity of its own: without it the services' calls to each other
    /// would be anonymous and refused, so there an authorizer covers the
    /// Kafka listener alone (said once in the log) and a required sign-in
    /// is a settings error.
    pub fn from_settings(
        security: &crate::transport::GrpcSecurity,
        authentication_required: bool,
        authorizer: Option<AuthorizerSettings>,
        image: Arc<I>,
    ) -> Result<GrpcAuth<I>, crate::tls::TlsError> {
        if security.server.is_none() {
            if authentication_required {
                return Err(crate::tls::TlsError::Config(
                    "grpc_authentication_required needs gRPC TLS (grpc_ssl_keystore_location): services sign in to each other with their certificates".into(),
                ));
            }
            if authorizer.is_some() {
                tracing::warn!(
                    "the authorizer covers the Kafka listener only: the gRPC API is authorized once it serves TLS (grpc_ssl_keystore_location)"
                );
            }
            return Ok(GrpcAuth::open(image));
        }
        Ok(GrpcAuth::new(
            authentication_required,
            authorizer,
            security.guard.clone(),
            image,
        ))
    }

    /// No authentication, no authorization: Runnel without security.
    /// A caller's credentials are not checked either (as a cluster
    /// without security always did): a client configured for a secure
    /// cluster still works against this one.
    pub fn open(image: Arc<I>) -> GrpcAuth<I> {
        GrpcAuth {
            inner: Arc::new(Inner {
                open: true,
                required: false,
                authorizer: None,
                services: ServiceGuard::default(),
                image,
                verified: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether requests are authorized at all.
    pub fn enabled(&self) -> bool {
        self.inner.authorizer.is_some()
    }

    /// The caller of `request` (`api`: its method, for audit lines), or
    /// UNAUTHENTICATED (SASL_AUTHENTICATION_FAILED) for a wrong password or
    /// a missing sign-in where one is required.
    pub fn caller<T>(
        &self,
        request: &tonic::Request<T>,
        api: &'static str,
    ) -> Result<GrpcCaller<I>, Status> {
        self.caller_of(request.metadata(), PeerInfo::of(request), api)
    }

    /// [`GrpcAuth::caller`] from a request's parts.
    pub fn caller_of(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        peer: Option<&PeerInfo>,
        api: &'static str,
    ) -> Result<GrpcCaller<I>, Status> {
        let host = peer
            .and_then(|p| p.remote)
            .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
        let service = self.inner.services.is_service(peer);
        let credentials = metadata.get(AUTHORIZATION).filter(|_| !self.inner.open);
        let principal = match credentials {
            Some(value) => {
                let (user, password) = basic_credentials(value)
                    .ok_or_else(|| failed("malformed authorization metadata"))?;
                if !self.verify(&user, &password) {
                    metrics::counter!("runnel_grpc_authentication_failures_total").increment(1);
                    tracing::info!(target: "runnel::audit", user, %host, api, "authentication failed");
                    return Err(failed(
                        "authentication failed: invalid username or password",
                    ));
                }
                format!("User:{user}")
            }
            None => match peer.and_then(|p| p.principal.clone()) {
                Some(principal) => principal,
                None if self.inner.required => {
                    return Err(failed(
                        "this cluster requires authentication: give a user and password (--user and --password, or RUNNEL_USER and RUNNEL_PASSWORD) or a client certificate",
                    ));
                }
                None => ANONYMOUS.to_owned(),
            },
        };
        Ok(GrpcCaller {
            auth: self.clone(),
            // A service acts for clients a broker already authorized; one
            // that signs in as a user is that user.
            trusted: service && credentials.is_none(),
            principal,
            host,
            api,
        })
    }

    fn verify(&self, user: &str, password: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let key = (user.to_owned(), digest);
        let remembered = self.inner.verified.lock().get(&key).cloned();
        let credentials = self.inner.image.with_image(|image| {
            image
                .scram_credentials
                .get(user)
                .map(|c| c.values().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        });
        if let Some(stored) = remembered
            && credentials
                .iter()
                .any(|c| c.stored_key == stored.as_slice())
        {
            return true;
        }
        if credentials.is_empty() {
            // As long as checking a known user's password, so the time of
            // a refusal does not tell whether the user exists.
            let _ = crate::scram::Mechanism::ScramSha512.salted_password(
                password.as_bytes(),
                b"runnel-unknown-user",
                crate::scram::MIN_ITERATIONS,
            );
            return false;
        }
        let Some(matched) = credentials.iter().find(|c| c.verify(password)) else {
            return false;
        };
        let mut verified = self.inner.verified.lock();
        if verified.len() >= VERIFIED_MAX {
            verified.clear();
        }
        verified.insert(key, matched.stored_key.clone());
        true
    }
}

fn failed(message: &str) -> Status {
    status(ErrorCode::SaslAuthenticationFailed, message)
}

/// The user and password of an `authorization: Basic ...` value.
fn basic_credentials(
    value: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
) -> Option<(String, String)> {
    let encoded = value.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The `authorization` value that signs `user` in with `password`.
pub fn basic_authorization(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// One request's caller: who, from where, through which method.
#[derive(Debug, Clone)]
pub struct GrpcCaller<I> {
    auth: GrpcAuth<I>,
    /// A service principal: allowed everything, as a super user.
    trusted: bool,
    principal: String,
    host: String,
    api: &'static str,
}

impl<I: ImageSource> GrpcCaller<I> {
    /// The caller's principal (`User:alice`).
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// Whether an authorizer decides at all.
    pub fn enabled(&self) -> bool {
        self.auth.enabled() && !self.trusted
    }

    /// Whether the caller may do `operation` on a resource, logging a denial.
    pub fn allowed(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        self.decide(operation, resource_type, name, true)
    }

    /// The same without an audit line, to filter what a listing shows.
    pub fn sees(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        self.decide(operation, resource_type, name, false)
    }

    /// Whether the caller may do `operation` on some resource of the type.
    pub fn allowed_on_any(&self, operation: Operation, resource_type: ResourceType) -> bool {
        let Some(settings) = self.settings() else {
            return true;
        };
        self.auth.inner.image.with_image(|image| {
            image.acls.authorize_any(
                settings,
                &self.principal,
                &self.host,
                operation,
                resource_type,
            )
        })
    }

    /// `allowed`, or PERMISSION_DENIED with the resource type's
    /// authorization error (TOPIC_AUTHORIZATION_FAILED, ...).
    pub fn check(
        &self,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> Result<(), Status> {
        if self.allowed(operation, resource_type, name) {
            Ok(())
        } else {
            Err(denied(&self.principal, operation, resource_type, name))
        }
    }

    /// `check` on the cluster resource.
    pub fn check_cluster(&self, operation: Operation) -> Result<(), Status> {
        self.check(operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    fn settings(&self) -> Option<&AuthorizerSettings> {
        if self.trusted {
            return None;
        }
        self.auth.inner.authorizer.as_ref()
    }

    fn decide(
        &self,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
        audit: bool,
    ) -> bool {
        let Some(settings) = self.settings() else {
            return true;
        };
        let allowed = self.auth.inner.image.with_image(|image| {
            image.acls.authorize(
                settings,
                &self.principal,
                &self.host,
                operation,
                resource_type,
                name,
            )
        });
        if !allowed {
            metrics::counter!("runnel_grpc_authorization_denied_total", "api" => self.api)
                .increment(1);
            if audit {
                audit_denial(
                    &self.principal,
                    &self.host,
                    operation,
                    resource_type,
                    name,
                    self.api,
                );
            }
        }
        allowed
    }
}

/// The audit line of a denied request (target `runnel::audit`), the same
/// for the Kafka listener and the gRPC API.
pub fn audit_denial(
    principal: &str,
    host: &str,
    operation: Operation,
    resource_type: ResourceType,
    name: &str,
    api: &str,
) {
    tracing::info!(
        target: "runnel::audit",
        principal = %principal,
        host = %host,
        operation = %operation,
        resource_type = %resource_type,
        resource = name,
        api,
        "denied"
    );
}

/// The error code of a denial on a resource of `resource_type`.
pub fn authorization_error(resource_type: ResourceType) -> ErrorCode {
    match resource_type {
        ResourceType::Topic => ErrorCode::TopicAuthorizationFailed,
        ResourceType::Group => ErrorCode::GroupAuthorizationFailed,
        ResourceType::TransactionalId => ErrorCode::TransactionalIdAuthorizationFailed,
        _ => ErrorCode::ClusterAuthorizationFailed,
    }
}

fn denied(
    principal: &str,
    operation: Operation,
    resource_type: ResourceType,
    name: &str,
) -> Status {
    status(
        authorization_error(resource_type),
        format!("{principal} is not authorized to {operation} {resource_type} {name:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{AclBinding, PatternType, Permission};
    use crate::scram::{Mechanism, ScramCredential};

    #[derive(Debug)]
    struct Image(parking_lot::RwLock<MetadataImage>);

    impl ImageSource for Image {
        fn with_image<R>(&self, f: impl FnOnce(&MetadataImage) -> R) -> R {
            f(&self.0.read())
        }
    }

    fn request(authorization: Option<&str>) -> tonic::Request<()> {
        let mut request = tonic::Request::new(());
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert(AUTHORIZATION, value.parse().unwrap());
        }
        request.extensions_mut().insert(PeerInfo {
            remote: Some("10.1.2.3:5555".parse().unwrap()),
            principal: None,
        });
        request
    }

    fn image() -> Arc<Image> {
        let mut image = MetadataImage::default();
        let credential =
            ScramCredential::new(Mechanism::ScramSha256, "alice-secret", 4096).unwrap();
        image
            .scram_credentials
            .entry("alice".into())
            .or_default()
            .insert(Mechanism::ScramSha256, credential);
        image.acls.add(AclBinding {
            resource_type: ResourceType::Topic,
            name: "orders".into(),
            pattern_type: PatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Write,
            permission: Permission::Allow,
        });
        Arc::new(Image(parking_lot::RwLock::new(image)))
    }

    #[test]
    fn passwords_are_checked_against_the_scram_credentials() {
        let image = image();
        let auth = GrpcAuth::new(
            true,
            Some(AuthorizerSettings::default()),
            ServiceGuard::default(),
            image.clone(),
        );
        let alice = auth
            .caller(
                &request(Some(&basic_authorization("alice", "alice-secret"))),
                "Produce",
            )
            .unwrap();
        assert_eq!(alice.principal(), "User:alice");
        assert!(
            alice
                .check(Operation::Write, ResourceType::Topic, "orders")
                .is_ok()
        );
        let refusal = alice
            .check(Operation::Read, ResourceType::Topic, "orders")
            .unwrap_err();
        assert_eq!(
            crate::errors::code_of(&refusal),
            ErrorCode::TopicAuthorizationFailed
        );
        // Remembered: the second sign-in is not a PBKDF2 run, and still right.
        assert!(
            auth.caller(
                &request(Some(&basic_authorization("alice", "alice-secret"))),
                "Produce"
            )
            .is_ok()
        );
        for bad in [
            basic_authorization("alice", "wrong"),
            basic_authorization("nobody", "alice-secret"),
            "Basic !!!".to_owned(),
            "Bearer x".to_owned(),
        ] {
            let err = auth.caller(&request(Some(&bad)), "Produce").unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad}");
            assert_eq!(
                crate::errors::code_of(&err),
                ErrorCode::SaslAuthenticationFailed
            );
        }
        let err = auth.caller(&request(None), "Produce").unwrap_err();
        assert!(err.message().contains("--user"), "{err:?}");

        // A changed password is checked again, not taken from memory.
        image.0.write().scram_credentials.clear();
        assert!(
            auth.caller(
                &request(Some(&basic_authorization("alice", "alice-secret"))),
                "Produce"
            )
            .is_err()
        );
    }

    #[test]
    fn without_a_requirement_anonymous_callers_are_anonymous() {
        let auth = GrpcAuth::new(
            false,
            Some(AuthorizerSettings::default()),
            ServiceGuard::default(),
            image(),
        );
        let anonymous = auth.caller(&request(None), "Metadata").unwrap();
        assert_eq!(anonymous.principal(), ANONYMOUS);
        assert!(!anonymous.sees(Operation::Describe, ResourceType::Topic, "orders"));
        let open = GrpcAuth::open(image());
        assert!(open.caller(&request(None), "Metadata").unwrap().allowed(
            Operation::Delete,
            ResourceType::Topic,
            "orders"
        ));
        // Credentials are not looked at without security.
        let wrong = basic_authorization("alice", "wrong");
        assert_eq!(
            open.caller(&request(Some(&wrong)), "Metadata")
                .unwrap()
                .principal(),
            ANONYMOUS
        );
    }
}
