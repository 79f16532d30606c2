//! Topic configs and the dynamic broker configs (the replication
//! throttles): describing them, with where each value comes from, and
//! altering them, all or nothing. Other broker configs are static.

use std::collections::BTreeMap;

use runnel_common::metadata::{DYNAMIC_BROKER_CONFIGS, MetadataImage};
use runnel_log::{TopicConfig, TopicConfigError};
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;
use runnel_proto::metadata::v1::{
    ConfigRemoved, ConfigResource, ConfigResourceType, ConfigSet, metadata_record::Record,
};

use super::{Controller, ControllerError, Refusal, record};

pub(super) fn topic_resource(name: &str) -> ConfigResource {
    ConfigResource {
        r#type: ConfigResourceType::Topic as i32,
        name: name.to_owned(),
    }
}

/// The answer for a resource whose configs cannot be described.
fn refused_configs(resource: ConfigResource, refused: &Refusal) -> pb::ResourceConfigs {
    pb::ResourceConfigs {
        error_code: refused.code() as i32,
        error_message: refused.to_string(),
        resource: Some(resource),
        entries: Vec::new(),
    }
}

impl Controller {
    /// Every config of each resource, with where its value comes from.
    pub async fn describe_configs(
        &self,
        resources: Vec<ConfigResource>,
    ) -> Vec<pb::ResourceConfigs> {
        let image = self.shared.image();
        resources
            .into_iter()
            .map(
                |resource| match (resource.r#type(), image.topics.get(&resource.name)) {
                    (ConfigResourceType::Topic, Some(t)) => {
                        let defaults = TopicConfig::default();
                        let entries = TopicConfig::keys()
                            .into_iter()
                            .map(|key| match t.configs.get(key) {
                                Some(v) => pb::ConfigEntry {
                                    key: key.to_owned(),
                                    value: v.clone(),
                                    source: pb::ConfigSource::Topic as i32,
                                },
                                None => pb::ConfigEntry {
                                    key: key.to_owned(),
                                    value: defaults.get(key).unwrap_or_default(),
                                    source: pb::ConfigSource::Default as i32,
                                },
                            })
                            .collect();
                        pb::ResourceConfigs {
                            resource: Some(resource),
                            error_code: ErrorCode::None as i32,
                            error_message: String::new(),
                            entries,
                        }
                    }
                    (ConfigResourceType::Topic, None) => {
                        let refused = Refusal::UnknownTopic {
                            topic: resource.name.clone(),
                        };
                        refused_configs(resource, &refused)
                    }
                    (ConfigResourceType::Broker, _) if is_broker_resource(&resource.name) => {
                        pb::ResourceConfigs {
                            entries: broker_entries(&image, &resource.name),
                            resource: Some(resource),
                            error_code: ErrorCode::None as i32,
                            error_message: String::new(),
                        }
                    }
                    (ConfigResourceType::Broker, _) => {
                        let refused = Refusal::InvalidBrokerResource {
                            name: resource.name.clone(),
                        };
                        refused_configs(resource, &refused)
                    }
                    _ => refused_configs(resource, &Refusal::DescribeNonTopicConfigs),
                },
            )
            .collect()
    }

    /// Sets and removes topic config keys, all or nothing.
    pub async fn alter_configs(&self, req: pb::AlterConfigsRequest) -> Result<(), ControllerError> {
        let resource = req.resource.clone().unwrap_or_default();
        match resource.r#type() {
            ConfigResourceType::Topic => {}
            ConfigResourceType::Broker => return self.alter_broker_configs(resource, req).await,
            ConfigResourceType::Unspecified => return Err(Refusal::AlterNonTopicConfigs.into()),
        }
        let mut inner = self.lock_active().await?;
        let name = resource.name.clone();
        let t = inner
            .image
            .topics
            .get(&name)
            .ok_or_else(|| Refusal::UnknownTopic {
                topic: name.clone(),
            })?;
        let mut merged: BTreeMap<String, String> = t.configs.clone();
        let mut records = Vec::new();
        for op in &req.ops {
            match pb::AlterOp::try_from(op.op) {
                Ok(pb::AlterOp::Set) => {
                    merged.insert(op.key.clone(), op.value.clone());
                    records.push(record(Record::ConfigSet(ConfigSet {
                        resource: Some(topic_resource(&name)),
                        key: op.key.clone(),
                        value: op.value.clone(),
                    })));
                }
                Ok(pb::AlterOp::Delete) => {
                    if !TopicConfig::keys().contains(&op.key.as_str()) {
                        return Err(Refusal::InvalidConfig(TopicConfigError::UnknownKey {
                            key: op.key.clone(),
                        })
                        .into());
                    }
                    if merged.remove(&op.key).is_some() {
                        records.push(record(Record::ConfigRemoved(ConfigRemoved {
                            resource: Some(topic_resource(&name)),
                            key: op.key.clone(),
                        })));
                    }
                }
                Err(_) => {
                    return Err(Refusal::UnknownAlterOp.into());
                }
            }
        }
        TopicConfig::from_pairs(merged.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(Refusal::InvalidConfig)?;
        if !req.validate_only {
            self.commit(&mut inner, records).await?;
            tracing::info!(topic = %name, "topic configs altered");
        }
        Ok(())
    }

