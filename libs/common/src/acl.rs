//! Kafka's ACL model and its authorization rules (the `StandardAuthorizer`
//! semantics), pure and without I/O, so the brokers and the controller
//! decide alike from the same bindings.
//!
//! A binding allows or denies one principal (`User:alice`, or `User:*`), from
//! one host (or `*`), one operation on the resources one pattern names: a
//! literal name (`*` for all), or a prefix. A request is allowed for a
//! super user; else denied if any matching binding denies it; else allowed
//! if a matching binding allows the operation or one implying it (READ,
//! WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies
//! DESCRIBE_CONFIGS); else, when no binding names the resource at all,
//! `allow.everyone.if.no.acl.found` decides.

use std::collections::{BTreeMap, BTreeSet};

/// Kafka's resource types (wire codes), `Any` only in filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// 1, filters only.
    Any,
    /// 2.
    Topic,
    /// 3.
    Group,
    /// 4, its one resource named `kafka-cluster`.
    Cluster,
    /// 5.
    TransactionalId,
    /// 6.
    DelegationToken,
    /// 7.
    User,
}

/// Kafka's operations (wire codes), `Any` only in filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// 1, filters only.
    Any,
    /// 2: every operation.
    All,
    /// 3.
    Read,
    /// 4.
    Write,
    /// 5.
    Create,
    /// 6.
    Delete,
    /// 7.
    Alter,
    /// 8.
    Describe,
    /// 9.
    ClusterAction,
    /// 10.
    DescribeConfigs,
    /// 11.
    AlterConfigs,
    /// 12.
    IdempotentWrite,
    /// 13.
    CreateTokens,
    /// 14.
    DescribeTokens,
}

/// Allow or deny (wire codes 3 and 2), `Any` only in filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// 1, filters only.
    Any,
    /// 2.
    Deny,
    /// 3.
    Allow,
}

/// How a binding names resources (wire codes 3 and 4); `Any` and `Match`
/// only in filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PatternType {
    /// 1: filters only, bindings of either type.
    Any,
    /// 2: filters only, bindings that would apply to the named resource.
    Match,
    /// 3: the name itself, or `*` for every resource of the type.
    Literal,
    /// 4: every resource whose name starts with it.
    Prefixed,
}

