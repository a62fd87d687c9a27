//! The peer network, client side: openraft's RPCs as [`super::rpc`] bodies sent through the
//! node's [`PeerTransport`] (HTTP `POST`s between processes, an in-memory router in
//! simulation).
//!
//! Over HTTP one shared client ([`super::transport::PeerHttp`]: a connection pool per peer,
//! plain or TLS) serves every replication and heartbeat stream, so a heartbeat never waits
//! behind a large append on the same connection: concurrent requests use separate pooled
//! connections.
//!
//! Must never: use a proxy from the environment, or retry on its own (openraft decides).

use std::time::Duration;

use bytes::Bytes;
use openraft::errors::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::impls::BasicNode;
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};

use std::sync::Arc;

use crate::consensus::rpc::{self, PeerRpc};
use crate::consensus::snapshot_inbox::manifest_of;
use crate::consensus::transport::{PeerTransport, SendError};
use crate::consensus::types::{NodeId, Snapshot, SnapshotData, TypeConfig, Vote};

/// Bytes per snapshot chunk request.
const SNAPSHOT_CHUNK: usize = 4 << 20;

fn read_chunk(path: &std::path::Path, offset: u64, n: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; n];
    f.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// Signs a peer request body: the credentials header's value (`None`: no cluster secret).
pub type Signer = Arc<dyn Fn(PeerRpc, &[u8]) -> Option<String> + Send + Sync>;

/// Builds peer clients.
#[derive(Clone)]
pub struct Network {
    me: NodeId,
    transport: Arc<dyn PeerTransport>,
    sign: Signer,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Network(node {})", self.me)
    }
}

impl Network {
    /// A network for node `me`, reaching peers through `transport`, signing requests with
    /// `sign`.
    pub fn new(me: NodeId, transport: Arc<dyn PeerTransport>, sign: Signer) -> Self {
        Network {
            me,
            transport,
            sign,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            me: self.me,
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
            sign: self.sign.clone(),
        }
    }
}

/// RPCs to one peer.
pub struct PeerClient {
    me: NodeId,
    target: NodeId,
    addr: String,
    transport: Arc<dyn PeerTransport>,
    sign: Signer,
}

impl PeerClient {
    async fn post(&self, rpc: PeerRpc, body: Bytes, ttl: Duration) -> Result<Bytes, SendError> {
        let credentials = (self.sign)(rpc, &body);
        self.transport
            .send(&self.addr, rpc, credentials, body, ttl)
            .await
    }

    fn rpc_error(&self, e: SendError, action: RPCTypes, ttl: Duration) -> RPCError<TypeConfig> {
        match e {
            SendError::Unreachable(m) => RPCError::Unreachable(Unreachable::from_string(m)),
            SendError::Timeout => RPCError::Timeout(Timeout {
                action,
                id: self.me,
                target: self.target,
                timeout: ttl,
            }),
            SendError::Other(m) => RPCError::Network(NetworkError::from_string(m)),
        }
    }

    async fn call<T: for<'de> serde::Deserialize<'de>>(
        &self,
        rpc: PeerRpc,
        body: Bytes,
        action: RPCTypes,
        option: &RPCOption,
    ) -> Result<T, RPCError<TypeConfig>> {
        let ttl = option.hard_ttl();
        let bytes = self
            .post(rpc, body, ttl)
            .await
            .map_err(|e| self.rpc_error(e, action, ttl))?;
        rpc::decode(rpc.response_name(), &bytes)
            .map_err(|e| RPCError::Network(NetworkError::from_string(e.to_string())))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let body = rpc::encode_append(&rpc);
        self.call(PeerRpc::Append, body, RPCTypes::AppendEntries, &option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(PeerRpc::Vote, rpc::encode(&rpc), RPCTypes::Vote, &option)
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let net = |e: &dyn std::fmt::Display| {
            StreamingError::Network(NetworkError::from_string(e.to_string()))
        };
        let dir = snapshot.snapshot.dir.clone();
        let id = dir
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
            })
            .unwrap_or_else(|| "snapshot".into());
        let manifest = {
            let (id, dir) = (id.clone(), dir.clone());
            tokio::task::spawn_blocking(move || manifest_of(&id, &dir))
                .await
                .map_err(|e| net(&e))?
                .map_err(|e| net(&e))?
        };
        let ttl = option.hard_ttl().max(Duration::from_secs(10));
        let mut cancel = std::pin::pin!(cancel);
        let bytes = tokio::select! {
            closed = &mut cancel => return Err(StreamingError::Closed(closed)),
            r = self.post(PeerRpc::SnapshotBegin, rpc::encode(&manifest), ttl) => r,
        }
        .map_err(|e| StreamingError::from(self.rpc_error(e, RPCTypes::InstallSnapshot, ttl)))?;
        let have: Vec<u64> =
            rpc::decode(PeerRpc::SnapshotBegin.response_name(), &bytes).map_err(|e| net(&e))?;
        for (i, ((rel, size), mut offset)) in manifest.files.iter().zip(have).enumerate() {
            while offset < *size {
                let n = (*size - offset).min(SNAPSHOT_CHUNK as u64) as usize;
                let data = {
                    let path = dir.join(rel);
                    tokio::task::spawn_blocking(move || read_chunk(&path, offset, n))
                        .await
                        .map_err(|e| net(&e))?
                        .map_err(|e| net(&e))?
                };
                let header = rpc::ChunkHeader {
                    id: manifest.id.clone(),
                    file: i as u32,
                    offset,
                };
                let bytes = tokio::select! {
                    closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                    r = self.post(PeerRpc::SnapshotChunk, rpc::encode_chunk(&header, &data), ttl) => r,
                }
                .map_err(|e| {
                    StreamingError::from(self.rpc_error(e, RPCTypes::InstallSnapshot, ttl))
                })?;
                offset = rpc::decode(PeerRpc::SnapshotChunk.response_name(), &bytes)
                    .map_err(|e| net(&e))?;
            }
        }
        let install = rpc::InstallRequest {
            id: manifest.id.clone(),
            vote,
            meta: snapshot.meta.clone(),
        };
        let bytes = self
            .post(
                PeerRpc::SnapshotInstall,
                rpc::encode(&install),
                ttl.max(Duration::from_secs(60)),
            )
            .await
            .map_err(|e| StreamingError::from(self.rpc_error(e, RPCTypes::InstallSnapshot, ttl)))?;
        rpc::decode(PeerRpc::SnapshotInstall.response_name(), &bytes).map_err(|e| net(&e))
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            PeerRpc::TransferLeader,
            rpc::encode(&req),
            RPCTypes::TransferLeader,
            &option,
        )
        .await
    }
}
