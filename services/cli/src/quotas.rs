//! `runnel quotas ...`: client quotas, as Kafka's `kafka-configs.sh --alter
//! --add-config producer_byte_rate=... --user alice --client app` and
//! `--describe` (the same entities, quota names and describe lines).

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use runnel_client::{
    Admin, ClientConfig, QuotaEntity, QuotaEntityName, QuotaFilterComponent, QuotaKey, QuotaMatch,
};

use crate::outln;

/// The entity a command names: a user, a client id, or both, each by name
/// or as that type's default.
#[derive(Debug, clap::Args)]
pub struct Entity {
    /// The user (principal name) the quotas apply to.
    #[arg(long, value_name = "NAME", conflicts_with = "user_defaults")]
    user: Option<String>,
    /// The default user: every user without quotas of its own.
    #[arg(long)]
    user_defaults: bool,
    /// The client id the quotas apply to.
    #[arg(
        long,
        alias = "client",
        value_name = "ID",
        conflicts_with = "client_defaults"
    )]
    client_id: Option<String>,
    /// The default client id: every client id without quotas of its own.
    #[arg(long)]
    client_defaults: bool,
}

impl Entity {
    /// The user part, if named.
    fn user_part(&self) -> Option<QuotaEntityName> {
        part(self.user.as_deref(), self.user_defaults)
    }

    /// The client id part, if named.
    fn client_id_part(&self) -> Option<QuotaEntityName> {
        part(self.client_id.as_deref(), self.client_defaults)
    }
}

fn part(name: Option<&str>, default: bool) -> Option<QuotaEntityName> {
    match name {
        Some(n) => Some(QuotaEntityName::Named(n.to_owned())),
        None if default => Some(QuotaEntityName::Default),
        None => None,
    }
}

/// `runnel quotas` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Set and remove an entity's quotas (at least one of --add-config and
    /// --delete-config).
    Alter {
        #[command(flatten)]
        entity: Entity,
        /// Quotas to set: `key=value,...` of producer_byte_rate,
        /// consumer_byte_rate, request_percentage and controller_mutation_rate.
        #[arg(long, value_name = "KEY=VALUE,...")]
        add_config: Option<String>,
        /// Quotas to remove: `key,...`.
        #[arg(long, value_name = "KEY,...")]
        delete_config: Option<String>,
    },
    /// Print quotas, one line per entity: those of exactly the named entity
    /// (as kafka-configs.sh), or every entity's when none is named.
    Describe {
        #[command(flatten)]
        entity: Entity,
    },
}

/// The quota a name stands for, or an error listing the known ones.
fn key(name: &str) -> anyhow::Result<QuotaKey> {
    QuotaKey::parse(name.trim()).map_err(|_| {
        let known: Vec<&str> = QuotaKey::ALL.iter().map(|k| k.name()).collect();
        anyhow::anyhow!("unknown quota {name:?} (known: {})", known.join(", "))
    })
}

/// `key=value,...`, each checked.
fn additions(list: &str) -> anyhow::Result<Vec<(QuotaKey, f64)>> {
    let mut set = Vec::new();
    for item in list.split(',').filter(|s| !s.trim().is_empty()) {
        let Some((name, value)) = item.split_once('=') else {
            bail!("{item:?} in --add-config is not key=value");
        };
        let k = key(name)?;
        let value: f64 = value
            .trim()
            .parse()
            .with_context(|| format!("the value of {} is not a number: {value:?}", k.name()))?;
        k.validate(value)?;
        if set.iter().any(|(other, _)| *other == k) {
            bail!("{} is given twice in --add-config", k.name());
        }
        set.push((k, value));
    }
    Ok(set)
}

/// `key,...`.
fn deletions(list: &str) -> anyhow::Result<Vec<QuotaKey>> {
    let mut remove = Vec::new();
    for name in list.split(',').filter(|s| !s.trim().is_empty()) {
        let k = key(name)?;
        if !remove.contains(&k) {
            remove.push(k);
        }
    }
    Ok(remove)
}

/// How kafka-configs.sh names an entity: `user-principal 'alice', the
/// default client-id`.
fn describe_entity(entity: &QuotaEntity) -> String {
    let named = |kind: &str, name: &QuotaEntityName| match name {
        QuotaEntityName::Named(n) => format!("{kind} '{n}'"),
        QuotaEntityName::Default => format!("the default {kind}"),
    };
    let mut parts = Vec::new();
    if let Some(u) = &entity.user {
        parts.push(named("user-principal", u));
    }
    if let Some(c) = &entity.client_id {
        parts.push(named("client-id", c));
    }
    parts.join(", ")
}

