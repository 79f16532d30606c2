//! The cluster metadata as a pure function of the metadata log.
//!
//! [`MetadataImage::apply`] folds one record into the image. It is
//! deterministic and does no I/O, so the controller (which also writes every
//! record to SQLite) and every broker (which watches the log) reach the same
//! image from the same records.

use std::collections::BTreeMap;

use runnel_proto::controller::v1 as cpb;
use runnel_proto::metadata::v1::{
    AclEntry, ConfigResourceType, Endpoint, MetadataRecord, OffsetsPartitionOwner,
    PartitionChanged, PartitionCreated, QuotaEntityPart, UserScramCredentialSet,
    metadata_record::Record,
};

use crate::acl::{AclBinding, AclFilter, Acls, Operation, PatternType, Permission, ResourceType};
use crate::quota::{ClientQuotas, QuotaEntity, QuotaFilter, QuotaKey};
use crate::scram::{Mechanism, ScramCredential};

/// The endpoint a node registers for clients outside its network (a
/// broker's `external_listen`, a coordinator's external address).
pub const EXTERNAL_GRPC_ENDPOINT: &str = "grpc-external";

/// `leader.replication.throttled.rate`: bytes a second a broker's leaders
/// send to throttled followers that are out of sync (a dynamic broker config).
pub const LEADER_THROTTLED_RATE: &str = "leader.replication.throttled.rate";

/// `follower.replication.throttled.rate`: bytes a second a broker fetches
/// for its throttled replicas that are out of sync (a dynamic broker config).
pub const FOLLOWER_THROTTLED_RATE: &str = "follower.replication.throttled.rate";

/// The broker configs that can be altered at runtime (the rest are static,
/// from each broker's own configuration).
pub const DYNAMIC_BROKER_CONFIGS: [&str; 2] = [FOLLOWER_THROTTLED_RATE, LEADER_THROTTLED_RATE];

/// The internal topic holding consumer groups' committed offsets and metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The transaction coordinator's internal topic (Kafka's name).
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// The partition of `__consumer_offsets` that holds `group`, as Kafka
/// chooses it: the absolute value of Java's `String.hashCode` modulo the
/// partition count, so Runnel and Kafka tools agree on a group's coordinator.
pub fn offsets_partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    // Kafka's Utils.abs: MIN_VALUE maps to 0.
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// A registered group coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorState {
    /// Epoch of the current registration (the offset of its record).
    pub epoch: i64,
    /// Where it listens.
    pub endpoints: Vec<Endpoint>,
    /// Random per process start.
    pub incarnation_id: String,
    /// Fenced coordinators own no partitions.
    pub fenced: bool,
}

impl CoordinatorState {
    /// The endpoint named `name` ("grpc", "admin").
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// `host:port` of its gRPC endpoint, where brokers relay to it.
    pub fn grpc_address(&self) -> Option<String> {
        self.endpoint("grpc")
            .map(|e| format!("{}:{}", e.host, e.port))
    }
}

/// A 16-byte topic id (a random UUID), so a re-created topic is a new topic.
pub type TopicId = [u8; 16];

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerState {
    /// Epoch of the current registration (the offset of its record).
    pub epoch: i64,
    /// Where it listens.
    pub endpoints: Vec<Endpoint>,
    /// Its rack, or "".
    pub rack: String,
    /// Random per process start.
    pub incarnation_id: String,
    /// Fenced brokers lead nothing and take no new replicas.
    pub fenced: bool,
}

impl BrokerState {
    /// The endpoint named `name` ("grpc", "kafka", "admin").
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }
}

/// One partition's replicas and leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// Replica broker ids, preferred leader first.
    pub replicas: Vec<i32>,
    /// In-sync replicas.
    pub isr: Vec<i32>,
    /// Leader broker id, -1 for none.
    pub leader: i32,
    /// Bumped on every leader change.
    pub leader_epoch: i32,
    /// Bumped on every change.
    pub partition_epoch: i32,
    /// While a reassignment runs: target replicas not in the original set.
    pub adding_replicas: Vec<i32>,
    /// While a reassignment runs: original replicas not in the target set.
    pub removing_replicas: Vec<i32>,
}

