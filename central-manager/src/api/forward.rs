//! Followers forward the RPCs that act on pods or on the leader's live
//! state to the leader (replicas, issue 15). Every replica serves every
//! RPC: reads, WatchEvents, CreateTask without `auto_start`, DeleteTask,
//! ArchiveTasks and GetStats run wherever they arrive (the database is
//! shared); StartPod, StopPod, RestartPod, CompleteTask, CancelTask,
//! CancelTasks, CreateTask with `auto_start`, ListPodHosts, GetPodLogs and
//! the schedule commands run on the leader, which holds the pod-host
//! sessions, the supervisor and the schedule timers.
//!
//! A forwarded call carries the caller's metadata (its bearer token: the
//! leader authenticates and authorizes the caller itself, as if called
//! directly) plus [`FORWARDED_BY`]. A call that arrives forwarded at a
//! replica that no longer leads is refused rather than forwarded again,
//! so a call never loops between replicas during a failover; the client
//! retries. A caller authenticated by a client certificate alone cannot be
//! vouched for by a follower: such callers send pod operations to the
//! leader (GetClusterInfo names it) or use a token.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipa_proto::v1::central_manager_client::CentralManagerClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::core::leadership::Leadership;
use crate::error::Error;

/// Metadata naming the replica that forwarded a call.
pub const FORWARDED_BY: &str = "x-ipa-forwarded-by";

/// How long a looked-up leader address is reused.
const ADDRESS_TTL: Duration = Duration::from_millis(500);

/// Dial bound towards the leader.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a call runs.
pub struct Forwarder {
    leadership: Option<Leadership>,
    tls: Option<ipa_common::tls::ClientTls>,
    leader: Mutex<Option<Cached>>,
}

struct Cached {
    address: String,
    client: CentralManagerClient<Channel>,
    at: Instant,
}

impl Forwarder {
    /// Every call runs here (a process without replicas: tests, embedding).
    pub fn local() -> Self {
        Self {
            leadership: None,
            tls: None,
            leader: Mutex::new(None),
        }
    }

    /// Forwards to the leader `leadership` names while this replica
    /// follows, over TLS with `tls` for `https://` addresses.
    pub fn new(leadership: Leadership, tls: Option<ipa_common::tls::ClientTls>) -> Self {
        Self {
            leadership: Some(leadership),
            tls,
            leader: Mutex::new(None),
        }
    }

    /// `None`: run the call here. `Some(client)`: send it to the leader
    /// through that client, as [`Self::request`] rewrites it.
    pub async fn route<T>(
        &self,
        req: &Request<T>,
    ) -> Result<Option<CentralManagerClient<Channel>>, Status> {
        let Some(leadership) = &self.leadership else {
            return Ok(None);
        };
        if leadership.is_leader() {
            return Ok(None);
        }
        if req.metadata().contains_key(FORWARDED_BY) {
            return Err(
                no_leader("the call was forwarded to a replica that no longer leads").into(),
            );
        }
        if let Some(c) = self.cached() {
            return Ok(Some(c));
        }
        let address = leadership
            .leader_address()
            .await
            .map_err(Status::from)?
            .ok_or_else(|| Status::from(no_leader("no replica leads right now")))?;
        let client = self.dial(&address)?;
        *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = Some(Cached {
            address,
            client: client.clone(),
            at: Instant::now(),
        });
        Ok(Some(client))
    }

    /// The call as sent to the leader: the caller's metadata and message,
    /// marked as forwarded by this replica.
    pub fn request<T>(&self, req: Request<T>) -> Request<T> {
        let (mut metadata, _, message) = req.into_parts();
        if let Some(l) = &self.leadership
            && let Ok(v) = l.replica_id().parse()
        {
            metadata.insert(FORWARDED_BY, v);
        }
        Request::from_parts(metadata, Default::default(), message)
    }

    /// Forgets the cached leader after a failed forward (it may have gone).
    pub fn failed(&self, status: &Status) {
        if status.code() == tonic::Code::Unavailable {
            *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    fn cached(&self) -> Option<CentralManagerClient<Channel>> {
        let guard = self.leader.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .filter(|c| c.at.elapsed() < ADDRESS_TTL)
            .map(|c| c.client.clone())
    }

    fn dial(&self, address: &str) -> Result<CentralManagerClient<Channel>, Status> {
        if let Some(c) = self
            .leader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|c| c.address == address)
        {
            return Ok(c.client.clone());
        }
        let bad =
            |e: String| Status::from(Error::Internal(format!("leader address {address}: {e}")));
        let channel = if address.starts_with("https://") {
            let tls = self
                .tls
                .as_ref()
                .ok_or_else(|| bad("is https but this replica has no --replica-ca".into()))?;
            let endpoint = ipa_common::tls::client::tls_endpoint(address)
                .map_err(bad)?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true);
            tls.channel(endpoint)
        } else {
            Endpoint::from_shared(address.to_owned())
                .map_err(|e| bad(e.to_string()))?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .connect_lazy()
        };
        Ok(CentralManagerClient::new(channel)
            .max_decoding_message_size(crate::domain::limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::domain::limits::MAX_MESSAGE_BYTES))
    }
}

fn no_leader(why: &str) -> Error {
    Error::NoPodHost(format!(
        "{why} (a failover takes about --leader-lease-ms); retry"
    ))
}

/// Runs a unary call on the leader when this replica follows: `forward!(self,
/// req, method)` returns from the handler with the leader's answer.
macro_rules! forward {
    ($api:expr, $req:ident, $method:ident) => {
        if let Some(mut leader) = $api.forward.route(&$req).await? {
            let answer = leader.$method($api.forward.request($req)).await;
            if let Err(status) = &answer {
                $api.forward.failed(status);
            }
            return answer;
        }
    };
}
pub(crate) use forward;
