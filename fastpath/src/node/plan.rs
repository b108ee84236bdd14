//! The node a config asks for, decided without DPDK: its bucket table
//! under static ownership, its classifier, its EAL arguments and
//! virtio-user's devargs.

use super::*;

/// The bucket table static ownership gives this node. The ARP/NDP
/// responder is the owner of bucket 0: every node computes the same.
pub fn static_table(config: &Config, generation: u64) -> Result<BucketTable, config::ConfigError> {
    let own = config.static_ownership()?;
    let me = config.node.id;
    let owned = own
        .owners
        .iter()
        .enumerate()
        .filter(|(_, o)| **o == me)
        .map(|(b, _)| b as u32);
    Ok(BucketTable::new(
        generation,
        config.farm.buckets,
        owned,
        own.owners.first() == Some(&me),
    ))
}

/// The classifier of a config, for a NIC with MAC `own_mac`.
pub fn classifier(config: &Config, own_mac: [u8; 6]) -> Classifier {
    let rules = RuleTable::from_config(&config.rules);
    let d = config.farm.delivery;
    Classifier {
        own_mac,
        vips4: config
            .vips4()
            .map(|a| Vip {
                address: a,
                mac: config::vip_mac(IpAddr::V4(a), d),
            })
            .collect(),
        vips6: config
            .vips6()
            .map(|a| Vip {
                address: a,
                mac: config::vip_mac(IpAddr::V6(a), d),
            })
            .collect(),
        rules,
    }
}

/// Frames in each af_packet queue's receive ring (the PMD's default is
/// 512). On a host where the lcore shares its CPU (a lab, a VM), it can be
/// off the CPU for tens of milliseconds; 512 frames of a 10 kpps SYN
/// flood's share are 50 ms, and what overflows is lost with the clients'
/// SYNs among it. 4096 frames (8 MiB of kernel memory per queue) hold
/// 0.4 s of it.
pub(super) const AF_PACKET_RING_FRAMES: u32 = 4096;

/// The EAL arguments a config asks for.
/// `xdp_prog`: the XDP pre-filter's object file for an `af_xdp` port.
pub fn eal_args(config: &Config, xdp_prog: Option<&std::path::Path>) -> Vec<String> {
    let d = &config.dpdk;
    let mut args: Vec<String> = Vec::new();
    // The main lcore runs the control plane; lcores 1..=queues poll. All
    // float over the configured CPUs: with adaptive polling several lcores
    // (and several nodes) can share a core.
    let cpu_set = d.cpus.as_ref().map_or_else(
        || {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            format!("0-{}", n - 1)
        },
        |c| c.as_str().to_string(),
    );
    let lcores: Vec<String> = (0..=config.port.queues)
        .map(|l| format!("{l}@({cpu_set})"))
        .collect();
    args.push(format!("--lcores={}", lcores.join(",")));
    if d.hugepages {
        args.push(format!("--socket-mem={}", d.memory_mb));
    } else {
        args.push("--no-huge".into());
        args.push(format!("-m{}", d.memory_mb));
    }
    if let Some(p) = &d.file_prefix {
        args.push(format!("--file-prefix={p}"));
    }
    args.push("--no-telemetry".into());
    args.push("--log-level=*:warning".into());
    let q = config.port.queues;
    match &config.port.device {
        Device::AfPacket { interface: iface } => {
            args.push("--no-pci".into());
            args.push(format!(
                "--vdev=net_af_packet0,iface={iface},qpairs={q},framecnt={AF_PACKET_RING_FRAMES}"
            ));
        }
        Device::AfXdp {
            interface: iface, ..
        } => {
            args.push("--no-pci".into());
            let mut vdev = format!(
                "--vdev=net_af_xdp0,iface={iface},start_queue=0,queue_count={q},busy_budget=0"
            );
            if let Some(p) = xdp_prog {
                vdev += &format!(",xdp_prog={}", p.display());
            }
            args.push(vdev);
        }
        Device::Pci { address } => args.push(format!("--allow={address}")),
        Device::Vdev { devargs } => {
            args.push("--no-pci".into());
            args.push(format!("--vdev={devargs}"));
        }
    }
    if let Some(v) = &config.tap.vdev {
        args.push(format!("--vdev={v}"));
    }
    args.extend(d.extra_args.iter().cloned());
    args
}

pub(super) fn nic_port_name(config: &Config) -> String {
    match &config.port.device {
        Device::AfPacket { .. } => "net_af_packet0".into(),
        Device::AfXdp { .. } => "net_af_xdp0".into(),
        Device::Pci { address } => address.to_string(),
        Device::Vdev { devargs } => vdev_name(devargs),
    }
}

pub(super) fn vdev_name(devargs: &str) -> String {
    devargs.split(',').next().unwrap_or_default().to_string()
}

pub(super) fn mac_string(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// virtio-user's devargs for a config: vhost-net, one queue per lcore,
/// the TAP's name and the NIC's MAC.
pub fn virtio_user_args(config: &Config, mac: [u8; 6]) -> String {
    format!(
        "path={VHOST_NET},queues={},queue_size=1024,iface={},mac={}",
        config.port.queues,
        config.tap.name,
        mac_string(&mac)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Config {
        Config::from_toml(include_str!("../../../examples/node.toml"))
            .expect("the example is valid")
    }

    #[test]
    fn an_af_packet_port_has_deep_rings_and_a_queue_pair_per_lcore() {
        let c = example();
        assert_eq!(c.port.driver(), Driver::AfPacket);
        let args = eal_args(&c, None);
        let vdev = args
            .iter()
            .find(|a| a.starts_with("--vdev=net_af_packet0,"))
            .expect("an af_packet vdev");
        let iface = c.port.interface().unwrap();
        assert!(vdev.contains(&format!("iface={iface},")), "{vdev}");
        assert!(
            vdev.contains(&format!("qpairs={},", c.port.queues)),
            "{vdev}"
        );
        assert!(
            vdev.ends_with(&format!("framecnt={AF_PACKET_RING_FRAMES}")),
            "{vdev}"
        );
        assert!(args.iter().any(|a| a == "--no-pci"));
    }

    #[test]
    fn static_ownership_gives_the_nodes_range_and_bucket_0s_owner_answers_arp() {
        let mut c = example();
        let t = static_table(&c, 7).unwrap();
        assert_eq!(t.n_buckets(), 4096);
        assert!(t.owned_buckets().eq(0..2048), "s1 owns 0-2047");
        assert!(t.is_arp_responder(), "s1 owns bucket 0");
        c.node.id = 2;
        let t = static_table(&c, 7).unwrap();
        assert!(t.owned_buckets().eq(2048..4096));
        assert!(!t.is_arp_responder());
    }

    #[test]
    fn the_classifier_has_the_configs_vips_rules_and_own_mac() {
        use crate::decision::Affinity;
        use crate::wire::{IPPROTO_TCP, IPPROTO_UDP};
        let c = example();
        let mac = [0x02, 0, 0, 0, 0, 0x01];
        let k = classifier(&c, mac);
        assert_eq!(k.own_mac, mac);
        assert_eq!(k.vips4.len() + k.vips6.len(), c.farm.vips.len());
        assert_eq!(
            k.rules.lookup(IPPROTO_TCP, 80),
            Some(Affinity::ClientIpPort)
        );
        assert_eq!(k.rules.lookup(IPPROTO_TCP, 7000), Some(Affinity::ClientIp));
        assert_eq!(k.rules.lookup(IPPROTO_UDP, 9000), Some(Affinity::ClientIp));
        assert_eq!(k.rules.lookup(IPPROTO_TCP, 22), None);
    }
}