impl PartitionState {
    /// Whether a reassignment of this partition is in progress.
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas a reassignment in progress moves to (all of them when none runs).
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing_replicas.contains(r))
            .collect()
    }

    /// The replicas before the reassignment in progress (all of them when none runs).
    pub fn original_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.adding_replicas.contains(r))
            .collect()
    }
}

/// A topic, its partitions and its config overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    /// The topic id.
    pub id: TopicId,
    /// Partitions by index (0..n, no holes).
    pub partitions: BTreeMap<i32, PartitionState>,
    /// Config keys set on the topic.
    pub configs: BTreeMap<String, String>,
}

/// Everything the metadata log says, as of `next_offset`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataImage {
    /// Offset after the last record applied.
    pub next_offset: i64,
    /// Brokers by id.
    pub brokers: BTreeMap<i32, BrokerState>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicState>,
    /// Broker config overrides by broker id ("" for the cluster default).
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// Every producer id below this has been handed out in some broker's block.
    pub next_producer_id: i64,
    /// Group coordinators by id.
    pub coordinators: BTreeMap<i32, CoordinatorState>,
    /// Owners of `__consumer_offsets` partitions by partition.
    pub offsets_owners: BTreeMap<i32, OffsetsPartitionOwner>,
    /// Users' SCRAM credentials by user and mechanism.
    pub scram_credentials: BTreeMap<String, BTreeMap<Mechanism, ScramCredential>>,
    /// The ACL bindings in force.
    pub acls: Acls,
    /// Client quotas by entity.
    pub quotas: ClientQuotas,
}

/// A record that does not fit the image (a bug in whoever wrote the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata record at offset {offset} cannot be applied: {reason}")]
pub struct ApplyError {
    /// Offset of the record.
    pub offset: i64,
    /// Why.
    pub reason: String,
}

/// The endpoints every service registers: its gRPC and admin HTTP
/// addresses at the host others reach it by.
pub fn service_endpoints(host: &str, grpc_port: u16, admin_port: u16) -> Vec<Endpoint> {
    vec![
        Endpoint {
            name: "grpc".into(),
            host: host.to_owned(),
            port: u32::from(grpc_port),
        },
        Endpoint {
            name: "admin".into(),
            host: host.to_owned(),
            port: u32::from(admin_port),
        },
    ]
}

/// The host a controller or coordinator advertises (its configured
/// `advertised_host`, else the address its gRPC listener bound) and the
/// endpoints it registers: [`service_endpoints`] at that host, plus
/// [`EXTERNAL_GRPC_ENDPOINT`] when it has an external host (at
/// `external_port`, else its gRPC port), for brokers' external listeners.
pub fn advertised_endpoints(
    advertised_host: Option<&str>,
    grpc_addr: std::net::SocketAddr,
    admin_port: u16,
    external_host: Option<&str>,
    external_port: Option<u16>,
) -> (String, Vec<Endpoint>) {
    let host = advertised_host.map_or_else(|| grpc_addr.ip().to_string(), str::to_owned);
    let grpc_port = grpc_addr.port();
    let mut endpoints = service_endpoints(&host, grpc_port, admin_port);
    if let Some(external_host) = external_host {
        endpoints.push(Endpoint {
            name: EXTERNAL_GRPC_ENDPOINT.into(),
            host: external_host.to_owned(),
            port: u32::from(external_port.unwrap_or(grpc_port)),
        });
    }
    (host, endpoints)
}

/// The SCRAM mechanism of a record's Kafka code.
pub fn scram_mechanism(code: i32) -> Result<Mechanism, String> {
    i8::try_from(code)
        .ok()
        .and_then(Mechanism::from_code)
        .ok_or_else(|| format!("unknown SCRAM mechanism {code}"))
}

