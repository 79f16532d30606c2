//! The Metadata request (brokers, controller, topics and coordinators as a
//! client on a given listener sees them, creating missing topics when
//! allowed) and FindCoordinator. Not to be confused with `crate::metadata`,
//! which keeps this broker's copy of the cluster metadata current.

use std::time::Duration;

use runnel_common::errors::code_of;
use runnel_common::topics::validate_topic_name;
use runnel_proto::broker::v1 as pb;
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as cpb;
use runnel_proto::metadata::v1::Endpoint;

use super::{Broker, Failure, Listener, endpoints_for};
use crate::grpc::Failed;

impl Broker {
    /// The coordinator serving `req.key` (a group, or a transactional id)
    /// as the metadata log says, with the address a client on `listener`
    /// reaches it at.
    pub fn find_coordinator(
        &self,
        req: &pb::FindCoordinatorRequest,
        listener: Listener,
    ) -> pb::FindCoordinatorResponse {
        let found = match req.key_type() {
            pb::CoordinatorKeyType::Group => self.group_coordinator(&req.key, listener),
            pb::CoordinatorKeyType::Transaction => self.transaction_coordinator(&req.key, listener),
        };
        match found {
            Ok((id, e)) => pb::FindCoordinatorResponse {
                error_code: ErrorCode::None as i32,
                error_message: String::new(),
                coordinator_id: id,
                host: e.host,
                port: e.port,
            },
            Err(failure) => pb::FindCoordinatorResponse {
                coordinator_id: -1,
                ..Default::default()
            }
            .failed(&failure),
        }
    }

    /// The coordinator owning `group` and the gRPC endpoint a client on
    /// `listener` reaches it at.
    pub fn group_coordinator(
        &self,
        group: &str,
        listener: Listener,
    ) -> Result<(i32, Endpoint), Failure> {
        if group.is_empty() {
            return Err(Failure::EmptyGroupId);
        }
        self.metadata.with(|image| {
            let Some((id, c, partition)) = image.group_coordinator(group) else {
                return Err(Failure::NoCoordinator {
                    group: group.to_owned(),
                });
            };
            grpc_endpoint(id, c, partition, listener)
        })
    }

    /// The coordinator serving `transactional_id` and the gRPC endpoint a
    /// client on `listener` reaches it at.
    pub fn transaction_coordinator(
        &self,
        transactional_id: &str,
        listener: Listener,
    ) -> Result<(i32, Endpoint), Failure> {
        if transactional_id.is_empty() {
            return Err(Failure::EmptyTransactionalId);
        }
        self.metadata.with(|image| {
            let Some((id, c, partition)) = image.transaction_coordinator(transactional_id) else {
                return Err(Failure::NoTransactionCoordinator {
                    transactional_id: transactional_id.to_owned(),
                });
            };
            grpc_endpoint(id, c, partition, listener)
        })
    }

