//! What the chaos run checks, as pure rules over what it saw: the faults'
//! windows and the clients', the capture's and the monitor's observations.
//! Times are milliseconds since the run began.

use super::plan::Fault;

/// One fault as it happened.
#[derive(Clone, Debug)]
pub struct Window {
    pub fault: Fault,
    /// Injected.
    pub start_ms: u64,
    /// The farm settled again after the heal (every running node in the
    /// view, every bucket owned, no move); `None`: it never did.
    pub settled_ms: Option<u64>,
}

/// Which client saw a connection break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conn {
    /// A long-lived connection.
    Held,
    /// A new connection (one request).
    New,
}

#[derive(Clone, Debug)]
pub enum Observation {
    /// A connection broke (reset, timeout, closed, a bad answer). `node`:
    /// the node that answered it (its echo, or the source MAC of its
    /// SYN-ACK or RST); `None` if no node ever answered.
    Broken {
        at_ms: u64,
        conn: Conn,
        node: Option<u32>,
        client: String,
        error: String,
    },
    /// One connection attempt answered by more than one node.
    DoubleAnswer {
        at_ms: u64,
        client: String,
        nodes: Vec<u32>,
    },
    /// Some buckets had no owner among the nodes the clients can reach,
    /// from `from_ms` to `to_ms`.
    Unserved {
        from_ms: u64,
        to_ms: u64,
        buckets: u32,
    },
    /// A `herd` process's resident memory, first sampled after the
    /// warm-up and last.
    Rss {
        node: u32,
        pid: i32,
        first_kib: u64,
        last_kib: u64,
        seconds: u64,
    },
    /// Something the run or the lab left behind.
    Leftover { what: String },
    /// A fault could not be injected or healed as the farm's operator
    /// would (a command refused, a node that did not start).
    Failed { at_ms: u64, what: String },
}

/// The limits the rules apply.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// How late after a window a client may notice a break (its read
    /// timeout and the retransmissions before it).
    pub grace_ms: u64,
    /// Longest time a bucket may go unserved.
    pub recovery_bound_ms: u64,
    /// Largest growth of a `herd` process's RSS over the run.
    pub rss_growth_kib: u64,
    /// When the run ended (an unsettled window lasts until then).
    pub end_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub at_ms: u64,
    pub what: String,
}

impl Window {
    fn covers(&self, at_ms: u64, rules: &Rules) -> bool {
        let end = self.settled_ms.unwrap_or(rules.end_ms) + rules.grace_ms;
        (self.start_ms..=end).contains(&at_ms)
    }
}

/// Every violation among `observations`, in time order.
pub fn judge(windows: &[Window], observations: &[Observation], rules: &Rules) -> Vec<Violation> {
    let mut out = Vec::new();
    for w in windows {
        if w.settled_ms.is_none() {
            out.push(Violation {
                at_ms: w.start_ms,
                what: format!("{}: the farm did not settle after the heal", w.fault),
            });
        }
    }
    for o in observations {
        match o {
            Observation::Broken {
                at_ms,
                conn,
                node,
                client,
                error,
            } => {
                // Only the connections of a node that a fault took out may
                // break, while it lasts; a connection nobody answered only
                // while some node is out.
                let excused = windows.iter().any(|w| {
                    w.fault.kind.may_break_its_node()
                        && node.is_none_or(|n| n == w.fault.node)
                        && w.covers(*at_ms, rules)
                });
                if !excused {
                    let on = node.map_or("no node".to_string(), |n| format!("s{n}"));
                    out.push(Violation {
                        at_ms: *at_ms,
                        what: format!("{conn:?} connection {client} on {on} broke: {error}"),
                    });
                }
            }
            Observation::DoubleAnswer {
                at_ms,
                client,
                nodes,
            } => out.push(Violation {
                at_ms: *at_ms,
                what: format!(
                    "connection {client} answered by {} nodes: {nodes:?}",
                    nodes.len()
                ),
            }),
            Observation::Unserved {
                from_ms,
                to_ms,
                buckets,
            } => {
                if to_ms - from_ms > rules.recovery_bound_ms {
                    out.push(Violation {
                        at_ms: *from_ms,
                        what: format!(
                            "{buckets} buckets unserved for {} ms (bound {} ms)",
                            to_ms - from_ms,
                            rules.recovery_bound_ms
                        ),
                    });
                }
            }
            Observation::Rss {
                node,
                pid,
                first_kib,
                last_kib,
                seconds,
            } => {
                if last_kib.saturating_sub(*first_kib) > rules.rss_growth_kib {
                    out.push(Violation {
                        at_ms: rules.end_ms,
                        what: format!(
                            "s{node}'s herd (pid {pid}) grew from {first_kib} to {last_kib} KiB in {seconds} s"
                        ),
                    });
                }
            }
            Observation::Leftover { what } => out.push(Violation {
                at_ms: rules.end_ms,
                what: format!("left behind: {what}"),
            }),
            Observation::Failed { at_ms, what } => out.push(Violation {
                at_ms: *at_ms,
                what: what.clone(),
            }),
        }
    }
    out.sort_by_key(|v| v.at_ms);
    out
}

