//! Users' SCRAM credentials (Kafka's AlterUserScramCredentials and
//! DescribeUserScramCredentials, KIP-554). Passwords are salted and hashed
//! here, so they never cross the network and are never stored.

use runnel_common::scram::{MIN_ITERATIONS, Mechanism};
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;

use crate::admin::Admin;
use crate::error::{ClientError, Result};

pub use runnel_common::scram::Mechanism as ScramMechanism;

/// A user with SCRAM credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCredentials {
    /// The user name.
    pub user: String,
    /// Its mechanisms and their iteration counts.
    pub credentials: Vec<(Mechanism, u32)>,
}

/// Kafka's default iteration count for new SCRAM credentials.
pub const DEFAULT_ITERATIONS: u32 = MIN_ITERATIONS;

impl Admin {
    /// Sets `user`'s `mechanism` credential to `password` (a new user, or a
    /// new password), with a fresh random salt.
    pub async fn upsert_scram_credential(
        &self,
        user: &str,
        mechanism: Mechanism,
        password: &str,
        iterations: u32,
    ) -> Result<()> {
        let salt: [u8; 32] = rand::random();
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
        let upsertion = pb::ScramCredentialUpsertion {
            user: user.to_owned(),
            mechanism: i32::from(mechanism.code()),
            iterations: i32::try_from(iterations).unwrap_or(i32::MAX),
            salt: salt.to_vec().into(),
            salted_password: salted.into(),
        };
        self.alter_scram(pb::AlterUserScramCredentialsRequest {
            deletions: Vec::new(),
            upsertions: vec![upsertion],
        })
        .await
    }

    /// Removes `user`'s `mechanism` credential (the user goes with its last one).
    pub async fn delete_scram_credential(&self, user: &str, mechanism: Mechanism) -> Result<()> {
        self.alter_scram(pb::AlterUserScramCredentialsRequest {
            deletions: vec![pb::ScramCredentialDeletion {
                user: user.to_owned(),
                mechanism: i32::from(mechanism.code()),
            }],
            upsertions: Vec::new(),
        })
        .await
    }

    /// Every user with SCRAM credentials, by name.
    pub async fn describe_scram_credentials(&self) -> Result<Vec<UserCredentials>> {
        let users = self
            .cluster
            .call_controller(
                pb::DescribeUserScramCredentialsRequest {},
                |mut c, r| async move { c.describe_user_scram_credentials(r).await },
            )
            .await?
            .into_inner()
            .users;
        Ok(users
            .into_iter()
            .map(|u| UserCredentials {
                user: u.user,
                credentials: u
                    .credentials
                    .iter()
                    .filter_map(|c| {
                        let m = i8::try_from(c.mechanism)
                            .ok()
                            .and_then(Mechanism::from_code)?;
                        Some((m, u32::try_from(c.iterations).unwrap_or(0)))
                    })
                    .collect(),
            })
            .collect())
    }

    async fn alter_scram(&self, request: pb::AlterUserScramCredentialsRequest) -> Result<()> {
        let results = self
            .cluster
            .call_controller(request, |mut c, r| async move {
                c.alter_user_scram_credentials(r).await
            })
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
}