macro_rules! codes {
    ($ty:ident { $($variant:ident = $code:literal, $name:literal;)* }) => {
        impl $ty {
            /// Kafka's wire code.
            pub fn code(self) -> i8 {
                match self { $($ty::$variant => $code,)* }
            }
            /// The value of a wire code.
            pub fn from_code(code: i8) -> Option<$ty> {
                match code { $($code => Some($ty::$variant),)* _ => None }
            }
            /// Kafka's name for it (`TOPIC`, `READ`).
            pub fn name(self) -> &'static str {
                match self { $($ty::$variant => $name,)* }
            }
            /// The value Kafka names `name` (any case, `-` or `_`).
            pub fn from_name(name: &str) -> Option<$ty> {
                let name = name.to_ascii_uppercase().replace('-', "_");
                match name.as_str() { $($name => Some($ty::$variant),)* _ => None }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

codes!(ResourceType {
    Any = 1, "ANY";
    Topic = 2, "TOPIC";
    Group = 3, "GROUP";
    Cluster = 4, "CLUSTER";
    TransactionalId = 5, "TRANSACTIONAL_ID";
    DelegationToken = 6, "DELEGATION_TOKEN";
    User = 7, "USER";
});

codes!(Operation {
    Any = 1, "ANY";
    All = 2, "ALL";
    Read = 3, "READ";
    Write = 4, "WRITE";
    Create = 5, "CREATE";
    Delete = 6, "DELETE";
    Alter = 7, "ALTER";
    Describe = 8, "DESCRIBE";
    ClusterAction = 9, "CLUSTER_ACTION";
    DescribeConfigs = 10, "DESCRIBE_CONFIGS";
    AlterConfigs = 11, "ALTER_CONFIGS";
    IdempotentWrite = 12, "IDEMPOTENT_WRITE";
    CreateTokens = 13, "CREATE_TOKENS";
    DescribeTokens = 14, "DESCRIBE_TOKENS";
});

codes!(Permission {
    Any = 1, "ANY";
    Deny = 2, "DENY";
    Allow = 3, "ALLOW";
});

codes!(PatternType {
    Any = 1, "ANY";
    Match = 2, "MATCH";
    Literal = 3, "LITERAL";
    Prefixed = 4, "PREFIXED";
});

/// The one cluster resource's name.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The literal name and the principal or host that stand for all.
pub const WILDCARD: &str = "*";

/// One ACL: who may or may not do what, from where, on which resources.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclBinding {
    /// The resources' type (never `Any`).
    pub resource_type: ResourceType,
    /// The name, prefix or `*`.
    pub name: String,
    /// Literal or prefixed.
    pub pattern_type: PatternType,
    /// `User:alice`, or `User:*` for everyone.
    pub principal: String,
    /// The client's IP address, or `*`.
    pub host: String,
    /// What (never `Any`).
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
}

/// Why a binding is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ACL: {0}")]
pub struct InvalidAcl(pub String);

impl AclBinding {
    /// Checks it as Kafka's CreateAcls does.
    pub fn validate(&self) -> Result<(), InvalidAcl> {
        let bad = |s: &str| Err(InvalidAcl(s.to_owned()));
        if self.resource_type == ResourceType::Any {
            return bad("the resource type must not be ANY");
        }
        if !matches!(
            self.pattern_type,
            PatternType::Literal | PatternType::Prefixed
        ) {
            return bad("the pattern type must be LITERAL or PREFIXED");
        }
        if matches!(self.operation, Operation::Any) {
            return bad("the operation must not be ANY");
        }
        if matches!(self.permission, Permission::Any) {
            return bad("the permission must be ALLOW or DENY");
        }
        if self.name.is_empty() {
            return bad("the resource name must not be empty");
        }
        if self.pattern_type == PatternType::Prefixed && self.name == WILDCARD {
            return bad("a PREFIXED pattern of '*' is not allowed: use LITERAL '*'");
        }
        if self.resource_type == ResourceType::Cluster && self.name != CLUSTER_NAME {
            return bad("the cluster resource is named kafka-cluster");
        }
        match self.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => return bad("the principal must be TYPE:NAME, e.g. User:alice"),
        }
        if self.host.is_empty() {
            return bad("the host must be an address or '*'");
        }
        Ok(())
    }

    /// Whether this binding's pattern covers resource `name` of its type.
    fn covers(&self, name: &str) -> bool {
        match self.pattern_type {
            PatternType::Literal => self.name == name || self.name == WILDCARD,
            PatternType::Prefixed => name.starts_with(&self.name),
            PatternType::Any | PatternType::Match => false,
        }
    }

    /// Whether it applies to `principal` from `host`.
    fn applies_to(&self, principal: &str, host: &str) -> bool {
        let all_of_kind = principal
            .split_once(':')
            .is_some_and(|(kind, _)| self.principal == format!("{kind}:{WILDCARD}"));
        (self.principal == principal || all_of_kind) && (self.host == WILDCARD || self.host == host)
    }
}

/// What DescribeAcls and DeleteAcls select: `None` matches anything, and
/// `Any` too.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AclFilter {
    /// The resource type, or `None`/`Any`.
    pub resource_type: Option<ResourceType>,
    /// The resource name (with `Match`: the resource the binding must apply to).
    pub name: Option<String>,
    /// How `name` is compared.
    pub pattern_type: Option<PatternType>,
    /// The principal.
    pub principal: Option<String>,
    /// The host.
    pub host: Option<String>,
    /// The operation.
    pub operation: Option<Operation>,
    /// The permission.
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// Whether `acl` is selected.
    pub fn matches(&self, acl: &AclBinding) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        let resource_type = self
            .resource_type
            .is_none_or(|t| t == ResourceType::Any || t == acl.resource_type);
        let pattern = match (
            self.pattern_type.unwrap_or(PatternType::Literal),
            &self.name,
        ) {
            (_, None) => self.pattern_type.is_none_or(|p| {
                matches!(p, PatternType::Any | PatternType::Match) || p == acl.pattern_type
            }),
            (PatternType::Any, Some(name)) => acl.name == *name,
            (PatternType::Match, Some(name)) => acl.covers(name),
            (p, Some(name)) => p == acl.pattern_type && acl.name == *name,
        };
        resource_type
            && pattern
            && eq(&self.principal, &acl.principal)
            && eq(&self.host, &acl.host)
            && self
                .operation
                .is_none_or(|o| o == Operation::Any || o == acl.operation)
            && self
                .permission
                .is_none_or(|p| p == Permission::Any || p == acl.permission)
    }
}

