//! The tokio driver of the state machine: one UDP socket per heartbeat
//! network, the clock, and the witness probe. Thin by design: every
//! decision is the state machine's.
//!
//! Under a flood: a datagram from an address that is no peer's on its
//! network is dropped before the machine (counted); each socket has a
//! large receive buffer and sends at [`HEARTBEAT_PRIORITY`] (the TAP's
//! direct egress never holds such a frame for a busy lcore); and every
//! period the driver looks for frames its own input dropped (the
//! sockets' drop counts, and what [`DriverSettings::input_drops`] reports
//! of the NIC): the machine then holds peers it merely failed to hear
//! ([`Machine::note_input_overflow`]).

use crate::machine::{Event, Machine};
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// The machine, shared with the control socket (which reads its status).
pub struct Shared {
    machine: Mutex<Machine>,
    start: Instant,
    /// Wakes the driver after a local change (the node's state), so its
    /// heartbeat and table go out at once.
    local_change: tokio::sync::Notify,
}

impl Shared {
    /// `machine` must have been created with time `Duration::ZERO` now.
    pub fn new(machine: Machine) -> Arc<Shared> {
        Arc::new(Shared {
            machine: Mutex::new(machine),
            start: Instant::now(),
            local_change: tokio::sync::Notify::new(),
        })
    }

    /// The state machine's clock.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Sets the node's state (and whether it is transient) and wakes the
    /// driver: a node that is not UP-ready releases its buckets now.
    pub fn set_state(&self, state: crate::wire::NodeState, transient: bool) {
        let now = self.now();
        self.with(|m| m.set_state(now, state, transient));
        self.local_change.notify_one();
    }

    /// Changes the machine from outside the driver (a weight, a release)
    /// and wakes the driver so that peers hear of it at once.
    pub fn change<R>(&self, f: impl FnOnce(&mut Machine, Duration) -> R) -> R {
        let now = self.now();
        let r = self.with(|m| f(m, now));
        self.local_change.notify_one();
        r
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut Machine) -> R) -> R {
        let mut m = self.machine.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut m)
    }
}

pub struct DriverSettings {
    /// This node's address on each heartbeat network.
    pub binds: Vec<SocketAddr>,
    /// Every other node's address on each network.
    pub peers: BTreeMap<u16, Vec<SocketAddr>>,
    /// Pinged (with the system's `ping`) every [`WITNESS_EVERY`] when set.
    pub witness: Option<IpAddr>,
    /// Frames the node's input dropped so far outside the heartbeat
    /// sockets (the NIC's queues, the fastpath's rings): read every
    /// period; growth means this node may have missed heartbeats.
    pub input_drops: Option<Box<dyn FnMut() -> u64 + Send>>,
}

/// The heartbeat sockets' priority (`SO_PRIORITY`): the TAP's direct
/// egress program (fastpath/bpf/egress.c) sends such frames straight out.
pub const HEARTBEAT_PRIORITY: u32 = 0x4865;

/// The heartbeat sockets' receive buffer (the kernel may cap it at
/// `net.core.rmem_max`): room for a burst of junk beside the heartbeats.
const RECEIVE_BUFFER: usize = 4 << 20;

/// The drops the kernel counted on the sockets whose inodes are
/// `inodes`, from the text of `/proc/net/udp` or `/proc/net/udp6` (the
/// last column; the inode is the tenth).
pub fn socket_drops(table: &str, inodes: &[u64]) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let inode: u64 = cols.get(9)?.parse().ok()?;
            let drops: u64 = cols.last()?.parse().ok()?;
            inodes.contains(&inode).then_some(drops)
        })
        .sum()
}

/// The inode of an open socket (its `/proc/self/fd` entry).
fn socket_inode(s: &UdpSocket) -> Option<u64> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd()))
        .ok()
        .map(|m| m.ino())
}

/// Whether `from` is a peer's address on heartbeat network `network`.
fn from_peer(peers: &BTreeMap<u16, Vec<SocketAddr>>, network: usize, from: SocketAddr) -> bool {
    let from = canonical(from.ip());
    peers
        .values()
        .any(|a| a.get(network).is_some_and(|p| canonical(p.ip()) == from))
}

fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

/// The pause between two witness probes.
pub const WITNESS_EVERY: Duration = Duration::from_millis(100);

enum Input {
    Datagram(usize, Vec<u8>),
    /// A witness probe that started at (the machine's clock) ended.
    Witness {
        started: Duration,
        reachable: bool,
    },
}

