//! `/metrics`: the node's typed status ([`herd_control::status::Report`]) in the
//! Prometheus text format. Every metric is one line of [`METRICS`] (name,
//! type, help); each part of the status fills its own.

use anyhow::Result;
use config::XdpMode;
use herd_control::status::{Membership, Report};
use node_status::NodeStatus;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

/// How a metric is exposed.
#[derive(Clone, Copy)]
enum Kind {
    /// A gauge per label set.
    Gauges,
    /// A float gauge per label set.
    FloatGauges,
    /// A counter per label set (`_total`).
    Counters,
    /// One gauge, no labels.
    Gauge,
    /// One counter, no labels (`_total`).
    Counter,
    /// One gauge or counter shown only when the node has it (the
    /// driver's): registered at its first value.
    OptionalGauge,
    OptionalCounter,
}

/// Every metric, in the order `/metrics` lists them (with the `herd_`
/// prefix).
const METRICS: &[(&str, Kind, &str)] = &[
    ("node_state", Kind::Gauges, "Node state: 0 STOP, 1 WAIT, 2 UP"),
    ("node_transient", Kind::Gauges, "1 while the node runs scripts"),
    ("node_alive", Kind::Gauges, "1 while the node is heard (this node: always)"),
    ("peer_farm_differs", Kind::Gauges, "1 while the peer announces another farm config (VIPs, rules, buckets, delivery): no bucket is taken meanwhile"),
    ("peer_refused", Kind::Gauges, "1 while heartbeats claiming to come from the peer are refused (another key or protocol version)"),
    ("peer_protocol_version", Kind::Gauges, "The heartbeat protocol version this node writes to the peer (the newest both speak; during a rolling upgrade the previous one to nodes not yet upgraded)"),
    ("bucket_share", Kind::FloatGauges, "Fraction of the buckets the node owns (membership: as the view assigns them)"),
    ("ready", Kind::Gauge, "1 when this node is UP-ready (owns buckets)"),
    ("buckets_owned", Kind::Gauge, "Buckets this node's fastpath accepts now"),
    ("buckets_moving", Kind::Gauges, "Buckets moving in (new flows only) or out (old connections only)"),
    ("flows", Kind::Gauges, "Flows of moving buckets: tracked by the lcores, held (served) by this node, connections the kernel holds in buckets moving out"),
    ("packets", Kind::Counters, "Fastpath packet counters, all lcores"),
    ("xdp_prefilter_packets", Kind::Counters, "Frames the XDP pre-filter decided (af_xdp; mode: native, in the driver, or generic, in the kernel's receive path): passed to the kernel, dropped, left to the fastpath, peers' heartbeats passed, junk to the heartbeat port dropped"),
    ("ring_drops", Kind::OptionalCounter, "Frames the kernel dropped because the port's rings were full (af_packet)"),
    ("ingress_guard_packets", Kind::Counters, "Frames the ingress guard decided before the fastpath: other nodes' buckets kept out of af_packet's rings (dropped), frames let in (to_fastpath), peers' heartbeats taken from the NIC to the TAP apart from the data, junk to the heartbeat port dropped"),
    ("direct_egress_frames", Kind::OptionalCounter, "Frames the node's kernel sent straight out of the NIC's interface (the TAP's direct egress; a large segment counts once)"),
    ("egress_kept_slots", Kind::OptionalGauge, "Flow slots (of 256) whose frames the lcores send; the rest leave straight out of the NIC's interface (the egress balance, af_packet)"),
    ("checker_up", Kind::Gauges, "1 up, 0 down, -1 not yet tested"),
    ("heartbeat_age_seconds", Kind::FloatGauges, "Age of the last heartbeat from a peer, per heartbeat network"),
    ("failovers", Kind::Counter, "Peers that went from alive to dead"),
    ("view_changes", Kind::Counter, "Membership view changes"),
    ("disowned", Kind::Counter, "Times every peer counted this node out while it heard them (it withdrew)"),
    ("input_overflows", Kind::Counter, "Times this node's own input overflowed (heartbeat socket, NIC queue drops): peers unheard meanwhile are held alive"),
    ("deaths_held", Kind::Counter, "Peers unheard past dead_after while this node's input overflowed, kept alive"),
    ("deaf", Kind::Gauge, "1 while this node's own input overflowed within dead_after (it may not hear its peers)"),
    ("heartbeats_dropped", Kind::Counters, "Heartbeats dropped, by reason"),
    ("nic_packets", Kind::Counters, "The NIC port's own counters (DPDK): received, sent, missed for want of room in its rx ring (imissed), receive errors, send errors, receives without an mbuf (rx_nombuf)"),
    ("buckets", Kind::Gauge, "The farm's bucket count (farm.buckets)"),
    ("build_info", Kind::Gauges, "1, labelled with this build's version and the heartbeat protocol versions it speaks"),
];

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One metric's live value holder.
enum Metric {
    Gauges(Family<Labels, Gauge>),
    FloatGauges(Family<Labels, Gauge<f64, AtomicU64>>),
    Counters(Family<Labels, Counter>),
    Gauge(Gauge),
    Counter(Counter),
}

