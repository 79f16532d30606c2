//! ACL bindings (Kafka's CreateAcls, DescribeAcls, DeleteAcls) through the
//! controller: what `runnel acls` and `kafka-acls.sh` manage.

use runnel_common::metadata::{acl_binding, acl_entry, acl_filter_proto};
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;

use crate::admin::Admin;
use crate::error::{ClientError, Result};

pub use runnel_common::acl::{
    AclBinding, AclFilter, Operation as AclOperation, PatternType as AclPatternType,
    Permission as AclPermission, ResourceType as AclResourceType,
};

impl Admin {
    /// Adds bindings (one already in force changes nothing); the first
    /// refusal (an invalid binding) is the error, after the valid ones are in.
    pub async fn create_acls(&self, bindings: &[AclBinding]) -> Result<()> {
        let results = self
            .cluster
            .call_controller(
                pb::CreateAclsRequest {
                    creations: bindings.iter().map(acl_entry).collect(),
                },
                |mut c, r| async move { c.create_acls(r).await },
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

    /// The bindings `filter` selects.
    pub async fn describe_acls(&self, filter: &AclFilter) -> Result<Vec<AclBinding>> {
        let answer = self
            .cluster
            .call_controller(
                pb::DescribeAclsRequest {
                    filter: Some(acl_filter_proto(filter)),
                },
                |mut c, r| async move { c.describe_acls(r).await },
            )
            .await?
            .into_inner();
        if answer.error_code() != ErrorCode::None {
            return Err(ClientError::server(
                answer.error_code(),
                answer.error_message,
            ));
        }
        answer
            .acls
            .iter()
            .map(|e| {
                acl_binding(e).map_err(|m| ClientError::server(ErrorCode::UnknownServerError, m))
            })
            .collect()
    }

    /// Removes what `filter` selects; returns what was removed.
    pub async fn delete_acls(&self, filter: &AclFilter) -> Result<Vec<AclBinding>> {
        let results = self
            .cluster
            .call_controller(
                pb::DeleteAclsRequest {
                    filters: vec![acl_filter_proto(filter)],
                },
                |mut c, r| async move { c.delete_acls(r).await },
            )
            .await?
            .into_inner()
            .results;
        let mut deleted = Vec::new();
        for r in results {
            if r.error_code() != ErrorCode::None {
                return Err(ClientError::server(r.error_code(), r.error_message));
            }
            for e in &r.deleted {
                deleted.push(
                    acl_binding(e)
                        .map_err(|m| ClientError::server(ErrorCode::UnknownServerError, m))?,
                );
            }
        }
        Ok(deleted)
    }
}
