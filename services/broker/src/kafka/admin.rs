//! Kafka's admin requests, forwarded to the controller.

use std::collections::BTreeMap;
use std::time::Duration;

use runnel_kafka::kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use runnel_kafka::kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use runnel_kafka::kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use runnel_kafka::kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use runnel_kafka::kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use runnel_kafka::kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResult;
use runnel_kafka::kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use runnel_kafka::kafka_protocol::protocol::StrBytes;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;
use runnel_proto::metadata::v1::{ConfigResource, ConfigResourceType};
use uuid::Uuid;

use runnel_common::acl::{CLUSTER_NAME, Operation, ResourceType};

use super::{
    Caller, KafkaApi, PROPAGATION_WAIT, code, error_code, error_message, message, raw_code, wire,
};
use crate::quotas::Client;
use crate::service::Failure;

/// Kafka's resource type for topics in the config APIs.
const TOPIC: i8 = 2;
/// Kafka's resource type for brokers.
const BROKER: i8 = 4;

/// Kafka's config sources in DescribeConfigs.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_DEFAULT: i8 = 5;

/// A topic result refused by `controller_mutation_rate`, as Kafka words it.
fn throttled<T: ThrottledResult>(out: T) -> T {
    out.refuse(
        code(ErrorCode::ThrottlingQuotaExceeded),
        StrBytes::from_static_str("The throttling quota has been exceeded."),
    )
}

/// The per-topic results a mutation quota can refuse.
trait ThrottledResult {
    fn refuse(self, code: i16, message: StrBytes) -> Self;
}

macro_rules! throttled_result {
    ($($t:ty),*) => {$(
        impl ThrottledResult for $t {
            fn refuse(self, code: i16, message: StrBytes) -> Self {
                self.with_error_code(code).with_error_message(Some(message))
            }
        }
    )*};
}

throttled_result!(
    CreatableTopicResult,
    DeletableTopicResult,
    CreatePartitionsTopicResult
);

fn resource(resource_type: i8, name: &StrBytes) -> Result<ConfigResource, Failure> {
    let kind = match resource_type {
        TOPIC => ConfigResourceType::Topic,
        BROKER => ConfigResourceType::Broker,
        other => {
            return Err(Failure::UnsupportedConfigResource {
                resource_type: other,
            });
        }
    };
    Ok(ConfigResource {
        r#type: kind as i32,
        name: name.to_string(),
    })
}

/// Kafka's IncrementalAlterConfigs operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Set,
    Delete,
    Append,
    Subtract,
}

