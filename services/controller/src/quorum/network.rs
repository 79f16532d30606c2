//! Raft between controllers: openraft's messages as JSON in the
//! `ControllerQuorum` gRPC service, on the controller's gRPC listener.
//!
//! Calls carry [`PEER_HEADER`] naming this controller, so a test that cuts
//! it off from its peers or from one of them ([`NetFault`]) drops them
//! both ways.

use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use runnel_common::netfault::{NetFault, PEER_HEADER, PeerName};
use runnel_common::tls::ClientTls;
use runnel_proto::controller::v1::RaftMessage;
use runnel_proto::controller::v1::controller_quorum_client::ControllerQuorumClient;
use runnel_proto::controller::v1::controller_quorum_server::ControllerQuorum;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::{ControllerRaft, TypeConfig};

type NodeId = u64;

/// Makes a client per peer controller.
#[derive(Debug, Clone)]
pub struct Network {
    fault: NetFault,
    me: PeerName,
    /// TLS to the peers, with this controller's service certificate.
    tls: Option<Arc<ClientTls>>,
}

impl Network {
    /// Peers reached through gRPC by controller `me`; `fault` cuts it off
    /// in tests.
    pub fn new(fault: NetFault, me: PeerName, tls: Option<Arc<ClientTls>>) -> Self {
        Network { fault, me, tls }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        let channel = runnel_common::transport::lazy_channel(
            &node.addr,
            Duration::from_secs(1),
            self.tls.as_ref(),
        )
        .ok();
        Peer {
            target,
            addr: node.addr.clone(),
            client: channel.map(ControllerQuorumClient::new),
            fault: self.fault.clone(),
            me: self.me.clone(),
        }
    }
}

/// A connection to one peer controller.
#[derive(Debug)]
pub struct Peer {
    target: NodeId,
    addr: String,
    client: Option<ControllerQuorumClient<Channel>>,
    fault: NetFault,
    me: PeerName,
}

/// Why a Raft message did not reach a peer controller (openraft keeps it
/// as the cause of an unreachable or network error).
#[derive(Debug, thiserror::Error)]
enum PeerError {
    /// A test's network fault cuts this controller off.
    #[error("cut off from the other controllers (network fault)")]
    Isolated,
    /// The peer's address does not make a gRPC endpoint.
    #[error("bad controller address {addr:?}")]
    BadAddress {
        /// The address the quorum has for it.
        addr: String,
    },
    /// The call failed; the status says how.
    #[error("controller at {addr}: {}", .status.message())]
    Call {
        /// The peer's address.
        addr: String,
        /// What the call ended with.
        status: Box<Status>,
    },
}

/// The three Raft calls.
#[derive(Debug, Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl Peer {
    async fn call<Req, Resp, E>(
        &mut self,
        method: Rpc,
        rpc: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if self.fault.is_isolated() {
            return Err(RPCError::Unreachable(Unreachable::new(
                &PeerError::Isolated,
            )));
        }
        let Some(client) = self.client.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(
                &PeerError::BadAddress {
                    addr: self.addr.clone(),
                },
            )));
        };
        let json = serde_json::to_vec(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = Request::new(RaftMessage { json: json.into() });
        request.set_timeout(ttl);
        request
            .metadata_mut()
            .insert(PEER_HEADER, self.me.header_value());
        let response = match method {
            Rpc::AppendEntries => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::InstallSnapshot => client.install_snapshot(request).await,
        };
        let message = response.map_err(|s| {
            let unreachable = matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            );
            let failure = PeerError::Call {
                addr: self.addr.clone(),
                status: Box::new(s),
            };
            if unreachable {
                RPCError::Unreachable(Unreachable::new(&failure))
            } else {
                RPCError::Network(NetworkError::new(&failure))
            }
        })?;
        let result: Result<Resp, E> = serde_json::from_slice(&message.into_inner().json)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::AppendEntries, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::InstallSnapshot, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, option.hard_ttl()).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // Retry an unreachable peer soon (openraft waits 500 ms): a
        // restarted controller that is not caught up when the active one
        // dies starts an election it cannot win and delays the failover.
        openraft::network::Backoff::new(std::iter::repeat(UNREACHABLE_RETRY))
    }
}

/// How long replication to an unreachable controller waits before trying again.
const UNREACHABLE_RETRY: Duration = Duration::from_millis(100);

/// The server side: hands peers' messages to this controller's Raft node.
#[derive(Clone)]
pub struct QuorumService {
    raft: ControllerRaft,
}

impl QuorumService {
    /// Serves `raft`.
    pub fn new(raft: ControllerRaft) -> Self {
        QuorumService { raft }
    }
}

fn decode<T: DeserializeOwned>(request: Request<RaftMessage>) -> Result<T, Status> {
    serde_json::from_slice(&request.into_inner().json)
        .map_err(|e| Status::invalid_argument(format!("undecodable Raft message: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftMessage>, Status> {
    serde_json::to_vec(value)
        .map(|json| Response::new(RaftMessage { json: json.into() }))
        .map_err(|e| Status::internal(format!("Raft response does not encode: {e}")))
}

#[tonic::async_trait]
impl ControllerQuorum for QuorumService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request)?;
        encode(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest<NodeId> = decode(request)?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request)?;
        encode(&self.raft.install_snapshot(rpc).await)
    }
}
