//! The controller quorum's membership: adding a controller (it catches up
//! as a learner, then votes) and removing one, as Raft membership changes.

use std::collections::BTreeSet;

use super::{Controller, ControllerError, Refusal};
use crate::quorum::raft_id;

impl Controller {
    /// Adds controller `id` at `address` to the quorum: it first catches up
    /// as a learner, then becomes a voter.
    pub async fn add_controller(&self, id: i32, address: String) -> Result<(), ControllerError> {
        if id < 0 {
            return Err(Refusal::NegativeControllerId { controller_id: id }.into());
        }
        if !self.is_active() {
            return Err(self.not_active());
        }
        let node = openraft::BasicNode::new(address.clone());
        self.raft
            .add_learner(raft_id(id), node, true)
            .await
            .map_err(|e| self.membership_error(e))?;
        let mut voters = self.voters();
        voters.insert(raft_id(id));
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|e| self.membership_error(e))?;
        tracing::info!(controller = id, %address, "controller added to the quorum");
        Ok(())
    }

    /// Removes controller `id` from the quorum.
    pub async fn remove_controller(&self, id: i32) -> Result<(), ControllerError> {
        if !self.is_active() {
            return Err(self.not_active());
        }
        let mut voters = self.voters();
        if !voters.remove(&raft_id(id)) {
            return Err(Refusal::NotAVoter { controller_id: id }.into());
        }
        if voters.is_empty() {
            return Err(Refusal::LastController.into());
        }
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|e| self.membership_error(e))?;
        tracing::info!(controller = id, "controller removed from the quorum");
        Ok(())
    }

    /// The Raft ids of the quorum's voters.
    fn voters(&self) -> BTreeSet<u64> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    fn membership_error(
        &self,
        e: openraft::error::RaftError<
            u64,
            openraft::error::ClientWriteError<u64, openraft::BasicNode>,
        >,
    ) -> ControllerError {
        match e {
            openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(_),
            ) => self.not_active(),
            openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ChangeMembershipError(e),
            ) => Refusal::MembershipChange(e).into(),
            other => ControllerError::Raft(Box::new(other)),
        }
    }
}
