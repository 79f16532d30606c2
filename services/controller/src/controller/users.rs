//! Users' SCRAM credentials (Kafka's AlterUserScramCredentials, KIP-554):
//! clients send the password already salted and hashed; the controller
//! keeps only the salt and the keys derived from it, as records of the
//! metadata log, so every broker's listener can authenticate the user.

use std::collections::BTreeMap;

use runnel_common::metadata::MetadataImage;
use runnel_common::scram::{CredentialError, Mechanism, ScramCredential};
use runnel_proto::common::v1::ErrorCode;
use runnel_proto::controller::v1 as pb;
use runnel_proto::metadata::v1::{
    MetadataRecord, UserScramCredentialRemoved, UserScramCredentialSet, metadata_record::Record,
};

use super::{Controller, ControllerError, record};

/// One user's requested changes.
#[derive(Default)]
struct Changes<'a> {
    deletions: Vec<&'a pb::ScramCredentialDeletion>,
    upsertions: Vec<&'a pb::ScramCredentialUpsertion>,
}

impl Controller {
    /// Every user with credentials: mechanisms and iterations only.
    pub fn describe_user_scram_credentials(&self) -> Vec<pb::UserScramCredentials> {
        self.shared
            .image()
            .scram_credentials
            .iter()
            .map(|(user, credentials)| pb::UserScramCredentials {
                user: user.clone(),
                credentials: credentials
                    .values()
                    .map(|c| pb::ScramCredentialInfo {
                        mechanism: i32::from(c.mechanism.code()),
                        iterations: i32::try_from(c.iterations).unwrap_or(i32::MAX),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Applies each user's deletions and upsertions, all of a user's or
    /// none; one result per user, in name order.
    pub async fn alter_user_scram_credentials(
        &self,
        req: pb::AlterUserScramCredentialsRequest,
    ) -> Result<Vec<pb::UserScramCredentialsResult>, ControllerError> {
        let mut users: BTreeMap<&str, Changes<'_>> = BTreeMap::new();
        for d in &req.deletions {
            users.entry(&d.user).or_default().deletions.push(d);
        }
        for u in &req.upsertions {
            users.entry(&u.user).or_default().upsertions.push(u);
        }
        let mut inner = self.lock_active().await?;
        let mut records = Vec::new();
        let mut results = Vec::new();
        for (user, changes) in users {
            let (code, message) = match user_records(&inner.image, user, &changes) {
                Ok(mut r) => {
                    records.append(&mut r);
                    (ErrorCode::None, String::new())
                }
                Err((code, message)) => (code, message),
            };
            results.push(pb::UserScramCredentialsResult {
                user: user.to_owned(),
                error_code: code as i32,
                error_message: message,
            });
        }
        let changed = records.len();
        self.commit(&mut inner, records).await?;
        if changed > 0 {
            tracing::info!(changed, "SCRAM credentials altered");
        }
        Ok(results)
    }
}

/// The records for one user's changes, or Kafka's error for them.
fn user_records(
    image: &MetadataImage,
    user: &str,
    changes: &Changes<'_>,
) -> Result<Vec<MetadataRecord>, (ErrorCode, String)> {
    if user.is_empty() {
        return Err((
            ErrorCode::UnacceptableCredential,
            "Username must not be empty".into(),
        ));
    }
    let mechanism = |code: i32| {
        i8::try_from(code)
            .ok()
            .and_then(Mechanism::from_code)
            .ok_or_else(|| {
                (
                    ErrorCode::UnsupportedSaslMechanism,
                    format!("Unknown SCRAM mechanism {code}"),
                )
            })
    };
    let mut touched = Vec::new();
    let mut records = Vec::new();
    for d in &changes.deletions {
        let m = mechanism(d.mechanism)?;
        touched.push(m);
        let exists = image
            .scram_credentials
            .get(user)
            .is_some_and(|c| c.contains_key(&m));
        if !exists {
            return Err((
                ErrorCode::ResourceNotFound,
                format!("Attempt to delete a user credential that does not exist ({m})"),
            ));
        }
        records.push(record(Record::UserScramCredentialRemoved(
            UserScramCredentialRemoved {
                user: user.to_owned(),
                mechanism: d.mechanism,
            },
        )));
    }
    for u in &changes.upsertions {
        let m = mechanism(u.mechanism)?;
        touched.push(m);
        let c =
            ScramCredential::from_salted(m, &u.salt, &u.salted_password, i64::from(u.iterations))
                .map_err(|e| (ErrorCode::UnacceptableCredential, unacceptable(&e)))?;
        records.push(record(Record::UserScramCredentialSet(
            UserScramCredentialSet {
                user: user.to_owned(),
                mechanism: u.mechanism,
                iterations: u.iterations,
                salt: c.salt.into(),
                stored_key: c.stored_key.into(),
                server_key: c.server_key.into(),
            },
        )));
    }
    touched.sort();
    if touched.windows(2).any(|w| w[0] == w[1]) {
        return Err((
            ErrorCode::DuplicateResource,
            "A user credential cannot be altered twice in the same request".into(),
        ));
    }
    Ok(records)
}

/// Kafka's wording for a credential it refuses.
fn unacceptable(e: &CredentialError) -> String {
    match e {
        CredentialError::Iterations(i) if *i < i64::from(runnel_common::scram::MIN_ITERATIONS) => {
            format!("Too few iterations: {e}")
        }
        CredentialError::Iterations(_) => format!("Too many iterations: {e}"),
        other => other.to_string(),
    }
}