/// One scrape: a fresh registry with every metric of [`METRICS`]; every
/// value is read from the node, nothing is kept between scrapes.
struct Scrape {
    registry: Registry,
    metrics: BTreeMap<&'static str, Metric>,
}

impl Scrape {
    fn new() -> Scrape {
        let mut s = Scrape {
            registry: Registry::with_prefix("herd"),
            metrics: BTreeMap::new(),
        };
        for &(name, kind, _) in METRICS {
            if !matches!(kind, Kind::OptionalGauge | Kind::OptionalCounter) {
                s.register(name);
            }
        }
        s
    }

    fn register(&mut self, name: &'static str) -> &Metric {
        let (_, kind, help) = METRICS
            .iter()
            .find(|(n, _, _)| *n == name)
            .copied()
            .unwrap_or((name, Kind::Gauges, ""));
        let reg = &mut self.registry;
        self.metrics.entry(name).or_insert_with(|| match kind {
            Kind::Gauges => {
                let f = Family::<Labels, Gauge>::default();
                reg.register(name, help, f.clone());
                Metric::Gauges(f)
            }
            Kind::FloatGauges => {
                let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
                reg.register(name, help, f.clone());
                Metric::FloatGauges(f)
            }
            Kind::Counters => {
                let f = Family::<Labels, Counter>::default();
                reg.register(name, help, f.clone());
                Metric::Counters(f)
            }
            Kind::Gauge | Kind::OptionalGauge => {
                let g = Gauge::<i64>::default();
                reg.register(name, help, g.clone());
                Metric::Gauge(g)
            }
            Kind::Counter | Kind::OptionalCounter => {
                let c = Counter::<u64>::default();
                reg.register(name, help, c.clone());
                Metric::Counter(c)
            }
        })
    }

    /// Sets a gauge (labelled or not).
    fn set(&mut self, name: &'static str, pairs: &[(&str, &str)], v: i64) {
        match self.register(name) {
            Metric::Gauges(f) => {
                f.get_or_create(&labels(pairs)).set(v);
            }
            Metric::Gauge(g) => {
                g.set(v);
            }
            _ => debug_assert!(false, "{name} is not an integer gauge"),
        }
    }

    fn set_f64(&mut self, name: &'static str, pairs: &[(&str, &str)], v: f64) {
        match self.register(name) {
            Metric::FloatGauges(f) => {
                f.get_or_create(&labels(pairs)).set(v);
            }
            _ => debug_assert!(false, "{name} is not a float gauge"),
        }
    }

    /// Adds to a counter (labelled or not).
    fn add(&mut self, name: &'static str, pairs: &[(&str, &str)], v: u64) {
        match self.register(name) {
            Metric::Counters(f) => {
                f.get_or_create(&labels(pairs)).inc_by(v);
            }
            Metric::Counter(c) => {
                c.inc_by(v);
            }
            _ => debug_assert!(false, "{name} is not a counter"),
        }
    }

    fn encode(self) -> Result<String> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The `/metrics` text of a status report.
pub fn render(st: &Report) -> Result<String> {
    let mut s = Scrape::new();
    s.set(
        "build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            (
                "protocol_versions",
                &membership::wire::Versions::BUILD.to_string(),
            ),
        ],
        1,
    );
    this_node(&mut s, st);
    fastpath(&mut s, &st.node, st.membership.as_ref());
    checkers(&mut s, st);
    match &st.membership {
        Some(m) => membership(&mut s, m, st.node.buckets),
        None => {
            let me = st.node.node_name.as_str();
            let share = f64::from(st.node.owned_buckets) / f64::from(st.node.buckets.max(1));
            s.set_f64("bucket_share", &[("node", me)], share);
        }
    }
    s.encode()
}

/// This node's state and readiness.
fn this_node(s: &mut Scrape, st: &Report) {
    let me = st.node.node_name.as_str();
    let h = &st.health;
    s.set("node_state", &[("node", me)], h.state.metric());
    s.set("node_transient", &[("node", me)], i64::from(h.transient));
    s.set("node_alive", &[("node", me)], 1);
    s.set("ready", &[], i64::from(h.owns_buckets));
    s.set("buckets", &[], i64::from(st.node.buckets));
}

