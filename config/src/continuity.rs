//! `[continuity]`: connections kept when buckets move between live nodes.

use crate::{default_true, invalid, ConfigError};
use serde::{Deserialize, Serialize};

/// Connection continuity when buckets move between live nodes (docs/design.md §5).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Continuity {
    /// Off: a bucket moves at once and the old owner's connections in it
    /// break (what CLUSTERIP does).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A move ends when the old owner holds no connection of its buckets,
    /// or after this long (then the connections left break).
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// A tracked flow without a packet for this long is forgotten; a client
    /// idle for this long no longer holds its server during a move.
    #[serde(default = "default_flow_idle_timeout_ms")]
    pub flow_idle_timeout_ms: u32,
    /// Flows tracked per lcore (memory is reserved for them at start).
    #[serde(default = "default_max_flows")]
    pub max_flows: u32,
}

fn default_drain_timeout_ms() -> u64 {
    300_000
}
fn default_flow_idle_timeout_ms() -> u32 {
    30_000
}
fn default_max_flows() -> u32 {
    262_144
}

impl Default for Continuity {
    fn default() -> Self {
        Continuity {
            enabled: true,
            drain_timeout_ms: default_drain_timeout_ms(),
            flow_idle_timeout_ms: default_flow_idle_timeout_ms(),
            max_flows: default_max_flows(),
        }
    }
}

impl Continuity {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.flow_idle_timeout_ms < 100 || self.flow_idle_timeout_ms > 3_600_000 {
            return Err(invalid(
                "continuity.flow_idle_timeout_ms",
                format!(
                    "{} is out of range 100..=3600000",
                    self.flow_idle_timeout_ms
                ),
            ));
        }
        if self.drain_timeout_ms > 86_400_000 {
            return Err(invalid(
                "continuity.drain_timeout_ms",
                format!("{} is over a day (86400000)", self.drain_timeout_ms),
            ));
        }
        if !(1..=1 << 24).contains(&self.max_flows) {
            return Err(invalid(
                "continuity.max_flows",
                format!("{} is out of range 1..=16777216", self.max_flows),
            ));
        }
        Ok(())
    }
}
