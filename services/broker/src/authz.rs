//! The broker's authorizer: Kafka's `StandardAuthorizer` over the ACL
//! bindings of the metadata image (`runnel_common::acl` decides), so a
//! binding created at the controller is enforced here as soon as this
//! broker applies its record. Denials are logged as audit lines (target
//! `runnel::audit`), as Kafka's `kafka.authorizer.logger` does.

use std::sync::Arc;

use runnel_common::acl::{AuthorizerSettings, CLUSTER_NAME, Operation, ResourceType};
use runnel_kafka::kafka_protocol::messages::ApiKey;
use runnel_kafka::server::Session;

use crate::errors::Failure;
use crate::metadata::MetadataCache;

/// Decides whether callers may do what they ask.
#[derive(Debug, Clone)]
pub struct Authorizer {
    /// `None`: no authorizer configured, everything is allowed (Kafka
    /// without `authorizer.class.name`).
    settings: Option<Arc<AuthorizerSettings>>,
    metadata: Arc<MetadataCache>,
}

impl Authorizer {
    /// An authorizer over `metadata`'s bindings; `settings` `None` allows all.
    pub fn new(settings: Option<AuthorizerSettings>, metadata: Arc<MetadataCache>) -> Authorizer {
        Authorizer {
            settings: settings.map(Arc::new),
            metadata,
        }
    }

    /// Whether an authorizer is configured.
    pub fn enabled(&self) -> bool {
        self.settings.is_some()
    }

    /// The caller of one request (`api`: its Kafka API key, for the audit
    /// line). Costs nothing until a check needs the principal and host.
    pub fn caller<'a>(&'a self, session: &'a Session, api: i16) -> Caller<'a> {
        Caller {
            authorizer: self,
            session,
            who: std::sync::OnceLock::new(),
            api,
        }
    }
}

/// One request's caller: who, from where, through which API.
#[derive(Debug)]
pub struct Caller<'a> {
    authorizer: &'a Authorizer,
    session: &'a Session,
    /// The principal and host as the ACLs name them, made on first use.
    who: std::sync::OnceLock<(String, String)>,
    api: i16,
}

impl Caller<'_> {
    fn who(&self) -> &(String, String) {
        self.who.get_or_init(|| {
            (
                self.session.principal.to_string(),
                self.session.peer.ip().to_string(),
            )
        })
    }

    /// Whether an authorizer decides at all (without one every check
    /// passes, and hot paths skip the bookkeeping around their checks).
    pub fn enabled(&self) -> bool {
        self.authorizer.enabled()
    }

    /// Whether the caller may do `operation` on a resource, logging a denial.
    pub fn allowed(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        self.decide(operation, resource_type, name, true)
    }

    /// The same without an audit line: for filtering what a listing shows
    /// (Kafka logs those denials only at debug).
    pub fn sees(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        self.decide(operation, resource_type, name, false)
    }

    /// Whether the caller may do `operation` on some resource of
    /// `resource_type` (an idempotent producer needs WRITE on some topic).
    pub fn allowed_on_any(&self, operation: Operation, resource_type: ResourceType) -> bool {
        let Some(settings) = &self.authorizer.settings else {
            return true;
        };
        let (principal, host) = self.who();
        self.authorizer.metadata.with(|image| {
            image
                .acls
                .authorize_any(settings, principal, host, operation, resource_type)
        })
    }

    /// `allowed`, or the failure to answer with.
    pub fn check(
        &self,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> Result<(), Failure> {
        if self.allowed(operation, resource_type, name) {
            Ok(())
        } else {
            Err(Failure::unauthorized(operation, resource_type, name))
        }
    }

    /// `check` on the cluster resource.
    pub fn check_cluster(&self, operation: Operation) -> Result<(), Failure> {
        self.check(operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    fn decide(
        &self,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
        audit: bool,
    ) -> bool {
        let Some(settings) = &self.authorizer.settings else {
            return true;
        };
        let (principal, host) = self.who();
        let allowed = self.authorizer.metadata.with(|image| {
            image
                .acls
                .authorize(settings, principal, host, operation, resource_type, name)
        });
        if !allowed {
            let api = ApiKey::try_from(self.api)
                .map_or_else(|()| self.api.to_string(), |k| format!("{k:?}"));
            metrics::counter!("runnel_broker_authorization_denied_total", "api" => api.clone())
                .increment(1);
            if audit {
                runnel_common::grpc_auth::audit_denial(
                    principal,
                    host,
                    operation,
                    resource_type,
                    name,
                    &api,
                );
            }
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use runnel_common::acl::{AclBinding, PatternType, Permission};
    use runnel_common::metadata::MetadataImage;
    use runnel_kafka::auth::Principal;

    use super::*;

    /// Collects what the audit log writes.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn session(user: &str) -> Session {
        Session {
            peer: "10.0.0.7:4242".parse().expect("an address"),
            principal: Principal::user(user),
            listener: "internal",
        }
    }

    #[test]
    fn denials_are_audited_and_filtered_listings_are_not() {
        let mut image = MetadataImage::default();
        image.acls.add(AclBinding {
            resource_type: ResourceType::Topic,
            name: "orders".into(),
            pattern_type: PatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Read,
            permission: Permission::Allow,
        });
        let metadata = Arc::new(MetadataCache::of(image));
        let settings = AuthorizerSettings {
            super_users: AuthorizerSettings::parse_super_users("User:admin"),
            allow_everyone_if_no_acl_found: false,
        };
        let authorizer = Authorizer::new(Some(settings), Arc::clone(&metadata));
        let open = Authorizer::new(None, metadata);
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let (alice, admin) = (session("alice"), session("admin"));
        tracing::subscriber::with_default(subscriber, || {
            // Produce (API key 0) as alice.
            let caller = authorizer.caller(&alice, 0);
            assert!(caller.allowed(Operation::Read, ResourceType::Topic, "orders"));
            assert!(caller.allowed(Operation::Describe, ResourceType::Topic, "orders"));
            assert!(!caller.sees(Operation::Read, ResourceType::Topic, "secret"));
            assert!(matches!(
                caller.check(Operation::Write, ResourceType::Topic, "orders"),
                Err(Failure::Unauthorized { .. })
            ));
            assert!(authorizer.caller(&admin, 0).allowed(
                Operation::All,
                ResourceType::Cluster,
                CLUSTER_NAME
            ));
            assert!(
                open.caller(&alice, 0)
                    .allowed(Operation::Write, ResourceType::Topic, "x")
            );
        });
        let text = String::from_utf8(lines.0.lock().expect("lines").clone()).expect("utf-8");
        let audit: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("runnel::audit"))
            .collect();
        assert_eq!(audit.len(), 1, "one denial audited, listings not: {text}");
        for part in [
            "denied",
            "principal=User:alice",
            "host=10.0.0.7",
            "operation=WRITE",
            "resource_type=TOPIC",
            "resource=\"orders\"",
            "api=\"Produce\"",
        ] {
            assert!(audit[0].contains(part), "{part} in {}", audit[0]);
        }
    }
}
