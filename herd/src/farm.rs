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

    /// The table the fastpath starts with: nothing owned until the node
    /// is UP-ready (and, with membership, the protocol has agreed).
    pub fn initial_table(&self) -> BucketTable {
        BucketTable::new(1, self.config.farm.buckets, [], false)
    }

    /// What to do when the node's state changes: only UP-ready owns
    /// buckets. Static ownership publishes its fixed share or nothing;
    /// membership tells the protocol, which releases at once and takes
    /// after agreement.
    pub fn on_status(
        &self,
        publisher: TablePublisher,
        membership: Option<Arc<Shared>>,
    ) -> impl FnMut(health::machine::Status) + Send + 'static {
        let config = self.config.clone();
        let mut generation = 1u64;
        move |st: health::machine::Status| {
            if let Some(m) = &membership {
                m.set_state(st.state.code(), st.transient);
                return;
            }
            generation += 1;
            let table = if st.owns_buckets() {
                fastpath::node::static_table(&config, generation).expect("validated config")
            } else {
                BucketTable::new(generation, config.farm.buckets, [], false)
            };
            tracing::info!(owned = table.owned_count(), "static share published");
            publisher.publish(table);
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
        let mut machine = Machine::new(settings, incarnation, Duration::ZERO);
        // STOP until the health driver says otherwise.
        machine.set_state(Duration::ZERO, membership::wire::STATE_STOP, false);
        let shared = Shared::new(machine);
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
        let (state, transient) = m.local_state();
        let mut nodes = vec![serde_json::json!({
            "id": m.me(),
            "name": config_names.get(&m.me()),
            "self": true,
            "alive": true,
            "state": state_name(state),
            "transient": transient,
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
                "state": if p.alive { state_name(p.state) } else { "STOP" },
                "transient": p.transient,
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
                "failovers": counters.peer_deaths,
            },
        })
    })
}

/// A heartbeat's state code as `herd state` names it.
pub fn state_name(code: u8) -> &'static str {
    match code {
        membership::wire::STATE_UP => "UP",
        membership::wire::STATE_WAIT => "WAIT",
        _ => "STOP",
    }
}
