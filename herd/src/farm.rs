//! Who owns which bucket: static ownership from the config, or the
//! membership protocol publishing a new table whenever it changes.

use anyhow::{Context, Result};
use config::{Config, Ownership};
use fastpath::table::{BucketTable, TablePublisher};
use membership::assign::Member;
use membership::driver::{DriverSettings, Shared};
use membership::machine::{Machine, Settings, SplitBrain};
use membership::wire::Key;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct Farm {
    config: Config,
}

impl Farm {
    pub fn new(config: &Config) -> Result<Farm> {
        Ok(Farm {
            config: config.clone(),
        })
    }

    /// The table the fastpath starts with: the static one, or nothing
    /// owned until the membership protocol has listened and agreed.
    pub fn initial_table(&self) -> BucketTable {
        match self.config.farm.ownership {
            Ownership::Static => {
                fastpath::node::static_table(&self.config, 1).expect("validated config")
            }
            Ownership::Membership => BucketTable::new(1, self.config.farm.buckets, [], false),
        }
    }

    /// Starts the membership driver (on the current tokio runtime) when the
    /// config asks for it.
    pub fn start(&self, publisher: TablePublisher) -> Result<Option<Arc<Shared>>> {
        let c = &self.config;
        if c.farm.ownership != Ownership::Membership {
            return Ok(None);
        }
        let key_path = c
            .membership
            .key_file
            .as_ref()
            .context("membership.key_file")?;
        let key_bytes =
            std::fs::read(key_path).with_context(|| format!("reading {}", key_path.display()))?;
        let key = Key::new(&key_bytes).context("membership.key_file: at least 16 bytes")?;
        let settings = Settings {
            nodes: c
                .farm
                .nodes
                .iter()
                .map(|n| Member {
                    id: n.id,
                    weight: n.weight,
                })
                .collect(),
            me: c.node.id,
            period: Duration::from_millis(u64::from(c.membership.period_ms)),
            dead_after: Duration::from_millis(u64::from(c.membership.dead_after_ms)),
            networks: c.this_node().heartbeat.len(),
            n_buckets: c.farm.buckets,
            split_brain: match c.membership.split_brain {
                config::SplitBrain::ServeAll => SplitBrain::ServeAll,
                config::SplitBrain::Majority => SplitBrain::Majority,
                config::SplitBrain::Witness => SplitBrain::Witness,
            },
            key,
        };
        // Each start of the node is a new incarnation: the wall clock in
        // microseconds grows across restarts.
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        let shared = Shared::new(Machine::new(settings, incarnation, Duration::ZERO));
        let peers: BTreeMap<u16, Vec<std::net::SocketAddr>> = c
            .farm
            .nodes
            .iter()
            .filter(|n| n.id != c.node.id)
            .map(|n| (n.id, n.heartbeat.clone()))
            .collect();
        let driver = DriverSettings {
            binds: c.this_node().heartbeat.clone(),
            peers,
            witness: c.membership.witness,
        };
        let mut generation = 1u64;
        let n_buckets = c.farm.buckets;
        let on_owned = move |m: &Machine| {
            generation += 1;
            // The ARP/NDP responder is the holder of bucket 0.
            publisher.publish(BucketTable::new(
                generation,
                n_buckets,
                m.owned(),
                m.holds(0),
            ));
        };
        let task_shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if let Err(e) = membership::driver::run(task_shared, driver, on_owned).await {
                tracing::error!("membership stopped: {e}");
            }
        });
        Ok(Some(shared))
    }
}

/// The membership part of `herd status`.
pub fn status_json(shared: &Shared, config_names: &BTreeMap<u16, String>) -> serde_json::Value {
    let now = shared.now();
    shared.with(|m| {
        let shares = m.shares();
        let members = m.view_members(m.view());
        let counters = m.counters();
        let mut nodes = vec![serde_json::json!({
            "id": m.me(),
            "name": config_names.get(&m.me()),
            "self": true,
            "alive": true,
            "in_view": members.contains(&m.me()),
            "buckets": shares.get(&m.me()).copied().unwrap_or(0),
            "holds": m.owned().count(),
        })];
        for p in m.peers(now) {
            nodes.push(serde_json::json!({
                "id": p.id,
                "name": config_names.get(&p.id),
                "self": false,
                "alive": p.alive,
                "ready": p.ready,
                "weight": p.weight,
                "in_view": members.contains(&p.id),
                "agrees": p.agrees,
                "buckets": shares.get(&p.id).copied().unwrap_or(0),
                "heartbeat_age_ms": p.ages.iter().map(|a| a.map(|d| d.as_millis() as u64)).collect::<Vec<_>>(),
            }));
        }
        serde_json::json!({
            "view": members,
            "nodes": nodes,
            "counters": {
                "received": counters.received,
                "dropped_malformed": counters.dropped_malformed,
                "dropped_unauthenticated": counters.dropped_unauthenticated,
                "dropped_replayed": counters.dropped_replayed,
                "dropped_unknown_sender": counters.dropped_unknown_sender,
                "view_changes": counters.views,
            },
        })
    })
}
