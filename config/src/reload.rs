//! What a reload (`herd reload`, SIGHUP) may change in a running node,
//! decided without IO from the running config and the new one: the VIPs,
//! the rules, this node's weight, the membership key files and protocol
//! version, the checkers, scripts and restart loop limit, the log level,
//! and the lcores' polling change at run time, without breaking a connection;
//! every other key needs a restart and is refused by name.
//! A rule whose affinity changes is refused too: its port's connections
//! would hash to other nodes. A refused reload changes nothing.

use crate::{Affinity, Config, Protocol, Rule};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

/// What a reload applies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    pub vips_added: Vec<IpAddr>,
    pub vips_removed: Vec<IpAddr>,
    pub rules_added: Vec<Rule>,
    pub rules_removed: Vec<Rule>,
    /// This node's configured weight: (before, after).
    pub weight: Option<(u32, u32)>,
    /// The lcores' idle policy (`polling`) changed.
    pub polling: bool,
    /// `membership.protocol_version`: (before, after).
    pub protocol_version: Option<(Option<u8>, Option<u8>)>,
    /// The checkers, the scripts or the restart loop limit changed.
    pub health: bool,
    /// `log.level`: the directives now.
    pub log_level: Option<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }

    /// Whether the VIPs or the rules change (what the nodes of a farm
    /// share).
    pub fn farm_changed(&self) -> bool {
        !(self.vips_added.is_empty()
            && self.vips_removed.is_empty()
            && self.rules_added.is_empty()
            && self.rules_removed.is_empty())
    }
}

fn rule_name(r: &Rule) -> String {
    let protocol = match r.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    match r.port {
        Some(p) => format!("{protocol} {p}"),
        None => format!("{protocol} (every port)"),
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "nothing changed");
        }
        let mut parts = Vec::new();
        let list = |v: &[IpAddr]| {
            v.iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.vips_added.is_empty() {
            parts.push(format!("VIPs added: {}", list(&self.vips_added)));
        }
        if !self.vips_removed.is_empty() {
            parts.push(format!("VIPs removed: {}", list(&self.vips_removed)));
        }
        let rules = |v: &[Rule]| v.iter().map(rule_name).collect::<Vec<_>>().join(", ");
        if !self.rules_added.is_empty() {
            parts.push(format!("rules added: {}", rules(&self.rules_added)));
        }
        if !self.rules_removed.is_empty() {
            parts.push(format!("rules removed: {}", rules(&self.rules_removed)));
        }
        if let Some((a, b)) = self.weight {
            parts.push(format!("weight {a} -> {b}"));
        }
        if self.polling {
            parts.push("polling".into());
        }
        if self.health {
            parts.push("checkers and scripts".into());
        }
        if let Some(level) = &self.log_level {
            parts.push(format!("log level {level}"));
        }
        if let Some((_, after)) = self.protocol_version {
            parts.push(match after {
                Some(v) => format!("protocol held at version {v}"),
                None => "protocol: the build's newest".into(),
            });
        }
        write!(f, "{}", parts.join("; "))
    }
}

/// A key a reload cannot change, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedKey {
    pub key: String,
    pub reason: String,
}

/// Why a reload was refused: every key it cannot apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Refused {
    pub keys: Vec<RefusedKey>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("{}: {}", k.key, k.reason))
            .collect();
        write!(f, "{}", keys.join("; "))
    }
}

const RESTART: &str = "cannot change at run time (restart the node to apply it)";