/// An authorizer's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerSettings {
    /// `super.users`: principals allowed everything.
    pub super_users: BTreeSet<String>,
    /// `allow.everyone.if.no.acl.found`.
    pub allow_everyone_if_no_acl_found: bool,
}

impl AuthorizerSettings {
    /// Parses Kafka's `super.users` (`User:admin;User:ops`).
    pub fn parse_super_users(list: &str) -> BTreeSet<String> {
        parse_principals(list)
    }

    /// The settings of a service's `authorizer_enabled`, `super_users` and
    /// `allow_everyone_if_no_acl_found`; `None` without an authorizer.
    pub fn from_config(
        enabled: bool,
        super_users: &str,
        allow_everyone_if_no_acl_found: bool,
    ) -> Option<AuthorizerSettings> {
        enabled.then(|| AuthorizerSettings {
            super_users: parse_principals(super_users),
            allow_everyone_if_no_acl_found,
        })
    }
}

/// A `;`-separated list of principals (`User:admin;User:ops`), as Kafka
/// writes `super.users`.
pub fn parse_principals(list: &str) -> BTreeSet<String> {
    list.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The bindings in force, indexed for authorization.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acls {
    /// Literal bindings by resource type and name (`*` included).
    literal: BTreeMap<(ResourceType, String), Vec<AclBinding>>,
    /// Prefixed bindings by resource type and prefix.
    prefixed: BTreeMap<(ResourceType, String), Vec<AclBinding>>,
}

impl Acls {
    /// Adds a binding (a second identical one changes nothing).
    pub fn add(&mut self, acl: AclBinding) {
        let key = (acl.resource_type, acl.name.clone());
        let list = match acl.pattern_type {
            PatternType::Prefixed => self.prefixed.entry(key).or_default(),
            _ => self.literal.entry(key).or_default(),
        };
        if !list.contains(&acl) {
            list.push(acl);
        }
    }

    /// Whether this very binding is in force.
    pub fn contains(&self, acl: &AclBinding) -> bool {
        let map = match acl.pattern_type {
            PatternType::Prefixed => &self.prefixed,
            _ => &self.literal,
        };
        map.get(&(acl.resource_type, acl.name.clone()))
            .is_some_and(|list| list.contains(acl))
    }

    /// Removes a binding; whether it was there.
    pub fn remove(&mut self, acl: &AclBinding) -> bool {
        let key = (acl.resource_type, acl.name.clone());
        let map = match acl.pattern_type {
            PatternType::Prefixed => &mut self.prefixed,
            _ => &mut self.literal,
        };
        let Some(list) = map.get_mut(&key) else {
            return false;
        };
        let before = list.len();
        list.retain(|a| a != acl);
        let removed = list.len() < before;
        if list.is_empty() {
            map.remove(&key);
        }
        removed
    }

    /// Every binding, in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = &AclBinding> {
        self.literal
            .values()
            .chain(self.prefixed.values())
            .flatten()
    }

    /// How many bindings there are.
    pub fn len(&self) -> usize {
        self.literal
            .values()
            .chain(self.prefixed.values())
            .map(Vec::len)
            .sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.prefixed.is_empty()
    }

    /// The bindings whose pattern covers resource `name` of `resource_type`.
    fn covering<'a>(
        &'a self,
        resource_type: ResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = &'a AclBinding> + 'a {
        let literal = [name, WILDCARD]
            .into_iter()
            .filter_map(move |n| self.literal.get(&(resource_type, n.to_owned())))
            .flatten();
        // Prefixes of `name` are at most its length: look each one up.
        let prefixed = name
            .char_indices()
            .map(|(i, c)| &name[..i + c.len_utf8()])
            .filter_map(move |p| self.prefixed.get(&(resource_type, p.to_owned())))
            .flatten();
        literal.chain(prefixed)
    }

    /// Whether `principal` connecting from `host` may do `operation` on
    /// resource `name` of `resource_type`.
    pub fn authorize(
        &self,
        settings: &AuthorizerSettings,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if settings.super_users.contains(principal) {
            return true;
        }
        let mut any = false;
        let mut allowed = false;
        for acl in self.covering(resource_type, name) {
            any = true;
            if !acl.applies_to(principal, host) {
                continue;
            }
            match acl.permission {
                Permission::Deny
                    if acl.operation == operation || acl.operation == Operation::All =>
                {
                    return false;
                }
                Permission::Allow if implies(acl.operation, operation) => allowed = true,
                _ => {}
            }
        }
        allowed || (!any && settings.allow_everyone_if_no_acl_found)
    }
}