/// Runs the protocol until the task is dropped. `on_owned` is called
/// (with the machine locked) whenever the buckets this node holds change.
pub async fn run(
    shared: Arc<Shared>,
    settings: DriverSettings,
    mut on_owned: impl FnMut(&Machine) + Send,
) -> io::Result<()> {
    let sockets = bind(&settings.binds).await?;
    let mut overflow = OverflowWatch::new(&sockets, settings.input_drops, &shared);
    // A peer is heard from now on: the machine's listening period (no
    // bucket taken before it could have heard a live owner) starts here.
    shared.change(|m, now| m.listen_from(now));
    let (tx, mut rx) = mpsc::channel::<Input>(1024);
    spawn_receivers(&sockets, &settings.peers, &shared, &tx);
    if let Some(w) = settings.witness {
        spawn_witness(w, &shared, tx.clone());
    }
    drop(tx);
    tracing::info!(networks = sockets.len(), "membership started");
    loop {
        let deadline = shared.with(|m| m.next_timeout());
        let sleep = deadline.saturating_sub(shared.now());
        tokio::select! {
            input = rx.recv() => {
                let now = shared.now();
                match input {
                    Some(Input::Datagram(net, bytes)) => shared.with(|m| m.handle_datagram(now, net, &bytes)),
                    Some(Input::Witness { started, reachable }) => {
                        shared.with(|m| m.set_witness(now, started, reachable))
                    }
                    None => return Ok(()),
                }
            }
            _ = tokio::time::sleep(sleep) => {
                let now = shared.now();
                shared.with(|m| m.handle_timeout(now));
            }
            _ = shared.local_change.notified() => {
                let now = shared.now();
                shared.with(|m| m.handle_timeout(now));
            }
        }
        overflow.check(&shared);
        shared.with(|m| {
            send(m, &sockets, &settings.peers);
            report_events(m, &mut on_owned);
        });
    }
}

/// The heartbeat sockets, one per network, each with its own receive
/// buffer and priority.
async fn bind(binds: &[SocketAddr]) -> io::Result<Vec<Arc<UdpSocket>>> {
    let mut sockets = Vec::new();
    for addr in binds {
        let s = UdpSocket::bind(addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("heartbeat socket {addr}: {e}")))?;
        let r = socket2::SockRef::from(&s);
        if let Err(e) = r.set_recv_buffer_size(RECEIVE_BUFFER) {
            tracing::warn!("heartbeat socket {addr}: its receive buffer stays the default: {e}");
        }
        if let Err(e) = r.set_priority(HEARTBEAT_PRIORITY) {
            tracing::warn!("heartbeat socket {addr}: no priority of its own (a busy lcore may hold its heartbeats): {e}");
        }
        sockets.push(Arc::new(s));
    }
    Ok(sockets)
}

/// Watches this node's input for drops (its sockets', and the driver's
/// own, such as the lcores' rings) once a period, and tells the machine.
struct OverflowWatch {
    drops: Box<dyn FnMut() -> u64 + Send>,
    seen: u64,
    next_check: Duration,
    period: Duration,
}

impl OverflowWatch {
    fn new(
        sockets: &[Arc<UdpSocket>],
        mut driver_drops: Option<Box<dyn FnMut() -> u64 + Send>>,
        shared: &Shared,
    ) -> OverflowWatch {
        let inodes: Vec<u64> = sockets.iter().filter_map(|s| socket_inode(s)).collect();
        let mut drops: Box<dyn FnMut() -> u64 + Send> = Box::new(move || {
            let table = |path| std::fs::read_to_string(path).unwrap_or_default();
            socket_drops(&table("/proc/net/udp"), &inodes)
                + socket_drops(&table("/proc/net/udp6"), &inodes)
                + driver_drops.as_mut().map_or(0, |f| f())
        });
        OverflowWatch {
            seen: drops(),
            drops,
            next_check: shared.now(),
            period: shared.with(|m| m.period()),
        }
    }

    fn check(&mut self, shared: &Shared) {
        let now = shared.now();
        if now < self.next_check {
            return;
        }
        self.next_check = now + self.period;
        let drops = (self.drops)();
        if drops > self.seen {
            let deaf = shared.with(|m| {
                let was = m.deaf(now);
                m.note_input_overflow(now);
                !was
            });
            if deaf {
                tracing::warn!(
                    dropped = drops - self.seen,
                    "this node's input overflowed: peers it does not hear meanwhile stay alive until a live peer says otherwise"
                );
            }
        }
        self.seen = drops;
    }
}

