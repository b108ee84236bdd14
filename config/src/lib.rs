//! Herd's node configuration: the TOML schema (serde) and its validation,
//! one module per section with its checks beside it.
//!
//! [`Config::from_toml`] parses, validates and reads the key files in one
//! step: a node never starts half-configured, and every error names the
//! key that is wrong. A complete example is `examples/node.toml` at the
//! repository root.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

mod continuity;
mod dpdk;
mod farm;
mod health;
mod membership;
mod node;
mod port;
mod ranges;
pub mod reload;
mod rules;
pub mod state;
mod tap;
pub use continuity::Continuity;
pub use dpdk::{parse_cpu_list, CpuSet, Dpdk, Polling};
pub use farm::{vip_mac, Delivery, Farm, FarmNode, Ownership, StaticOwnership};
pub use health::{
    Checker, CheckerAction, CheckerFile, CheckerKind, Health, HttpUrl, Link, Probe, ProcessMatch,
    Scripts,
};
pub use membership::{KeyBytes, Membership, SplitBrain, MIN_KEY_BYTES};
pub use node::{Control, Log, NodeIdentity};
pub use port::{Device, Driver, InterfaceName, PciAddress, Port, PortFile, XdpMode};
pub use ranges::BucketRanges;
pub use rules::{Affinity, Protocol, Rule};
pub use tap::{parse_prefix, Prefix, Route, Tap, TapBackend};

/// A configuration error: the key (dotted path) and what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0}")]
    Syntax(String),
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

/// An error of a section read through its file form (`try_from`): the
/// key within the section, and what is wrong. It crosses serde as a
/// message ([`KeyedError::from_message`] reads it back), and
/// [`Config::from_toml`] prefixes the section's path.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyedError {
    pub key: String,
    pub reason: String,
}

/// Marks a [`KeyedError`]'s message (a control character no TOML
/// message holds).
const KEYED: char = '\u{1f}';

impl KeyedError {
    pub(crate) fn new(key: &str, reason: impl fmt::Display) -> KeyedError {
        KeyedError {
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }

    /// An error of the value itself (a newtype read from a string).
    pub(crate) fn here(reason: impl fmt::Display) -> KeyedError {
        KeyedError::new("", reason)
    }

    fn from_message(message: &str) -> Option<KeyedError> {
        let rest = message.strip_prefix(KEYED)?;
        let (key, reason) = rest.split_once(KEYED)?;
        Some(KeyedError::new(key, reason))
    }
}

impl fmt::Display for KeyedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{KEYED}{}{KEYED}{}", self.key, self.reason)
    }
}

fn invalid(key: impl Into<String>, reason: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.to_string(),
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: NodeIdentity,
    pub farm: Farm,
    #[serde(default)]
    pub rules: Vec<Rule>,
    pub port: Port,
    #[serde(default)]
    pub tap: Tap,
    #[serde(default)]
    pub dpdk: Dpdk,
    #[serde(default)]
    pub polling: Polling,
    #[serde(default)]
    pub control: Control,
    #[serde(default)]
    pub membership: Membership,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub scripts: Scripts,
    #[serde(default)]
    pub checkers: Vec<Checker>,
    #[serde(default)]
    pub continuity: Continuity,
    #[serde(default)]
    pub log: Log,
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        // serde_path_to_error: a value of the wrong type or syntax is
        // reported with its dotted key (`checkers[0].address: …`).
        let de = toml::Deserializer::new(text);
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            if let Some(keyed) = KeyedError::from_message(e.inner().message()) {
                // A section read through its file form (a checker, the
                // port) names the key within it.
                let key = if keyed.key.is_empty() {
                    path
                } else {
                    format!("{path}.{}", keyed.key)
                };
                return invalid(key, keyed.reason);
            }
            let msg = syntax_message(e.inner());
            if path.is_empty() || path == "." {
                ConfigError::Syntax(msg)
            } else {
                ConfigError::Invalid {
                    key: path,
                    reason: msg,
                }
            }
        })?;
        config.validate()?;
        if config.farm.ownership == Ownership::Membership {
            config.membership.load_keys()?;
        }
        Ok(config)
    }

    /// Checks every section, in the order of the file; the key files are
    /// read by [`Config::from_toml`] after.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ids = self.farm.validate()?;
        self.node.validate(&ids)?;
        health::validate(&self.health, &self.scripts, &self.checkers)?;
        self.log.validate()?;
        self.continuity.validate()?;
        match self.farm.ownership {
            Ownership::Static => {
                self.static_ownership()?;
            }
            Ownership::Membership => self.validate_membership()?,
        }
        rules::validate(&self.rules)?;
        self.tap.validate(self.port.driver())?;
        self.dpdk.validate()?;
        self.polling.validate()?;
        self.control.validate()
    }

    pub fn vips4(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.farm.vips.iter().filter_map(|v| match v {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
    }

    pub fn vips6(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.farm.vips.iter().filter_map(|v| match v {
            IpAddr::V6(a) => Some(*a),
            IpAddr::V4(_) => None,
        })
    }

    pub fn this_node(&self) -> &FarmNode {
        self.farm
            .nodes
            .iter()
            .find(|n| n.id == self.node.id)
            .expect("validated: node.id is one of farm.nodes")
    }

    /// The farm's other nodes: the ones this node heartbeats with.
    pub fn peers(&self) -> impl Iterator<Item = &FarmNode> {
        self.farm.nodes.iter().filter(|n| n.id != self.node.id)
    }
}

/// Renders a TOML error as one line with its position, naming the key
/// where the parser knows it (unknown field, wrong type).
fn syntax_message(e: &toml::de::Error) -> String {
    e.to_string()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

pub(crate) fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

pub(crate) fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests;
