//! The optional HTTP listener: `/health` (200 only when UP-ready, for
//! cloud load balancers) and `/metrics` (Prometheus text format).

use crate::control::Node;
use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use tokio::net::TcpListener;

pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("control.http: binding {addr}"))?;
    tracing::info!(%addr, "HTTP listener ready (/health, /metrics)");
    Ok(l)
}

pub async fn serve(listener: TcpListener, node: Node) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let node = node.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&node, &req)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!("http connection: {e}");
            }
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn respond<B>(node: &Node, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/health" => {
            let s = node.health.snapshot();
            // A draining node serves its connections but takes no new
            // flows: a load balancer in front must stop sending it some.
            let readiness = node.readiness(&s);
            let body = format!("{} ({readiness})\n", s.state);
            let status = if s.owns_buckets && readiness != "draining" {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, "text/plain", body)
        }
        "/metrics" => match metrics(node) {
            Ok(body) => text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            ),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /health or /metrics\n".into(),
        ),
    }
}

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A fresh registry filled from one status snapshot per scrape: every
/// value is read from the node, nothing is kept between scrapes.
fn metrics(node: &Node) -> Result<String> {
    let st = node.status_json();
    let me = st["node_name"].as_str().unwrap_or("?").to_string();
    let mut reg = Registry::with_prefix("herd");

    let state = Family::<Labels, Gauge>::default();
    reg.register(
        "node_state",
        "Node state: 0 STOP, 1 WAIT, 2 UP",
        state.clone(),
    );
    let transient = Family::<Labels, Gauge>::default();
    reg.register(
        "node_transient",
        "1 while the node runs scripts",
        transient.clone(),
    );
    let alive = Family::<Labels, Gauge>::default();
    reg.register(
        "node_alive",
        "1 while the node is heard (this node: always)",
        alive.clone(),
    );
    let farm_differs = Family::<Labels, Gauge>::default();
    reg.register(
        "peer_farm_differs",
        "1 while the peer announces another farm config (VIPs, rules, buckets, delivery): no bucket is taken meanwhile",
        farm_differs.clone(),
    );
    let refused = Family::<Labels, Gauge>::default();
    reg.register(
        "peer_refused",
        "1 while heartbeats claiming to come from the peer are refused (another key or protocol version)",
        refused.clone(),
    );
    let protocol = Family::<Labels, Gauge>::default();
    reg.register(
        "peer_protocol_version",
        "The heartbeat protocol version this node writes to the peer (the newest both speak; during a rolling upgrade the previous one to nodes not yet upgraded)",
        protocol.clone(),
    );
    let share = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    reg.register(
        "bucket_share",
        "Fraction of the buckets the node owns (membership: as the view assigns them)",
        share.clone(),
    );
    let ready = Gauge::<i64>::default();
    reg.register(
        "ready",
        "1 when this node is UP-ready (owns buckets)",
        ready.clone(),
    );
    let owned = Gauge::<i64>::default();
    reg.register(
        "buckets_owned",
        "Buckets this node's fastpath accepts now",
        owned.clone(),
    );
    let moving = Family::<Labels, Gauge>::default();
    reg.register(
        "buckets_moving",
        "Buckets moving in (new flows only) or out (old connections only)",
        moving.clone(),
    );
    let flows = Family::<Labels, Gauge>::default();
    reg.register(
        "flows",
        "Flows of moving buckets: tracked by the lcores, held (served) by this node, connections the kernel holds in buckets moving out",
        flows.clone(),
    );
    let packets = Family::<Labels, Counter>::default();
    reg.register(
        "packets",
        "Fastpath packet counters, all lcores",
        packets.clone(),
    );
    let xdp = Family::<Labels, Counter>::default();
    reg.register(
        "xdp_prefilter_packets",
        "Frames the XDP pre-filter decided in the driver (af_xdp): passed to the kernel, dropped, left to the fastpath",
        xdp.clone(),
    );
    let direct_egress = Counter::<u64>::default();
    let direct_egress_on = st["direct_egress"].as_u64();
    if direct_egress_on.is_some() {
        reg.register(
            "direct_egress_frames",
            "Frames the node's kernel sent straight out of the NIC's interface (the TAP's direct egress; a large segment counts once)",
            direct_egress.clone(),
        );
    }
    let checker = Family::<Labels, Gauge>::default();
    reg.register(
        "checker_up",
        "1 up, 0 down, -1 not yet tested",
        checker.clone(),
    );
    let age = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    reg.register(
        "heartbeat_age_seconds",
        "Age of the last heartbeat from a peer, per heartbeat network",
        age.clone(),
    );
    let failovers = Counter::<u64>::default();
    reg.register(
        "failovers",
        "Peers that went from alive to dead",
        failovers.clone(),
    );
    let views = Counter::<u64>::default();
    reg.register("view_changes", "Membership view changes", views.clone());
    let dropped = Family::<Labels, Counter>::default();
    reg.register(
        "heartbeats_dropped",
        "Heartbeats dropped, by reason",
        dropped.clone(),
    );
    let nic = Family::<Labels, Counter>::default();
    reg.register(
        "nic_packets",
        "The NIC port's own counters (DPDK): received, sent, missed for want of room in its rx ring (imissed), receive errors, send errors, receives without an mbuf (rx_nombuf)",
        nic.clone(),
    );
    let buckets = Gauge::<i64>::default();
    reg.register(
        "buckets",
        "The farm's bucket count (farm.buckets)",
        buckets.clone(),
    );
    let build = Family::<Labels, Gauge>::default();
    reg.register(
        "build_info",
        "1, labelled with this build's version and the heartbeat protocol versions it speaks",
        build.clone(),
    );
    build
        .get_or_create(&labels(&[
            ("version", env!("CARGO_PKG_VERSION")),
            (
                "protocol_versions",
                &membership::wire::Versions::BUILD.to_string(),
            ),
        ]))
        .set(1);

    let h = &st["health"];
    let code = |s: &str| match s {
        "UP" => 2,
        "WAIT" => 1,
        _ => 0,
    };
    let my_state = h["state"].as_str().unwrap_or("STOP");
    state
        .get_or_create(&labels(&[("node", &me)]))
        .set(code(my_state));
    transient
        .get_or_create(&labels(&[("node", &me)]))
        .set(i64::from(h["transient"].as_bool() == Some(true)));
    alive.get_or_create(&labels(&[("node", &me)])).set(1);
    ready.set(i64::from(h["owns_buckets"].as_bool() == Some(true)));
    let n_buckets = st["buckets"].as_u64().unwrap_or(1).max(1) as f64;
    buckets.set(st["buckets"].as_i64().unwrap_or(0));
    if let Some(stats) = st["nic_stats"].as_object() {
        for (k, v) in stats {
            nic.get_or_create(&labels(&[("counter", k)]))
                .inc_by(v.as_u64().unwrap_or(0));
        }
    }
    owned.set(st["owned_buckets"].as_i64().unwrap_or(0));
    for dir in ["in", "out"] {
        moving
            .get_or_create(&vec![("direction".to_string(), dir.to_string())])
            .set(st[format!("moving_{dir}")].as_i64().unwrap_or(0));
    }
    for (kind, v) in [
        ("tracked", &st["flows"]["tracked"]),
        ("held", &st["flows"]["held"]),
        (
            "connections_held",
            &st["membership"]["moves"]["connections_held"],
        ),
    ] {
        flows
            .get_or_create(&vec![("kind".to_string(), kind.to_string())])
            .set(v.as_i64().unwrap_or(0));
    }
    if let Some(t) = st["totals"].as_object() {
        for (k, v) in t {
            packets
                .get_or_create(&labels(&[("counter", k)]))
                .inc_by(v.as_u64().unwrap_or(0));
        }
    }
    if let Some(n) = direct_egress_on {
        direct_egress.inc_by(n);
    }
    if let Some(x) = st["xdp_prefilter"].as_object() {
        for (k, v) in x {
            xdp.get_or_create(&labels(&[("verdict", k)]))
                .inc_by(v.as_u64().unwrap_or(0));
        }
    }
    for c in h["checkers"].as_array().into_iter().flatten() {
        let v = match c["verdict"].as_str() {
            Some("up") => 1,
            Some("down") => 0,
            _ => -1,
        };
        checker
            .get_or_create(&labels(&[("checker", c["name"].as_str().unwrap_or("?"))]))
            .set(v);
    }
    let m = &st["membership"];
    if let Some(nodes) = m["nodes"].as_array() {
        for n in nodes {
            let name = n["name"].as_str().unwrap_or("?");
            let l = labels(&[("node", name)]);
            share
                .get_or_create(&l)
                .set(n["buckets"].as_u64().unwrap_or(0) as f64 / n_buckets);
            if n["self"].as_bool() == Some(true) {
                continue;
            }
            state
                .get_or_create(&l)
                .set(code(n["state"].as_str().unwrap_or("STOP")));
            transient
                .get_or_create(&l)
                .set(i64::from(n["transient"].as_bool() == Some(true)));
            alive
                .get_or_create(&l)
                .set(i64::from(n["alive"].as_bool() == Some(true)));
            farm_differs
                .get_or_create(&l)
                .set(i64::from(n["farm_differs"].as_bool() == Some(true)));
            refused
                .get_or_create(&l)
                .set(i64::from(n["rejected"].is_object()));
            protocol
                .get_or_create(&l)
                .set(n["protocol"].as_i64().unwrap_or(0));
            for (net, a) in n["heartbeat_age_ms"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                if let Some(ms) = a.as_u64() {
                    age.get_or_create(&labels(&[("peer", name), ("network", &net.to_string())]))
                        .set(ms as f64 / 1000.0);
                }
            }
        }
        let c = &m["counters"];
        failovers.inc_by(c["failovers"].as_u64().unwrap_or(0));
        views.inc_by(c["view_changes"].as_u64().unwrap_or(0));
        for reason in [
            "malformed",
            "unauthenticated",
            "version",
            "replayed",
            "unknown_sender",
        ] {
            dropped
                .get_or_create(&labels(&[("reason", reason)]))
                .inc_by(c[format!("dropped_{reason}")].as_u64().unwrap_or(0));
        }
    } else {
        share
            .get_or_create(&labels(&[("node", &me)]))
            .set(st["owned_buckets"].as_u64().unwrap_or(0) as f64 / n_buckets);
    }
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}
