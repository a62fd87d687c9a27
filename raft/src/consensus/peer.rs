//! The serving side of peer RPC: a request body in, a response body out, for each
//! [`PeerRpc`]. It owns the [`SnapshotInbox`] where snapshots being received land.
//!
//! A body that does not decode is refused as `Rejected { InvalidArgument }` (the API layer
//! answers 400); a Raft that cannot take the request is `Unavailable` (503).
//!
//! Must never: decide anything itself (requests go to openraft), or block the async runtime
//! on the inbox's files (they are written on the blocking pool).

use std::path::Path;

use bytes::Bytes;
use openraft::raft::{
    AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};

use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftStateMachine;

use crate::consensus::rpc::{self, InstallRequest, PeerRpc, SnapshotManifest};
use crate::consensus::snapshot_inbox::SnapshotInbox;
use crate::consensus::types::{SnapshotData, TypeConfig};
use crate::error::{BrokerError, CodecError};
use crate::state::RejectCode;

/// Serves peer RPCs for one node whose state machine is `SM`.
pub struct PeerService<SM: RaftStateMachine<TypeConfig>> {
    raft: openraft::Raft<TypeConfig, SM>,
    inbox: SnapshotInbox,
}

impl<SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotData>> std::fmt::Debug
    for PeerService<SM>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerService")
            .field("inbox", &self.inbox)
            .finish()
    }
}

fn bad_request(e: CodecError) -> BrokerError {
    BrokerError::rejected(RejectCode::InvalidArgument, e.to_string())
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

impl<SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotData>> PeerService<SM> {
    /// Serves `raft`, receiving snapshots under `incoming`.
    pub fn new(raft: openraft::Raft<TypeConfig, SM>, incoming: &Path) -> Self {
        PeerService {
            raft,
            inbox: SnapshotInbox::new(incoming),
        }
    }

    /// Answers one peer RPC.
    pub async fn serve(&self, which: PeerRpc, body: Bytes) -> Result<Bytes, BrokerError> {
        match which {
            PeerRpc::Append => {
                let req = rpc::decode_append(&body).map_err(bad_request)?;
                let resp: AppendEntriesResponse<TypeConfig> =
                    self.raft.append_entries(req).await.map_err(unavailable)?;
                Ok(rpc::encode(&resp))
            }
            PeerRpc::Vote => {
                let req: VoteRequest<TypeConfig> =
                    rpc::decode("vote", &body).map_err(bad_request)?;
                let resp: VoteResponse<TypeConfig> =
                    self.raft.vote(req).await.map_err(unavailable)?;
                Ok(rpc::encode(&resp))
            }
            PeerRpc::TransferLeader => {
                let req: TransferLeaderRequest<TypeConfig> =
                    rpc::decode("transfer-leader", &body).map_err(bad_request)?;
                let resp: TransferLeaderResponse<TypeConfig> = self
                    .raft
                    .handle_transfer_leader(req)
                    .await
                    .map_err(unavailable)?;
                Ok(rpc::encode(&resp))
            }
            PeerRpc::SnapshotBegin => {
                let m: SnapshotManifest =
                    rpc::decode("snapshot manifest", &body).map_err(bad_request)?;
                let inbox = self.inbox.clone();
                let have = tokio::task::spawn_blocking(move || inbox.begin(&m))
                    .await
                    .map_err(unavailable)?
                    .map_err(bad_request)?;
                Ok(rpc::encode(&have))
            }
            PeerRpc::SnapshotChunk => {
                let (h, data) = rpc::decode_chunk(&body).map_err(bad_request)?;
                let inbox = self.inbox.clone();
                let len = tokio::task::spawn_blocking(move || inbox.chunk(&h, &data))
                    .await
                    .map_err(unavailable)?
                    .map_err(bad_request)?;
                Ok(rpc::encode(&len))
            }
            // The node's wall clock may not be the OS's: the broker answers.
            PeerRpc::Clock => Err(BrokerError::Internal(
                "clock requests are answered by the broker".into(),
            )),
            PeerRpc::Replicated => {
                // The asking node's id, 8 bytes little-endian.
                let node = <[u8; 8]>::try_from(body.as_ref())
                    .map(u64::from_le_bytes)
                    .map_err(|_| {
                        bad_request(CodecError::new("replicated", "not an 8-byte node id"))
                    })?;
                let matched: Option<u64> = self
                    .raft
                    .metrics()
                    .borrow_watched()
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&node).copied().flatten())
                    .map(|log_id| log_id.index);
                Ok(rpc::encode(&matched))
            }
            PeerRpc::SnapshotInstall => {
                let req: InstallRequest =
                    rpc::decode("snapshot install", &body).map_err(bad_request)?;
                let snapshot = self
                    .inbox
                    .complete(&req.id, req.meta)
                    .map_err(bad_request)?;
                // The transfer's directory goes when the install lets go of it.
                let resp: SnapshotResponse<TypeConfig> = self
                    .raft
                    .install_full_snapshot(req.vote, snapshot)
                    .await
                    .map_err(unavailable)?;
                Ok(rpc::encode(&resp))
            }
        }
    }
}
