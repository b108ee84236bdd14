//! The local control socket: one request line in, one JSON line out.
//! Root only: the socket file is 0600 and the peer's uid is checked.

use crate::farm::MembershipHandle;
use anyhow::{bail, Context, Result};
use fastpath::node::StatusReader;
use health::driver::Health;
use health::machine::Command;
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
}

impl Node {
    /// The full status: counters, table, health, membership.
    pub fn status_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self.status.status()).unwrap_or_default();
        v["ownership"] = if self.membership.is_some() {
            "membership".into()
        } else {
            "static".into()
        };
        v["health"] = serde_json::to_value(self.health.snapshot()).unwrap_or_default();
        if let Some(m) = &self.membership {
            v["membership"] = crate::farm::status_json(&m.shared, &self.names);
            v["membership"]["weight_source"] = serde_json::json!(m.weights.source());
            v["membership"]["weight_file"] = serde_json::json!(m.weights.path());
            v["membership"]["moves"] = m.moves.status();
        }
        v
    }

    /// Whether an operator drain is under way (membership farms): the
    /// node is UP but takes no new flows.
    pub fn draining(&self) -> bool {
        self.membership
            .as_ref()
            .is_some_and(|m| m.shared.with(|mach| mach.draining()))
    }

    /// How the node stands for new flows, in a word, as `herd state` and
    /// `/health` say it: "draining" (UP, serving its connections only),
    /// "transient" (scripts running) or "ready".
    pub fn readiness(&self, health: &health::driver::Snapshot) -> &'static str {
        if self.draining() {
            "draining"
        } else if health.transient {
            "transient"
        } else {
            "ready"
        }
    }

    /// `herd weight N`: the farm rebalances to the new weight, keeping
    /// connections where they are; the weight is kept first (it survives
    /// a restart). `herd weight config`: back to the config's weight.
    fn set_weight(&self, arg: &str) -> serde_json::Value {
        let Some(m) = &self.membership else {
            return serde_json::json!({ "error": "weights change at run time only with membership ownership" });
        };
        let wanted = match arg.trim() {
            "config" => None,
            n => match n.parse::<u32>() {
                Ok(w) => Some(w),
                Err(_) => {
                    return serde_json::json!({
                        "error": format!("weight {arg:?}: expected an integer 0..=4294967295 or \"config\"")
                    })
                }
            },
        };
        let w = match m.weights.keep(wanted) {
            Ok(w) => w,
            Err(e) => {
                return serde_json::json!({
                    "error": format!("the weight could not be kept across restarts, so it is unchanged: {e}")
                })
            }
        };
        let old = m.shared.change(|mach, now| {
            let old = mach.weight();
            mach.set_weight(now, w);
            old
        });
        let source = m.weights.source();
        tracing::info!(from = old, to = w, ?source, file = %m.weights.path().display(), "weight changed by the operator");
        serde_json::json!({ "ok": true, "weight": w, "was": old, "source": source })
    }

    /// `herd drain` with membership: new flows go elsewhere at once; the
    /// node stops (stop scripts) when its last connection in the moving
    /// buckets closes, or at the drain timeout.
    fn drain(&self, m: &MembershipHandle) -> serde_json::Value {
        let st = self.health.status();
        if st.state != health::machine::State::Up || st.transient {
            return serde_json::json!({ "error": "drain: the node is not UP and ready" });
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
        let s = self.health.snapshot();
        serde_json::json!({ "ok": true, "draining": true, "state": s.state, "transient": s.transient, "reason": "draining: waiting for the connections to end" })
    }

    /// Answers one request line.
    pub async fn answer(&self, request: &str) -> serde_json::Value {
        let cmd = match request {
            "status" => return self.status_json(),
            "state" => {
                let s = self.health.snapshot();
                let code = self.health.status().state.code();
                // A draining node is still UP (its connections are served)
                // but not ready for new flows: transient, as on its way down.
                let readiness = self.readiness(&s);
                let draining = readiness == "draining";
                let reason = if draining {
                    "draining: new flows go to the other nodes".to_string()
                } else {
                    s.reason
                };
                return serde_json::json!({
                    "state": s.state, "transient": s.transient || draining, "draining": draining,
                    "readiness": readiness, "code": code, "reason": reason,
                });
            }
            "checker on" | "checker off" => {
                let on = request == "checker on";
                return match self.health.set_checkers(on).await {
                    Ok(()) => serde_json::json!({ "ok": true, "checkers_on": on }),
                    Err(e) => serde_json::json!({ "error": e }),
                };
            }
            "start" | "restart" => {
                // An operator start ends a drain.
                if let Some(m) = &self.membership {
                    m.shared.change(|mach, now| mach.set_draining(now, false));
                }
                if request == "start" {
                    Command::Start
                } else {
                    Command::Restart
                }
            }
            "reload" => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                if self.reload.send(tx).await.is_err() {
                    return serde_json::json!({ "error": "the node is stopping" });
                }
                return match rx.await {
                    Ok(o) if o.ok => serde_json::json!({ "ok": true, "applied": o.message }),
                    Ok(o) => serde_json::json!({ "error": o.message }),
                    Err(_) => serde_json::json!({ "error": "the node is stopping" }),
                };
            }
            "stop" => Command::Stop,
            "drain" => match &self.membership {
                Some(m) => return self.drain(m),
                None => Command::Drain,
            },
            other => match other.strip_prefix("weight ") {
                Some(arg) => return self.set_weight(arg),
                None => return serde_json::json!({ "error": format!("unknown request {other:?}") }),
            },
        };
        match self.health.command(cmd).await {
            Ok(()) => {
                let s = self.health.snapshot();
                serde_json::json!({ "ok": true, "state": s.state, "transient": s.transient, "reason": s.reason })
            }
            Err(e) => serde_json::json!({ "error": e }),
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
    let reply = if uid != 0 {
        tracing::warn!(uid, "control request refused: not root");
        serde_json::json!({ "error": "permission denied: the control socket is for root only" })
    } else {
        let request = line.trim();
        if request != "status" && request != "state" {
            tracing::info!(request, "control request");
        } else {
            // Asked every second by monitoring: only at debug.
            tracing::debug!(request, "control request");
        }
        node.answer(request).await
    };
    wr.write_all(reply.to_string().as_bytes()).await?;
    wr.write_all(b"\n").await?;
    Ok(())
}

/// Sends one request and returns the reply.
pub async fn request(path: &Path, what: &str) -> Result<serde_json::Value> {
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
    let v: serde_json::Value = serde_json::from_str(&reply).context("reply is not JSON")?;
    if let Some(e) = v.get("error") {
        bail!("node refused: {}", e.as_str().unwrap_or("?"));
    }
    Ok(v)
}

/// Renders a status reply for people.
pub fn render_status(v: &serde_json::Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let mut out = String::new();
    out += &format!(
        "farm {}  node {} ({})  nic {} {}\n",
        s("farm"),
        n("node_id"),
        s("node_name"),
        s("nic"),
        s("nic_mac")
    );
    if let Some(vips) = v["vips"].as_array() {
        let vips: Vec<&str> = vips.iter().filter_map(|a| a.as_str()).collect();
        out += &format!("VIPs {}\n", vips.join(", "));
    }
    let h = &v["health"];
    out += &format!(
        "state {} ({})  {}{}\n",
        h["state"].as_str().unwrap_or("?"),
        if h["transient"].as_bool() == Some(true) {
            "transient"
        } else {
            "ready"
        },
        h["reason"].as_str().unwrap_or(""),
        if h["checkers_on"].as_bool() == Some(false) {
            "  [checkers off]"
        } else {
            ""
        }
    );
    if let Some(cs) = h["checkers"].as_array() {
        for c in cs {
            out += &format!(
                "  checker {:<12} {:<8} action {:<9} {}\n",
                c["name"].as_str().unwrap_or("?"),
                c["verdict"].as_str().unwrap_or("?"),
                c["action"].as_str().unwrap_or("?"),
                c["detail"].as_str().unwrap_or("")
            );
        }
    }
    out += &format!(
        "buckets owned {}/{}  [{}]  arp responder: {}  table generation {}\n",
        n("owned_buckets"),
        n("buckets"),
        s("owned_ranges"),
        v["arp_responder"].as_bool().unwrap_or(false),
        n("table_generation")
    );
    if n("moving_in") + n("moving_out") > 0 || v["membership"]["draining"].as_bool() == Some(true) {
        out += &format!(
            "moving: in {} [{}]{}  out {} [{}]  connections held {}  flows tracked {} (held {}){}\n",
            n("moving_in"),
            s("moving_in_ranges"),
            match v["membership"]["nodes"][0]["kept_in"].as_u64() {
                Some(k) if k > 0 => format!(" (kept for a newer owner: {k})"),
                _ => String::new(),
            },
            n("moving_out"),
            s("moving_out_ranges"),
            v["membership"]["moves"]["connections_held"],
            v["flows"]["tracked"],
            v["flows"]["held"],
            if v["membership"]["draining"].as_bool() == Some(true) {
                "  [draining]"
            } else {
                ""
            }
        );
    }
    out += "counters (all lcores):\n";
    if let Some(t) = v["totals"].as_object() {
        for (k, val) in t {
            out += &format!("  {k:<24}{}\n", val.as_u64().unwrap_or(0));
        }
    }
    if let Some(x) = v["xdp_prefilter"].as_object() {
        out += "XDP pre-filter (decided in the driver):\n";
        for k in ["passed", "dropped", "to_fastpath"] {
            out += &format!(
                "  {k:<24}{}\n",
                x.get(k).and_then(|c| c.as_u64()).unwrap_or(0)
            );
        }
    }
    if let Some(n) = v["direct_egress"].as_u64() {
        out += &format!(
            "direct egress (the kernel's frames out of the NIC's interface, no lcore):\n  {:<24}{n}\n",
            "frames"
        );
    }
    if let Some(nodes) = v["membership"]["nodes"].as_array() {
        out += &format!(
            "membership view {}  failovers {}  protocol versions {}:\n",
            v["membership"]["view"],
            v["membership"]["counters"]["failovers"],
            v["membership"]["protocol_versions"].as_str().unwrap_or("?")
        );
        for n in nodes {
            out +=
                &format!(
                "  {:>3} {:<8} {:<6} {:<5}{:<10} weight {:<3} buckets {:>5}  heartbeat age ms {}\n",
                n["id"],
                n["name"].as_str().unwrap_or("?"),
                if n["self"].as_bool() == Some(true) {
                    "self"
                } else if n["alive"].as_bool() == Some(true) {
                    "alive"
                } else {
                    "dead"
                },
                n["state"].as_str().unwrap_or("?"),
                if n["transient"].as_bool() == Some(true) {
                    " transient"
                } else {
                    ""
                },
                n["weight"].as_u64().map_or("-".to_string(), |w| w.to_string()),
                n["buckets"],
                n.get("heartbeat_age_ms")
                    .map_or("-".to_string(), |a| a.to_string())
            );
            if n["farm_differs"].as_bool() == Some(true) {
                out += &format!(
                    "      its farm config differs (digest {}, this node's {}): no bucket is taken until they agree\n",
                    n["farm_digest"].as_str().unwrap_or("?"),
                    v["membership"]["farm_digest"].as_str().unwrap_or("?")
                );
            }
            if n["self"].as_bool() != Some(true) {
                if let Some(p) = n["protocol"].as_u64() {
                    out += &format!(
                        "      protocol {p} (it speaks {})\n",
                        n["speaks"].as_str().unwrap_or("? (not heard yet)")
                    );
                }
            }
            if let Some(r) = n["rejected"].as_object() {
                out += &format!(
                    "      a heartbeat {} ms ago was refused ({}): {}\n",
                    r.get("age_ms").and_then(|a| a.as_u64()).unwrap_or(0),
                    r.get("why").and_then(|w| w.as_str()).unwrap_or("?"),
                    if n["alive"].as_bool() == Some(true) {
                        "not trusted; it is alive by the others"
                    } else {
                        "not trusted, so counted dead"
                    }
                );
            }
        }
        match v["membership"]["weight_source"].as_str() {
            Some("runtime") => {
                out += &format!(
                    "  this node's weight {}: set at run time, kept in {} (`herd weight config` goes back to the config's)\n",
                    v["membership"]["weight"],
                    v["membership"]["weight_file"].as_str().unwrap_or("?")
                )
            }
            Some(_) => {
                out += &format!(
                    "  this node's weight {}: from the config\n",
                    v["membership"]["weight"]
                )
            }
            None => {}
        }
    }
    if let Some(lc) = v["lcores"].as_array() {
        for l in lc {
            out += &format!(
                "lcore {} queue {}: rx {} accepted {} to-kernel {} from-kernel {}\n",
                l["lcore"],
                l["queue"],
                l["counters"]["rx_packets"],
                l["counters"]["accepted"],
                l["counters"]["to_kernel"],
                l["counters"]["from_kernel"]
            );
        }
    }
    out
}
