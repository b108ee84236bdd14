//! The local control socket: one request line in, one JSON line out.

use anyhow::{bail, Context, Result};
use fastpath::node::RunningNode;
use membership::driver::Shared;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};

/// Longest request line accepted.
const MAX_REQUEST: usize = 256;

/// Serves the control socket until SIGTERM or SIGINT.
pub async fn serve(path: &Path, node: &RunningNode, membership: Option<&Shared>) -> Result<()> {
    let names: BTreeMap<u16, String> = node
        .config()
        .farm
        .nodes
        .iter()
        .map(|n| (n.id, n.name.clone()))
        .collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    // Root only: the socket can stop and reconfigure the node.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tracing::info!(socket = %path.display(), "control socket ready");
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); return Ok(()); }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); return Ok(()); }
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                if let Err(e) = answer(stream, node, membership, &names).await {
                    tracing::debug!("control request: {e:#}");
                }
            }
        }
    }
}

async fn answer(
    stream: UnixStream,
    node: &RunningNode,
    membership: Option<&Shared>,
    names: &BTreeMap<u16, String>,
) -> Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    let mut rd = BufReader::new(rd.take(MAX_REQUEST as u64));
    tokio::time::timeout(Duration::from_secs(2), rd.read_line(&mut line))
        .await
        .context("request timed out")??;
    let reply = match line.trim() {
        "status" => {
            let mut v = serde_json::to_value(node.status())?;
            v["ownership"] = if membership.is_some() {
                "membership".into()
            } else {
                "static".into()
            };
            if let Some(m) = membership {
                v["membership"] = crate::farm::status_json(m, names);
            }
            v.to_string()
        }
        other => serde_json::json!({ "error": format!("unknown request {other:?}") }).to_string(),
    };
    wr.write_all(reply.as_bytes()).await?;
    wr.write_all(b"\n").await?;
    Ok(())
}

/// Sends one request and returns the reply line.
pub async fn request(path: &Path, what: &str) -> Result<String> {
    let stream = UnixStream::connect(path).await.with_context(|| {
        format!(
            "cannot reach the node at {} (is `herd run` running?)",
            path.display()
        )
    })?;
    let (rd, mut wr) = stream.into_split();
    wr.write_all(format!("{what}\n").as_bytes()).await?;
    let mut reply = String::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(rd).read_line(&mut reply),
    )
    .await
    .context("no reply from the node")??;
    let v: serde_json::Value = serde_json::from_str(&reply).context("reply is not JSON")?;
    if let Some(e) = v.get("error") {
        bail!("node refused: {e}");
    }
    Ok(reply.trim_end().to_string())
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
    out += &format!(
        "buckets owned {}/{}  [{}]  arp responder: {}  table generation {}\n",
        n("owned_buckets"),
        n("buckets"),
        s("owned_ranges"),
        v["arp_responder"].as_bool().unwrap_or(false),
        n("table_generation")
    );
    out += "counters (all lcores):\n";
    if let Some(t) = v["totals"].as_object() {
        for (k, val) in t {
            out += &format!("  {k:<24}{}\n", val.as_u64().unwrap_or(0));
        }
    }
    if let Some(nodes) = v["membership"]["nodes"].as_array() {
        out += &format!("membership view {}:\n", v["membership"]["view"]);
        for n in nodes {
            out += &format!(
                "  {:>3} {:<8} {:<6} buckets {:>5}  heartbeat age ms {}\n",
                n["id"],
                n["name"].as_str().unwrap_or("?"),
                if n["self"].as_bool() == Some(true) {
                    "self"
                } else if n["alive"].as_bool() == Some(true) {
                    "alive"
                } else {
                    "dead"
                },
                n["buckets"],
                n.get("heartbeat_age_ms")
                    .map_or("-".to_string(), |a| a.to_string())
            );
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
