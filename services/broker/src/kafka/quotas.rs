//! Kafka's client quota APIs: DescribeClientQuotas from this broker's copy
//! of the metadata, AlterClientQuotas forwarded to the controller and
//! answered once this broker throttles by the change. They need
//! DESCRIBE_CONFIGS and ALTER_CONFIGS on the cluster, as in Kafka.

use runnel_common::acl::Operation;
use runnel_common::metadata::{describe_quotas, quota_entity};
use runnel_common::quota::QuotaKey;
use runnel_kafka::kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse, alter_client_quotas_response as alter,
    describe_client_quotas_response as describe,
};
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;
use runnel_proto::metadata::v1::QuotaEntityPart;

use super::{Caller, KafkaApi, code, error_code, error_message, message, raw_code, wire};
use crate::service::Failure;

impl KafkaApi {
    pub(super) fn describe_client_quotas(
        &self,
        r: DescribeClientQuotasRequest,
        caller: &Caller<'_>,
    ) -> DescribeClientQuotasResponse {
        if let Err(f) = caller.check_cluster(Operation::DescribeConfigs) {
            return DescribeClientQuotasResponse::default()
                .with_error_code(error_code(&f))
                .with_error_message(error_message(&f));
        }
        let req = pb::DescribeClientQuotasRequest {
            components: r
                .components
                .iter()
                .map(|c| pb::QuotaFilterComponent {
                    entity_type: c.entity_type.to_string(),
                    match_type: i32::from(c.match_type),
                    name: c._match.as_ref().map(|m| m.to_string()),
                })
                .collect(),
            strict: r.strict,
        };
        match self
            .metadata
            .with(|image| describe_quotas(&image.quotas, &req))
        {
            Ok(entries) => DescribeClientQuotasResponse::default().with_entries(Some(
                entries
                    .into_iter()
                    .map(|e| {
                        describe::EntryData::default()
                            .with_entity(
                                e.entity
                                    .into_iter()
                                    .map(|p| {
                                        describe::EntityData::default()
                                            .with_entity_type(wire(p.entity_type))
                                            .with_entity_name(p.name.map(wire))
                                    })
                                    .collect(),
                            )
                            .with_values(
                                e.values
                                    .into_iter()
                                    .map(|(k, v)| {
                                        describe::ValueData::default()
                                            .with_key(wire(k))
                                            .with_value(v)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )),
            Err(e) => DescribeClientQuotasResponse::default()
                .with_error_code(code(ErrorCode::InvalidRequest))
                .with_error_message(Some(wire(e))),
        }
    }

    pub(super) async fn alter_client_quotas(
        &self,
        r: AlterClientQuotasRequest,
        caller: &Caller<'_>,
    ) -> AlterClientQuotasResponse {
        let entities: Vec<Vec<alter::EntityData>> = r
            .entries
            .iter()
            .map(|e| {
                e.entity
                    .iter()
                    .map(|p| {
                        alter::EntityData::default()
                            .with_entity_type(p.entity_type.clone())
                            .with_entity_name(p.entity_name.clone())
                    })
                    .collect()
            })
            .collect();
        // Every entry answered alike.
        let refused = |failure: &Failure| {
            entities
                .iter()
                .map(|entity| {
                    alter::EntryData::default()
                        .with_error_code(error_code(failure))
                        .with_error_message(error_message(failure))
                        .with_entity(entity.clone())
                })
                .collect()
        };
        if let Err(f) = caller.check_cluster(Operation::AlterConfigs) {
            return AlterClientQuotasResponse::default().with_entries(refused(&f));
        }
        let entries: Vec<pb::QuotaAlteration> = r
            .entries
            .iter()
            .map(|e| pb::QuotaAlteration {
                entity: e
                    .entity
                    .iter()
                    .map(|p| QuotaEntityPart {
                        entity_type: p.entity_type.to_string(),
                        name: p.entity_name.as_ref().map(|n| n.to_string()),
                    })
                    .collect(),
                ops: e
                    .ops
                    .iter()
                    .map(|o| pb::QuotaOp {
                        key: o.key.to_string(),
                        value: o.value,
                        remove: o.remove,
                    })
                    .collect(),
            })
            .collect();
        let answer = self
            .controller
            .clone()
            .alter_client_quotas(pb::AlterClientQuotasRequest {
                entries: entries.clone(),
                validate_only: r.validate_only,
            })
            .await
            .map(|a| a.into_inner().results)
            .map_err(|s| Failure::from_controller(&s));
        let results = match answer {
            Ok(results) => results,
            Err(failure) => {
                return AlterClientQuotasResponse::default().with_entries(refused(&failure));
            }
        };
        if !r.validate_only {
            // What this broker must hold before it answers: each accepted
            // entry's keys set to their values, removed keys gone.
            let wanted: Vec<_> = entries
                .iter()
                .zip(&results)
                .filter(|(_, res)| res.error_code == 0)
                .filter_map(|(e, _)| {
                    let entity = quota_entity(&e.entity).ok()?;
                    let ops: Vec<(QuotaKey, Option<f64>)> = e
                        .ops
                        .iter()
                        .filter_map(|o| {
                            let key = QuotaKey::parse(&o.key).ok()?;
                            Some((key, (!o.remove).then_some(o.value)))
                        })
                        .collect();
                    Some((entity, ops))
                })
                .collect();
            self.wait_until_applied(|| {
                self.metadata.with(|image| {
                    wanted.iter().all(|(entity, ops)| {
                        let values = image.quotas.get(entity);
                        ops.iter()
                            .all(|(key, value)| values.and_then(|v| v.get(key)).copied() == *value)
                    })
                })
            })
            .await;
        }
        AlterClientQuotasResponse::default().with_entries(
            results
                .into_iter()
                .zip(entities)
                .map(|(res, entity)| {
                    alter::EntryData::default()
                        .with_error_code(raw_code(res.error_code))
                        .with_error_message(message(res.error_message))
                        .with_entity(entity)
                })
                .collect(),
        )
    }
}