/// The changes from `running` to `new`, or every key that cannot change
/// at run time. Both are valid configs.
pub fn plan(running: &Config, new: &Config) -> Result<Changes, Refused> {
    let mut refused = Vec::new();
    // Everything but the VIPs, the rules and this node's weight must be
    // as it runs: compare with those taken from the running config.
    let mut rest = new.clone();
    rest.farm.vips = running.farm.vips.clone();
    rest.rules = running.rules.clone();
    // The membership keys change at run time too (a rotation); the caller
    // reads the key files again whatever their paths.
    rest.membership.key_file = running.membership.key_file.clone();
    rest.membership.key_files = running.membership.key_files.clone();
    rest.membership.keys = running.membership.keys.clone();
    rest.polling = running.polling.clone();
    rest.membership.protocol_version = running.membership.protocol_version;
    rest.checkers = running.checkers.clone();
    rest.scripts = running.scripts.clone();
    rest.health.maxloop = running.health.maxloop;
    rest.health.loop_window_s = running.health.loop_window_s;
    rest.log = running.log.clone();
    let running_weight = running.this_node().weight;
    let new_weight = if new.node.id == running.node.id {
        let w = new.this_node().weight;
        if let Some(me) = rest.farm.nodes.iter_mut().find(|n| n.id == running.node.id) {
            me.weight = running_weight;
        }
        w
    } else {
        running_weight
    };
    match (toml::Value::try_from(running), toml::Value::try_from(&rest)) {
        (Ok(a), Ok(b)) => {
            let mut keys = Vec::new();
            differing_keys("", &a, &b, &mut keys);
            refused.extend(keys.into_iter().map(|key| RefusedKey {
                key,
                reason: RESTART.into(),
            }));
        }
        _ => refused.push(RefusedKey {
            key: "(config)".into(),
            reason: "could not be compared".into(),
        }),
    }

    let affinities = |rules: &[Rule]| -> BTreeMap<(u8, Option<u16>), Affinity> {
        rules
            .iter()
            .map(|r| ((r.protocol as u8, r.port), r.affinity))
            .collect()
    };
    let (old_rules, new_rules) = (affinities(&running.rules), affinities(&new.rules));
    for r in &new.rules {
        if let Some(a) = old_rules.get(&(r.protocol as u8, r.port)) {
            if *a != r.affinity {
                refused.push(RefusedKey {
                    key: "rules".into(),
                    reason: format!(
                        "{}: a new affinity would move its connections to other nodes (restart the farm to change it)",
                        rule_name(r)
                    ),
                });
            }
        }
    }
    if !refused.is_empty() {
        return Err(Refused { keys: refused });
    }

    let old_vips: BTreeSet<IpAddr> = running.farm.vips.iter().copied().collect();
    let new_vips: BTreeSet<IpAddr> = new.farm.vips.iter().copied().collect();
    Ok(Changes {
        vips_added: new_vips.difference(&old_vips).copied().collect(),
        vips_removed: old_vips.difference(&new_vips).copied().collect(),
        rules_added: new
            .rules
            .iter()
            .filter(|r| !old_rules.contains_key(&(r.protocol as u8, r.port)))
            .cloned()
            .collect(),
        rules_removed: running
            .rules
            .iter()
            .filter(|r| !new_rules.contains_key(&(r.protocol as u8, r.port)))
            .cloned()
            .collect(),
        weight: (new_weight != running_weight).then_some((running_weight, new_weight)),
        polling: new.polling != running.polling,
        health: new.checkers != running.checkers
            || new.scripts != running.scripts
            || new.health.maxloop != running.health.maxloop
            || new.health.loop_window_s != running.health.loop_window_s,
        log_level: (new.log != running.log).then(|| new.log.directives().to_string()),
        protocol_version: (new.membership.protocol_version != running.membership.protocol_version)
            .then_some((
                running.membership.protocol_version,
                new.membership.protocol_version,
            )),
    })
}

