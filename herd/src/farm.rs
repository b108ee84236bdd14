//! Who owns which bucket: static ownership from the config, or the
//! membership protocol publishing a new table whenever it changes.

use anyhow::{Context, Result};
use config::state::{KeptState, WeightSource};
use config::{Config, Ownership};
use fastpath::decision::RuleTable;
use fastpath::flows::FlowId;
use fastpath::table::{BucketTable, TablePublisher};
use fastpath::wire::IPPROTO_TCP;
use herd_control::census;
use herd_control::continuity::{Census, Continuity};
use membership::assign::Member;
use membership::driver::{DriverSettings, Shared};
use membership::machine::{Hold, Machine, Rejection, Settings};
use membership::wire::{Key, Keyring, NodeState, Versions};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct Farm {
    config: Config,
    weights: Arc<WeightStore>,
}

/// This node's weight as the operator set it (`herd weight`), kept under
/// `node.state_dir` so that it survives a restart.
pub struct WeightStore {
    path: PathBuf,
    /// The config's weight (a reload may change it).
    configured: AtomicU32,
    kept: Mutex<KeptState>,
}

impl WeightStore {
    /// Reads the node's state file (a damaged one is an error naming it).
    pub fn load(config: &Config) -> Result<WeightStore> {
        let path = KeptState::path(config);
        let kept = KeptState::load(&path)?;
        if let Some(w) = kept.weight {
            tracing::info!(weight = w, file = %path.display(), "weight set at run time before the restart");
        }
        Ok(WeightStore {
            path,
            configured: AtomicU32::new(config.this_node().weight),
            kept: Mutex::new(kept),
        })
    }

    /// The weight the node runs with now.
    pub fn current(&self) -> u32 {
        self.lock().weight.unwrap_or(self.configured())
    }

    fn configured(&self) -> u32 {
        self.configured.load(Ordering::Relaxed)
    }

    /// A reload changed the config's weight: returns the weight to run
    /// with (a weight set at run time stays).
    pub fn set_configured(&self, weight: u32) -> u32 {
        self.configured.store(weight, Ordering::Relaxed);
        self.current()
    }