/// The credential a UserScramCredentialSet record holds.
pub fn scram_credential(r: &UserScramCredentialSet) -> Result<ScramCredential, String> {
    Ok(ScramCredential {
        mechanism: scram_mechanism(r.mechanism)?,
        iterations: u32::try_from(r.iterations)
            .map_err(|_| format!("SCRAM iterations {}", r.iterations))?,
        salt: r.salt.to_vec(),
        stored_key: r.stored_key.to_vec(),
        server_key: r.server_key.to_vec(),
    })
}

/// Decodes one of Kafka's ACL wire codes (`what` names it in the error).
fn acl_code<T>(code: i32, what: &str, from: impl Fn(i8) -> Option<T>) -> Result<T, String> {
    i8::try_from(code)
        .ok()
        .and_then(from)
        .ok_or_else(|| format!("unknown ACL {what} code {code}"))
}

/// The binding an ACL record or request holds (not yet validated).
pub fn acl_binding(e: &AclEntry) -> Result<AclBinding, String> {
    Ok(AclBinding {
        resource_type: acl_code(e.resource_type, "resource type", ResourceType::from_code)?,
        name: e.name.clone(),
        pattern_type: acl_code(e.pattern_type, "pattern type", PatternType::from_code)?,
        principal: e.principal.clone(),
        host: e.host.clone(),
        operation: acl_code(e.operation, "operation", Operation::from_code)?,
        permission: acl_code(e.permission, "permission", Permission::from_code)?,
    })
}

/// A binding as records and requests carry it.
pub fn acl_entry(b: &AclBinding) -> AclEntry {
    AclEntry {
        resource_type: i32::from(b.resource_type.code()),
        name: b.name.clone(),
        pattern_type: i32::from(b.pattern_type.code()),
        principal: b.principal.clone(),
        host: b.host.clone(),
        operation: i32::from(b.operation.code()),
        permission: i32::from(b.permission.code()),
    }
}

/// The quota entity of a record's or request's parts.
pub fn quota_entity(parts: &[QuotaEntityPart]) -> Result<QuotaEntity, String> {
    QuotaEntity::from_parts(
        parts
            .iter()
            .map(|p| (p.entity_type.as_str(), p.name.as_deref())),
    )
    .map_err(|e| e.to_string())
}

/// The parts of a quota entity, as records and requests carry them.
pub fn quota_entity_parts(entity: &QuotaEntity) -> Vec<QuotaEntityPart> {
    entity
        .parts()
        .into_iter()
        .map(|(t, n)| QuotaEntityPart {
            entity_type: t.to_owned(),
            name: n.map(str::to_owned),
        })
        .collect()
}

/// The client quotas a DescribeClientQuotas request selects from `quotas`,
/// or why the request is invalid.
pub fn describe_quotas(
    quotas: &ClientQuotas,
    req: &cpb::DescribeClientQuotasRequest,
) -> Result<Vec<cpb::ClientQuotaEntry>, String> {
    let components = req.components.iter().map(|c| {
        (
            c.entity_type.as_str(),
            i8::try_from(c.match_type).unwrap_or(i8::MAX),
            c.name.as_deref(),
        )
    });
    let filter = QuotaFilter::new(components, req.strict).map_err(|e| e.to_string())?;
    Ok(quotas
        .iter()
        .filter(|(entity, _)| filter.matches(entity))
        .map(|(entity, values)| cpb::ClientQuotaEntry {
            entity: quota_entity_parts(entity),
            values: values
                .iter()
                .map(|(k, v)| (k.name().to_owned(), *v))
                .collect(),
        })
        .collect())
}

