//! `[membership]`: the heartbeat protocol's settings and the farm's keys.

use crate::{invalid, Config, ConfigError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The fewest bytes a key file holds (the heartbeat's HMAC key).
pub const MIN_KEY_BYTES: usize = 16;

/// What a side of a partition does (docs/design.md §3).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SplitBrain {
    /// Each side serves all buckets (SafeKit's default).
    #[default]
    ServeAll,
    /// A side with at most half of the nodes withdraws.
    Majority,
    /// While a node is missing, a side that cannot ping `witness` withdraws.
    Witness,
}

/// The membership protocol (used with `farm.ownership = "membership"`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    #[serde(default = "default_period_ms")]
    pub period_ms: u32,
    #[serde(default = "default_dead_after_ms")]
    pub dead_after_ms: u32,
    /// How long a peer unheard since this node's own input overflowed (a
    /// flood) stays alive when no live peer says it died.
    #[serde(default = "default_overflow_hold_ms")]
    pub overflow_hold_ms: u32,
    /// The farm's shared key (at least [`MIN_KEY_BYTES`]); every heartbeat is
    /// authenticated with it.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// A keyring instead of `key_file`, for a key rotation: heartbeats are
    /// sent with the first key and accepted with any (see docs/upgrades.md).
    #[serde(default)]
    pub key_files: Vec<PathBuf>,
    #[serde(default)]
    pub split_brain: SplitBrain,
    /// The address the `witness` policy pings.
    #[serde(default)]
    pub witness: Option<IpAddr>,
    /// The newest heartbeat protocol version this node speaks. Unset: the
    /// build's newest. The previous version holds an upgraded node at what
    /// the farm's older nodes speak (a reload releases it; see
    /// docs/upgrades.md).
    #[serde(default)]
    pub protocol_version: Option<u8>,
    /// The heartbeat thread's real-time priority (SCHED_FIFO, 1–99) with
    /// the process's memory locked, as Corosync runs: heartbeats go out
    /// and are read on time on a host whose CPUs are saturated. 0: normal
    /// scheduling, nothing locked.
    #[serde(default = "default_realtime_priority")]
    pub realtime_priority: u8,
    /// The key files' contents (`key_paths` order), read once by
    /// [`Config::from_toml`]; not a key of the file.
    #[serde(skip)]
    pub keys: Vec<KeyBytes>,
}

fn default_realtime_priority() -> u8 {
    10
}

impl Membership {
    /// The key files, the sending key first (`key_file`, or `key_files`).
    pub fn key_paths(&self) -> Vec<&Path> {
        match &self.key_file {
            Some(k) => vec![k.as_path()],
            None => self.key_files.iter().map(PathBuf::as_path).collect(),
        }
    }
}

fn default_period_ms() -> u32 {
    25
}
fn default_dead_after_ms() -> u32 {
    200
}
fn default_overflow_hold_ms() -> u32 {
    1000
}

impl Default for Membership {
    fn default() -> Self {
        Membership {
            period_ms: default_period_ms(),
            dead_after_ms: default_dead_after_ms(),
            overflow_hold_ms: default_overflow_hold_ms(),
            key_file: None,
            key_files: Vec::new(),
            split_brain: SplitBrain::default(),
            witness: None,
            protocol_version: None,
            realtime_priority: default_realtime_priority(),
            keys: Vec::new(),
        }
    }
}

/// A key file's contents, read once when the config is loaded. Its
/// `Debug` shows its length only: a config is logged, a key is not.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeyBytes(pub Vec<u8>);

impl fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} key bytes>", self.0.len())
    }
}

impl Membership {
    /// The key name of the `i`th key path, for an error.
    fn key_name(&self, i: usize) -> String {
        match self.key_file {
            Some(_) => "membership.key_file".to_string(),
            None => format!("membership.key_files[{i}]"),
        }
    }

    /// Reads the key files (`key_paths`, in order) into `keys`: the one
    /// place a key file is read, when the config is loaded.
    pub(crate) fn load_keys(&mut self) -> Result<(), ConfigError> {
        let mut keys = Vec::new();
        for (i, path) in self.key_paths().iter().enumerate() {
            let key = self.key_name(i);
            let bytes = std::fs::read(path)
                .map_err(|e| invalid(&key, format!("cannot read {}: {e}", path.display())))?;
            if bytes.len() < MIN_KEY_BYTES {
                return Err(invalid(
                    &key,
                    format!(
                        "{} holds {} bytes; a key has at least {MIN_KEY_BYTES}",
                        path.display(),
                        bytes.len()
                    ),
                ));
            }
            keys.push(KeyBytes(bytes));
        }
        self.keys = keys;
        Ok(())
    }

    /// Checks `[membership]` (with the nodes' heartbeat addresses); the key
    /// files are read by [`Membership::load_keys`].
    fn validate(&self) -> Result<(), ConfigError> {
        if self.period_ms == 0 || self.period_ms > 10_000 {
            return Err(invalid(
                "membership.period_ms",
                format!("{} is out of range 1..=10000", self.period_ms),
            ));
        }
        if self.dead_after_ms < 2 * self.period_ms || self.dead_after_ms > 60_000 {
            return Err(invalid(
                "membership.dead_after_ms",
                format!(
                    "{} must be at least two periods ({}) and at most 60000",
                    self.dead_after_ms,
                    2 * self.period_ms
                ),
            ));
        }
        if self.overflow_hold_ms < self.dead_after_ms || self.overflow_hold_ms > 60_000 {
            return Err(invalid(
                "membership.overflow_hold_ms",
                format!(
                    "{} must be at least dead_after_ms ({}) and at most 60000",
                    self.overflow_hold_ms, self.dead_after_ms
                ),
            ));
        }
        match (&self.key_file, self.key_files.is_empty()) {
            (None, true) => {
                return Err(invalid(
                    "membership.key_file",
                    "missing: membership needs the farm's shared key file",
                ))
            }
            (Some(_), false) => {
                return Err(invalid(
                    "membership.key_files",
                    "set key_file or key_files, not both",
                ))
            }
            _ => {}
        }
        if self.key_files.len() > 8 {
            return Err(invalid("membership.key_files", "at most 8 keys"));
        }
        if self.realtime_priority > 99 {
            return Err(invalid(
                "membership.realtime_priority",
                format!(
                    "{}: a SCHED_FIFO priority is 1..=99 (0: not real-time)",
                    self.realtime_priority
                ),
            ));
        }
        if self.split_brain == SplitBrain::Witness && self.witness.is_none() {
            return Err(invalid(
                "membership.witness",
                "missing: split_brain = \"witness\" needs the witness address",
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Checks what membership needs: every node's heartbeat addresses on
    /// the same networks, and `[membership]`.
    pub(crate) fn validate_membership(&self) -> Result<(), ConfigError> {
        let networks = self.farm.nodes.first().map_or(0, |n| n.heartbeat.len());
        for (i, n) in self.farm.nodes.iter().enumerate() {
            let key = format!("farm.nodes[{i}].heartbeat");
            if n.heartbeat.is_empty() {
                return Err(invalid(
                    key,
                    "missing: membership needs each node's heartbeat address on each network",
                ));
            }
            if n.heartbeat.len() != networks {
                return Err(invalid(key, format!("{} addresses, but farm.nodes[0] has {networks}: every node is on the same heartbeat networks", n.heartbeat.len())));
            }
        }
        if networks > 8 {
            return Err(invalid(
                "farm.nodes[0].heartbeat",
                "at most 8 heartbeat networks",
            ));
        }
        self.membership.validate()
    }
}