#[cfg(test)]
mod tests {
    use super::super::plan::FaultKind;
    use super::*;
    use std::time::Duration;

    const RULES: Rules = Rules {
        grace_ms: 5000,
        recovery_bound_ms: 1000,
        rss_growth_kib: 16384,
        end_ms: 100_000,
    };

    fn window(kind: FaultKind, node: u32, start_ms: u64, settled_ms: Option<u64>) -> Window {
        Window {
            fault: Fault {
                kind,
                node,
                hold: Duration::from_secs(1),
                loss_percent: 20,
                weight: 2,
            },
            start_ms,
            settled_ms,
        }
    }

    fn broken(at_ms: u64, node: Option<u32>) -> Observation {
        Observation::Broken {
            at_ms,
            conn: Conn::Held,
            node,
            client: "198.19.0.1:4000".into(),
            error: "reset".into(),
        }
    }

    #[test]
    fn a_crashed_nodes_connections_may_break_while_its_fault_lasts() {
        let w = [window(FaultKind::Crash, 2, 10_000, Some(14_000))];
        assert!(judge(&w, &[broken(10_300, Some(2))], &RULES).is_empty());
        // Noticed late, within the grace.
        assert!(judge(&w, &[broken(18_000, Some(2))], &RULES).is_empty());
        // Nobody answered, while a node was out.
        assert!(judge(&w, &[broken(11_000, None)], &RULES).is_empty());
        // Another node's connection, or after the grace, or before.
        for o in [
            broken(10_300, Some(1)),
            broken(19_500, Some(2)),
            broken(9_000, Some(2)),
        ] {
            let v = judge(&w, &[o], &RULES);
            assert_eq!(v.len(), 1, "{v:?}");
            assert!(v[0].what.contains("broke"), "{v:?}");
        }
    }

    #[test]
    fn faults_that_keep_connections_excuse_no_break() {
        for kind in [
            FaultKind::Drain,
            FaultKind::Weight,
            FaultKind::HeartbeatLoss,
            FaultKind::CpuHog,
        ] {
            let w = [window(kind, 2, 10_000, Some(14_000))];
            assert_eq!(
                judge(&w, &[broken(11_000, Some(2))], &RULES).len(),
                1,
                "{kind:?}"
            );
            assert_eq!(
                judge(&w, &[broken(11_000, None)], &RULES).len(),
                1,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_double_answer_and_a_long_gap_and_growth_and_leftovers_are_violations() {
        let obs = [
            Observation::DoubleAnswer {
                at_ms: 5,
                client: "198.19.0.9:5000".into(),
                nodes: vec![1, 3],
            },
            Observation::Unserved {
                from_ms: 100,
                to_ms: 400,
                buckets: 1365,
            },
            Observation::Unserved {
                from_ms: 1000,
                to_ms: 2500,
                buckets: 1365,
            },
            Observation::Rss {
                node: 1,
                pid: 42,
                first_kib: 200_000,
                last_kib: 210_000,
                seconds: 60,
            },
            Observation::Rss {
                node: 2,
                pid: 43,
                first_kib: 200_000,
                last_kib: 230_000,
                seconds: 60,
            },
            Observation::Leftover {
                what: "namespace herd-s1".into(),
            },
            Observation::Failed {
                at_ms: 7,
                what: "drain s2: healing: s2 refused \"start\"".into(),
            },
        ];
        let v = judge(&[], &obs, &RULES);
        let what: Vec<&str> = v.iter().map(|v| v.what.as_str()).collect();
        assert_eq!(v.len(), 5, "{what:?}");
        assert!(what[0].contains("answered by 2 nodes"));
        assert!(what[1].contains("refused"));
        assert!(what[2].contains("unserved for 1500 ms"));
        assert!(what.iter().any(|w| w.contains("s2's herd (pid 43) grew")));
        assert!(what.iter().any(|w| w.contains("herd-s1")));
    }

    #[test]
    fn a_window_that_never_settles_is_a_violation_and_excuses_until_the_end() {
        let w = [window(FaultKind::LinkDown, 3, 10_000, None)];
        let v = judge(&w, &[broken(90_000, Some(3))], &RULES);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].what.contains("did not settle"));
    }
}
