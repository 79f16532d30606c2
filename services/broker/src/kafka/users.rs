//! Kafka's SCRAM credential APIs (KIP-554): DescribeUserScramCredentials
//! from this broker's copy of the metadata, AlterUserScramCredentials
//! forwarded to the controller.

use std::collections::BTreeSet;

use runnel_common::acl::Operation;
use runnel_common::scram::Mechanism;
use runnel_kafka::kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use runnel_kafka::kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use runnel_kafka::kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;

use super::{Caller, KafkaApi, code, error_code, error_message, message, raw_code, wire};
use crate::service::Failure;

impl KafkaApi {
    /// Every user's mechanisms and iteration counts (no salts, no keys), or
    /// those of the users asked for.
    pub(super) fn describe_user_scram_credentials(
        &self,
        r: DescribeUserScramCredentialsRequest,
        caller: &Caller<'_>,
    ) -> DescribeUserScramCredentialsResponse {
        if let Err(failure) = caller.check_cluster(Operation::Describe) {
            return DescribeUserScramCredentialsResponse::default()
                .with_error_code(error_code(&failure))
                .with_error_message(error_message(&failure));
        }
        let image = self.metadata.snapshot();
        let infos = |user: &str| {
            image.scram_credentials.get(user).map(|credentials| {
                credentials
                    .values()
                    .map(|c| {
                        CredentialInfo::default()
                            .with_mechanism(c.mechanism.code())
                            .with_iterations(i32::try_from(c.iterations).unwrap_or(i32::MAX))
                    })
                    .collect::<Vec<_>>()
            })
        };
        let asked: Vec<String> = match r.users {
            Some(users) if !users.is_empty() => users.iter().map(|u| u.name.to_string()).collect(),
            _ => image.scram_credentials.keys().cloned().collect(),
        };
        let mut seen = BTreeSet::new();
        let duplicated: BTreeSet<&String> = asked.iter().filter(|u| !seen.insert(*u)).collect();
        let mut listed = BTreeSet::new();
        let results = asked
            .iter()
            .filter(|u| listed.insert(*u))
            .map(|user| {
                let out = DescribeUserScramCredentialsResult::default().with_user(wire(user.clone()));
                if duplicated.contains(user) {
                    return out
                        .with_error_code(code(ErrorCode::DuplicateResource))
                        .with_error_message(Some(wire("Cannot describe SCRAM credentials for the same user twice in a single request")));
                }
                match infos(user) {
                    Some(infos) => out.with_credential_infos(infos),
                    None => out
                        .with_error_code(code(ErrorCode::ResourceNotFound))
                        .with_error_message(Some(wire(format!(
                            "Attempt to describe a user credential that does not exist: {user}"
                        )))),
                }
            })
            .collect();
        DescribeUserScramCredentialsResponse::default().with_results(results)
    }

    /// Forwards the changes to the controller and waits (briefly) until this
    /// broker has applied them.
    pub(super) async fn alter_user_scram_credentials(
        &self,
        r: AlterUserScramCredentialsRequest,
        caller: &Caller<'_>,
    ) -> AlterUserScramCredentialsResponse {
        if let Err(failure) = caller.check_cluster(Operation::Alter) {
            return AlterUserScramCredentialsResponse::default()
                .with_results(refuse_every_user(&r, &failure));
        }
        let request = pb::AlterUserScramCredentialsRequest {
            deletions: r
                .deletions
                .iter()
                .map(|d| pb::ScramCredentialDeletion {
                    user: d.name.to_string(),
                    mechanism: i32::from(d.mechanism),
                })
                .collect(),
            upsertions: r
                .upsertions
                .iter()
                .map(|u| pb::ScramCredentialUpsertion {
                    user: u.name.to_string(),
                    mechanism: i32::from(u.mechanism),
                    iterations: u.iterations,
                    salt: u.salt.to_vec().into(),
                    salted_password: u.salted_password.to_vec().into(),
                })
                .collect(),
        };
        let answer = self
            .controller
            .clone()
            .alter_user_scram_credentials(request)
            .await
            .map(|a| a.into_inner().results)
            .map_err(|s| Failure::from_controller(&s));
        let results = match answer {
            Ok(results) => {
                self.wait_for_credentials(&r, &results).await;
                results
                    .into_iter()
                    .map(|res| {
                        AlterUserScramCredentialsResult::default()
                            .with_user(wire(res.user))
                            .with_error_code(raw_code(res.error_code))
                            .with_error_message(message(res.error_message))
                    })
                    .collect()
            }
            Err(failure) => refuse_every_user(&r, &failure),
        };
        AlterUserScramCredentialsResponse::default().with_results(results)
    }

    /// Waits until this broker's image shows every successful user's changes.
    async fn wait_for_credentials(
        &self,
        r: &AlterUserScramCredentialsRequest,
        results: &[pb::UserScramCredentialsResult],
    ) {
        let ok: BTreeSet<&str> = results
            .iter()
            .filter(|res| res.error_code == ErrorCode::None as i32)
            .map(|res| res.user.as_str())
            .collect();
        let present = |user: &str, mechanism: i8| {
            Mechanism::from_code(mechanism).is_some_and(|m| {
                self.metadata.with(|image| {
                    image
                        .scram_credentials
                        .get(user)
                        .is_some_and(|c| c.contains_key(&m))
                })
            })
        };
        let done = || {
            r.deletions
                .iter()
                .filter(|d| ok.contains(d.name.as_str()))
                .all(|d| !present(&d.name, d.mechanism))
                && r.upsertions
                    .iter()
                    .filter(|u| ok.contains(u.name.as_str()))
                    .all(|u| present(&u.name, u.mechanism))
        };
        self.wait_until_applied(done).await;
    }
}

/// One answer per user an alteration names, each refused with `failure`.
fn refuse_every_user(
    r: &AlterUserScramCredentialsRequest,
    failure: &Failure,
) -> Vec<AlterUserScramCredentialsResult> {
    let users: BTreeSet<String> = r
        .deletions
        .iter()
        .map(|d| d.name.to_string())
        .chain(r.upsertions.iter().map(|u| u.name.to_string()))
        .collect();
    users
        .into_iter()
        .map(|user| {
            AlterUserScramCredentialsResult::default()
                .with_user(wire(user))
                .with_error_code(error_code(failure))
                .with_error_message(error_message(failure))
        })
        .collect()
}
