//! A node's state and readiness (docs/design.md §4), one type each for every crate:
//! the health machine decides them, heartbeats carry the state (with its
//! own explicit byte values, in `membership::wire`), `herd state` exits
//! with [`NodeState::exit_code`], `/health` answers by [`Readiness`],
//! `/metrics` exports [`NodeState::metric`], the status page and `herd
//! status --json` show the names.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use std::fmt;

/// SafeKit's node states. Only an UP node that is ready (not transient,
/// not draining) owns buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum NodeState {
    Stop,
    Wait,
    Up,
}

impl NodeState {
    pub const ALL: [NodeState; 3] = [NodeState::Stop, NodeState::Wait, NodeState::Up];

    /// `herd state`'s exit code (SafeKit's): 0 STOP, 1 WAIT, 2 UP.
    pub fn exit_code(self) -> u8 {
        match self {
            NodeState::Stop => 0,
            NodeState::Wait => 1,
            NodeState::Up => 2,
        }
    }

    /// The `herd_node_state` gauge: 0 STOP, 1 WAIT, 2 UP (the alert
    /// rules and the dashboard read these numbers).
    pub fn metric(self) -> i64 {
        i64::from(self.exit_code())
    }

    pub fn name(self) -> &'static str {
        match self {
            NodeState::Stop => "STOP",
            NodeState::Wait => "WAIT",
            NodeState::Up => "UP",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a node stands for new flows, as `herd state`, `/health` and the
/// status page say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Readiness {
    /// Scripts are running: on its way up or down.
    Transient,
    /// UP and taking no new flows, serving its connections only.
    Draining,
    /// Settled in its state (an UP node owns buckets).
    Ready,
}

impl Readiness {
    pub fn name(self) -> &'static str {
        match self {
            Readiness::Transient => "transient",
            Readiness::Draining => "draining",
            Readiness::Ready => "ready",
        }
    }
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_exit_codes_and_json_agree() {
        for (s, name, code) in [
            (NodeState::Stop, "STOP", 0),
            (NodeState::Wait, "WAIT", 1),
            (NodeState::Up, "UP", 2),
        ] {
            assert_eq!(s.name(), name);
            assert_eq!(s.to_string(), name);
            assert_eq!(s.exit_code(), code);
            assert_eq!(s.metric(), i64::from(code));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<NodeState>(&json).unwrap(), s);
        }
        for r in [Readiness::Transient, Readiness::Draining, Readiness::Ready] {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{r}\""));
            assert_eq!(serde_json::from_str::<Readiness>(&json).unwrap(), r);
        }
        assert!(serde_json::from_str::<NodeState>("\"up\"").is_err());
    }
}
