//! Topic configs: describing them (with where each value comes from) and
//! altering them, all or nothing. Broker configs are static.

use std::collections::BTreeMap;

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
                    _ => refused_configs(resource, &Refusal::DescribeNonTopicConfigs),
                },
            )
            .collect()
    }

    /// Sets and removes topic config keys, all or nothing.
    pub async fn alter_configs(&self, req: pb::AlterConfigsRequest) -> Result<(), ControllerError> {
        let resource = req.resource.unwrap_or_default();
        if resource.r#type() != ConfigResourceType::Topic {
            return Err(Refusal::AlterNonTopicConfigs.into());
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
}