impl Acls {
    /// Whether `principal` from `host` may do `operation` on at least one
    /// resource of `resource_type` (Kafka's `authorizeByResourceType`: an
    /// idempotent producer needs WRITE on some topic). A DENY on every
    /// resource of the type (literal `*`) outweighs any ALLOW.
    pub fn authorize_any(
        &self,
        settings: &AuthorizerSettings,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        if settings.super_users.contains(principal) {
            return true;
        }
        let of_type = || {
            self.iter()
                .filter(move |a| a.resource_type == resource_type && a.applies_to(principal, host))
        };
        let denied_everywhere = of_type().any(|a| {
            a.permission == Permission::Deny
                && a.pattern_type == PatternType::Literal
                && a.name == WILDCARD
                && (a.operation == operation || a.operation == Operation::All)
        });
        if denied_everywhere {
            return false;
        }
        let allowed =
            of_type().any(|a| a.permission == Permission::Allow && implies(a.operation, operation));
        allowed
            || (settings.allow_everyone_if_no_acl_found
                && !self.iter().any(|a| a.resource_type == resource_type))
    }
}

/// Whether an ALLOW for `granted` allows `wanted` (Kafka's implied operations).
fn implies(granted: Operation, wanted: Operation) -> bool {
    use Operation as O;
    granted == wanted
        || granted == O::All
        || (wanted == O::Describe && matches!(granted, O::Read | O::Write | O::Delete | O::Alter))
        || (wanted == O::DescribeConfigs && granted == O::AlterConfigs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorize_any_needs_an_allow_somewhere_and_no_deny_everywhere() {
        let settings = AuthorizerSettings::default();
        let mut acls = Acls::default();
        let bob = "User:bob";
        assert!(!acls.authorize_any(&settings, bob, "h", Operation::Write, ResourceType::Topic));
        acls.add(acl(
            ResourceType::Topic,
            "logs-",
            PatternType::Prefixed,
            bob,
            Operation::Write,
            Permission::Allow,
        ));
        assert!(acls.authorize_any(&settings, bob, "h", Operation::Write, ResourceType::Topic));
        assert!(acls.authorize_any(
            &settings,
            bob,
            "h",
            Operation::Describe,
            ResourceType::Topic
        ));
        assert!(!acls.authorize_any(&settings, bob, "h", Operation::Read, ResourceType::Topic));
        assert!(!acls.authorize_any(
            &settings,
            "User:eve",
            "h",
            Operation::Write,
            ResourceType::Topic
        ));
        acls.add(acl(
            ResourceType::Topic,
            WILDCARD,
            PatternType::Literal,
            bob,
            Operation::All,
            Permission::Deny,
        ));
        assert!(!acls.authorize_any(&settings, bob, "h", Operation::Write, ResourceType::Topic));
    }

    fn acl(
        resource_type: ResourceType,
        name: &str,
        pattern_type: PatternType,
        principal: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type,
            name: name.into(),
            pattern_type,
            principal: principal.into(),
            host: WILDCARD.into(),
            operation,
            permission,
        }
    }

    use Operation as O;
    use PatternType as P;
    use Permission as A;
    use ResourceType as R;

    #[test]
    fn kafkas_rules() {
        let mut acls = Acls::default();
        acls.add(acl(
            R::Topic,
            "orders",
            P::Literal,
            "User:alice",
            O::Read,
            A::Allow,
        ));
        acls.add(acl(
            R::Topic,
            "pay-",
            P::Prefixed,
            "User:bob",
            O::Write,
            A::Allow,
        ));
        acls.add(acl(
            R::Topic,
            "pay-secret",
            P::Literal,
            "User:bob",
            O::All,
            A::Deny,
        ));
        acls.add(acl(
            R::Topic,
            "*",
            P::Literal,
            "User:*",
            O::Describe,
            A::Allow,
        ));
        acls.add(acl(
            R::Group,
            "g",
            P::Literal,
            "User:alice",
            O::Read,
            A::Allow,
        ));
        let strict = AuthorizerSettings {
            super_users: AuthorizerSettings::parse_super_users("User:admin; User:ops"),
            allow_everyone_if_no_acl_found: false,
        };
        let ok = |p: &str, op, t, n: &str| acls.authorize(&strict, p, "10.0.0.1", op, t, n);
        assert!(ok("User:alice", O::Read, R::Topic, "orders"));
        assert!(!ok("User:alice", O::Write, R::Topic, "orders"));
        assert!(
            ok("User:alice", O::Describe, R::Topic, "orders"),
            "READ implies DESCRIBE"
        );
        assert!(
            ok("User:carol", O::Describe, R::Topic, "anything"),
            "the wildcards"
        );
        assert!(!ok("User:carol", O::Read, R::Topic, "orders"));
        assert!(ok("User:bob", O::Write, R::Topic, "pay-in"), "prefixed");
        assert!(
            !ok("User:bob", O::Write, R::Topic, "pay-secret"),
            "deny wins"
        );
        assert!(!ok("User:bob", O::Write, R::Topic, "pa"));
        assert!(
            ok("User:admin", O::Delete, R::Cluster, CLUSTER_NAME),
            "super users"
        );
        assert!(
            !ok("User:alice", O::Read, R::Group, "other"),
            "no ACL, not allowed"
        );
        let open = AuthorizerSettings {
            allow_everyone_if_no_acl_found: true,
            ..strict.clone()
        };
        assert!(acls.authorize(&open, "User:x", "h", O::Read, R::Group, "other"));
        assert!(
            !acls.authorize(&open, "User:x", "h", O::Read, R::Group, "g"),
            "a resource with ACLs is not open"
        );
        let mut hosted = Acls::default();
        let mut from = acl(R::Topic, "t", P::Literal, "User:alice", O::Read, A::Allow);
        from.host = "10.0.0.9".into();
        hosted.add(from.clone());
        assert!(hosted.authorize(&strict, "User:alice", "10.0.0.9", O::Read, R::Topic, "t"));
        assert!(!hosted.authorize(&strict, "User:alice", "10.0.0.1", O::Read, R::Topic, "t"));
        let mut elsewhere = from.clone();
        elsewhere.pattern_type = P::Prefixed;
        assert!(hosted.contains(&from) && !hosted.contains(&elsewhere));
        assert!(hosted.remove(&from) && !hosted.remove(&from) && hosted.is_empty());
        assert!(!hosted.contains(&from));
        assert_eq!(acls.len(), 5);
    }

    #[test]
    fn filters_select_like_describe_and_delete_acls() {
        let a = acl(
            R::Topic,
            "pay-",
            P::Prefixed,
            "User:bob",
            O::Write,
            A::Allow,
        );
        let all = AclFilter::default();
        assert!(all.matches(&a));
        let matching = AclFilter {
            resource_type: Some(R::Topic),
            name: Some("pay-in".into()),
            pattern_type: Some(P::Match),
            ..AclFilter::default()
        };
        assert!(matching.matches(&a));
        let literal = AclFilter {
            name: Some("pay-in".into()),
            ..AclFilter::default()
        };
        assert!(!literal.matches(&a), "no pattern type: literal");
        let exact = AclFilter {
            name: Some("pay-".into()),
            pattern_type: Some(P::Prefixed),
            principal: Some("User:bob".into()),
            operation: Some(O::Any),
            permission: Some(A::Allow),
            ..AclFilter::default()
        };
        assert!(exact.matches(&a));
        assert!(
            !AclFilter {
                permission: Some(A::Deny),
                ..exact
            }
            .matches(&a)
        );
    }

    #[test]
    fn invalid_bindings_are_refused() {
        let good = acl(R::Topic, "t", P::Literal, "User:alice", O::Read, A::Allow);
        assert_eq!(good.validate(), Ok(()));
        for bad in [
            AclBinding {
                resource_type: R::Any,
                ..good.clone()
            },
            AclBinding {
                pattern_type: P::Match,
                ..good.clone()
            },
            AclBinding {
                operation: O::Any,
                ..good.clone()
            },
            AclBinding {
                permission: A::Any,
                ..good.clone()
            },
            AclBinding {
                name: String::new(),
                ..good.clone()
            },
            AclBinding {
                principal: "alice".into(),
                ..good.clone()
            },
            AclBinding {
                name: "*".into(),
                pattern_type: P::Prefixed,
                ..good.clone()
            },
            AclBinding {
                resource_type: R::Cluster,
                ..good.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert_eq!(
            Operation::from_name("describe-configs"),
            Some(O::DescribeConfigs)
        );
        assert_eq!(ResourceType::from_code(5), Some(R::TransactionalId));
        assert_eq!(Permission::Allow.code(), 3);
    }
}