/// The filter a DescribeAcls or DeleteAcls request carries (code 0, unset,
/// reads as ANY).
pub fn acl_filter(f: &cpb::AclFilter) -> Result<AclFilter, String> {
    fn any<T>(code: i32, what: &str, from: impl Fn(i8) -> Option<T>) -> Result<Option<T>, String> {
        match code {
            0 | 1 => Ok(None),
            c => acl_code(c, what, from).map(Some),
        }
    }
    Ok(AclFilter {
        resource_type: any(f.resource_type, "resource type", ResourceType::from_code)?,
        name: f.name.clone(),
        pattern_type: any(f.pattern_type, "pattern type", PatternType::from_code)?,
        principal: f.principal.clone(),
        host: f.host.clone(),
        operation: any(f.operation, "operation", Operation::from_code)?,
        permission: any(f.permission, "permission", Permission::from_code)?,
    })
}

/// A filter as requests carry it.
pub fn acl_filter_proto(f: &AclFilter) -> cpb::AclFilter {
    let code = |c: Option<i8>| c.map_or(1, i32::from);
    cpb::AclFilter {
        resource_type: code(f.resource_type.map(ResourceType::code)),
        name: f.name.clone(),
        pattern_type: code(f.pattern_type.map(PatternType::code)),
        principal: f.principal.clone(),
        host: f.host.clone(),
        operation: code(f.operation.map(Operation::code)),
        permission: code(f.permission.map(Permission::code)),
    }
}

/// A topic id from its wire bytes (`None` unless exactly 16 bytes).
pub fn topic_id(bytes: &[u8]) -> Option<TopicId> {
    bytes.try_into().ok()
}