/// One task per heartbeat socket: datagrams from a peer's address go to
/// the machine, others are counted and dropped.
fn spawn_receivers(
    sockets: &[Arc<UdpSocket>],
    peers: &BTreeMap<u16, Vec<SocketAddr>>,
    shared: &Arc<Shared>,
    tx: &mpsc::Sender<Input>,
) {
    for (network, s) in sockets.iter().enumerate() {
        let (s, tx) = (Arc::clone(s), tx.clone());
        let (peers, shared) = (peers.clone(), Arc::clone(shared));
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            loop {
                match s.recv_from(&mut buf).await {
                    Ok((_, from)) if !from_peer(&peers, network, from) => {
                        shared.with(|m| m.note_not_from_peer());
                    }
                    Ok((n, _)) => {
                        if tx
                            .send(Input::Datagram(network, buf[..n].to_vec()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => tracing::debug!("heartbeat receive on network {network}: {e}"),
                }
            }
        });
    }
}

/// Probes the witness every [`WITNESS_EVERY`] with one ping.
fn spawn_witness(witness: IpAddr, shared: &Arc<Shared>, tx: mpsc::Sender<Input>) {
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        loop {
            let started = shared.now();
            let reachable = tokio::process::Command::new("ping")
                .args(["-n", "-q", "-c", "1", "-W", "1", &witness.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success());
            if tx
                .send(Input::Witness { started, reachable })
                .await
                .is_err()
            {
                return;
            }
            // Often: a node that lost a peer takes its buckets only
            // after a probe started since answers.
            tokio::time::sleep(WITNESS_EVERY).await;
        }
    });
}

/// Sends what the machine wants sent.
fn send(m: &mut Machine, sockets: &[Arc<UdpSocket>], peers: &BTreeMap<u16, Vec<SocketAddr>>) {
    while let Some(t) = m.poll_transmit() {
        let to = peers.get(&t.to).and_then(|a| a.get(t.network));
        if let (Some(to), Some(s)) = (to, sockets.get(t.network)) {
            // Best effort, never blocking: a full socket buffer is a lost
            // heartbeat, which the protocol tolerates.
            let _ = s.try_send_to(&t.bytes, *to);
        }
    }
}

/// Logs the machine's events, and hands a change of owned buckets to
/// `on_owned`.
fn report_events(m: &mut Machine, on_owned: &mut impl FnMut(&Machine)) {
    while let Some(e) = m.poll_event() {
        match e {
            Event::ViewChanged { view } => {
                tracing::info!(members = ?m.view_members(view), "view changed");
            }
            Event::OwnedChanged => {
                tracing::info!(owned = m.owned().count(), "owned buckets changed");
                on_owned(m);
            }
            Event::FarmDiffers { peer, ours, theirs } => {
                tracing::warn!(
                    peer,
                    ours = format!("{ours:016x}"),
                    theirs = format!("{theirs:016x}"),
                    "node {peer}'s farm config (VIPs, rules, buckets, delivery) differs from this node's: no bucket is taken until they agree"
                );
            }
            Event::FarmAgrees { peer } => {
                tracing::info!(
                    peer,
                    "node {peer}'s farm config agrees with this node's again"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_drops_sums_the_drops_of_our_sockets_only() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 0B0012C6:1BBC 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 45678 2 0000000000000000 17
  124: 0B0112C6:1BBC 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 45679 2 0000000000000000 3
  125: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 99 2 0000000000000000 1000
  garbage line
";
        assert_eq!(socket_drops(table, &[45678, 45679]), 20);
        assert_eq!(socket_drops(table, &[45678]), 17);
        assert_eq!(socket_drops(table, &[]), 0);
        assert_eq!(socket_drops("", &[45678]), 0);
    }

    #[test]
    fn only_a_peers_address_on_its_own_network_is_a_peers() {
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let peers = BTreeMap::from([
            (2, vec![a("198.18.0.12:7100"), a("198.18.1.12:7100")]),
            (3, vec![a("[2001:2::13]:7100"), a("198.18.1.13:7100")]),
        ]);
        assert!(from_peer(&peers, 0, a("198.18.0.12:7100")));
        // Any source port: the address is what a peer is known by.
        assert!(from_peer(&peers, 0, a("198.18.0.12:40000")));
        assert!(from_peer(&peers, 0, a("[2001:2::13]:7100")));
        // An IPv4 peer heard on a dual-stack socket.
        assert!(from_peer(&peers, 1, a("[::ffff:198.18.1.13]:7100")));
        assert!(
            !from_peer(&peers, 1, a("198.18.0.12:7100")),
            "another network's address"
        );
        assert!(!from_peer(&peers, 0, a("198.19.3.4:7100")));
        assert!(
            !from_peer(&peers, 2, a("198.18.0.12:7100")),
            "no such network"
        );
    }
}
