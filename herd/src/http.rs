//! The optional HTTP listener: `/health` (200 only when UP-ready, for
//! cloud load balancers), `/metrics` (Prometheus text format), and the
//! read-only status page at `/` with its `/status.json`.

use crate::control::Node;
use anyhow::{Context, Result};
use config::XdpMode;
use herd::status::Readiness;
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
            let status = if s.owns_buckets && readiness != Readiness::Draining {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, "text/plain", body)
        }
        "/" => text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            herd::page::HTML.to_string(),
        ),
        "/status.json" => match serde_json::to_string(&node.report()) {
            Ok(body) => text(StatusCode::OK, "application/json", body),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
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
            "try /, /status.json, /health or /metrics\n".into(),
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
    let st = node.report();
    let me = st.node.node_name.clone();
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
        "Frames the XDP pre-filter decided (af_xdp; mode: native, in the driver, or generic, in the kernel's receive path): passed to the kernel, dropped, left to the fastpath, peers' heartbeats passed, junk to the heartbeat port dropped",
        xdp.clone(),
    );
    let ring_drops = Counter::<u64>::default();
    if st.node.ring_drops.is_some() {
        reg.register(
            "ring_drops",
            "Frames the kernel dropped because the port's rings were full (af_packet)",
            ring_drops.clone(),
        );
    }
    let guard = Family::<Labels, Counter>::default();
    reg.register(
        "ingress_guard_packets",
        "Frames the ingress guard decided before the fastpath: other nodes' buckets kept out of af_packet's rings (dropped), frames let in (to_fastpath), peers' heartbeats taken from the NIC to the TAP apart from the data, junk to the heartbeat port dropped",
        guard.clone(),
    );
    let direct_egress = Counter::<u64>::default();
    if st.node.direct_egress.is_some() {
        reg.register(
            "direct_egress_frames",
            "Frames the node's kernel sent straight out of the NIC's interface (the TAP's direct egress; a large segment counts once)",
            direct_egress.clone(),
        );
    }
    let egress_kept = Gauge::<i64>::default();
    if let Some(kept) = st.node.egress_kept_slots {
        egress_kept.set(i64::from(kept));
        reg.register(
            "egress_kept_slots",
            "Flow slots (of 256) whose frames the lcores send; the rest leave straight out of the NIC's interface (the egress balance, af_packet)",
            egress_kept.clone(),
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
    let disowned = Counter::<u64>::default();
    reg.register(
        "disowned",
        "Times every peer counted this node out while it heard them (it withdrew)",
        disowned.clone(),
    );
    let overflows = Counter::<u64>::default();
    reg.register(
        "input_overflows",
        "Times this node's own input overflowed (heartbeat socket, NIC queue drops): peers unheard meanwhile are held alive",
        overflows.clone(),
    );
    let held = Counter::<u64>::default();
    reg.register(
        "deaths_held",
        "Peers unheard past dead_after while this node's input overflowed, kept alive",
        held.clone(),
    );
    let deaf = Gauge::<i64>::default();
    reg.register(
        "deaf",
        "1 while this node's own input overflowed within dead_after (it may not hear its peers)",
        deaf.clone(),
    );
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

    let h = &st.health;
    let n = &st.node;
    state
        .get_or_create(&labels(&[("node", &me)]))
        .set(h.state.metric());
    transient
        .get_or_create(&labels(&[("node", &me)]))
        .set(i64::from(h.transient));
    alive.get_or_create(&labels(&[("node", &me)])).set(1);
    ready.set(i64::from(h.owns_buckets));
    let n_buckets = f64::from(n.buckets.max(1));
    buckets.set(i64::from(n.buckets));
    let s = n.nic_stats;
    for (k, v) in [
        ("ipackets", s.ipackets),
        ("opackets", s.opackets),
        ("imissed", s.imissed),
        ("ierrors", s.ierrors),
        ("oerrors", s.oerrors),
        ("rx_nombuf", s.rx_nombuf),
    ] {
        nic.get_or_create(&labels(&[("counter", k)])).inc_by(v);
    }
    owned.set(i64::from(n.owned_buckets));
    for (dir, count) in [("in", n.moving_in), ("out", n.moving_out)] {
        moving
            .get_or_create(&labels(&[("direction", dir)]))
            .set(i64::from(count));
    }
    let held_connections = st
        .membership
        .as_ref()
        .map_or(0, |m| m.moves.connections_held);
    for (kind, v) in [
        ("tracked", n.flows.tracked),
        ("held", n.flows.held),
        ("connections_held", held_connections),
    ] {
        flows
            .get_or_create(&labels(&[("kind", kind)]))
            .set(v as i64);
    }
    for (k, v) in n.totals.named() {
        packets.get_or_create(&labels(&[("counter", k)])).inc_by(v);
    }
    if let Some(frames) = n.direct_egress {
        direct_egress.inc_by(frames);
    }
    if let Some(x) = n.xdp_prefilter {
        let mode = n.xdp_mode.map_or("unknown", XdpMode::as_str);
        for (k, v) in x.named() {
            xdp.get_or_create(&labels(&[("verdict", k), ("mode", mode)]))
                .inc_by(v);
        }
    }
    if let Some(d) = n.ring_drops {
        ring_drops.inc_by(d);
    }
    if let Some(g) = n.ingress_guard {
        for (k, v) in g.counts.named() {
            guard.get_or_create(&labels(&[("verdict", k)])).inc_by(v);
        }
    }
    for c in &h.checkers {
        let v = match c.verdict {
            health::checker::Verdict::Up => 1,
            health::checker::Verdict::Down => 0,
            health::checker::Verdict::Unknown => -1,
        };
        checker
            .get_or_create(&labels(&[("checker", &c.name)]))
            .set(v);
    }
    if let Some(m) = &st.membership {
        for node in &m.nodes {
            let name = node.name.as_deref().unwrap_or("?");
            let l = labels(&[("node", name)]);
            share
                .get_or_create(&l)
                .set(f64::from(node.buckets) / n_buckets);
            let Some(heard) = &node.heard else { continue };
            state.get_or_create(&l).set(node.state.metric());
            transient.get_or_create(&l).set(i64::from(node.transient));
            alive.get_or_create(&l).set(i64::from(node.alive));
            farm_differs
                .get_or_create(&l)
                .set(i64::from(heard.farm_differs));
            refused
                .get_or_create(&l)
                .set(i64::from(heard.rejected.is_some()));
            protocol.get_or_create(&l).set(i64::from(heard.protocol));
            for (net, a) in heard.heartbeat_age_ms.iter().enumerate() {
                if let Some(ms) = a {
                    age.get_or_create(&labels(&[("peer", name), ("network", &net.to_string())]))
                        .set(*ms as f64 / 1000.0);
                }
            }
        }
        let c = &m.counters;
        failovers.inc_by(c.peer_deaths);
        views.inc_by(c.views);
        disowned.inc_by(c.disowned);
        overflows.inc_by(c.input_overflows);
        held.inc_by(c.deaths_held);
        deaf.set(i64::from(m.deaf));
        for (reason, v) in [
            ("malformed", c.dropped_malformed),
            ("unauthenticated", c.dropped_unauthenticated),
            ("version", c.dropped_version),
            ("replayed", c.dropped_replayed),
            ("unknown_sender", c.dropped_unknown_sender),
            ("not_peer", c.dropped_not_peer),
        ] {
            dropped
                .get_or_create(&labels(&[("reason", reason)]))
                .inc_by(v);
        }
    } else {
        share
            .get_or_create(&labels(&[("node", &me)]))
            .set(f64::from(n.owned_buckets) / n_buckets);
    }
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}