/// kafka-configs.sh's describe line for one entity.
fn describe_line(entity: &QuotaEntity, values: &BTreeMap<QuotaKey, f64>) -> String {
    // `{:?}` keeps the `.0` of whole numbers, as Kafka prints its doubles.
    let values: Vec<String> = values
        .iter()
        .map(|(k, v)| format!("{}={v:?}", k.name()))
        .collect();
    format!(
        "Quota configs for {} are {}",
        describe_entity(entity),
        values.join(", ")
    )
}

/// Runs a quotas subcommand.
pub async fn run(client: ClientConfig, cmd: Command) -> anyhow::Result<()> {
    let admin = Admin::new(client);
    match cmd {
        Command::Alter {
            entity,
            add_config,
            delete_config,
        } => {
            let entity = QuotaEntity {
                user: entity.user_part(),
                client_id: entity.client_id_part(),
            };
            if entity.user.is_none() && entity.client_id.is_none() {
                bail!("name the entity: --user, --user-defaults, --client-id or --client-defaults");
            }
            let set = additions(add_config.as_deref().unwrap_or_default())?;
            let remove = deletions(delete_config.as_deref().unwrap_or_default())?;
            if set.is_empty() && remove.is_empty() {
                bail!("name the quotas to change with --add-config or --delete-config");
            }
            if let Some((k, _)) = set.iter().find(|(k, _)| remove.contains(k)) {
                bail!("{} is in both --add-config and --delete-config", k.name());
            }
            let described = describe_entity(&entity);
            admin
                .alter_client_quotas(&entity, &set, &remove)
                .await
                .with_context(|| format!("cannot alter the quotas of {described}"))?;
            outln!("updated quota configs for {described}")?;
        }
        Command::Describe { entity } => {
            let mut components = Vec::new();
            let exact = |name: QuotaEntityName| match name {
                QuotaEntityName::Named(n) => QuotaMatch::Exact(n),
                QuotaEntityName::Default => QuotaMatch::Default,
            };
            if let Some(u) = entity.user_part() {
                components.push(QuotaFilterComponent::user(exact(u)));
            }
            if let Some(c) = entity.client_id_part() {
                components.push(QuotaFilterComponent::client_id(exact(c)));
            }
            // Exactly the named entity, as kafka-configs.sh asks; nothing
            // named is every entity.
            let strict = !components.is_empty();
            let found = admin
                .describe_client_quotas(&components, strict)
                .await
                .context("cannot describe client quotas")?;
            for (entity, values) in &found {
                outln!("{}", describe_line(entity, values))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_parsed_and_checked() {
        assert_eq!(
            additions("producer_byte_rate=1048576, request_percentage=12.5").unwrap(),
            vec![
                (QuotaKey::ProducerByteRate, 1_048_576.0),
                (QuotaKey::RequestPercentage, 12.5)
            ]
        );
        let unknown = additions("producer_rate=1").unwrap_err().to_string();
        assert!(
            unknown.starts_with("unknown quota \"producer_rate\" (known: producer_byte_rate,"),
            "{unknown}"
        );
        let fraction = additions("consumer_byte_rate=1.5").unwrap_err().to_string();
        assert!(fraction.contains("whole number"), "{fraction}");
        assert!(additions("consumer_byte_rate=-1").is_err());
        assert!(additions("consumer_byte_rate").is_err());
        let nan = format!("{:#}", additions("consumer_byte_rate=lots").unwrap_err());
        assert!(nan.contains("not a number"), "{nan}");
        assert!(additions("consumer_byte_rate=1,consumer_byte_rate=2").is_err());
        assert_eq!(
            deletions("request_percentage,producer_byte_rate,request_percentage").unwrap(),
            vec![QuotaKey::RequestPercentage, QuotaKey::ProducerByteRate]
        );
        assert!(deletions("bytes").is_err());
    }

    #[test]
    fn entities_are_described_as_kafka_configs_does() {
        let mut values = BTreeMap::new();
        values.insert(QuotaKey::ConsumerByteRate, 2048.0);
        values.insert(QuotaKey::ProducerByteRate, 1024.0);
        let entity = QuotaEntity {
            user: Some(QuotaEntityName::Named("alice".into())),
            client_id: Some(QuotaEntityName::Named("app".into())),
        };
        assert_eq!(
            describe_line(&entity, &values),
            "Quota configs for user-principal 'alice', client-id 'app' are \
             producer_byte_rate=1024.0, consumer_byte_rate=2048.0"
        );
        let defaults = QuotaEntity {
            user: Some(QuotaEntityName::Default),
            client_id: Some(QuotaEntityName::Default),
        };
        assert_eq!(
            describe_entity(&defaults),
            "the default user-principal, the default client-id"
        );
        let client = QuotaEntity {
            user: None,
            client_id: Some(QuotaEntityName::Named("app".into())),
        };
        assert_eq!(describe_entity(&client), "client-id 'app'");
    }
}
