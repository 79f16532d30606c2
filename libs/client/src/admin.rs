//! Administration: topics, partitions, configs, the cluster.
//!
//! Requests go to the controller, found through any broker's metadata;
//! partition offsets come from each partition's leader.
//!
//! ```no_run
//! # async fn demo() -> runnel_client::Result<()> {
//! use runnel_client::{Admin, ClientConfig, NewTopic};
//!
//! let admin = Admin::new(ClientConfig::new("127.0.0.1:9094"));
//! admin.create_topic(NewTopic::new("orders").partitions(6).config("retention.ms", "86400000")).await?;
//! for p in admin.describe_topic("orders").await?.partitions {
//!     println!("partition {} led by {}: offsets {}..{}", p.partition, p.leader, p.log_start_offset, p.log_end_offset);
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use runnel_proto::broker::v1 as bpb;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;
use runnel_proto::metadata::v1::{ConfigResource, ConfigResourceType};

use crate::cluster::{ClientConfig, Cluster};
use crate::error::{ClientError, Result};

/// A topic to create.
#[derive(Debug, Clone, Default)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partitions (`None`: the cluster's `num.partitions`).
    pub partitions: Option<i32>,
    /// Replication factor (`None`: the cluster's `default.replication.factor`).
    pub replication_factor: Option<i32>,
    /// Topic configs.
    pub configs: BTreeMap<String, String>,
    /// Replicas of each partition by hand, partition 0 first (then neither
    /// `partitions` nor `replication_factor` may be set).
    pub assignments: Vec<Vec<i32>>,
}

impl NewTopic {
    /// A topic with the cluster's defaults.
    pub fn new(name: impl Into<String>) -> Self {
        NewTopic {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Sets the partition count.
    pub fn partitions(mut self, n: i32) -> Self {
        self.partitions = Some(n);
        self
    }

    /// Sets the replication factor.
    pub fn replication_factor(mut self, n: i32) -> Self {
        self.replication_factor = Some(n);
        self
    }

    /// Places the partitions by hand: `replicas[p]` for partition `p`,
    /// preferred leader first.
    pub fn assignments(mut self, replicas: Vec<Vec<i32>>) -> Self {
        self.assignments = replicas;
        self
    }

    /// Sets a topic config.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.insert(key.into(), value.into());
        self
    }
}

/// A partition with its placement and offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    /// Index.
    pub partition: i32,
    /// Leader broker id (-1: none).
    pub leader: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Replica broker ids, preferred leader first.
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// First readable offset (-1 if the leader did not answer).
    pub log_start_offset: i64,
    /// Offset the next record gets, as consumers see it: the high watermark (-1 if unknown).
    pub log_end_offset: i64,
    /// Replicas whose broker cannot open their log (Kafka's offline
    /// replicas): broker id and the broker's error.
    pub offline_replicas: Vec<(i32, String)>,
    /// While the partition is being reassigned: replicas joining.
    pub adding_replicas: Vec<i32>,
    /// While the partition is being reassigned: replicas leaving.
    pub removing_replicas: Vec<i32>,
}

impl PartitionDescription {
    /// Fewer in-sync replicas than replicas (not counting those a
    /// reassignment is still adding, as Kafka's KIP-352).
    pub fn under_replicated(&self) -> bool {
        self.isr.len()
            < self
                .replicas
                .len()
                .saturating_sub(self.adding_replicas.len())
    }
}

/// A config value and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Kafka config key.
    pub key: String,
    /// Value.
    pub value: String,
    /// Set on the topic (else it is the default).
    pub is_set: bool,
}

/// A topic with its partitions and configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Name.
    pub name: String,
    /// Topic id (hex).
    pub topic_id: String,
    /// Partitions in index order.
    pub partitions: Vec<PartitionDescription>,
    /// Every config key with its value.
    pub configs: Vec<ConfigEntry>,
}

/// A broker and its liveness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerDescription {
    /// Broker id.
    pub id: i32,
    /// gRPC address.
    pub addr: String,
    /// Rack.
    pub rack: String,
    /// Fenced by the controller (missed heartbeats, shutting down, or not caught up yet).
    pub fenced: bool,
    /// Milliseconds since its last heartbeat (-1: none since the controller started).
    pub last_heartbeat_age_ms: i64,
}

