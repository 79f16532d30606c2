//! `runnel acls ...`: ACL bindings, in the spirit of Kafka's
//! `kafka-acls.sh --add|--list|--remove` (the same principals, hosts,
//! operations, resources and pattern types; `--producer` and `--consumer`
//! as its convenience sets).

use anyhow::{Context, bail};
use runnel_client::{
    AclBinding, AclFilter, AclOperation, AclPatternType, AclPermission, AclResourceType, Admin,
    ClientConfig,
};

use crate::outln;

/// The resources a command names.
#[derive(Debug, clap::Args)]
pub struct Resources {
    /// A topic (or with --resource-pattern-type prefixed, a prefix); repeatable.
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// A consumer group (or prefix); repeatable.
    #[arg(long = "group")]
    groups: Vec<String>,
    /// A transactional id (or prefix); repeatable.
    #[arg(long = "transactional-id")]
    transactional_ids: Vec<String>,
    /// The cluster itself (for CREATE, ALTER, DESCRIBE, IDEMPOTENT_WRITE...).
    #[arg(long)]
    cluster: bool,
}

impl Resources {
    fn list(&self) -> Vec<(AclResourceType, String)> {
        let named = |t: AclResourceType, names: &[String]| {
            names
                .iter()
                .map(move |n| (t, n.clone()))
                .collect::<Vec<_>>()
        };
        let mut all = named(AclResourceType::Topic, &self.topics);
        all.extend(named(AclResourceType::Group, &self.groups));
        all.extend(named(
            AclResourceType::TransactionalId,
            &self.transactional_ids,
        ));
        if self.cluster {
            all.push((
                AclResourceType::Cluster,
                runnel_common::acl::CLUSTER_NAME.to_owned(),
            ));
        }
        all
    }
}

/// `runnel acls` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Add bindings: each principal gets each operation on each resource.
    Add {
        /// Principals to allow (`User:alice`, `User:*`); repeatable.
        #[arg(long = "allow-principal")]
        allow: Vec<String>,
        /// Principals to deny; repeatable.
        #[arg(long = "deny-principal")]
        deny: Vec<String>,
        /// The client address the bindings apply to (default: any).
        #[arg(long, default_value = "*")]
        host: String,
        /// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION,
        /// DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE or ALL; repeatable.
        #[arg(long = "operation")]
        operations: Vec<String>,
        /// A producer's set: WRITE, DESCRIBE and CREATE on the topics
        /// (and WRITE, DESCRIBE on the transactional ids).
        #[arg(long)]
        producer: bool,
        /// A consumer's set: READ and DESCRIBE on the topics, READ on the groups.
        #[arg(long)]
        consumer: bool,
        #[command(flatten)]
        resources: Resources,
        /// literal (the name itself, `*` for all) or prefixed.
        #[arg(long, default_value = "literal")]
        resource_pattern_type: String,
    },
    /// List bindings (all, or those on the named resources or of a principal).
    List {
        /// Only this principal's.
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        resources: Resources,
        /// any, match (every binding that applies to the named resources),
        /// literal or prefixed.
        #[arg(long, default_value = "any")]
        resource_pattern_type: String,
    },
    /// Remove bindings: those on the named resources, of a principal or
    /// operation (at least one of them, or --all).
    Remove {
        /// Only this principal's.
        #[arg(long)]
        principal: Option<String>,
        /// Only this operation's.
        #[arg(long)]
        operation: Option<String>,
        #[command(flatten)]
        resources: Resources,
        /// any, literal or prefixed.
        #[arg(long, default_value = "any")]
        resource_pattern_type: String,
        /// Remove every binding in the cluster.
        #[arg(long)]
        all: bool,
    },
}

fn operation(name: &str) -> anyhow::Result<AclOperation> {
    AclOperation::from_name(name)
        .filter(|o| *o != AclOperation::Any)
        .with_context(|| format!("unknown operation {name:?}"))
}

fn pattern(name: &str) -> anyhow::Result<AclPatternType> {
    AclPatternType::from_name(name).with_context(|| {
        format!("unknown resource pattern type {name:?} (literal, prefixed, any, match)")
    })
}

/// The filters selecting what a list or remove names: one per resource,
/// or one for everything.
fn filters(
    principal: Option<String>,
    operation: Option<AclOperation>,
    resources: &Resources,
    pattern_type: AclPatternType,
) -> Vec<AclFilter> {
    let base = AclFilter {
        principal,
        operation,
        pattern_type: Some(pattern_type),
        ..AclFilter::default()
    };
    let named = resources.list();
    if named.is_empty() {
        return vec![base];
    }
    named
        .into_iter()
        .map(|(t, name)| AclFilter {
            resource_type: Some(t),
            name: Some(name),
            ..base.clone()
        })
        .collect()
}