impl KafkaApi {
    pub(super) async fn create_topics(
        &self,
        r: CreateTopicsRequest,
        version: i16,
        caller: &Caller<'_>,
        client: Client<'_>,
    ) -> (CreateTopicsResponse, Duration) {
        let mut throttle = Duration::ZERO;
        let mut results: Vec<CreatableTopicResult> = Vec::with_capacity(r.topics.len());
        let mut asked = Vec::new();
        // CREATE on the cluster allows every topic; else CREATE on each.
        let cluster = caller.sees(Operation::Create, ResourceType::Cluster, CLUSTER_NAME);
        for t in &r.topics {
            let out = CreatableTopicResult::default().with_name(t.name.clone());
            if !cluster
                && let Err(failure) = caller.check(Operation::Create, ResourceType::Topic, &t.name)
            {
                results.push(
                    out.with_error_code(error_code(&failure))
                        .with_error_message(error_message(&failure)),
                );
                continue;
            }
            // A default partition count (-1) costs one here (Kafka charges
            // its `num.partitions`); a topic that exists costs nothing.
            let partitions = if t.assignments.is_empty() {
                t.num_partitions.max(1)
            } else {
                t.assignments.len() as i32
            };
            let exists = self
                .metadata
                .with(|image| image.topics.contains_key(t.name.as_str()));
            if !r.validate_only
                && !exists
                && !self.mutation(client, version >= 6, partitions, &mut throttle)
            {
                results.push(throttled(out));
                continue;
            }
            let configs = t
                .configs
                .iter()
                .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                .collect();
            asked.push(pb::CreatableTopic {
                name: t.name.to_string(),
                partitions: t.num_partitions,
                replication_factor: i32::from(t.replication_factor),
                configs,
                assignments: t
                    .assignments
                    .iter()
                    .map(|a| pb::ManualAssignment {
                        partition: a.partition_index,
                        replicas: a.broker_ids.iter().map(|b| b.0).collect(),
                    })
                    .collect(),
            });
            results.push(out);
        }
        let names: Vec<String> = asked.iter().map(|t| t.name.clone()).collect();
        let answer = if asked.is_empty() {
            Ok(Vec::new())
        } else {
            self.controller
                .clone()
                .create_topics(pb::CreateTopicsRequest {
                    topics: asked,
                    validate_only: r.validate_only,
                })
                .await
                .map(|a| a.into_inner().topics)
                .map_err(|s| Failure::from_controller(&s))
        };
        if answer.is_ok() && !r.validate_only {
            self.broker.wait_for_topics(&names, PROPAGATION_WAIT).await;
        }
        let image = self.metadata.snapshot();
        for out in &mut results {
            if out.error_code != 0 {
                continue;
            }
            let name = out.name.to_string();
            match &answer {
                Ok(topics) => match topics.iter().find(|t| t.name == name) {
                    Some(t) if t.error_code != 0 => {
                        out.error_code = raw_code(t.error_code);
                        out.error_message = message(t.error_message.clone());
                    }
                    Some(_) => {
                        if let Some(t) = image.topics.get(&name) {
                            out.topic_id = Uuid::from_bytes(t.id);
                            out.num_partitions = t.partitions.len() as i32;
                            out.replication_factor = t
                                .partitions
                                .values()
                                .next()
                                .map_or(-1, |p| p.replicas.len() as i16);
                        } else {
                            out.num_partitions = -1;
                            out.replication_factor = -1;
                        }
                    }
                    None => out.error_code = code(ErrorCode::UnknownServerError),
                },
                Err(failure) => {
                    out.error_code = error_code(failure);
                    out.error_message = error_message(failure);
                }
            }
        }
        (
            CreateTopicsResponse::default().with_topics(results),
            throttle,
        )
    }

    pub(super) async fn delete_topics(
        &self,
        r: DeleteTopicsRequest,
        version: i16,
        caller: &Caller<'_>,
        client: Client<'_>,
    ) -> (DeleteTopicsResponse, Duration) {
        // v6+ name topics in `topics` (by name or by id); before, in `topic_names`.
        let mut unknown_ids = Vec::new();
        let names: Vec<String> = if r.topics.is_empty() {
            r.topic_names.iter().map(|n| n.to_string()).collect()
        } else {
            self.metadata.with(|image| {
                r.topics
                    .iter()
                    .filter_map(|t| match &t.name {
                        Some(n) => Some(n.to_string()),
                        None => {
                            let found = image
                                .topics
                                .iter()
                                .find(|(_, s)| Uuid::from_bytes(s.id) == t.topic_id)
                                .map(|(n, _)| n.clone());
                            if found.is_none() {
                                unknown_ids.push(t.topic_id);
                            }
                            found
                        }
                    })
                    .collect()
            })
        };
        // DELETE on each topic, refused alike whether it exists or not.
        let (names, denied): (Vec<String>, Vec<String>) = names
            .into_iter()
            .partition(|t| caller.allowed(Operation::Delete, ResourceType::Topic, t));
        // `controller_mutation_rate`: each topic costs its partitions.
        let mut throttle = Duration::ZERO;
        let sizes: Vec<i32> = self.metadata.with(|image| {
            names
                .iter()
                .map(|n| image.topics.get(n).map_or(0, |t| t.partitions.len() as i32))
                .collect()
        });
        let mut admitted = Vec::with_capacity(names.len());
        let mut over = Vec::new();
        for (name, size) in names.into_iter().zip(sizes) {
            if self.mutation(client, version >= 5, size, &mut throttle) {
                admitted.push(name);
            } else {
                over.push(name);
            }
        }
        let names = admitted;
        let answer = if names.is_empty() {
            Ok(Vec::new())
        } else {
            self.controller
                .clone()
                .delete_topics(pb::DeleteTopicsRequest {
                    names: names.clone(),
                })
                .await
                .map(|a| a.into_inner().topics)
                .map_err(|s| Failure::from_controller(&s))
        };
        let responses = names
            .into_iter()
            .map(|name| {
                let out = DeletableTopicResult::default().with_name(Some(super::topic_name(&name)));
                match &answer {
                    Ok(topics) => match topics.iter().find(|t| t.name == name) {
                        Some(t) => out
                            .with_error_code(raw_code(t.error_code))
                            .with_error_message(message(t.error_message.clone())),
                        None => out.with_error_code(code(ErrorCode::UnknownServerError)),
                    },
                    Err(failure) => out
                        .with_error_code(error_code(failure))
                        .with_error_message(error_message(failure)),
                }
            })
            .chain(denied.into_iter().map(|name| {
                let failure = Failure::unauthorized(Operation::Delete, ResourceType::Topic, &name);
                DeletableTopicResult::default()
                    .with_name(Some(super::topic_name(&name)))
                    .with_error_code(error_code(&failure))
                    .with_error_message(error_message(&failure))
            }))
            .chain(over.into_iter().map(|name| {
                throttled(DeletableTopicResult::default().with_name(Some(super::topic_name(&name))))
            }))
            .chain(unknown_ids.into_iter().map(|id| {
                let failure = Failure::UnknownTopicId { id: id.to_string() };
                DeletableTopicResult::default()
                    .with_topic_id(id)
                    .with_error_code(error_code(&failure))
                    .with_error_message(error_message(&failure))
            }))
            .collect();
        (
            DeleteTopicsResponse::default().with_responses(responses),
            throttle,
        )
    }