/// The dotted keys (`dpdk.memory_mb`, `checkers[1].interval_ms`) where `a`
/// and `b` differ; an array of another length differs as a whole.
fn differing_keys(prefix: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match (a, b) {
        (toml::Value::Table(x), toml::Value::Table(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => differing_keys(&join(k), va, vb, out),
                    _ => out.push(join(k)),
                }
            }
        }
        (toml::Value::Array(x), toml::Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                differing_keys(&format!("{prefix}[{i}]"), va, vb, out);
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/node.toml");

    fn running() -> Config {
        Config::from_toml(EXAMPLE).unwrap()
    }

    fn keys(r: Refused) -> Vec<String> {
        r.keys.into_iter().map(|k| k.key).collect()
    }

    #[test]
    fn the_same_config_changes_nothing() {
        let c = plan(&running(), &running()).unwrap();
        assert!(c.is_empty());
        assert_eq!(c.to_string(), "nothing changed");
    }

    #[test]
    fn vips_rules_and_this_nodes_weight_change_at_run_time() {
        let old = running();
        let mut new = old.clone();
        let added: IpAddr = "198.18.0.101".parse().unwrap();
        let removed = new.farm.vips.remove(0);
        new.farm.vips.push(added);
        let dropped_rule = new.rules.remove(0);
        let rule = Rule {
            protocol: Protocol::Tcp,
            port: Some(8080),
            affinity: Affinity::ClientIpPort,
        };
        new.rules.push(rule.clone());
        let me = new.node.id;
        new.farm
            .nodes
            .iter_mut()
            .find(|n| n.id == me)
            .unwrap()
            .weight = 3;
        let c = plan(&old, &new).unwrap();
        assert_eq!(c.vips_added, vec![added]);
        assert_eq!(c.vips_removed, vec![removed]);
        assert_eq!(c.rules_added, vec![rule]);
        assert_eq!(c.rules_removed, vec![dropped_rule]);
        assert_eq!(c.weight, Some((1, 3)));
        let text = c.to_string();
        assert!(
            text.contains("VIPs added: 198.18.0.101")
                && text.contains("rules added: tcp 8080")
                && text.contains("weight 1 -> 3"),
            "{text}"
        );
        // Order alone is no change.
        let mut reordered = old.clone();
        reordered.farm.vips.reverse();
        reordered.rules.reverse();
        assert!(plan(&old, &reordered).unwrap().is_empty());
    }

    #[test]
    fn every_other_key_is_refused_by_name() {
        let old = running();
        let mut new = old.clone();
        new.farm.buckets = 2048;
        new.dpdk.memory_mb += 1;
        new.node.id = 2;
        let other = new
            .farm
            .nodes
            .iter_mut()
            .find(|n| n.id != old.node.id)
            .unwrap();
        other.weight = 5;
        new.farm.vips.push("198.18.0.101".parse().unwrap());
        let refused = keys(plan(&old, &new).unwrap_err());
        assert_eq!(
            refused,
            [
                "dpdk.memory_mb",
                "farm.buckets",
                "farm.nodes[1].weight",
                "node.id"
            ]
        );
        let text = plan(&old, &new).unwrap_err().to_string();
        assert!(
            text.contains("farm.buckets: cannot change at run time"),
            "{text}"
        );
    }

    #[test]
    fn the_membership_key_files_change_at_run_time() {
        let old = running();
        let mut new = old.clone();
        new.membership.key_file = None;
        new.membership.key_files = vec!["/etc/herd/next.key".into(), "/etc/herd/farm.key".into()];
        // Nothing for the plan: the caller reads the keys again.
        assert!(plan(&old, &new).unwrap().is_empty());
        new.membership.period_ms += 5;
        assert_eq!(
            keys(plan(&old, &new).unwrap_err()),
            ["membership.period_ms"]
        );
    }

    #[test]
    fn the_polling_changes_at_run_time() {
        let old = running();
        let mut new = old.clone();
        new.polling.max_sleep_us += 100;
        let c = plan(&old, &new).unwrap();
        assert!(c.polling && c.to_string() == "polling", "{c}");
    }

    #[test]
    fn checkers_scripts_and_the_log_level_change_at_run_time() {
        let old = running();
        let mut new = old.clone();
        new.scripts.stop = Some("/etc/herd/stop-new".into());
        new.health.maxloop += 1;
        let c = plan(&old, &new).unwrap();
        assert!(c.health && c.to_string() == "checkers and scripts", "{c}");
        let mut new = old.clone();
        new.log.level = Some("debug,membership=trace".into());
        let c = plan(&old, &new).unwrap();
        assert_eq!(c.log_level.as_deref(), Some("debug,membership=trace"));
        assert_eq!(c.to_string(), "log level debug,membership=trace");
        new.log.level = None;
        new.health.autostart = !old.health.autostart;
        assert_eq!(keys(plan(&old, &new).unwrap_err()), ["health.autostart"]);
    }

    #[test]
    fn the_protocol_version_is_held_and_released_at_run_time() {
        let old = running();
        let mut held = old.clone();
        held.membership.protocol_version = Some(5);
        let c = plan(&old, &held).unwrap();
        assert_eq!(c.protocol_version, Some((None, Some(5))));
        assert_eq!(c.to_string(), "protocol held at version 5");
        let c = plan(&held, &old).unwrap();
        assert_eq!(c.to_string(), "protocol: the build's newest");
        assert!(!c.farm_changed());
    }

    #[test]
    fn a_rule_whose_affinity_changes_is_refused() {
        let old = running();
        let mut new = old.clone();
        new.rules[0].affinity = match new.rules[0].affinity {
            Affinity::ClientIp => Affinity::ClientIpPort,
            Affinity::ClientIpPort => Affinity::ClientIp,
        };
        let e = plan(&old, &new).unwrap_err();
        assert_eq!(e.keys.len(), 1);
        assert_eq!(e.keys[0].key, "rules");
        assert!(
            e.keys[0].reason.contains("tcp 80")
                && e.keys[0].reason.contains("move its connections"),
            "{e}"
        );
    }
}
