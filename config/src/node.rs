//! `[node]`, `[control]` and `[log]`: which node this is, where it is
//! operated from, what it logs.

use crate::{invalid, ConfigError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Which of the farm's nodes this one is, and where it keeps what must
/// survive a restart.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeIdentity {
    pub id: u16,
    /// Where the node keeps its state across restarts (the weight set with
    /// `herd weight`; see [`state::KeptState`]).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/herd")
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Control {
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Optional HTTP listener for `/health` and `/metrics`.
    #[serde(default)]
    pub http: Option<std::net::SocketAddr>,
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/herd/herd.sock")
}

impl Default for Control {
    fn default() -> Self {
        Control {
            socket: default_socket(),
            http: None,
        }
    }
}

/// The node's log.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// What to log: a level (`info`), or comma-separated directives of
    /// `target=level` (`info,membership=debug`). Unset: `info`. The
    /// `HERD_LOG` environment variable, when set, wins.
    #[serde(default)]
    pub level: Option<String>,
}

impl Log {
    /// The level directives in force.
    pub fn directives(&self) -> &str {
        self.level.as_deref().unwrap_or("info")
    }
}

/// Checks `info,membership=debug`-style directives.
fn valid_log_directives(s: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for d in s.split(',') {
        let d = d.trim();
        let (target, level) = match d.split_once('=') {
            Some((t, l)) => (Some(t), l),
            None => (None, d),
        };
        if let Some(t) = target {
            if t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            {
                return Err(format!(
                    "{d:?}: a target is a module path (membership, fastpath::node)"
                ));
            }
        }
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!("{d:?}: the level is one of {}", LEVELS.join(", ")));
        }
    }
    Ok(())
}

impl NodeIdentity {
    /// Checks `[node]` against the farm's node ids.
    pub(crate) fn validate(&self, ids: &BTreeSet<u16>) -> Result<(), ConfigError> {
        if !self.state_dir.is_absolute() {
            return Err(invalid(
                "node.state_dir",
                format!("{:?} is not an absolute path", self.state_dir),
            ));
        }
        if !ids.contains(&self.id) {
            return Err(invalid(
                "node.id",
                format!("{} is not one of farm.nodes[].id", self.id),
            ));
        }
        Ok(())
    }
}

impl Control {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.socket.as_os_str().is_empty() {
            return Err(invalid("control.socket", "must not be empty"));
        }
        Ok(())
    }
}

impl Log {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(level) = &self.level {
            valid_log_directives(level).map_err(|e| invalid("log.level", e))?;
        }
        Ok(())
    }
}