    /// Brokers, controller and topics, with the addresses a client on
    /// `listener` can reach; creates missing topics when allowed.
    pub async fn metadata(
        &self,
        req: pb::MetadataRequest,
        listener: Listener,
    ) -> pb::MetadataResponse {
        let wanted = req.topics.clone();
        if req.allow_auto_topic_creation && self.limits.auto_create_topics_enable {
            let missing: Vec<String> = self.metadata.with(|image| {
                wanted
                    .iter()
                    .filter(|t| !image.topics.contains_key(*t) && validate_topic_name(t).is_ok())
                    .cloned()
                    .collect()
            });
            if !missing.is_empty() {
                self.auto_create(missing).await;
            }
        }
        let image = self.metadata.snapshot();
        let names: Vec<String> = if wanted.is_empty() {
            image.topics.keys().cloned().collect()
        } else {
            wanted
        };
        let topics = names
            .into_iter()
            .map(|name| {
                let Some(t) = image.topics.get(&name) else {
                    let failure = match validate_topic_name(&name) {
                        Ok(()) if !self.metadata.caught_up() => Failure::MetadataCatchingUp {
                            broker: self.limits.broker_id,
                            topic: name.clone(),
                        },
                        Ok(()) => Failure::UnknownTopic {
                            topic: name.clone(),
                        },
                        Err(e) => Failure::InvalidTopic(e),
                    };
                    return pb::TopicInfo {
                        name,
                        ..Default::default()
                    }
                    .failed(&failure);
                };
                pb::TopicInfo {
                    name,
                    topic_id: t.id.to_vec().into(),
                    error_code: ErrorCode::None as i32,
                    error_message: String::new(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|(&partition, p)| pb::PartitionInfo {
                            partition,
                            leader: p.leader,
                            leader_epoch: p.leader_epoch,
                            replicas: p.replicas.clone(),
                            isr: p.isr.clone(),
                        })
                        .collect(),
                }
            })
            .collect();
        pb::MetadataResponse {
            brokers: image
                .brokers
                .iter()
                .map(|(&id, b)| pb::BrokerEndpoints {
                    broker_id: id,
                    endpoints: endpoints_for(listener, b.endpoints.clone()),
                    rack: b.rack.clone(),
                    fenced: b.fenced,
                })
                .collect(),
            controller_endpoints: endpoints_for(listener, self.metadata.controller_endpoints()),
            topics,
            metadata_offset: image.next_offset,
            cluster_id: self.metadata.cluster_id(),
            coordinators: image
                .live_coordinators()
                .map(|(id, c)| pb::CoordinatorEndpoints {
                    coordinator_id: id,
                    endpoints: endpoints_for(listener, c.endpoints.clone()),
                })
                .collect(),
        }
    }

    /// Asks the controller to create `topics`, then waits (briefly) until the
    /// metadata reaching this broker has them.
    async fn auto_create(&self, topics: Vec<String>) {
        let request = cpb::CreateTopicsRequest {
            topics: topics
                .iter()
                .map(|name| cpb::CreatableTopic {
                    name: name.clone(),
                    partitions: self.limits.num_partitions,
                    replication_factor: self.limits.default_replication_factor,
                    configs: Default::default(),
                    assignments: Vec::new(),
                })
                .collect(),
            validate_only: false,
        };
        match self.controller.clone().create_topics(request).await {
            Ok(r) => {
                for t in r.into_inner().topics {
                    if t.error_code() != ErrorCode::None
                        && t.error_code() != ErrorCode::TopicAlreadyExists
                    {
                        tracing::warn!(topic = %t.name, error = %t.error_message, "auto-creating topic failed");
                    }
                }
            }
            Err(status) => {
                tracing::warn!(code = ?code_of(&status), error = %status.message(), "auto-creating topics failed");
                return;
            }
        }
        self.wait_for_topics(&topics, Duration::from_secs(5)).await;
    }

    /// Waits (at most `timeout`) until this broker's metadata has `topics`
    /// and every partition of them it leads is open.
    pub async fn wait_for_topics(&self, topics: &[String], timeout: Duration) {
        let mut applied = self.metadata.subscribe();
        let me = self.limits.broker_id;
        let _ = tokio::time::timeout(timeout, async {
            loop {
                // Known, and every partition this broker leads opened.
                let ready = self.metadata.with(|image| {
                    topics.iter().all(|t| {
                        image.topics.get(t).is_some_and(|state| {
                            state
                                .partitions
                                .iter()
                                .filter(|(_, p)| p.leader == me)
                                .all(|(&i, _)| self.logs.get(t, i).is_some())
                        })
                    })
                });
                if ready || applied.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }
}

/// Coordinator `id`'s gRPC endpoint as a client on `listener` sees it
/// (`partition`: the `__consumer_offsets` partition it was found by).
fn grpc_endpoint(
    id: i32,
    c: &runnel_common::metadata::CoordinatorState,
    partition: i32,
    listener: Listener,
) -> Result<(i32, Endpoint), Failure> {
    let endpoints = endpoints_for(listener, c.endpoints.clone());
    match endpoints.into_iter().find(|e| e.name == "grpc") {
        Some(e) => Ok((id, e)),
        None => Err(Failure::CoordinatorWithoutEndpoint {
            coordinator: id,
            partition,
        }),
    }
}
