//! `[[rules]]`: which VIP traffic the farm shares, and by what key.

use crate::{invalid, ConfigError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// How a rule keys its traffic (SafeKit's `on_addr` / `on_port`): the
/// one type the config, the packet decision and the census share.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Affinity {
    /// One client always lands on one server (stateful applications).
    ClientIp,
    /// Spread per TCP/UDP session (stateless applications).
    ClientIpPort,
}

/// VIP traffic to (protocol, port) is shared by `affinity`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub protocol: Protocol,
    pub port: Option<u16>,
    pub affinity: Affinity,
}

/// Checks `[[rules]]`: each has a port, one rule per (protocol, port).
pub(crate) fn validate(rules: &[Rule]) -> Result<(), ConfigError> {
    let mut rule_keys = BTreeSet::new();
    for (i, r) in rules.iter().enumerate() {
        let Some(port) = r.port else {
            return Err(invalid(
                format!("rules[{i}].port"),
                "missing: a rule needs a port",
            ));
        };
        if port == 0 {
            return Err(invalid(format!("rules[{i}].port"), "port 0 is not a port"));
        }
        if !rule_keys.insert((r.protocol as u8, port)) {
            return Err(invalid(
                format!("rules[{i}]"),
                format!("a rule for {:?} port {port} already exists", r.protocol),
            ));
        }
    }
    Ok(())
}