/// A group coordinator as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorDescription {
    /// Coordinator id.
    pub id: i32,
    /// gRPC address.
    pub addr: String,
    /// Fenced by the controller (session expired or shut down).
    pub fenced: bool,
    /// How many partitions of `__consumer_offsets` it owns.
    pub offsets_partitions: usize,
    /// Milliseconds since its last heartbeat (-1: none since the controller started).
    pub last_heartbeat_age_ms: i64,
}

/// A controller of the quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerDescription {
    /// Controller id (`node.id`).
    pub id: i32,
    /// gRPC address.
    pub addr: String,
    /// The active controller (the Raft leader).
    pub active: bool,
    /// A voter; false while it catches up as a learner.
    pub voter: bool,
    /// The last Raft log index it is known to hold (-1: unknown).
    pub matched_index: i64,
}

/// The cluster: brokers, controller, metadata log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    /// Cluster id.
    pub cluster_id: String,
    /// Controller id.
    pub controller_id: i32,
    /// Controller gRPC address.
    pub controller_addr: String,
    /// Offset the next metadata record gets (every record before it is committed).
    pub metadata_end_offset: i64,
    /// The controllers of the quorum.
    pub controllers: Vec<ControllerDescription>,
    /// The active controller's Raft term.
    pub controller_term: i64,
    /// Brokers by id.
    pub brokers: Vec<BrokerDescription>,
    /// Group coordinators by id.
    pub coordinators: Vec<CoordinatorDescription>,
}

/// Administers a Runnel cluster.
#[derive(Debug, Clone)]
pub struct Admin {
    pub(crate) cluster: Arc<Cluster>,
}

fn topic_resource(name: &str) -> ConfigResource {
    ConfigResource {
        r#type: ConfigResourceType::Topic as i32,
        name: name.to_owned(),
    }
}

fn broker_resource(broker: Option<i32>) -> ConfigResource {
    ConfigResource {
        r#type: ConfigResourceType::Broker as i32,
        name: broker.map(|b| b.to_string()).unwrap_or_default(),
    }
}

fn check(result: pb::TopicResult) -> Result<()> {
    match result.error_code() {
        ErrorCode::None => Ok(()),
        code => Err(ClientError::server(code, result.error_message)),
    }
}

impl Admin {
    /// An admin client for the cluster at `client.bootstrap`.
    pub fn new(client: ClientConfig) -> Admin {
        Admin {
            cluster: Cluster::new(client),
        }
    }

    /// An admin client sharing connections with other clients of `cluster`.
    pub fn with_cluster(cluster: Arc<Cluster>) -> Admin {
        Admin { cluster }
    }

