//! What a node keeps across restarts, under `node.state_dir`: today the
//! weight an operator set at run time (`herd weight`), which a restarted
//! node takes over the config's. One TOML file per farm and node, written
//! whole: a temporary file renamed over the old one, so a crash leaves the
//! old state or the new, never half of one.

use crate::Config;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeptState {
    /// The weight set with `herd weight`; none: the config's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// Where a node's weight comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightSource {
    /// `farm.nodes[].weight` of the config file.
    Config,
    /// Set with `herd weight` (now or before a restart), kept in the state
    /// file.
    Runtime,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct StateError {
    pub path: PathBuf,
    pub reason: String,
}

impl StateError {
    fn new(path: &Path, reason: impl ToString) -> StateError {
        StateError {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

impl KeptState {
    /// The state file of `config`'s node: `<state_dir>/<farm>-node<id>.toml`.
    pub fn path(config: &Config) -> PathBuf {
        config
            .node
            .state_dir
            .join(format!("{}-node{}.toml", config.farm.name, config.node.id))
    }

    /// The state in `path`; none kept yet (no file) is the default state.
    /// A file that is not a state file is an error naming it: the node
    /// does not start on a guess.
    pub fn load(path: &Path) -> Result<KeptState, StateError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(KeptState::default()),
            Err(e) => return Err(StateError::new(path, e)),
        };
        toml::from_str(&text).map_err(|e| {
            StateError::new(
                path,
                format!(
                    "not a Herd node state file ({}); remove it to start from the config",
                    e.message()
                ),
            )
        })
    }

    /// Writes the state to `path` (creating its directory), or removes the
    /// file when there is nothing to keep.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        if *self == KeptState::default() {
            return match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StateError::new(path, e)),
                _ => Ok(()),
            };
        }
        let text = toml::to_string(self).map_err(|e| StateError::new(path, e))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StateError::new(dir, e))?;
        }
        let tmp = path.with_extension("toml.tmp");
        let body = format!(
            "# Herd node state: written by `herd weight`; `herd weight config` removes it.\n{text}"
        );
        std::fs::write(&tmp, body).map_err(|e| StateError::new(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| StateError::new(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("herd-state-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_kept_weight_reads_back_and_nothing_kept_leaves_no_file() {
        let dir = scratch("roundtrip");
        let path = dir.join("lab-node1.toml");
        assert_eq!(KeptState::load(&path).unwrap(), KeptState::default());
        let kept = KeptState { weight: Some(3) };
        kept.save(&path).unwrap();
        assert_eq!(KeptState::load(&path).unwrap(), kept);
        KeptState { weight: Some(0) }.save(&path).unwrap();
        assert_eq!(KeptState::load(&path).unwrap().weight, Some(0));
        KeptState::default().save(&path).unwrap();
        assert!(!path.exists());
        assert!(!path.with_extension("toml.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_state_file_is_an_error_naming_it() {
        let dir = scratch("damaged");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lab-node1.toml");
        for bad in [
            "weight = \"heavy\"",
            "weight = -1",
            "colour = 3",
            "weight = 1\nweight = 2",
            "\u{0}",
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = KeptState::load(&path).unwrap_err().to_string();
            assert!(
                e.starts_with(&path.display().to_string()) && e.contains("remove it"),
                "{bad:?}: {e}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_state_that_cannot_be_written_is_an_error_naming_where() {
        let dir = scratch("unwritable");
        std::fs::create_dir_all(&dir).unwrap();
        // The state directory's place is taken by a file.
        let blocker = dir.join("state");
        std::fs::write(&blocker, "").unwrap();
        let path = blocker.join("lab-node1.toml");
        let e = KeptState { weight: Some(2) }.save(&path).unwrap_err();
        assert_eq!(e.path, blocker);
        assert!(KeptState::load(&path).is_err() || !path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_file_is_named_by_farm_and_node() {
        let mut c = Config::from_toml(include_str!("../../examples/node.toml")).unwrap();
        c.node.state_dir = PathBuf::from("/var/lib/herd");
        assert_eq!(
            KeptState::path(&c),
            PathBuf::from(format!(
                "/var/lib/herd/{}-node{}.toml",
                c.farm.name, c.node.id
            ))
        );
    }
}