    /// Sets and removes dynamic broker configs of one broker (or, on broker
    /// "", the cluster-wide default), all or nothing.
    async fn alter_broker_configs(
        &self,
        resource: ConfigResource,
        req: pb::AlterConfigsRequest,
    ) -> Result<(), ControllerError> {
        let name = resource.name.clone();
        if !is_broker_resource(&name) {
            return Err(Refusal::InvalidBrokerResource { name }.into());
        }
        let mut records = Vec::new();
        for op in &req.ops {
            if !DYNAMIC_BROKER_CONFIGS.contains(&op.key.as_str()) {
                return Err(Refusal::StaticBrokerConfig {
                    key: op.key.clone(),
                }
                .into());
            }
            match pb::AlterOp::try_from(op.op) {
                Ok(pb::AlterOp::Set) => {
                    if op.value.trim().parse::<u64>().is_err() {
                        return Err(Refusal::InvalidBrokerConfig {
                            key: op.key.clone(),
                            value: op.value.clone(),
                        }
                        .into());
                    }
                    records.push(record(Record::ConfigSet(ConfigSet {
                        resource: Some(resource.clone()),
                        key: op.key.clone(),
                        value: op.value.trim().to_owned(),
                    })));
                }
                Ok(pb::AlterOp::Delete) => {
                    records.push(record(Record::ConfigRemoved(ConfigRemoved {
                        resource: Some(resource.clone()),
                        key: op.key.clone(),
                    })));
                }
                Err(_) => return Err(Refusal::UnknownAlterOp.into()),
            }
        }
        let mut inner = self.lock_active().await?;
        let set = inner.image.broker_configs.get(&name);
        // Removing a key that is not set changes nothing (and writes nothing).
        records.retain(|r| match &r.record {
            Some(Record::ConfigRemoved(c)) => set.is_some_and(|s| s.contains_key(&c.key)),
            _ => true,
        });
        if !req.validate_only {
            self.commit(&mut inner, records).await?;
            tracing::info!(broker = %name, "dynamic broker configs altered");
        }
        Ok(())
    }
}

/// Whether `name` names a broker config resource: a broker id, or "" for
/// the cluster-wide default.
fn is_broker_resource(name: &str) -> bool {
    name.is_empty() || name.parse::<u32>().is_ok()
}

/// The dynamic configs of broker `name` ("" for the cluster-wide default):
/// its own value, the default's, or Kafka's default (no limit).
fn broker_entries(image: &MetadataImage, name: &str) -> Vec<pb::ConfigEntry> {
    let own = image.broker_configs.get(name);
    let default = image.broker_configs.get("");
    DYNAMIC_BROKER_CONFIGS
        .iter()
        .map(|&key| {
            let (value, source) = match (
                own.and_then(|c| c.get(key)),
                default.and_then(|c| c.get(key)),
            ) {
                (Some(v), _) if !name.is_empty() => (v.clone(), pb::ConfigSource::DynamicBroker),
                (_, Some(v)) => (v.clone(), pb::ConfigSource::DynamicDefaultBroker),
                _ => (i64::MAX.to_string(), pb::ConfigSource::Default),
            };
            pb::ConfigEntry {
                key: key.to_owned(),
                value,
                source: source as i32,
            }
        })
        .collect()
}