    /// Creates one topic.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<()> {
        let mut results = self.create_topics(vec![topic], false).await?;
        results.pop().map_or(Ok(()), |(_, r)| r)
    }

    /// Creates topics (or only checks them, with `validate_only`); one result each.
    pub async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Result<Vec<(String, Result<()>)>> {
        let request = pb::CreateTopicsRequest {
            topics: topics
                .into_iter()
                .map(|t| pb::CreatableTopic {
                    name: t.name,
                    partitions: t.partitions.unwrap_or(-1),
                    replication_factor: t.replication_factor.unwrap_or(-1),
                    configs: t.configs.into_iter().collect(),
                    assignments: t
                        .assignments
                        .into_iter()
                        .enumerate()
                        .map(|(p, replicas)| pb::ManualAssignment {
                            partition: p as i32,
                            replicas,
                        })
                        .collect(),
                })
                .collect(),
            validate_only,
        };
        let response = self
            .cluster
            .call_controller(request, |mut c, r| async move { c.create_topics(r).await })
            .await?;
        Ok(response
            .into_inner()
            .topics
            .into_iter()
            .map(|t| (t.name.clone(), check(t)))
            .collect())
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let response = self
            .cluster
            .call_controller(
                pb::DeleteTopicsRequest {
                    names: vec![name.to_owned()],
                },
                |mut c, r| async move { c.delete_topics(r).await },
            )
            .await?;
        response
            .into_inner()
            .topics
            .into_iter()
            .next()
            .map_or(Ok(()), check)
    }

    /// Grows a topic to `total` partitions.
    pub async fn create_partitions(&self, name: &str, total: i32) -> Result<()> {
        self.create_partitions_on(name, total, Vec::new()).await
    }

    /// Grows a topic to `total` partitions placed by hand: `assignments[i]`
    /// are the replicas of the i-th new partition (empty: the controller places them).
    pub async fn create_partitions_on(
        &self,
        name: &str,
        total: i32,
        assignments: Vec<Vec<i32>>,
    ) -> Result<()> {
        let response = self
            .cluster
            .call_controller(
                pb::CreatePartitionsRequest {
                    topic: name.to_owned(),
                    count: total,
                    validate_only: false,
                    assignments: assignments
                        .into_iter()
                        .map(|broker_ids| pb::ReplicaList { broker_ids })
                        .collect(),
                },
                |mut c, r| async move { c.create_partitions(r).await },
            )
            .await?;
        response.into_inner().result.map_or(Ok(()), check)
    }

    /// Every topic name, sorted.
    pub async fn list_topics(&self) -> Result<Vec<String>> {
        let md = self
            .cluster
            .call_controller(
                pb::GetMetadataRequest { topics: vec![] },
                |mut c, r| async move { c.get_metadata(r).await },
            )
            .await?
            .into_inner();
        let mut names: Vec<String> = md.topics.into_iter().map(|t| t.name).collect();
        names.sort();
        Ok(names)
    }

    /// A topic's partitions (with offsets from their leaders) and configs.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let md = self
            .cluster
            .call_controller(
                pb::GetMetadataRequest {
                    topics: vec![name.to_owned()],
                },
                |mut c, r| async move { c.get_metadata(r).await },
            )
            .await?
            .into_inner();
        let topic = md.topics.into_iter().next().ok_or_else(|| {
            ClientError::server(ErrorCode::UnknownServerError, "empty metadata response")
        })?;
        if topic.error_code() != ErrorCode::None {
            return Err(ClientError::server(
                topic.error_code(),
                format!("topic {name} does not exist"),
            ));
        }
        let configs = self.describe_configs(name).await?;
        self.cluster.refresh(&[name.to_owned()], false).await?;
        let mut partitions = Vec::new();
        for p in topic.partitions {
            let (start, end) = self.offsets(name, p.partition).await.unwrap_or((-1, -1));
            partitions.push(PartitionDescription {
                partition: p.partition,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                replicas: p.replicas,
                isr: p.isr,
                log_start_offset: start,
                log_end_offset: end,
                offline_replicas: p
                    .offline_replicas
                    .into_iter()
                    .map(|r| (r.broker_id, r.error))
                    .collect(),
                adding_replicas: p.adding_replicas,
                removing_replicas: p.removing_replicas,
            });
        }
        Ok(TopicDescription {
            name: topic.name,
            topic_id: topic.topic_id.iter().map(|b| format!("{b:02x}")).collect(),
            partitions,
            configs,
        })
    }

    pub(crate) async fn leader(&self, topic: &str, partition: i32) -> Result<String> {
        if self.cluster.leader_addr(topic, partition).is_none() {
            self.cluster.refresh(&[topic.to_owned()], false).await?;
        }
        let (_, addr) = self.cluster.leader_addr(topic, partition).ok_or_else(|| {
            ClientError::server(
                ErrorCode::LeaderNotAvailable,
                format!("no leader for {topic}-{partition}"),
            )
        })?;
        Ok(addr)
    }

    /// The offset of the first record of `topic`-`partition` with a
    /// timestamp at or after `timestamp_ms` (`None`: no such record).
    pub async fn offset_for_time(
        &self,
        topic: &str,
        partition: i32,
        timestamp_ms: i64,
    ) -> Result<Option<i64>> {
        let addr = self.leader(topic, partition).await?;
        let r = self
            .cluster
            .broker_at(&addr)?
            .list_offsets(bpb::ListOffsetsRequest {
                partitions: vec![bpb::ListOffsetsPartition {
                    topic: topic.to_owned(),
                    partition,
                    spec: bpb::OffsetSpec::Timestamp as i32,
                    timestamp_ms,
                }],
                isolation_level: bpb::IsolationLevel::ReadUncommitted as i32,
            })
            .await
            .map_err(|s| ClientError::from_status(&addr, s))?
            .into_inner();
        let r = r.partitions.into_iter().next().ok_or_else(|| {
            ClientError::server(ErrorCode::UnknownServerError, "empty ListOffsets response")
        })?;
        match r.error_code() {
            ErrorCode::None => Ok((r.offset >= 0).then_some(r.offset)),
            code => Err(ClientError::server(code, r.error_message)),
        }
    }

    /// Log start and high watermark of one partition, from its leader.
    pub async fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        self.offsets_at(topic, partition, crate::IsolationLevel::ReadUncommitted)
            .await
    }

    /// Log start and end of one partition as a consumer at `level` sees
    /// them: the end is the high watermark, or for read_committed the last
    /// stable offset (what such a consumer can reach).
    pub async fn offsets_at(
        &self,
        topic: &str,
        partition: i32,
        level: crate::IsolationLevel,
    ) -> Result<(i64, i64)> {
        let addr = self.leader(topic, partition).await?;
        let mut b = self.cluster.broker_at(&addr)?;
        let spec = |spec: bpb::OffsetSpec| bpb::ListOffsetsPartition {
            topic: topic.to_owned(),
            partition,
            spec: spec as i32,
            timestamp_ms: 0,
        };
        let response = b
            .list_offsets(bpb::ListOffsetsRequest {
                partitions: vec![
                    spec(bpb::OffsetSpec::Earliest),
                    spec(bpb::OffsetSpec::Latest),
                ],
                isolation_level: level.to_proto(),
            })
            .await
            .map_err(|s| ClientError::from_status(&addr, s))?
            .into_inner();
        let mut offsets = Vec::new();
        for r in response.partitions {
            if r.error_code() != ErrorCode::None {
                return Err(ClientError::server(r.error_code(), r.error_message));
            }
            offsets.push(r.offset);
        }
        match offsets[..] {
            [start, end] => Ok((start, end)),
            _ => Err(ClientError::server(
                ErrorCode::UnknownServerError,
                "incomplete ListOffsets response",
            )),
        }
    }

    /// Every config of a topic.
    pub async fn describe_configs(&self, topic: &str) -> Result<Vec<ConfigEntry>> {
        self.describe_resource_configs(topic_resource(topic)).await
    }

    /// The dynamic configs of broker `broker` (`None`: the cluster-wide
    /// defaults); `is_set` when set on that very resource.
    pub async fn describe_broker_configs(&self, broker: Option<i32>) -> Result<Vec<ConfigEntry>> {
        self.describe_resource_configs(broker_resource(broker))
            .await
    }

    async fn describe_resource_configs(
        &self,
        resource: ConfigResource,
    ) -> Result<Vec<ConfigEntry>> {
        let broker_default = resource.name.is_empty();
        let response = self
            .cluster
            .call_controller(
                pb::DescribeConfigsRequest {
                    resources: vec![resource],
                },
                |mut c, r| async move { c.describe_configs(r).await },
            )
            .await?
            .into_inner();
        let r = response.resources.into_iter().next().ok_or_else(|| {
            ClientError::server(
                ErrorCode::UnknownServerError,
                "empty DescribeConfigs response",
            )
        })?;
        if r.error_code() != ErrorCode::None {
            return Err(ClientError::server(r.error_code(), r.error_message));
        }
        Ok(r.entries
            .into_iter()
            .map(|e| ConfigEntry {
                is_set: match e.source() {
                    pb::ConfigSource::Topic | pb::ConfigSource::DynamicBroker => true,
                    pb::ConfigSource::DynamicDefaultBroker => broker_default,
                    _ => false,
                },
                key: e.key,
                value: e.value,
            })
            .collect())
    }

    /// Sets and removes topic configs, all or nothing.
    pub async fn alter_configs(
        &self,
        topic: &str,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<()> {
        self.alter_resource_configs(topic_resource(topic), set, delete)
            .await
    }

    /// Sets and removes dynamic configs (the replication throttle rates) of
    /// broker `broker` (`None`: the cluster-wide defaults), all or nothing.
    pub async fn alter_broker_configs(
        &self,
        broker: Option<i32>,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<()> {
        self.alter_resource_configs(broker_resource(broker), set, delete)
            .await
    }

    async fn alter_resource_configs(
        &self,
        resource: ConfigResource,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<()> {
        let mut ops: Vec<pb::AlterConfigOp> = set
            .iter()
            .map(|(k, v)| pb::AlterConfigOp {
                key: k.clone(),
                value: v.clone(),
                op: pb::AlterOp::Set as i32,
            })
            .collect();
        ops.extend(delete.iter().map(|k| pb::AlterConfigOp {
            key: k.clone(),
            value: String::new(),
            op: pb::AlterOp::Delete as i32,
        }));
        let request = pb::AlterConfigsRequest {
            resource: Some(resource),
            ops,
            validate_only: false,
        };
        self.cluster
            .call_controller(request, |mut c, r| async move { c.alter_configs(r).await })
            .await?;
        Ok(())
    }

    /// Adds controller `id`, listening at `addr` (`host:port`), to the
    /// quorum: it catches up as a learner, then votes. Start it first with
    /// `quorum_join = true`.
    pub async fn add_controller(&self, id: i32, addr: &str) -> Result<()> {
        let request = pb::AddControllerRequest {
            controller_id: id,
            address: addr.to_owned(),
        };
        self.cluster
            .call_controller(request, |mut c, r| async move { c.add_controller(r).await })
            .await?;
        Ok(())
    }

    /// Removes controller `id` from the quorum.
    pub async fn remove_controller(&self, id: i32) -> Result<()> {
        let request = pb::RemoveControllerRequest { controller_id: id };
        self.cluster
            .call_controller(
                request,
                |mut c, r| async move { c.remove_controller(r).await },
            )
            .await?;
        Ok(())
    }

    /// Brokers with liveness and the controller.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let r = self
            .cluster
            .call_controller(pb::DescribeClusterRequest {}, |mut c, r| async move {
                c.describe_cluster(r).await
            })
            .await?
            .into_inner();
        let grpc = |endpoints: &[runnel_proto::metadata::v1::Endpoint]| {
            endpoints
                .iter()
                .find(|e| e.name == "grpc")
                .map(|e| format!("{}:{}", e.host, e.port))
                .unwrap_or_default()
        };
        Ok(ClusterDescription {
            cluster_id: r.cluster_id,
            controller_id: r.controller_id,
            controller_addr: grpc(&r.controller_endpoints),
            metadata_end_offset: r.metadata_end_offset,
            controllers: r
                .controllers
                .iter()
                .map(|c| ControllerDescription {
                    id: c.controller_id,
                    addr: c.address.clone(),
                    active: c.active,
                    voter: c.voter,
                    matched_index: c.matched_index,
                })
                .collect(),
            controller_term: r.controller_term,
            brokers: r
                .brokers
                .iter()
                .map(|b| BrokerDescription {
                    id: b.broker_id,
                    addr: grpc(&b.endpoints),
                    rack: b.rack.clone(),
                    fenced: b.fenced,
                    last_heartbeat_age_ms: b.last_heartbeat_age_ms,
                })
                .collect(),
            coordinators: r
                .coordinators
                .iter()
                .map(|c| CoordinatorDescription {
                    id: c.coordinator_id,
                    addr: grpc(&c.endpoints),
                    fenced: c.fenced,
                    offsets_partitions: c.offsets_partitions.len(),
                    last_heartbeat_age_ms: c.last_heartbeat_age_ms,
                })
                .collect(),
        })
    }
}