fn print(bindings: &[AclBinding]) -> anyhow::Result<()> {
    outln!(
        "{:<24}  {:<15}  {:<10}  {:<16}  {:<16}  {:<9}  NAME",
        "PRINCIPAL",
        "HOST",
        "PERMISSION",
        "OPERATION",
        "RESOURCE_TYPE",
        "PATTERN"
    )?;
    for b in bindings {
        outln!(
            "{:<24}  {:<15}  {:<10}  {:<16}  {:<16}  {:<9}  {}",
            b.principal,
            b.host,
            b.permission.name(),
            b.operation.name(),
            b.resource_type.name(),
            b.pattern_type.name(),
            b.name
        )?;
    }
    Ok(())
}

/// Runs an acls subcommand.
pub async fn run(client: ClientConfig, cmd: Command) -> anyhow::Result<()> {
    let admin = Admin::new(client);
    match cmd {
        Command::Add {
            allow,
            deny,
            host,
            operations,
            producer,
            consumer,
            resources,
            resource_pattern_type,
        } => {
            let pattern_type = pattern(&resource_pattern_type)?;
            if !matches!(
                pattern_type,
                AclPatternType::Literal | AclPatternType::Prefixed
            ) {
                bail!("bindings are literal or prefixed");
            }
            if allow.is_empty() && deny.is_empty() {
                bail!("name who with --allow-principal or --deny-principal");
            }
            let named = resources.list();
            if named.is_empty() {
                bail!("name a resource: --topic, --group, --transactional-id or --cluster");
            }
            let ops: Vec<AclOperation> = operations
                .iter()
                .map(|o| operation(o))
                .collect::<anyhow::Result<_>>()?;
            if ops.is_empty() && !producer && !consumer {
                bail!("name what with --operation, --producer or --consumer");
            }
            let mut wanted: Vec<(AclResourceType, String, AclOperation)> = Vec::new();
            for (t, name) in &named {
                for op in &ops {
                    wanted.push((*t, name.clone(), *op));
                }
                let mut add = |op| wanted.push((*t, name.clone(), op));
                match t {
                    AclResourceType::Topic if producer => {
                        add(AclOperation::Write);
                        add(AclOperation::Describe);
                        add(AclOperation::Create);
                    }
                    AclResourceType::TransactionalId if producer => {
                        add(AclOperation::Write);
                        add(AclOperation::Describe);
                    }
                    _ => {}
                }
                match t {
                    AclResourceType::Topic if consumer => {
                        add(AclOperation::Read);
                        add(AclOperation::Describe);
                    }
                    AclResourceType::Group if consumer => add(AclOperation::Read),
                    _ => {}
                }
            }
            let principals = allow
                .iter()
                .map(|p| (p, AclPermission::Allow))
                .chain(deny.iter().map(|p| (p, AclPermission::Deny)));
            let mut bindings = Vec::new();
            for (principal, permission) in principals {
                for (t, name, op) in &wanted {
                    let b = AclBinding {
                        resource_type: *t,
                        name: name.clone(),
                        pattern_type,
                        principal: principal.clone(),
                        host: host.clone(),
                        operation: *op,
                        permission,
                    };
                    b.validate()?;
                    if !bindings.contains(&b) {
                        bindings.push(b);
                    }
                }
            }
            admin
                .create_acls(&bindings)
                .await
                .context("cannot create the ACLs")?;
            outln!("added {} ACL binding(s)", bindings.len())?;
            print(&bindings)?;
        }
        Command::List {
            principal,
            resources,
            resource_pattern_type,
        } => {
            let mut found = Vec::new();
            for f in filters(
                principal,
                None,
                &resources,
                pattern(&resource_pattern_type)?,
            ) {
                for b in admin.describe_acls(&f).await.context("cannot list ACLs")? {
                    if !found.contains(&b) {
                        found.push(b);
                    }
                }
            }
            print(&found)?;
        }
        Command::Remove {
            principal,
            operation: op,
            resources,
            resource_pattern_type,
            all,
        } => {
            if !all && principal.is_none() && op.is_none() && resources.list().is_empty() {
                bail!(
                    "name what to remove (--principal, --operation, --topic, --group, --transactional-id, --cluster), or --all"
                );
            }
            let op = op.as_deref().map(operation).transpose()?;
            let mut removed = Vec::new();
            for f in filters(principal, op, &resources, pattern(&resource_pattern_type)?) {
                removed.extend(admin.delete_acls(&f).await.context("cannot remove ACLs")?);
            }
            outln!("removed {} ACL binding(s)", removed.len())?;
            print(&removed)?;
        }
    }
    Ok(())
}