    pub fn source(&self) -> WeightSource {
        match self.lock().weight {
            Some(_) => WeightSource::Runtime,
            None => WeightSource::Config,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps `weight` (none: back to the config's, the file removed) and
    /// returns the weight to run with. Nothing changes if it cannot be
    /// kept: a weight that would not survive a restart is refused.
    pub fn keep(&self, weight: Option<u32>) -> Result<u32, config::state::StateError> {
        let mut kept = self.lock();
        let next = KeptState { weight };
        next.save(&self.path)?;
        *kept = next;
        Ok(weight.unwrap_or(self.configured()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeptState> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Farm {
    pub fn new(config: &Config) -> Result<Farm> {
        Ok(Farm {
            config: config.clone(),
            weights: Arc::new(WeightStore::load(config)?),
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
                m.set_state(st.state, st.transient);
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
    pub fn start(
        &self,
        publisher: TablePublisher,
        input_drops: Box<dyn FnMut() -> u64 + Send>,
    ) -> Result<Option<MembershipHandle>> {
        let c = &self.config;
        if c.farm.ownership != Ownership::Membership {
            return Ok(None);
        }
        let keys = read_keyring(c)?;
        let versions = protocol_versions(c)?;
        if c.membership.realtime_priority > 0 {
            // Before the machine exists: locking can take a while.
            match crate::realtime::lock_memory() {
                Ok(()) => tracing::info!("memory locked"),
                Err(e) => tracing::warn!("memory not locked: {e}"),
            }
        }
        let settings = self.machine_settings(keys, versions);
        // Each start of the node is a new incarnation: the wall clock in
        // microseconds grows across restarts.
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        let mut machine = Machine::new(settings, incarnation, Duration::ZERO);
        // STOP until the health driver says otherwise.
        machine.set_state(Duration::ZERO, NodeState::Stop, false);
        let shared = Shared::new(machine);
        let peers: BTreeMap<u16, Vec<std::net::SocketAddr>> =
            c.peers().map(|n| (n.id, n.heartbeat.clone())).collect();
        let driver = DriverSettings {
            binds: c.this_node().heartbeat.clone(),
            peers,
            witness: c.membership.witness,
            input_drops: Some(input_drops),
        };
        let moves = Arc::new(Moves::new(c, publisher));
        let on_owned = {
            let moves = Arc::clone(&moves);
            move |m: &Machine| moves.publish(m)
        };
        tokio::spawn(moves.clone().census_loop(Arc::clone(&shared)));
        spawn_membership_thread(
            Arc::clone(&shared),
            driver,
            on_owned,
            c.membership.realtime_priority,
        )?;
        Ok(Some(MembershipHandle {
            shared,
            moves,
            weights: Arc::clone(&self.weights),
        }))
    }

    /// The membership machine's settings from the config (this node's
    /// weight as kept across restarts).
    fn machine_settings(&self, keys: Keyring, versions: Versions) -> Settings {
        let c = &self.config;
        Settings {
            versions,
            nodes: c
                .farm
                .nodes
                .iter()
                .map(|n| Member {
                    id: n.id,
                    weight: if n.id == c.node.id {
                        self.weights.current()
                    } else {
                        n.weight
                    },
                })
                .collect(),
            me: c.node.id,
            period: Duration::from_millis(u64::from(c.membership.period_ms)),
            dead_after: Duration::from_millis(u64::from(c.membership.dead_after_ms)),
            networks: c.this_node().heartbeat.len(),
            n_buckets: c.farm.buckets,
            split_brain: c.membership.split_brain,
            keys,
            farm: farm_digest(c),
            continuity: c.continuity.enabled,
            drain_timeout: Duration::from_millis(c.continuity.drain_timeout_ms),
            overflow_hold: Duration::from_millis(u64::from(c.membership.overflow_hold_ms)),
        }
    }
}

/// Runs the membership driver on a thread of its own, real-time with
/// `priority` > 0.
fn spawn_membership_thread(
    task_shared: Arc<Shared>,
    driver: DriverSettings,
    on_owned: impl FnMut(&Machine) + Send + 'static,
    priority: u8,
) -> Result<()> {
    // Its own thread and runtime: nothing else of the node's control
    // plane delays a heartbeat, and it alone runs real-time.
    std::thread::Builder::new()
        .name("herd-membership".into())
        .spawn(move || {
            if priority > 0 {
                match crate::realtime::make_current_thread_realtime(priority) {
                    Ok(()) => {
                        tracing::info!("heartbeats run real-time (SCHED_FIFO {priority})")
                    }
                    Err(e) => tracing::warn!(
                        "heartbeats run at normal priority (a loaded host may delay them): {e}"
                    ),
                }
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("membership stopped: its runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                if let Err(e) = membership::driver::run(task_shared, driver, on_owned).await {
                    tracing::error!("membership stopped: {e}");
                }
            });
        })
        .context("the membership thread")?;
    Ok(())
}

/// The digest of what every node of a farm must share: the hash version,
/// the bucket count, the delivery, the VIPs and the rules with their
/// affinities (order does not matter). Two nodes whose digests differ
/// would split buckets differently: heartbeats carry it, and nodes agree
/// only on the same one.
pub fn farm_digest(c: &Config) -> u64 {
    let mut bytes = b"herd-farm-1".to_vec();
    bytes.extend_from_slice(&fastpath::hash::HASH_SEED.to_be_bytes());
    bytes.extend_from_slice(&c.farm.buckets.to_be_bytes());
    bytes.push(match c.farm.delivery {
        config::Delivery::Vmac => 0,
        config::Delivery::Multicast => 1,
    });
    let mut vips: Vec<[u8; 16]> = c
        .farm
        .vips
        .iter()
        .map(|a| match a {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        })
        .collect();
    vips.sort_unstable();
    vips.dedup();
    bytes.extend_from_slice(&(vips.len() as u32).to_be_bytes());
    vips.iter().for_each(|v| bytes.extend_from_slice(v));
    let mut rules: Vec<[u8; 5]> = c
        .rules
        .iter()
        .map(|r| {
            let port = r.port.map_or([0, 0, 0], |p| {
                let [hi, lo] = p.to_be_bytes();
                [1, hi, lo]
            });
            let protocol = match r.protocol {
                config::Protocol::Tcp => 6,
                config::Protocol::Udp => 17,
            };
            let affinity = match r.affinity {
                config::Affinity::ClientIp => 1,
                config::Affinity::ClientIpPort => 2,
            };
            [protocol, port[0], port[1], port[2], affinity]
        })
        .collect();
    rules.sort_unstable();
    bytes.extend_from_slice(&(rules.len() as u32).to_be_bytes());
    rules.iter().for_each(|r| bytes.extend_from_slice(r));
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// The heartbeat protocol versions the config asks this node to speak.
pub fn protocol_versions(c: &Config) -> Result<Versions> {
    match c.membership.protocol_version {
        None => Ok(Versions::BUILD),
        Some(v) => Versions::up_to(v).with_context(|| {
            format!(
                "membership.protocol_version: {v} is not spoken by this build (it speaks {})",
                Versions::BUILD
            )
        }),
    }
}

/// The membership keyring of a config: its key files as read when it was
/// loaded, the sending key first.
pub fn read_keyring(c: &Config) -> Result<Keyring> {
    let mut keys = Vec::new();
    for (bytes, path) in c.membership.keys.iter().zip(c.membership.key_paths()) {
        keys.push(Key::new(&bytes.0).with_context(|| {
            format!(
                "{}: a key has at least {} bytes",
                path.display(),
                config::MIN_KEY_BYTES
            )
        })?);
    }
    Keyring::new(keys).context("membership.key_file: no key")
}

/// The running membership: its machine and the state of its moves.
#[derive(Clone)]
pub struct MembershipHandle {
    pub shared: Arc<Shared>,
    pub moves: Arc<Moves>,
    /// This node's weight as kept across restarts.
    pub weights: Arc<WeightStore>,
}

/// Publishes the machine's buckets to the fastpath and runs the census
/// of the kernel's connections for moves out: the IO around
/// [`Continuity`], which decides.
pub struct Moves {
    publisher: TablePublisher,
    n_buckets: u32,
    /// The VIPs and rules the census reads connections by (a reload may
    /// change them).
    served: Mutex<Arc<Served>>,
    state: Mutex<Continuity>,
    wake: tokio::sync::Notify,
}

/// What the census reads the kernel's connections by.
struct Served {
    vips: Vec<IpAddr>,
    rules: RuleTable,
}

impl Served {
    fn of(c: &Config) -> Served {
        Served {
            vips: c.farm.vips.clone(),
            rules: RuleTable::from_config(&c.rules),
        }
    }
}

/// How often the kernel's connections are read while buckets move out.
const CENSUS_EVERY: Duration = Duration::from_millis(100);
/// Before reading the seed, the lcores switch to the table that stops
/// taking new flows (at most an idle sleep, 1 ms by default).
const SEED_DELAY: Duration = Duration::from_millis(20);

impl Moves {
    fn new(c: &Config, publisher: TablePublisher) -> Moves {
        Moves {
            publisher,
            n_buckets: c.farm.buckets,
            served: Mutex::new(Arc::new(Served::of(c))),
            state: Mutex::new(Continuity::new(c.farm.buckets)),
            wake: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Continuity> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The VIPs and rules of a reloaded config.
    pub fn set_served(&self, c: &Config) {
        *self.served.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(Served::of(c));
    }

    fn served(&self) -> Arc<Served> {
        Arc::clone(&self.served.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Publishes the machine's table (called with the machine locked).
    fn publish(&self, m: &Machine) {
        let holds: Vec<Hold> = (0..self.n_buckets).map(|b| m.hold(b)).collect();
        let mut st = self.lock();
        let p = st.publication(&holds);
        if p.census_now {
            self.wake.notify_one();
        }
        self.publisher.publish(p.table);
    }

    /// The bucket a kernel connection falls in, by its rule's affinity.
    fn bucket_of(&self, rules: &RuleTable, c: &census::Connection) -> Option<u32> {
        rules.bucket(
            IPPROTO_TCP,
            c.client,
            c.client_port,
            c.vip_port,
            self.n_buckets,
        )
    }

    /// What `herd status` shows of the moves.
    pub fn status(&self) -> herd_control::status::Moves {
        self.lock().status()
    }

    /// Resets the kernel's connections in buckets dropped outright (a
    /// withdrawal from a split, a move out that reached the drain
    /// timeout, a move without continuity): another node serves their
    /// packets now and its kernel resets the client, but this kernel would
    /// keep its side open as long as the application does, and count it
    /// in the bucket's next move out.
    async fn reset_dropped(&self, shared: &Shared) {
        let dropped = self.lock().take_dropped();
        if dropped.is_empty() {
            return;
        }
        let served = self.served();
        let vips = served.vips.clone();
        let Ok(Ok(conns)) = tokio::task::spawn_blocking(move || census::read(&vips)).await else {
            return;
        };
        // Those still dropped now (one look at the machine).
        let dropped: Vec<u32> = shared.with(|m| {
            dropped
                .into_iter()
                .filter(|b| m.hold(*b) == Hold::None)
                .collect()
        });
        let doomed: Vec<census::Connection> = conns
            .into_iter()
            .filter(|c| {
                self.bucket_of(&served.rules, c)
                    .is_some_and(|b| dropped.binary_search(&b).is_ok())
            })
            .collect();
        if doomed.is_empty() {
            return;
        }
        let n = doomed.len();
        let result = tokio::task::spawn_blocking(move || reset_connections(&doomed)).await;
        match result {
            Ok(Ok(())) => {
                self.lock().note_reset(n as u64);
                tracing::info!(
                    connections = n,
                    "reset the kernel's connections in buckets this node no longer serves"
                );
            }
            Ok(Err(e)) => tracing::warn!("resetting the kernel's connections: {e}"),
            Err(_) => {}
        }
    }

    async fn census_loop(self: Arc<Self>, shared: Arc<Shared>) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => tokio::time::sleep(SEED_DELAY).await,
                _ = tokio::time::sleep(CENSUS_EVERY) => {}
            }
            self.reset_dropped(&shared).await;
            let out: Vec<u32> = shared.with(|m| m.with_hold(Hold::Out).collect());
            if out.is_empty() {
                continue;
            }
            let served = self.served();
            let vips = served.vips.clone();
            let conns = match tokio::task::spawn_blocking(move || census::read(&vips)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::warn!("reading the kernel's connections: {e}");
                    continue;
                }
                Err(_) => continue,
            };
            let mut found = Census::of(
                out,
                conns.iter().map(|c| {
                    let flow = FlowId::new(c.client, c.client_port, c.vip_port, IPPROTO_TCP);
                    (self.bucket_of(&served.rules, c), flow)
                }),
            );
            if self.lock().needs_seed() {
                // Publish the seed with the machine's current table.
                shared.with(|m| {
                    if self.lock().seed_from(&mut found) {
                        self.publish(m);
                    }
                });
                tracing::info!(
                    buckets = found.buckets_out(),
                    connections = conns.len(),
                    "moving out: the kernel's connections are the old flows"
                );
            }
            let release = self.lock().release_empty(&found);
            if !release.is_empty() {
                tracing::info!(
                    buckets = release.len(),
                    "moves out ended: no connection left"
                );
                shared.change(|m, now| m.release_moves(now, release));
            }
        }
    }
}

/// Resets these kernel connections (`ss -K`, a few dozen per call).
fn reset_connections(conns: &[census::Connection]) -> Result<()> {
    use fastpath::setup::ss_host as host;
    for chunk in conns.chunks(32) {
        let mut args: Vec<String> = ["-K", "-t", "-n", "state", "connected"]
            .map(String::from)
            .to_vec();
        for (i, c) in chunk.iter().enumerate() {
            if i > 0 {
                args.push("or".into());
            }
            args.extend([
                "(".into(),
                "src".into(),
                host(c.vip),
                "and".into(),
                "sport".into(),
                "=".into(),
                format!(":{}", c.vip_port),
                "and".into(),
                "dst".into(),
                host(c.client),
                "and".into(),
                "dport".into(),
                "=".into(),
                format!(":{}", c.client_port),
                ")".into(),
            ]);
        }
        let out = std::process::Command::new("ss")
            .args(&args)
            .output()
            .context("running ss")?;
        if !out.status.success() {
            anyhow::bail!(
                "ss -K failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// The membership part of `herd status` (the weight's source and file and
/// the moves are the caller's to fill in).
pub fn membership_status(
    shared: &Shared,
    config_names: &BTreeMap<u16, String>,
    weights: &WeightStore,
    moves: herd_control::status::Moves,
) -> herd_control::status::Membership {
    use herd_control::status::{BucketMap, FarmNode, Heard, Holds, Membership, Refused};
    let now = shared.now();
    shared.with(|m| {
        let shares = m.shares();
        let members = m.view_members(m.view());
        let counters = m.counters();
        let (state, transient) = m.local_state();
        let mut nodes = vec![FarmNode {
            id: m.me(),
            name: config_names.get(&m.me()).cloned(),
            is_self: true,
            alive: true,
            ready: state == NodeState::Up && !transient && !m.draining(),
            state,
            transient,
            weight: m.weight(),
            in_view: members.contains(&m.me()),
            buckets: shares.get(&m.me()).copied().unwrap_or(0),
            speaks: Some(m.versions().to_string()),
            holds: Some(Holds {
                owned: m.owned().count() as u32,
                moving_in: m.with_hold(Hold::In).count() as u32,
                moving_out: m.with_hold(Hold::Out).count() as u32,
                kept_in: m.kept_in().count() as u32,
                kept_in_ranges: node_status::ranges_string(m.kept_in()),
            }),
            heard: None,
        }];
        for p in m.peers(now) {
            nodes.push(FarmNode {
                id: p.id,
                name: config_names.get(&p.id).cloned(),
                is_self: false,
                alive: p.alive,
                ready: p.ready,
                state: if p.alive { p.state } else { NodeState::Stop },
                transient: p.transient,
                weight: p.weight,
                in_view: members.contains(&p.id),
                buckets: shares.get(&p.id).copied().unwrap_or(0),
                speaks: p.speaks.map(|v| v.to_string()),
                holds: None,
                heard: Some(Heard {
                    agrees: p.agrees,
                    heartbeat_age_ms: p
                        .ages
                        .iter()
                        .map(|a| a.map(|d| d.as_millis() as u64))
                        .collect(),
                    farm_digest: format!("{:016x}", p.farm),
                    farm_differs: p.alive && p.farm != m.farm(),
                    protocol: p.talks,
                    rejected: p.rejected.map(|(age, why)| Refused {
                        why: match why {
                            Rejection::Authentication => "authentication".to_string(),
                            Rejection::Version(v) => format!("protocol version {v}"),
                        },
                        age_ms: age.as_millis() as u64,
                    }),
                    held: p.held,
                }),
            });
        }
        Membership {
            view: members,
            farm_digest: format!("{:016x}", m.farm()),
            protocol_versions: m.versions().to_string(),
            weight: m.weight(),
            weight_source: weights.source(),
            weight_file: weights.path().to_path_buf(),
            draining: m.draining(),
            deaf: m.deaf(now),
            nodes,
            bucket_map: BucketMap::new(&m.owners()),
            counters,
            moves,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_farm_digest_changes_with_what_nodes_share_and_only_that() {
        let c = Config::from_toml(include_str!("../../examples/node.toml")).unwrap();
        let d = farm_digest(&c);
        // Order, this node's identity and weight, ports and polling: no
        // change.
        let mut same = c.clone();
        same.farm.vips.reverse();
        same.rules.reverse();
        same.node.id = 2;
        same.farm.nodes[0].weight = 5;
        same.polling.max_sleep_us += 1;
        assert_eq!(farm_digest(&same), d);
        // Each shared thing: another digest.
        let mut changed: Vec<Config> = Vec::new();
        let mut x = c.clone();
        x.farm.vips.push("198.18.0.101".parse().unwrap());
        changed.push(x);
        let mut x = c.clone();
        x.rules.pop();
        changed.push(x);
        let mut x = c.clone();
        x.rules[0].affinity = match x.rules[0].affinity {
            config::Affinity::ClientIp => config::Affinity::ClientIpPort,
            config::Affinity::ClientIpPort => config::Affinity::ClientIp,
        };
        changed.push(x);
        let mut x = c.clone();
        x.rules[0].port = x.rules[0].port.map(|p| p + 1);
        changed.push(x);
        let mut x = c.clone();
        x.farm.buckets = 2048;
        changed.push(x);
        let mut x = c.clone();
        x.farm.delivery = match x.farm.delivery {
            config::Delivery::Vmac => config::Delivery::Multicast,
            config::Delivery::Multicast => config::Delivery::Vmac,
        };
        changed.push(x);
        let digests: std::collections::BTreeSet<u64> =
            changed.iter().map(farm_digest).chain([d]).collect();
        assert_eq!(digests.len(), changed.len() + 1);
    }
}
