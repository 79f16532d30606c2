//! Client quotas (Kafka's AlterClientQuotas and DescribeClientQuotas):
//! records of the metadata log, so every broker throttles by the same
//! limits within one metadata round trip of a change.

use std::collections::BTreeSet;

use runnel_common::metadata::{MetadataImage, describe_quotas, quota_entity};
use runnel_common::quota::{QuotaEntity, QuotaKey};
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;
use runnel_proto::metadata::v1::{
    ClientQuotaRemoved, ClientQuotaSet, MetadataRecord, metadata_record::Record,
};

use super::{Controller, ControllerError, record};

/// The records one entry's changes make, or why it is refused. Removing a
/// quota that is not set changes nothing.
fn alteration(
    entry: &pb::QuotaAlteration,
    image: &MetadataImage,
) -> Result<(QuotaEntity, Vec<MetadataRecord>), String> {
    let entity = quota_entity(&entry.entity)?;
    let mut keys = BTreeSet::new();
    let mut records = Vec::new();
    for op in &entry.ops {
        let key = QuotaKey::parse(&op.key).map_err(|e| e.to_string())?;
        if !keys.insert(key) {
            return Err(format!("Duplicate quota key {}", op.key));
        }
        if op.remove {
            let set = image
                .quotas
                .get(&entity)
                .is_some_and(|values| values.contains_key(&key));
            if set {
                records.push(record(Record::ClientQuotaRemoved(ClientQuotaRemoved {
                    entity: entry.entity.clone(),
                    key: op.key.clone(),
                })));
            }
        } else {
            key.validate(op.value).map_err(|e| e.to_string())?;
            records.push(record(Record::ClientQuotaSet(ClientQuotaSet {
                entity: entry.entity.clone(),
                key: op.key.clone(),
                value: op.value,
            })));
        }
    }
    Ok((entity, records))
}

impl Controller {
    /// Applies each entry's changes, all of an entry or none of it; one
    /// result per entry, in order. `validate_only` checks and applies nothing.
    pub async fn alter_client_quotas(
        &self,
        req: pb::AlterClientQuotasRequest,
    ) -> Result<Vec<pb::QuotaAlterationResult>, ControllerError> {
        let mut inner = self.lock_active().await?;
        let mut records = Vec::new();
        let mut results = Vec::new();
        let mut changed = Vec::new();
        for entry in &req.entries {
            let result = match alteration(entry, &inner.image) {
                Ok((entity, mut made)) => {
                    if !req.validate_only && !made.is_empty() {
                        records.append(&mut made);
                        changed.push(entity);
                    }
                    pb::QuotaAlterationResult::default()
                }
                Err(message) => pb::QuotaAlterationResult {
                    error_code: ErrorCode::InvalidRequest as i32,
                    error_message: message,
                    entity: Vec::new(),
                },
            };
            results.push(pb::QuotaAlterationResult {
                entity: entry.entity.clone(),
                ..result
            });
        }
        self.commit(&mut inner, records).await?;
        for entity in &changed {
            tracing::info!(%entity, "client quotas altered");
        }
        Ok(results)
    }

    /// The quotas `req` selects.
    pub fn describe_client_quotas(
        &self,
        req: &pb::DescribeClientQuotasRequest,
    ) -> Result<Vec<pb::ClientQuotaEntry>, String> {
        describe_quotas(&self.shared.image().quotas, req)
    }
}