    pub(super) async fn create_partitions(
        &self,
        r: CreatePartitionsRequest,
        version: i16,
        caller: &Caller<'_>,
        client: Client<'_>,
    ) -> (CreatePartitionsResponse, Duration) {
        let mut throttle = Duration::ZERO;
        let mut results = Vec::with_capacity(r.topics.len());
        for t in r.topics {
            let out = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            if let Err(failure) = caller.check(Operation::Alter, ResourceType::Topic, &t.name) {
                results.push(
                    out.with_error_code(error_code(&failure))
                        .with_error_message(error_message(&failure)),
                );
                continue;
            }
            // `controller_mutation_rate`: the partitions added.
            let current = self.metadata.with(|image| {
                image
                    .topics
                    .get(t.name.as_str())
                    .map_or(0, |topic| topic.partitions.len() as i32)
            });
            if !r.validate_only
                && !self.mutation(client, version >= 3, t.count - current, &mut throttle)
            {
                results.push(throttled(out));
                continue;
            }
            let answer = self
                .controller
                .clone()
                .create_partitions(pb::CreatePartitionsRequest {
                    topic: t.name.to_string(),
                    count: t.count,
                    validate_only: r.validate_only,
                    assignments: t
                        .assignments
                        .iter()
                        .flatten()
                        .map(|a| pb::ReplicaList {
                            broker_ids: a.broker_ids.iter().map(|b| b.0).collect(),
                        })
                        .collect(),
                })
                .await;
            results.push(match answer {
                Ok(a) => match a.into_inner().result {
                    Some(res) => out
                        .with_error_code(raw_code(res.error_code))
                        .with_error_message(message(res.error_message)),
                    None => out,
                },
                Err(status) => {
                    let failure = Failure::from_controller(&status);
                    out.with_error_code(error_code(&failure))
                        .with_error_message(error_message(&failure))
                }
            });
        }
        (
            CreatePartitionsResponse::default().with_results(results),
            throttle,
        )
    }

    /// Admits a mutation of `partitions` partitions under the client's
    /// `controller_mutation_rate` (KIP-599): false when `strict` and the
    /// client is over it; the time to wait is raised into `throttle`.
    fn mutation(
        &self,
        client: Client<'_>,
        strict: bool,
        partitions: i32,
        throttle: &mut Duration,
    ) -> bool {
        let partitions = u32::try_from(partitions).unwrap_or(0);
        let (admitted, wait) = match self.quotas.mutate(client, partitions, strict) {
            Ok(wait) => (true, wait),
            Err(wait) => (false, wait),
        };
        *throttle = (*throttle).max(wait);
        admitted
    }

