//! Client quotas (Kafka's AlterClientQuotas and DescribeClientQuotas)
//! through the controller: the byte rates, request time and mutation rate
//! a user, a client id or both may use, as `runnel quotas` and
//! `kafka-configs.sh --entity-type users|clients` manage them.

use std::collections::BTreeMap;

use runnel_common::metadata::{quota_entity, quota_entity_parts};
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;

use crate::admin::Admin;
use crate::error::{ClientError, Result};

pub use runnel_common::quota::{
    CLIENT_ID as QUOTA_CLIENT_ID, EntityName as QuotaEntityName, MatchType as QuotaMatch,
    QuotaEntity, QuotaError, QuotaKey, USER as QUOTA_USER,
};

/// One component of a describe filter: how an entity's part of one type
/// must match (Kafka's `ClientQuotaFilterComponent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaFilterComponent {
    /// The part's type: [`QUOTA_USER`] or [`QUOTA_CLIENT_ID`].
    pub entity_type: String,
    /// How the part must match.
    pub match_type: QuotaMatch,
}

impl QuotaFilterComponent {
    /// A component on the user part.
    pub fn user(match_type: QuotaMatch) -> QuotaFilterComponent {
        QuotaFilterComponent {
            entity_type: QUOTA_USER.to_owned(),
            match_type,
        }
    }

    /// A component on the client id part.
    pub fn client_id(match_type: QuotaMatch) -> QuotaFilterComponent {
        QuotaFilterComponent {
            entity_type: QUOTA_CLIENT_ID.to_owned(),
            match_type,
        }
    }

    fn to_proto(&self) -> pb::QuotaFilterComponent {
        let (match_type, name) = self.match_type.code();
        pb::QuotaFilterComponent {
            entity_type: self.entity_type.clone(),
            match_type: i32::from(match_type),
            name: name.map(str::to_owned),
        }
    }
}

impl Admin {
    /// Sets the `set` quotas of `entity` and removes the `remove` ones, all
    /// or none; removing a quota that is not set changes nothing.
    pub async fn alter_client_quotas(
        &self,
        entity: &QuotaEntity,
        set: &[(QuotaKey, f64)],
        remove: &[QuotaKey],
    ) -> Result<()> {
        let ops = set
            .iter()
            .map(|(key, value)| pb::QuotaOp {
                key: key.name().to_owned(),
                value: *value,
                remove: false,
            })
            .chain(remove.iter().map(|key| pb::QuotaOp {
                key: key.name().to_owned(),
                value: 0.0,
                remove: true,
            }))
            .collect();
        let results = self
            .cluster
            .call_controller(
                pb::AlterClientQuotasRequest {
                    entries: vec![pb::QuotaAlteration {
                        entity: quota_entity_parts(entity),
                        ops,
                    }],
                    validate_only: false,
                },
                |mut c, r| async move { c.alter_client_quotas(r).await },
            )
            .await?
            .into_inner()
            .results;
        match results
            .into_iter()
            .find(|r| r.error_code() != ErrorCode::None)
        {
            Some(r) => Err(ClientError::server(r.error_code(), r.error_message)),
            None => Ok(()),
        }
    }

    /// The entities, with their quotas, whose parts match every component;
    /// with `strict`, only those with no other parts (no components and not
    /// `strict`: every entity with a quota).
    pub async fn describe_client_quotas(
        &self,
        components: &[QuotaFilterComponent],
        strict: bool,
    ) -> Result<Vec<(QuotaEntity, BTreeMap<QuotaKey, f64>)>> {
        let answer = self
            .cluster
            .call_controller(
                pb::DescribeClientQuotasRequest {
                    components: components
                        .iter()
                        .map(QuotaFilterComponent::to_proto)
                        .collect(),
                    strict,
                },
                |mut c, r| async move { c.describe_client_quotas(r).await },
            )
            .await?
            .into_inner();
        if answer.error_code() != ErrorCode::None {
            return Err(ClientError::server(
                answer.error_code(),
                answer.error_message,
            ));
        }
        let malformed = |m: String| ClientError::server(ErrorCode::UnknownServerError, m);
        answer
            .entries
            .into_iter()
            .map(|e| {
                let entity = quota_entity(&e.entity).map_err(malformed)?;
                let values = e
                    .values
                    .into_iter()
                    .map(|(k, v)| {
                        let key = QuotaKey::parse(&k).map_err(|e| malformed(e.to_string()))?;
                        Ok((key, v))
                    })
                    .collect::<Result<_>>()?;
                Ok((entity, values))
            })
            .collect()
    }
}
