//! `herd status` as text: the typed [`Report`], one part at a time (the
//! node and its health, buckets and moves, the fastpath's counters and
//! the kernel-side features, membership, lcores, recent events).

use crate::status::{FarmNode, Membership, Report, WeightSource};
use config::XdpMode;
use node_status::NodeStatus;
use std::fmt::Write;

/// The whole report.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    node_and_health(&mut out, r);
    buckets(&mut out, &r.node, r.membership.as_ref());
    counters(&mut out, &r.node);
    kernel_side(&mut out, &r.node);
    if let Some(m) = &r.membership {
        membership(&mut out, m);
    }
    for l in &r.node.lcores {
        let c = &l.counters;
        let _ = writeln!(
            out,
            "lcore {} queue {}: rx {} accepted {} to-kernel {} from-kernel {}",
            l.lcore, l.queue, c.rx_packets, c.accepted, c.to_kernel, c.from_kernel
        );
    }
    if !r.recent_events.is_empty() {
        out += "recent events:\n";
        let from = r.recent_events.len().saturating_sub(5);
        for e in &r.recent_events[from..] {
            let _ = writeln!(out, "  {:<5} {}", e.level, e.message);
        }
    }
    out
}

/// The name serde gives a value (its config and JSON spelling).
fn serde_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".to_string(),
    }
}

fn node_and_health(out: &mut String, r: &Report) {
    let (n, h) = (&r.node, &r.health);
    let _ = writeln!(
        out,
        "farm {}  node {} ({})  nic {} {}",
        n.farm, n.node_id, n.node_name, n.nic, n.nic_mac
    );
    let vips: Vec<String> = n.vips.iter().map(|a| a.to_string()).collect();
    let _ = writeln!(out, "VIPs {}", vips.join(", "));
    let _ = writeln!(
        out,
        "state {} ({})  {}{}",
        h.state,
        if h.transient { "transient" } else { "ready" },
        h.reason,
        if h.checkers_on {
            ""
        } else {
            "  [checkers off]"
        }
    );
    for c in &h.checkers {
        let _ = writeln!(
            out,
            "  checker {:<12} {:<8} action {:<9} {}",
            c.name,
            serde_name(&c.verdict),
            serde_name(&c.action),
            c.detail
        );
    }
}

fn buckets(out: &mut String, n: &NodeStatus, m: Option<&Membership>) {
    let _ = writeln!(
        out,
        "buckets owned {}/{}  [{}]  arp responder: {}  table generation {}",
        n.owned_buckets, n.buckets, n.owned_ranges, n.arp_responder, n.table_generation
    );
    let draining = m.is_some_and(|m| m.draining);
    if n.moving_in + n.moving_out == 0 && !draining {
        return;
    }
    let kept = m
        .and_then(|m| m.nodes.first())
        .and_then(|me| me.holds.as_ref())
        .map_or(0, |h| h.kept_in);
    let _ = writeln!(
        out,
        "moving: in {} [{}]{}  out {} [{}]  connections held {}  flows tracked {} (held {}){}",
        n.moving_in,
        n.moving_in_ranges,
        if kept > 0 {
            format!(" (kept for a newer owner: {kept})")
        } else {
            String::new()
        },
        n.moving_out,
        n.moving_out_ranges,
        m.map_or(0, |m| m.moves.connections_held),
        n.flows.tracked,
        n.flows.held,
        if draining { "  [draining]" } else { "" }
    );
}