    pub(super) async fn describe_configs(
        &self,
        r: DescribeConfigsRequest,
        caller: &Caller<'_>,
    ) -> DescribeConfigsResponse {
        let mut results = Vec::with_capacity(r.resources.len());
        for res in r.resources {
            let out = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let described = match config_check(
                caller,
                Operation::DescribeConfigs,
                res.resource_type,
                &res.resource_name,
            )
            .and_then(|()| resource(res.resource_type, &res.resource_name))
            {
                Ok(resource) => self.describe(resource).await,
                Err(e) => Err(e),
            };
            results.push(match described {
                Ok(entries) => {
                    let wanted = res.configuration_keys.as_ref();
                    out.with_configs(
                        entries
                            .into_iter()
                            .filter(|e| {
                                wanted.is_none_or(|w| w.iter().any(|k| k.as_str() == e.key))
                            })
                            .map(|e| {
                                let source = match e.source() {
                                    pb::ConfigSource::Topic => SOURCE_TOPIC,
                                    pb::ConfigSource::DynamicBroker => SOURCE_DYNAMIC_BROKER,
                                    pb::ConfigSource::DynamicDefaultBroker => {
                                        SOURCE_DYNAMIC_DEFAULT_BROKER
                                    }
                                    pb::ConfigSource::Default | pb::ConfigSource::Unspecified => {
                                        SOURCE_DEFAULT
                                    }
                                };
                                DescribeConfigsResourceResult::default()
                                    .with_name(wire(e.key))
                                    .with_value(Some(wire(e.value)))
                                    .with_config_source(source)
                            })
                            .collect(),
                    )
                }
                Err(failure) => out
                    .with_error_code(error_code(&failure))
                    .with_error_message(error_message(&failure)),
            });
        }
        DescribeConfigsResponse::default().with_results(results)
    }

    /// One resource's config entries from the controller.
    async fn describe(&self, resource: ConfigResource) -> Result<Vec<pb::ConfigEntry>, Failure> {
        let answer = self
            .controller
            .clone()
            .describe_configs(pb::DescribeConfigsRequest {
                resources: vec![resource],
            })
            .await
            .map_err(|s| Failure::from_controller(&s))?;
        let Some(r) = answer.into_inner().resources.into_iter().next() else {
            return Err(Failure::NoAnswer);
        };
        if r.error_code != 0 {
            return Err(Failure::Controller {
                code: ErrorCode::try_from(r.error_code).unwrap_or(ErrorCode::UnknownServerError),
                message: r.error_message,
            });
        }
        Ok(r.entries)
    }

    /// Sends `ops` for one resource to the controller.
    async fn alter(
        &self,
        resource: ConfigResource,
        ops: Vec<pb::AlterConfigOp>,
        validate_only: bool,
    ) -> Result<(), Failure> {
        self.controller
            .clone()
            .alter_configs(pb::AlterConfigsRequest {
                resource: Some(resource),
                ops,
                validate_only,
            })
            .await
            .map(|_| ())
            .map_err(|s| Failure::from_controller(&s))
    }