impl MetadataImage {
    /// Applies the record at `offset`, which must be `next_offset`.
    pub fn apply(&mut self, offset: i64, record: &MetadataRecord) -> Result<(), ApplyError> {
        let fail = |reason: String| ApplyError { offset, reason };
        if offset != self.next_offset {
            return Err(fail(format!("expected offset {}", self.next_offset)));
        }
        let Some(record) = &record.record else {
            return Err(fail("empty record".into()));
        };
        match record {
            Record::BrokerRegistered(r) => {
                self.brokers.insert(
                    r.broker_id,
                    BrokerState {
                        epoch: r.broker_epoch,
                        endpoints: r.endpoints.clone(),
                        rack: r.rack.clone(),
                        incarnation_id: r.incarnation_id.clone(),
                        fenced: true,
                    },
                );
            }
            Record::BrokerFenced(r) => {
                let b = self.broker_at(r.broker_id, r.broker_epoch).map_err(fail)?;
                b.fenced = true;
            }
            Record::BrokerUnfenced(r) => {
                let b = self.broker_at(r.broker_id, r.broker_epoch).map_err(fail)?;
                b.fenced = false;
            }
            Record::TopicCreated(r) => {
                let id =
                    topic_id(&r.topic_id).ok_or_else(|| fail("topic id is not 16 bytes".into()))?;
                if self.topics.contains_key(&r.name) {
                    return Err(fail(format!("topic {} already exists", r.name)));
                }
                self.topics.insert(
                    r.name.clone(),
                    TopicState {
                        id,
                        partitions: BTreeMap::new(),
                        configs: BTreeMap::new(),
                    },
                );
            }
            Record::TopicDeleted(r) => {
                self.topic(&r.name, &r.topic_id).map_err(fail)?;
                self.topics.remove(&r.name);
            }
            Record::PartitionCreated(r) => {
                let PartitionCreated {
                    topic,
                    topic_id,
                    partition,
                    replicas,
                    isr,
                    leader,
                    leader_epoch,
                    partition_epoch,
                } = r;
                let t = self.topic(topic, topic_id).map_err(fail)?;
                if *partition != t.partitions.len() as i32 {
                    return Err(fail(format!(
                        "partition {topic}-{partition} is not the next one"
                    )));
                }
                t.partitions.insert(
                    *partition,
                    PartitionState {
                        replicas: replicas.clone(),
                        isr: isr.clone(),
                        leader: *leader,
                        leader_epoch: *leader_epoch,
                        partition_epoch: *partition_epoch,
                        adding_replicas: Vec::new(),
                        removing_replicas: Vec::new(),
                    },
                );
            }
            Record::PartitionChanged(r) => {
                let PartitionChanged {
                    topic,
                    topic_id,
                    partition,
                    leader,
                    isr,
                    leader_epoch,
                    partition_epoch,
                    assignment,
                } = r;
                let t = self.topic(topic, topic_id).map_err(fail)?;
                let p = t
                    .partitions
                    .get_mut(partition)
                    .ok_or_else(|| fail(format!("no partition {topic}-{partition}")))?;
                if let Some(a) = assignment {
                    let part_of = |ids: &[i32]| ids.iter().all(|id| a.replicas.contains(id));
                    if a.replicas.is_empty()
                        || !part_of(&a.adding_replicas)
                        || !part_of(&a.removing_replicas)
                    {
                        return Err(fail(format!(
                            "partition {topic}-{partition}: replicas {:?} do not hold adding {:?} and removing {:?}",
                            a.replicas, a.adding_replicas, a.removing_replicas
                        )));
                    }
                    p.replicas = a.replicas.clone();
                    p.adding_replicas = a.adding_replicas.clone();
                    p.removing_replicas = a.removing_replicas.clone();
                }
                p.leader = *leader;
                p.isr = isr.clone();
                p.leader_epoch = *leader_epoch;
                p.partition_epoch = *partition_epoch;
            }
            Record::ProducerIdsAllocated(r) => {
                if r.next_producer_id <= self.next_producer_id {
                    return Err(fail(format!(
                        "producer ids must move forward: {} after {}",
                        r.next_producer_id, self.next_producer_id
                    )));
                }
                self.next_producer_id = r.next_producer_id;
            }
            Record::CoordinatorRegistered(r) => {
                self.coordinators.insert(
                    r.coordinator_id,
                    CoordinatorState {
                        epoch: r.coordinator_epoch,
                        endpoints: r.endpoints.clone(),
                        incarnation_id: r.incarnation_id.clone(),
                        fenced: false,
                    },
                );
            }
            Record::CoordinatorFenced(r) => match self.coordinators.get_mut(&r.coordinator_id) {
                Some(c) if c.epoch == r.coordinator_epoch => c.fenced = true,
                _ => {
                    return Err(fail(format!(
                        "no coordinator {} with epoch {}",
                        r.coordinator_id, r.coordinator_epoch
                    )));
                }
            },
            Record::OffsetsPartitionsAssigned(r) => {
                if r.next_producer_id < self.next_producer_id {
                    return Err(fail(format!(
                        "producer ids must not move back: {} after {}",
                        r.next_producer_id, self.next_producer_id
                    )));
                }
                for owner in &r.owners {
                    if owner.producer_id >= r.next_producer_id {
                        return Err(fail(format!(
                            "owner of partition {} has producer id {} beyond {}",
                            owner.partition, owner.producer_id, r.next_producer_id
                        )));
                    }
                    self.offsets_owners.insert(owner.partition, *owner);
                }
                self.next_producer_id = r.next_producer_id;
            }
            Record::ConfigSet(r) => {
                let resource = r
                    .resource
                    .as_ref()
                    .ok_or_else(|| fail("config without resource".into()))?;
                self.configs_mut(resource.r#type(), &resource.name)
                    .map_err(fail)?
                    .insert(r.key.clone(), r.value.clone());
            }
            Record::ConfigRemoved(r) => {
                let resource = r
                    .resource
                    .as_ref()
                    .ok_or_else(|| fail("config without resource".into()))?;
                self.configs_mut(resource.r#type(), &resource.name)
                    .map_err(fail)?
                    .remove(&r.key);
            }
            Record::UserScramCredentialSet(r) => {
                let credential = scram_credential(r).map_err(fail)?;
                self.scram_credentials
                    .entry(r.user.clone())
                    .or_default()
                    .insert(credential.mechanism, credential);
            }
            Record::UserScramCredentialRemoved(r) => {
                let mechanism = scram_mechanism(r.mechanism).map_err(fail)?;
                if let Some(user) = self.scram_credentials.get_mut(&r.user) {
                    user.remove(&mechanism);
                    if user.is_empty() {
                        self.scram_credentials.remove(&r.user);
                    }
                }
            }
            Record::AclCreated(r) => {
                let acl = r
                    .acl
                    .as_ref()
                    .ok_or_else(|| fail("AclCreated without a binding".into()))?;
                self.acls.add(acl_binding(acl).map_err(fail)?);
            }
            Record::AclRemoved(r) => {
                let acl = r
                    .acl
                    .as_ref()
                    .ok_or_else(|| fail("AclRemoved without a binding".into()))?;
                self.acls.remove(&acl_binding(acl).map_err(fail)?);
            }
            Record::ClientQuotaSet(r) => {
                let entity = quota_entity(&r.entity).map_err(fail)?;
                let key = QuotaKey::parse(&r.key).map_err(|e| fail(e.to_string()))?;
                self.quotas.set(entity, key, r.value);
            }
            Record::ClientQuotaRemoved(r) => {
                let entity = quota_entity(&r.entity).map_err(fail)?;
                let key = QuotaKey::parse(&r.key).map_err(|e| fail(e.to_string()))?;
                self.quotas.remove(&entity, key);
            }
        }
        self.next_offset += 1;
        Ok(())
    }

    fn broker_at(&mut self, id: i32, epoch: i64) -> Result<&mut BrokerState, String> {
        match self.brokers.get_mut(&id) {
            Some(b) if b.epoch == epoch => Ok(b),
            Some(b) => Err(format!("broker {id} has epoch {}, not {epoch}", b.epoch)),
            None => Err(format!("no broker {id}")),
        }
    }

    fn topic(&mut self, name: &str, id: &[u8]) -> Result<&mut TopicState, String> {
        match self.topics.get_mut(name) {
            Some(t) if t.id[..] == *id => Ok(t),
            Some(_) => Err(format!("topic {name} has another id")),
            None => Err(format!("no topic {name}")),
        }
    }

    fn configs_mut(
        &mut self,
        kind: ConfigResourceType,
        name: &str,
    ) -> Result<&mut BTreeMap<String, String>, String> {
        match kind {
            ConfigResourceType::Topic => self
                .topics
                .get_mut(name)
                .map(|t| &mut t.configs)
                .ok_or_else(|| format!("no topic {name}")),
            ConfigResourceType::Broker => {
                Ok(self.broker_configs.entry(name.to_owned()).or_default())
            }
            ConfigResourceType::Unspecified => Err("config resource type unspecified".into()),
        }
    }

    /// Coordinators with a live session.
    pub fn live_coordinators(&self) -> impl Iterator<Item = (i32, &CoordinatorState)> {
        self.coordinators
            .iter()
            .filter(|(_, c)| !c.fenced)
            .map(|(&id, c)| (id, c))
    }

    /// The live coordinator owning `group`'s partition of `__consumer_offsets`,
    /// with that partition; `None` while the topic does not exist or the
    /// partition has no live owner.
    pub fn group_coordinator(&self, group: &str) -> Option<(i32, &CoordinatorState, i32)> {
        let partitions = self.topics.get(OFFSETS_TOPIC)?.partitions.len() as i32;
        self.offsets_partition_owner(offsets_partition_for(group, partitions))
    }

    /// The live coordinator serving `transactional_id`: the owner of the
    /// `__consumer_offsets` partition its `__transaction_state` partition
    /// goes with (`q % offsets partitions`), with that offsets partition;
    /// `None` while either topic does not exist or the partition has no live owner.
    pub fn transaction_coordinator(
        &self,
        transactional_id: &str,
    ) -> Option<(i32, &CoordinatorState, i32)> {
        let offsets = self.topics.get(OFFSETS_TOPIC)?.partitions.len() as i32;
        let txn = self.topics.get(TRANSACTION_STATE_TOPIC)?.partitions.len() as i32;
        let q = offsets_partition_for(transactional_id, txn);
        self.offsets_partition_owner(q % offsets.max(1))
    }

    /// The live coordinator owning `partition` of `__consumer_offsets`
    /// (with the partition), if any.
    pub fn offsets_partition_owner(&self, partition: i32) -> Option<(i32, &CoordinatorState, i32)> {
        let owner = self.offsets_owners.get(&partition)?;
        let c = self.coordinators.get(&owner.coordinator_id)?;
        (c.epoch == owner.coordinator_epoch && !c.fenced).then_some((
            owner.coordinator_id,
            c,
            partition,
        ))
    }

    /// A dynamic broker config of broker `id`: its own value, else the
    /// cluster-wide default's (set on broker ""), else none.
    pub fn broker_config(&self, id: i32, key: &str) -> Option<&str> {
        self.broker_configs
            .get(&id.to_string())
            .and_then(|c| c.get(key))
            .or_else(|| self.broker_configs.get("").and_then(|c| c.get(key)))
            .map(String::as_str)
    }

    /// Brokers that may lead partitions and take new replicas.
    pub fn live_brokers(&self) -> impl Iterator<Item = (i32, &BrokerState)> {
        self.brokers
            .iter()
            .filter(|(_, b)| !b.fenced)
            .map(|(&id, b)| (id, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_proto::metadata::v1::{
        BrokerRegistered, BrokerUnfenced, ConfigResource, ConfigSet, TopicCreated, TopicDeleted,
    };

    fn rec(r: Record) -> MetadataRecord {
        MetadataRecord { record: Some(r) }
    }

    #[test]
    fn records_fold_into_the_image() {
        let mut img = MetadataImage::default();
        let id = [7u8; 16];
        let records = [
            rec(Record::BrokerRegistered(BrokerRegistered {
                broker_id: 1,
                broker_epoch: 0,
                endpoints: vec![],
                rack: "r1".into(),
                incarnation_id: "x".into(),
            })),
            rec(Record::BrokerUnfenced(BrokerUnfenced {
                broker_id: 1,
                broker_epoch: 0,
            })),
            rec(Record::TopicCreated(TopicCreated {
                name: "t".into(),
                topic_id: id.to_vec().into(),
            })),
            rec(Record::PartitionCreated(PartitionCreated {
                topic: "t".into(),
                topic_id: id.to_vec().into(),
                partition: 0,
                replicas: vec![1],
                isr: vec![1],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            })),
            rec(Record::ConfigSet(ConfigSet {
                resource: Some(ConfigResource {
                    r#type: ConfigResourceType::Topic as i32,
                    name: "t".into(),
                }),
                key: "retention.ms".into(),
                value: "1".into(),
            })),
        ];
        for (i, r) in records.iter().enumerate() {
            img.apply(i as i64, r).unwrap();
        }
        assert_eq!(img.next_offset, 5);
        assert!(!img.brokers[&1].fenced);
        assert_eq!(img.topics["t"].partitions[&0].leader, 1);
        assert_eq!(img.topics["t"].configs["retention.ms"], "1");
        // Out-of-order offsets and dangling references are refused, changing nothing.
        let before = img.clone();
        assert!(img.apply(9, &records[0]).is_err());
        let wrong = rec(Record::TopicDeleted(TopicDeleted {
            name: "t".into(),
            topic_id: vec![0; 16].into(),
        }));
        assert!(img.apply(5, &wrong).is_err());
        assert_eq!(img, before);
        let delete = rec(Record::TopicDeleted(TopicDeleted {
            name: "t".into(),
            topic_id: id.to_vec().into(),
        }));
        img.apply(5, &delete).unwrap();
        assert!(img.topics.is_empty());
    }
}
