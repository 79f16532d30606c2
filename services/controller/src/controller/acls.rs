//! ACL bindings (Kafka's CreateAcls, DescribeAcls, DeleteAcls): records of
//! the metadata log, so every broker authorizes from the same bindings
//! within one metadata round trip of a change.

use runnel_common::acl::AclBinding;
use runnel_common::metadata::{acl_binding, acl_entry, acl_filter};
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;
use runnel_proto::metadata::v1::{AclCreated, AclEntry, AclRemoved, metadata_record::Record};

use super::{Controller, ControllerError, record};

/// A binding a request asks for, checked as Kafka's CreateAcls does.
fn valid_binding(e: &AclEntry) -> Result<AclBinding, String> {
    let b = acl_binding(e)?;
    b.validate().map_err(|e| e.to_string())?;
    Ok(b)
}

impl Controller {
    /// Adds each valid binding (one already in force changes nothing); one
    /// result per creation, in order.
    pub async fn create_acls(
        &self,
        req: pb::CreateAclsRequest,
    ) -> Result<Vec<pb::AclResult>, ControllerError> {
        let mut inner = self.lock_active().await?;
        let mut records = Vec::new();
        let mut results = Vec::new();
        let mut adding: Vec<AclBinding> = Vec::new();
        for e in &req.creations {
            let result = match valid_binding(e) {
                Ok(b) => {
                    let present = inner.image.acls.contains(&b) || adding.contains(&b);
                    if !present {
                        records.push(record(Record::AclCreated(AclCreated {
                            acl: Some(acl_entry(&b)),
                        })));
                        adding.push(b);
                    }
                    pb::AclResult::default()
                }
                Err(message) => pb::AclResult {
                    error_code: ErrorCode::InvalidRequest as i32,
                    error_message: message,
                },
            };
            results.push(result);
        }
        self.commit(&mut inner, records).await?;
        for b in &adding {
            tracing::info!(acl = ?b, "ACL created");
        }
        Ok(results)
    }

    /// The bindings `filter` selects.
    pub fn describe_acls(&self, filter: &pb::AclFilter) -> Result<Vec<AclEntry>, String> {
        let filter = acl_filter(filter)?;
        Ok(self
            .shared
            .image()
            .acls
            .iter()
            .filter(|a| filter.matches(a))
            .map(acl_entry)
            .collect())
    }

    /// Removes what each filter selects; per filter, what it removed.
    pub async fn delete_acls(
        &self,
        req: pb::DeleteAclsRequest,
    ) -> Result<Vec<pb::DeleteAclsFilterResult>, ControllerError> {
        let mut inner = self.lock_active().await?;
        let mut records = Vec::new();
        let mut results = Vec::new();
        let mut removing: Vec<AclBinding> = Vec::new();
        for f in &req.filters {
            let result = match acl_filter(f) {
                Ok(filter) => {
                    let mut deleted = Vec::new();
                    for a in inner.image.acls.iter().filter(|a| filter.matches(a)) {
                        deleted.push(acl_entry(a));
                        if !removing.contains(a) {
                            records.push(record(Record::AclRemoved(AclRemoved {
                                acl: Some(acl_entry(a)),
                            })));
                            removing.push(a.clone());
                        }
                    }
                    pb::DeleteAclsFilterResult {
                        deleted,
                        ..Default::default()
                    }
                }
                Err(message) => pb::DeleteAclsFilterResult {
                    error_code: ErrorCode::InvalidRequest as i32,
                    error_message: message,
                    deleted: Vec::new(),
                },
            };
            results.push(result);
        }
        self.commit(&mut inner, records).await?;
        for b in &removing {
            tracing::info!(acl = ?b, "ACL deleted");
        }
        Ok(results)
    }
}