    /// Kafka's AlterConfigs: the resource's configs become exactly the given
    /// ones; any other key set on it goes back to its default.
    pub(super) async fn alter_configs(
        &self,
        r: AlterConfigsRequest,
        caller: &Caller<'_>,
    ) -> AlterConfigsResponse {
        let mut responses = Vec::with_capacity(r.resources.len());
        for res in r.resources {
            let outcome = async {
                config_check(
                    caller,
                    Operation::AlterConfigs,
                    res.resource_type,
                    &res.resource_name,
                )?;
                let resource = resource(res.resource_type, &res.resource_name)?;
                let given: BTreeMap<String, Option<String>> = res
                    .configs
                    .iter()
                    .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                    .collect();
                let current = self.describe(resource.clone()).await?;
                let mut ops: Vec<pb::AlterConfigOp> = current
                    .iter()
                    .filter(|e| {
                        let set_here = match e.source() {
                            pb::ConfigSource::Topic | pb::ConfigSource::DynamicBroker => true,
                            // Broker "" holds the defaults themselves.
                            pb::ConfigSource::DynamicDefaultBroker => res.resource_name.is_empty(),
                            _ => false,
                        };
                        set_here && !given.contains_key(&e.key)
                    })
                    .map(|e| delete_op(&e.key))
                    .collect();
                ops.extend(given.into_iter().map(|(key, value)| match value {
                    Some(value) => set_op(key, value),
                    None => delete_op(&key),
                }));
                self.alter(resource, ops, r.validate_only).await
            }
            .await;
            let out = AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name);
            responses.push(match outcome {
                Ok(()) => out,
                Err(failure) => out
                    .with_error_code(error_code(&failure))
                    .with_error_message(error_message(&failure)),
            });
        }
        AlterConfigsResponse::default().with_responses(responses)
    }

    pub(super) async fn incremental_alter_configs(
        &self,
        r: IncrementalAlterConfigsRequest,
        caller: &Caller<'_>,
    ) -> IncrementalAlterConfigsResponse {
        let mut responses = Vec::with_capacity(r.resources.len());
        for res in r.resources {
            let outcome = async {
                config_check(
                    caller,
                    Operation::AlterConfigs,
                    res.resource_type,
                    &res.resource_name,
                )?;
                let resource = resource(res.resource_type, &res.resource_name)?;
                let mut ops = Vec::with_capacity(res.configs.len());
                let mut current: Option<Vec<pb::ConfigEntry>> = None;
                for c in &res.configs {
                    let op = match c.config_operation {
                        0 => Op::Set,
                        1 => Op::Delete,
                        2 => Op::Append,
                        3 => Op::Subtract,
                        other => {
                            return Err(Failure::UnknownConfigOperation { operation: other });
                        }
                    };
                    let key = c.name.to_string();
                    let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                    ops.push(match op {
                        Op::Set => set_op(key, value),
                        Op::Delete => delete_op(&key),
                        Op::Append | Op::Subtract => {
                            // List-valued keys (cleanup.policy): edit the current list.
                            if current.is_none() {
                                current = Some(self.describe(resource.clone()).await?);
                            }
                            let now = current
                                .iter()
                                .flatten()
                                .find(|e| e.key == key)
                                .map(|e| e.value.clone())
                                .unwrap_or_default();
                            let mut items: Vec<String> = now
                                .split(',')
                                .map(str::trim)
                                .filter(|s| !s.is_empty())
                                .map(str::to_owned)
                                .collect();
                            for v in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                                if op == Op::Append {
                                    if !items.iter().any(|i| i == v) {
                                        items.push(v.to_owned());
                                    }
                                } else {
                                    items.retain(|i| i != v);
                                }
                            }
                            set_op(key, items.join(","))
                        }
                    });
                }
                self.alter(resource, ops, r.validate_only).await
            }
            .await;
            let out = IncrementalResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name);
            responses.push(match outcome {
                Ok(()) => out,
                Err(failure) => out
                    .with_error_code(error_code(&failure))
                    .with_error_message(error_message(&failure)),
            });
        }
        IncrementalAlterConfigsResponse::default().with_responses(responses)
    }
}

/// Whether the caller may do `operation` on a config resource: a topic's
/// configs are the topic's, a broker's the cluster's.
fn config_check(
    caller: &Caller<'_>,
    operation: Operation,
    resource_type: i8,
    name: &str,
) -> Result<(), Failure> {
    match resource_type {
        TOPIC => caller.check(operation, ResourceType::Topic, name),
        _ => caller.check_cluster(operation),
    }
}

fn set_op(key: String, value: String) -> pb::AlterConfigOp {
    pb::AlterConfigOp {
        key,
        value,
        op: pb::AlterOp::Set as i32,
    }
}

fn delete_op(key: &str) -> pb::AlterConfigOp {
    pb::AlterConfigOp {
        key: key.to_owned(),
        value: String::new(),
        op: pb::AlterOp::Delete as i32,
    }
}
