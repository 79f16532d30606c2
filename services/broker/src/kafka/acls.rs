//! Kafka's ACL APIs: DescribeAcls from this broker's copy of the metadata,
//! CreateAcls and DeleteAcls forwarded to the controller and answered once
//! this broker enforces the change. All need an authorizer (else
//! SECURITY_DISABLED, as Kafka) and ALTER (DESCRIBE to list) on the cluster.

use std::collections::BTreeMap;

use runnel_common::acl::{AclBinding, Operation};
use runnel_common::metadata::{acl_binding, acl_filter};
use runnel_kafka::kafka_protocol::messages::create_acls_response::AclCreationResult;
use runnel_kafka::kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use runnel_kafka::kafka_protocol::messages::describe_acls_response::{
    AclDescription, DescribeAclsResource,
};
use runnel_kafka::kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use runnel_kafka::kafka_protocol::protocol::StrBytes;
use runnel_proto::controller::v1 as pb;
use runnel_proto::metadata::v1::AclEntry;

use super::{Caller, KafkaApi, code, error_code, error_message, message, raw_code, wire};
use crate::service::Failure;

/// Kafka's SECURITY_DISABLED: no authorizer is configured.
const SECURITY_DISABLED: i16 = 54;

fn security_disabled() -> (i16, Option<StrBytes>) {
    (
        SECURITY_DISABLED,
        Some(StrBytes::from_static_str("No Authorizer is configured.")),
    )
}

/// A Kafka filter's fields as the controller's filter.
fn filter(
    resource_type: i8,
    name: &Option<StrBytes>,
    pattern_type: i8,
    principal: &Option<StrBytes>,
    host: &Option<StrBytes>,
    operation: i8,
    permission: i8,
) -> pb::AclFilter {
    let text = |s: &Option<StrBytes>| s.as_ref().map(|s| s.to_string());
    pb::AclFilter {
        resource_type: i32::from(resource_type),
        name: text(name),
        pattern_type: i32::from(pattern_type),
        principal: text(principal),
        host: text(host),
        operation: i32::from(operation),
        permission: i32::from(permission),
    }
}

impl KafkaApi {
    /// Whether ACLs may be managed here by the caller: the error to answer
    /// every part of the request with otherwise.
    fn acl_admin(
        &self,
        caller: &Caller<'_>,
        operation: Operation,
    ) -> Option<(i16, Option<StrBytes>)> {
        if !self.authorizer.enabled() {
            return Some(security_disabled());
        }
        caller
            .check_cluster(operation)
            .err()
            .map(|f| (error_code(&f), error_message(&f)))
    }

    pub(super) async fn create_acls(
        &self,
        r: CreateAclsRequest,
        caller: &Caller<'_>,
    ) -> CreateAclsResponse {
        // Every creation refused alike.
        let refused = |code: i16, message: Option<StrBytes>| {
            r.creations
                .iter()
                .map(|_| {
                    AclCreationResult::default()
                        .with_error_code(code)
                        .with_error_message(message.clone())
                })
                .collect()
        };
        if let Some((code, message)) = self.acl_admin(caller, Operation::Alter) {
            return CreateAclsResponse::default().with_results(refused(code, message));
        }
        let creations: Vec<AclEntry> = r
            .creations
            .iter()
            .map(|c| AclEntry {
                resource_type: i32::from(c.resource_type),
                name: c.resource_name.to_string(),
                pattern_type: i32::from(c.resource_pattern_type),
                principal: c.principal.to_string(),
                host: c.host.to_string(),
                operation: i32::from(c.operation),
                permission: i32::from(c.permission_type),
            })
            .collect();
        let answer = self
            .controller
            .clone()
            .create_acls(pb::CreateAclsRequest {
                creations: creations.clone(),
            })
            .await
            .map(|a| a.into_inner().results)
            .map_err(|s| Failure::from_controller(&s));
        let results = match answer {
            Ok(results) => {
                let created: Vec<AclBinding> = creations
                    .iter()
                    .zip(&results)
                    .filter(|(_, r)| r.error_code == 0)
                    .filter_map(|(e, _)| acl_binding(e).ok())
                    .collect();
                self.wait_until_applied(|| {
                    self.metadata
                        .with(|image| created.iter().all(|b| image.acls.contains(b)))
                })
                .await;
                results
                    .into_iter()
                    .map(|res| {
                        AclCreationResult::default()
                            .with_error_code(raw_code(res.error_code))
                            .with_error_message(message(res.error_message))
                    })
                    .collect()
            }
            Err(failure) => refused(error_code(&failure), error_message(&failure)),
        };
        CreateAclsResponse::default().with_results(results)
    }

