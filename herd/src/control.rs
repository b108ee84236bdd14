//! The local control socket: one request line in, one JSON line out
//! (the protocol is `herd_control::request`).
//! Root only: the socket file is 0600 and the peer's uid is checked.

use crate::farm::MembershipHandle;
use anyhow::{Context, Result};
use fastpath::node::StatusReader;
use health::driver::Health;
use health::machine::{Command, NodeState};
use herd_control::request::{ControlError, Reply, Request, WeightRequest};
use herd_control::status::{
    CheckerReply, CommandReply, Ownership, Readiness, ReloadReply, Report, StateReply, WeightReply,
};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Longest request line accepted.
const MAX_REQUEST: usize = 256;

/// What the control socket and the HTTP listener read and drive.
#[derive(Clone)]
pub struct Node {
    pub status: StatusReader,
    pub membership: Option<MembershipHandle>,
    pub health: Health,
    pub names: Arc<BTreeMap<u16, String>>,
    /// Where `herd reload` asks the task that owns the running config.
    pub reload: tokio::sync::mpsc::Sender<crate::reload::Request>,
    /// The node's recent log lines.
    pub events: herd_control::events::EventLog,
}

impl Node {
    /// The full status: counters, table, health, membership, events.
    pub fn report(&self) -> Report {
        let health = self.health.snapshot();
        Report {
            node: self.status.status(),
            ownership: if self.membership.is_some() {
                Ownership::Membership
            } else {
                Ownership::Static
            },
            readiness: self.readiness(&health),
            health,
            membership: self.membership.as_ref().map(|m| {
                crate::farm::membership_status(&m.shared, &self.names, &m.weights, m.moves.status())
            }),
            recent_events: self.events.recent(),
        }
    }

    /// Whether an operator drain is under way (membership farms): the
    /// node is UP but takes no new flows.
    pub fn draining(&self) -> bool {
        self.membership
            .as_ref()
            .is_some_and(|m| m.shared.with(|mach| mach.draining()))
    }

    /// How the node stands for new flows, as `herd state` and `/health`
    /// say it.
    pub fn readiness(&self, health: &health::driver::Snapshot) -> Readiness {
        if self.draining() {
            Readiness::Draining
        } else if health.transient {
            Readiness::Transient
        } else {
            Readiness::Ready
        }
    }

    /// The reply to an operator command: where the node stands now.
    fn command_reply(&self, reason: Option<&str>) -> Reply {
        let s = self.health.snapshot();
        Reply::Command(CommandReply {
            state: s.state,
            readiness: self.readiness(&s),
            reason: reason.map_or(s.reason, str::to_string),
        })
    }

    /// `herd weight N`: the farm rebalances to the new weight, keeping
    /// connections where they are; the weight is kept first (it survives
    /// a restart). `herd weight config`: back to the config's weight.
    fn set_weight(&self, wanted: WeightRequest) -> Result<Reply, ControlError> {
        let Some(m) = &self.membership else {
            return Err(ControlError::NoMembership);
        };
        let wanted = match wanted {
            WeightRequest::Config => None,
            WeightRequest::Set(w) => Some(w),
        };
        let w = m
            .weights
            .keep(wanted)
            .map_err(|e| ControlError::WeightNotKept(e.to_string()))?;
        let old = m.shared.change(|mach, now| {
            let old = mach.weight();
            mach.set_weight(now, w);
            old
        });
        let source = m.weights.source();
        tracing::info!(from = old, to = w, ?source, file = %m.weights.path().display(), "weight changed by the operator");
        Ok(Reply::Weight(WeightReply {
            weight: w,
            was: old,
            source,
        }))
    }