/// The fastpath's counters, buckets and flows, and the port's.
fn fastpath(s: &mut Scrape, n: &NodeStatus, m: Option<&Membership>) {
    let p = n.nic_stats;
    for (k, v) in [
        ("ipackets", p.ipackets),
        ("opackets", p.opackets),
        ("imissed", p.imissed),
        ("ierrors", p.ierrors),
        ("oerrors", p.oerrors),
        ("rx_nombuf", p.rx_nombuf),
    ] {
        s.add("nic_packets", &[("counter", k)], v);
    }
    s.set("buckets_owned", &[], i64::from(n.owned_buckets));
    for (dir, count) in [("in", n.moving_in), ("out", n.moving_out)] {
        s.set("buckets_moving", &[("direction", dir)], i64::from(count));
    }
    let held_connections = m.map_or(0, |m| m.moves.connections_held);
    for (kind, v) in [
        ("tracked", n.flows.tracked),
        ("held", n.flows.held),
        ("connections_held", held_connections),
    ] {
        s.set("flows", &[("kind", kind)], v as i64);
    }
    for (k, v) in n.totals.named() {
        s.add("packets", &[("counter", k)], v);
    }
    if let Some(frames) = n.direct_egress {
        s.add("direct_egress_frames", &[], frames);
    }
    if let Some(kept) = n.egress_kept_slots {
        s.set("egress_kept_slots", &[], i64::from(kept));
    }
    if let Some(x) = n.xdp_prefilter {
        let mode = n.xdp_mode.map_or("unknown", XdpMode::as_str);
        for (k, v) in x.named() {
            s.add(
                "xdp_prefilter_packets",
                &[("verdict", k), ("mode", mode)],
                v,
            );
        }
    }
    if let Some(d) = n.ring_drops {
        s.add("ring_drops", &[], d);
    }
    if let Some(g) = n.ingress_guard {
        for (k, v) in g.counts.named() {
            s.add("ingress_guard_packets", &[("verdict", k)], v);
        }
    }
}

fn checkers(s: &mut Scrape, st: &Report) {
    for c in &st.health.checkers {
        let v = match c.verdict {
            health::checker::Verdict::Up => 1,
            health::checker::Verdict::Down => 0,
            health::checker::Verdict::Unknown => -1,
        };
        s.set("checker_up", &[("checker", &c.name)], v);
    }
}

/// Every node as this one hears it, and the protocol's counters.
fn membership(s: &mut Scrape, m: &Membership, buckets: u32) {
    let n_buckets = f64::from(buckets.max(1));
    for node in &m.nodes {
        let name = node.name.as_deref().unwrap_or("?");
        let l = [("node", name)];
        s.set_f64("bucket_share", &l, f64::from(node.buckets) / n_buckets);
        let Some(heard) = &node.heard else { continue };
        s.set("node_state", &l, node.state.metric());
        s.set("node_transient", &l, i64::from(node.transient));
        s.set("node_alive", &l, i64::from(node.alive));
        s.set("peer_farm_differs", &l, i64::from(heard.farm_differs));
        s.set("peer_refused", &l, i64::from(heard.rejected.is_some()));
        s.set("peer_protocol_version", &l, i64::from(heard.protocol));
        for (net, a) in heard.heartbeat_age_ms.iter().enumerate() {
            if let Some(ms) = a {
                let network = net.to_string();
                let l = [("peer", name), ("network", network.as_str())];
                s.set_f64("heartbeat_age_seconds", &l, *ms as f64 / 1000.0);
            }
        }
    }
    let c = &m.counters;
    s.add("failovers", &[], c.peer_deaths);
    s.add("view_changes", &[], c.views);
    s.add("disowned", &[], c.disowned);
    s.add("input_overflows", &[], c.input_overflows);
    s.add("deaths_held", &[], c.deaths_held);
    s.set("deaf", &[], i64::from(m.deaf));
    for (reason, v) in [
        ("malformed", c.dropped_malformed),
        ("unauthenticated", c.dropped_unauthenticated),
        ("version", c.dropped_version),
        ("replayed", c.dropped_replayed),
        ("unknown_sender", c.dropped_unknown_sender),
        ("not_peer", c.dropped_not_peer),
    ] {
        s.add("heartbeats_dropped", &[("reason", reason)], v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_named_once() {
        let mut names: Vec<&str> = METRICS.iter().map(|m| m.0).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "a metric listed twice");
    }

    #[test]
    fn unlabelled_metrics_read_as_plain_samples_and_optional_ones_appear_when_set() {
        let mut s = Scrape::new();
        s.set("buckets", &[], 4096);
        s.add("disowned", &[], 1);
        s.add("packets", &[("counter", "rx")], 7);
        let out = s.encode().unwrap();
        assert!(out.contains("herd_buckets 4096\n"), "{out}");
        assert!(out.contains("herd_disowned_total 1\n"), "{out}");
        assert!(
            out.contains("herd_packets_total{counter=\"rx\"} 7\n"),
            "{out}"
        );
        assert!(!out.contains("herd_ring_drops"), "{out}");
        let mut s = Scrape::new();
        s.add("ring_drops", &[], 3);
        let out = s.encode().unwrap();
        assert!(out.contains("herd_ring_drops_total 3\n"), "{out}");
    }
}