/// Named counters, one a line.
fn named(out: &mut String, counts: impl IntoIterator<Item = (&'static str, u64)>) {
    for (k, v) in counts {
        let _ = writeln!(out, "  {k:<24}{v}");
    }
}

fn counters(out: &mut String, n: &NodeStatus) {
    *out += "counters (all lcores):\n";
    named(out, n.totals.named());
    if let Some(x) = n.xdp_prefilter {
        *out += match n.xdp_mode {
            Some(XdpMode::Generic) => {
                "XDP pre-filter (generic mode: in the kernel's receive path):\n"
            }
            _ => "XDP pre-filter (native mode: decided in the driver):\n",
        };
        named(out, x.named());
    }
}

/// What the kernel side does for the node: ring drops, the ingress
/// guard, the direct egress and the egress balance.
fn kernel_side(out: &mut String, n: &NodeStatus) {
    if let Some(d) = n.ring_drops {
        let _ = writeln!(out, "port rings full (frames the kernel dropped): {d}");
    }
    if let Some(g) = n.ingress_guard {
        let _ = writeln!(
            out,
            "ingress guard: socket filter {}, heartbeats {}:",
            if g.socket_filter {
                "on the port's sockets"
            } else {
                "off"
            },
            if g.heartbeats_apart {
                "apart from the data (tc, NIC to TAP)"
            } else {
                "through the fastpath"
            }
        );
        named(out, g.counts.named());
    }
    if let Some(frames) = n.direct_egress {
        let _ = writeln!(
            out,
            "direct egress (the kernel's frames out of the NIC's interface, no lcore):\n  {:<24}{frames}",
            "frames"
        );
    }
    if let Some(kept) = n.egress_kept_slots {
        let _ = writeln!(
            out,
            "egress balance (the kernel's flows the lcores send while they have room):\n  {:<24}{kept} of {}",
            "flow slots kept",
            packet::balance::SLOTS
        );
    }
}

fn membership(out: &mut String, m: &Membership) {
    let c = &m.counters;
    let _ = writeln!(
        out,
        "membership view {:?}  failovers {}  disowned {}  protocol versions {}:",
        m.view, c.peer_deaths, c.disowned, m.protocol_versions
    );
    let _ = writeln!(
        out,
        "  input overflows {}  deaths held {}  datagrams not from a peer {}{}",
        c.input_overflows,
        c.deaths_held,
        c.dropped_not_peer,
        if m.deaf {
            "  [deaf: this node's input overflowed; peers it does not hear stay alive]"
        } else {
            ""
        }
    );
    for node in &m.nodes {
        farm_node(out, node, m);
    }
    match m.weight_source {
        WeightSource::Runtime => {
            let _ = writeln!(
                out,
                "  this node's weight {}: set at run time, kept in {} (`herd weight config` goes back to the config's)",
                m.weight,
                m.weight_file.display()
            );
        }
        WeightSource::Config => {
            let _ = writeln!(out, "  this node's weight {}: from the config", m.weight);
        }
    }
}

/// A node of the farm as this one sees it.
fn farm_node(out: &mut String, node: &FarmNode, m: &Membership) {
    let ages = node.heard.as_ref().map_or("-".to_string(), |h| {
        let ages: Vec<String> = h
            .heartbeat_age_ms
            .iter()
            .map(|a| a.map_or("never".to_string(), |a| a.to_string()))
            .collect();
        ages.join(",")
    });
    let _ = writeln!(
        out,
        "  {:>3} {:<8} {:<6} {:<5}{:<10} weight {:<3} buckets {:>5}  heartbeat age ms {}",
        node.id,
        node.name.as_deref().unwrap_or("?"),
        if node.is_self {
            "self"
        } else if node.alive {
            "alive"
        } else {
            "dead"
        },
        node.state,
        if node.transient { " transient" } else { "" },
        node.weight,
        node.buckets,
        ages
    );
    let Some(heard) = &node.heard else { return };
    if heard.farm_differs {
        let _ = writeln!(
            out,
            "      its farm config differs (digest {}, this node's {}): no bucket is taken until they agree",
            heard.farm_digest, m.farm_digest
        );
    }
    let _ = writeln!(
        out,
        "      protocol {} (it speaks {})",
        heard.protocol,
        node.speaks.as_deref().unwrap_or("? (not heard yet)")
    );
    if heard.held {
        *out += "      unheard since this node's input overflowed: held alive\n";
    }
    if let Some(r) = &heard.rejected {
        let _ = writeln!(
            out,
            "      a heartbeat {} ms ago was refused ({}): {}",
            r.age_ms,
            r.why,
            if node.alive {
                "not trusted; it is alive by the others"
            } else {
                "not trusted, so counted dead"
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_of_a_full_report_is_shown_and_a_static_node_has_no_membership_part() {
        let mut r = crate::status::tests::sample();
        let text = render(&r);
        for line in [
            "farm lab  node 2 (s2)  nic net_af_packet0 02:00:00:00:00:02\n",
            "moving: in 1 [2000] (kept for a newer owner: 1)  out 2 [3000-3001]  connections held 0  flows tracked 3 (held 2)\n",
            "XDP pre-filter (generic mode: in the kernel's receive path):\n",
            "  flow slots kept         192 of 256\n",
            "    1 s1       alive  UP           weight 1   buckets  1366  heartbeat age ms 12,never\n",
            "      a heartbeat 300 ms ago was refused (authentication): not trusted; it is alive by the others\n",
            "lcore 1 queue 0: rx 0 accepted 0 to-kernel 0 from-kernel 0\n",
            "  INFO  view changed\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        r.membership = None;
        let text = render(&r);
        assert!(!text.contains("membership view"), "{text}");
        assert!(!text.contains("kept for a newer owner"), "{text}");
    }
}