    pub(super) fn describe_acls(
        &self,
        r: DescribeAclsRequest,
        caller: &Caller<'_>,
    ) -> DescribeAclsResponse {
        if let Some((code, message)) = self.acl_admin(caller, Operation::Describe) {
            return DescribeAclsResponse::default()
                .with_error_code(code)
                .with_error_message(message);
        }
        let wanted = match acl_filter(&filter(
            r.resource_type_filter,
            &r.resource_name_filter,
            r.pattern_type_filter,
            &r.principal_filter,
            &r.host_filter,
            r.operation,
            r.permission_type,
        )) {
            Ok(f) => f,
            Err(e) => {
                return DescribeAclsResponse::default()
                    .with_error_code(code(runnel_proto::common::v1::ErrorCode::InvalidRequest))
                    .with_error_message(Some(wire(e)));
            }
        };
        // Grouped by resource pattern, as Kafka answers.
        let mut resources: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
        self.metadata.with(|image| {
            for a in image.acls.iter().filter(|a| wanted.matches(a)) {
                resources
                    .entry((
                        a.resource_type.code(),
                        a.name.clone(),
                        a.pattern_type.code(),
                    ))
                    .or_default()
                    .push(
                        AclDescription::default()
                            .with_principal(wire(a.principal.clone()))
                            .with_host(wire(a.host.clone()))
                            .with_operation(a.operation.code())
                            .with_permission_type(a.permission.code()),
                    );
            }
        });
        DescribeAclsResponse::default().with_resources(
            resources
                .into_iter()
                .map(|((resource_type, name, pattern_type), acls)| {
                    DescribeAclsResource::default()
                        .with_resource_type(resource_type)
                        .with_resource_name(wire(name))
                        .with_pattern_type(pattern_type)
                        .with_acls(acls)
                })
                .collect(),
        )
    }

    pub(super) async fn delete_acls(
        &self,
        r: DeleteAclsRequest,
        caller: &Caller<'_>,
    ) -> DeleteAclsResponse {
        let refused = |code: i16, message: Option<StrBytes>| {
            DeleteAclsFilterResult::default()
                .with_error_code(code)
                .with_error_message(message)
        };
        if let Some((code, message)) = self.acl_admin(caller, Operation::Alter) {
            return DeleteAclsResponse::default().with_filter_results(
                r.filters
                    .iter()
                    .map(|_| refused(code, message.clone()))
                    .collect(),
            );
        }
        let filters = r
            .filters
            .iter()
            .map(|f| {
                filter(
                    f.resource_type_filter,
                    &f.resource_name_filter,
                    f.pattern_type_filter,
                    &f.principal_filter,
                    &f.host_filter,
                    f.operation,
                    f.permission_type,
                )
            })
            .collect();
        let answer = self
            .controller
            .clone()
            .delete_acls(pb::DeleteAclsRequest { filters })
            .await
            .map(|a| a.into_inner().results)
            .map_err(|s| Failure::from_controller(&s));
        let results = match answer {
            Ok(results) => {
                let deleted: Vec<AclBinding> = results
                    .iter()
                    .flat_map(|r| &r.deleted)
                    .filter_map(|e| acl_binding(e).ok())
                    .collect();
                self.wait_until_applied(|| {
                    self.metadata
                        .with(|image| !deleted.iter().any(|b| image.acls.contains(b)))
                })
                .await;
                results
                    .into_iter()
                    .map(|res| {
                        let matching = res
                            .deleted
                            .into_iter()
                            .map(|e| {
                                DeleteAclsMatchingAcl::default()
                                    .with_resource_type(e.resource_type as i8)
                                    .with_resource_name(wire(e.name))
                                    .with_pattern_type(e.pattern_type as i8)
                                    .with_principal(wire(e.principal))
                                    .with_host(wire(e.host))
                                    .with_operation(e.operation as i8)
                                    .with_permission_type(e.permission as i8)
                            })
                            .collect();
                        refused(raw_code(res.error_code), message(res.error_message))
                            .with_matching_acls(matching)
                    })
                    .collect()
            }
            Err(failure) => r
                .filters
                .iter()
                .map(|_| refused(error_code(&failure), error_message(&failure)))
                .collect(),
        };
        DeleteAclsResponse::default().with_filter_results(results)
    }
}