    /// `herd drain` with membership: new flows go elsewhere at once; the
    /// node stops (stop scripts) when its last connection in the moving
    /// buckets closes, or at the drain timeout.
    fn drain(&self, m: &MembershipHandle) -> Result<Reply, ControlError> {
        let st = self.health.status();
        if st.state != NodeState::Up || st.transient {
            return Err(ControlError::NotUp);
        }
        m.shared.change(|mach, now| mach.set_draining(now, true));
        tracing::info!("draining: new flows go to the other nodes");
        let (shared, health) = (Arc::clone(&m.shared), self.health.clone());
        tokio::spawn(async move {
            loop {
                // Done when nothing moves: no bucket out (connections
                // left) and none kept in (a move in to this node that a
                // newer one overtook: handed on with its connections when
                // it ends).
                let (draining, moving) = shared.with(|mach| (mach.draining(), mach.moving()));
                if !draining {
                    return;
                }
                if !moving {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tracing::info!("drained: no connection left, stopping");
            if let Err(e) = health.command(Command::Drain).await {
                tracing::warn!("stopping after the drain: {e}");
            }
            shared.change(|mach, now| mach.set_draining(now, false));
        });
        Ok(self.command_reply(Some("draining: waiting for the connections to end")))
    }

    /// Answers one request.
    pub async fn answer(&self, request: Request) -> Result<Reply, ControlError> {
        let cmd = match request {
            Request::Status => return Ok(Reply::Status(Box::new(self.report()))),
            Request::State => return Ok(self.state()),
            Request::Checkers(on) => {
                self.health
                    .set_checkers(on)
                    .await
                    .map_err(ControlError::Refused)?;
                return Ok(Reply::Checkers(CheckerReply { checkers_on: on }));
            }
            Request::Start | Request::Restart => {
                if let Some(reply) = self.end_drain(request) {
                    return Ok(reply);
                }
                if request == Request::Start {
                    Command::Start
                } else {
                    Command::Restart
                }
            }
            Request::Reload => return self.reload().await,
            Request::Stop => Command::Stop,
            Request::Drain => match &self.membership {
                Some(m) => return self.drain(m),
                None => Command::Drain,
            },
            Request::Weight(w) => return self.set_weight(w),
        };
        self.health
            .command(cmd)
            .await
            .map_err(ControlError::Refused)?;
        Ok(self.command_reply(None))
    }

    /// `herd state`: the state, and how the node stands for new flows.
    fn state(&self) -> Reply {
        let s = self.health.snapshot();
        let readiness = self.readiness(&s);
        // A draining node is still UP (its connections are served) but
        // takes no new flows.
        let reason = if readiness == Readiness::Draining {
            "draining: new flows go to the other nodes".to_string()
        } else {
            s.reason
        };
        Reply::State(StateReply {
            state: s.state,
            readiness,
            reason,
        })
    }

    /// An operator start or restart ends a drain; on a node still UP,
    /// that is all a start does (the reply), else the command goes on.
    fn end_drain(&self, request: Request) -> Option<Reply> {
        let m = self.membership.as_ref()?;
        let was_draining = m.shared.with(|mach| mach.draining());
        m.shared.change(|mach, now| mach.set_draining(now, false));
        let s = self.health.status();
        if was_draining && request == Request::Start && s.state == NodeState::Up {
            tracing::info!("drain ended by an operator start");
            return Some(self.command_reply(Some("drain ended: the node takes new flows again")));
        }
        None
    }

    /// `herd reload`: the task that owns the running config applies it.
    async fn reload(&self) -> Result<Reply, ControlError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.reload.send(tx).await.is_err() {
            return Err(ControlError::Stopping);
        }
        match rx.await {
            Ok(o) if o.ok => Ok(Reply::Reload(ReloadReply { applied: o.message })),
            Ok(o) => Err(ControlError::Reload(o.message)),
            Err(_) => Err(ControlError::Stopping),
        }
    }
}

/// Binds the control socket (root only).
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    // Root only: the socket can stop and reconfigure the node.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    tracing::info!(socket = %path.display(), "control socket ready");
    Ok(listener)
}

/// Serves the control socket forever.
pub async fn serve(listener: UnixListener, node: Node) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &node).await {
                tracing::debug!("control request: {e:#}");
            }
        });
    }
}

async fn answer(stream: UnixStream, node: &Node) -> Result<()> {
    // Defence in depth behind the 0600 mode: the peer must be root.
    let uid = stream.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
    let (rd, mut wr) = stream.into_split();
    // Read the request first, from anyone: a client whose request is not
    // read could see its write fail before it reads the refusal.
    let mut line = String::new();
    let mut rd = BufReader::new(rd.take(MAX_REQUEST as u64));
    tokio::time::timeout(Duration::from_secs(2), rd.read_line(&mut line))
        .await
        .context("request timed out")??;
    let answer = if uid != 0 {
        tracing::warn!(uid, "control request refused: not root");
        Err(ControlError::NotRoot)
    } else {
        match line.parse::<Request>() {
            Ok(request) => {
                // Logged as the line it came as (`request="status"`).
                let line = request.to_string();
                if request.is_routine() {
                    tracing::debug!(request = line.as_str(), "control request");
                } else {
                    tracing::info!(request = line.as_str(), "control request");
                }
                node.answer(request).await
            }
            Err(e) => {
                tracing::info!(request = line.trim(), "control request refused: {e}");
                Err(e)
            }
        }
    };
    let reply = herd_control::request::encode(&answer);
    wr.write_all(reply.to_string().as_bytes()).await?;
    wr.write_all(b"\n").await?;
    Ok(())
}

/// Sends one request and returns the reply, as the `T` that answers it.
pub async fn request<T: serde::de::DeserializeOwned>(path: &Path, what: Request) -> Result<T> {
    let stream = UnixStream::connect(path).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            anyhow::anyhow!(
                "permission denied on {}: the control socket is for root only",
                path.display()
            )
        } else {
            anyhow::anyhow!(
                "cannot reach the node at {} (is `herd run` running?): {e}",
                path.display()
            )
        }
    })?;
    let (rd, mut wr) = stream.into_split();
    wr.write_all(format!("{what}\n").as_bytes()).await?;
    let mut reply = String::new();
    // Commands wait for nothing but the state machine; scripts run after.
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(rd).read_line(&mut reply),
    )
    .await
    .context("no reply from the node")??;
    Ok(herd_control::request::decode(&reply)?)
}
