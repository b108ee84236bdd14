use super::*;
use std::path::PathBuf;

const EXAMPLE: &str = include_str!("../../examples/node.toml");

fn with(edit: impl FnOnce(&mut toml::Table)) -> String {
    let mut t: toml::Table = toml::from_str(EXAMPLE).unwrap();
    edit(&mut t);
    toml::to_string(&t).unwrap()
}

fn err_of(text: &str) -> String {
    Config::from_toml(text)
        .expect_err("config must be refused")
        .to_string()
}

fn table<'a>(t: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    t.get_mut(key).unwrap().as_table_mut().unwrap()
}

fn nodes(t: &mut toml::Table) -> &mut Vec<toml::Value> {
    table(t, "farm")
        .get_mut("nodes")
        .unwrap()
        .as_array_mut()
        .unwrap()
}

#[test]
fn example_is_valid() {
    let c = Config::from_toml(EXAMPLE).unwrap();
    assert_eq!(c.node.id, 1);
    assert_eq!(c.farm.buckets, 4096);
    assert_eq!(c.farm.delivery, Delivery::Vmac);
    assert_eq!(c.rules.len(), 3);
    assert_eq!(c.this_node().name, "s1");
    let own = c.static_ownership().unwrap();
    assert_eq!(own.owners.iter().filter(|o| **o == 1).count(), 2048);
    assert_eq!(own.owners[4095], 2);
    assert_eq!(c.vips4().count(), 1);
    assert_eq!(c.vips6().count(), 1);
}

#[test]
fn defaults_fill_optional_sections() {
    let text = with(|t| {
        for k in ["tap", "dpdk", "polling", "control"] {
            t.remove(k);
        }
    });
    let c = Config::from_toml(&text).unwrap();
    assert_eq!(c.tap.name, "herd0");
    assert!(c.tap.configure_kernel);
    assert!(c.tap.offloads);
    assert!(c.tap.gro);
    assert_eq!(c.tap.backend, TapBackend::Tap);
    assert_eq!(c.polling.max_sleep_us, 1500);
    assert_eq!(c.control.socket, PathBuf::from("/run/herd/herd.sock"));
    assert!(!c.dpdk.hugepages);
}

#[test]
fn the_tap_backend_is_read_and_checked() {
    let c = Config::from_toml(&with(|t| {
        table(t, "tap").insert("backend".into(), "virtio-user".into());
    }))
    .unwrap();
    assert_eq!(c.tap.backend, TapBackend::VirtioUser);
    let e = err_of(&with(|t| {
        table(t, "tap").insert("backend".into(), "kni".into());
    }));
    assert!(e.starts_with("tap.backend: "), "{e}");
    let e = err_of(&with(|t| {
        let tap = table(t, "tap");
        tap.insert("backend".into(), "virtio-user".into());
        tap.insert("vdev".into(), "net_null0".into());
    }));
    assert!(
        e.starts_with("tap.backend: ") && e.contains("set one"),
        "{e}"
    );
}

#[test]
fn unknown_key_is_named() {
    let e = err_of(&with(|t| {
        table(t, "farm").insert("bukets".into(), 12.into());
    }));
    assert!(
        e.starts_with("farm.bukets: ") && e.contains("unknown field"),
        "{e}"
    );
}

#[test]
fn bad_address_is_named() {
    let e = err_of(&with(|t| {
        table(t, "farm").insert(
            "vips".into(),
            toml::Value::Array(vec!["198.18.0.300".into()]),
        );
    }));
    assert!(e.starts_with("farm.vips[0]: "), "{e}");
    let e = err_of(&with(|t| {
        table(t, "tap").insert(
            "addresses".into(),
            toml::Value::Array(vec!["198.18.0.11".into()]),
        );
    }));
    assert!(e.starts_with("tap.addresses[0]:"), "{e}");
}

#[test]
fn duplicate_node_id_is_named() {
    let e = err_of(&with(|t| {
        nodes(t)[1]
            .as_table_mut()
            .unwrap()
            .insert("id".into(), 1.into());
    }));
    assert!(
        e.starts_with("farm.nodes[1].id: duplicate node id 1"),
        "{e}"
    );
}

#[test]
fn rule_without_port_is_named() {
    let e = err_of(&with(|t| {
        t.get_mut("rules").unwrap().as_array_mut().unwrap()[2]
            .as_table_mut()
            .unwrap()
            .remove("port");
    }));
    assert!(e.starts_with("rules[2].port: missing"), "{e}");
}

#[test]
fn bad_affinity_is_named() {
    let e = err_of(&with(|t| {
        t.get_mut("rules").unwrap().as_array_mut().unwrap()[0]
            .as_table_mut()
            .unwrap()
            .insert("affinity".into(), "sticky".into());
    }));
    assert!(e.contains("sticky") && e.contains("client-ip"), "{e}");
}

#[test]
fn node_id_must_be_in_the_farm() {
    let e = err_of(&with(|t| {
        table(t, "node").insert("id".into(), 9.into());
    }));
    assert!(e.starts_with("node.id: 9 is not one of"), "{e}");
}

#[test]
fn static_ownership_must_cover_every_bucket_once() {
    let e = err_of(&with(|t| {
        nodes(t)[1]
            .as_table_mut()
            .unwrap()
            .insert("buckets".into(), "2000-4095".into());
    }));
    assert!(
        e.starts_with("farm.nodes[1].buckets: bucket 2000 is also owned by node 1"),
        "{e}"
    );
    let e = err_of(&with(|t| {
        nodes(t)[1]
            .as_table_mut()
            .unwrap()
            .insert("buckets".into(), "2048-4094".into());
    }));
    assert!(e.starts_with("farm.nodes: bucket 4095 has no owner"), "{e}");
    let e = err_of(&with(|t| {
        nodes(t)[1]
            .as_table_mut()
            .unwrap()
            .insert("buckets".into(), "2048-5000".into());
    }));
    assert!(e.contains("beyond farm.buckets"), "{e}");
    let e = err_of(&with(|t| {
        nodes(t)[0]
            .as_table_mut()
            .unwrap()
            .insert("buckets".into(), "0-x".into());
    }));
    assert!(e.starts_with("farm.nodes[0].buckets:"), "{e}");
}

#[test]
fn driver_needs_its_device() {
    let e = err_of(&with(|t| {
        table(t, "port").remove("interface");
    }));
    assert!(e.starts_with("port.interface:"), "{e}");
    let e = err_of(&with(|t| {
        table(t, "port").insert("driver".into(), "pci".into());
        table(t, "port").insert("pci".into(), "03:00.0".into());
    }));
    assert!(e.starts_with("port.pci:"), "{e}");
    let ok = with(|t| {
        table(t, "port").insert("driver".into(), "pci".into());
        table(t, "port").insert("pci".into(), "0000:03:00.0".into());
    });
    Config::from_toml(&ok).unwrap();
    let e = err_of(&with(|t| {
        table(t, "port").insert("driver".into(), "token_ring".into());
    }));
    assert!(e.contains("token_ring"), "{e}");
}

#[test]
fn direct_egress_needs_a_nic_the_kernel_keeps() {
    assert_eq!(Config::from_toml(EXAMPLE).unwrap().tap.direct_egress, None);
    for driver in ["af_xdp", "af_packet"] {
        let on = with(|t| {
            table(t, "port").insert("driver".into(), driver.into());
            table(t, "tap").insert("direct_egress".into(), true.into());
        });
        assert_eq!(
            Config::from_toml(&on).unwrap().tap.direct_egress,
            Some(true)
        );
    }
    let pci = with(|t| {
        table(t, "port").insert("driver".into(), "pci".into());
        table(t, "port").insert("pci".into(), "0000:03:00.0".into());
        table(t, "tap").insert("direct_egress".into(), true.into());
    });
    let e = err_of(&pci);
    assert!(
        e.starts_with("tap.direct_egress:") && e.contains("af_xdp"),
        "{e}"
    );
    let virtio = with(|t| {
        table(t, "tap").insert("direct_egress".into(), true.into());
        table(t, "tap").insert("backend".into(), "virtio-user".into());
    });
    assert!(err_of(&virtio).starts_with("tap.direct_egress:"));
    let off = with(|t| {
        table(t, "port").insert("driver".into(), "pci".into());
        table(t, "port").insert("pci".into(), "0000:03:00.0".into());
        table(t, "tap").insert("direct_egress".into(), false.into());
    });
    assert_eq!(
        Config::from_toml(&off).unwrap().tap.direct_egress,
        Some(false)
    );
}

#[test]
fn the_xdp_prefilter_is_for_af_xdp_only() {
    assert_eq!(
        Config::from_toml(EXAMPLE).unwrap().port.xdp_prefilter(),
        None
    );
    let e = err_of(&with(|t| {
        table(t, "port").insert("xdp_prefilter".into(), true.into());
    }));
    assert!(
        e.starts_with("port.xdp_prefilter:") && e.contains("af_xdp"),
        "{e}"
    );
    let on = with(|t| {
        table(t, "port").insert("driver".into(), "af_xdp".into());
        table(t, "port").insert("xdp_prefilter".into(), true.into());
    });
    assert_eq!(
        Config::from_toml(&on).unwrap().port.xdp_prefilter(),
        Some(true)
    );
    let off = with(|t| {
        table(t, "port").insert("xdp_prefilter".into(), false.into());
    });
    // Accepted: off, which is all a port without af_xdp can be.
    assert_eq!(Config::from_toml(&off).unwrap().port.xdp_prefilter(), None);
}

#[test]
fn the_xdp_mode_is_for_the_af_xdp_prefilter_only() {
    assert_eq!(Config::from_toml(EXAMPLE).unwrap().port.xdp_mode(), None);
    for (driver, prefilter) in [("af_packet", None), ("af_xdp", Some(false))] {
        let e = err_of(&with(|t| {
            let port = table(t, "port");
            port.insert("driver".into(), driver.into());
            if let Some(p) = prefilter {
                port.insert("xdp_prefilter".into(), p.into());
            }
            port.insert("xdp_mode".into(), "generic".into());
        }));
        assert!(
            e.starts_with("port.xdp_mode:") && e.contains("af_xdp"),
            "{e}"
        );
    }
    for (name, mode) in [("native", XdpMode::Native), ("generic", XdpMode::Generic)] {
        let c = with(|t| {
            table(t, "port").insert("driver".into(), "af_xdp".into());
            table(t, "port").insert("xdp_mode".into(), name.into());
        });
        assert_eq!(Config::from_toml(&c).unwrap().port.xdp_mode(), Some(mode));
        assert_eq!(mode.as_str(), name);
    }
    let bad = with(|t| {
        table(t, "port").insert("driver".into(), "af_xdp".into());
        table(t, "port").insert("xdp_mode".into(), "offload".into());
    });
    let e = err_of(&bad);
    assert!(e.contains("xdp_mode") && e.contains("native"), "{e}");
}

#[test]
fn unset_xdp_mode_is_generic_on_a_veth_only() {
    assert_eq!(XdpMode::for_interface_kind(Some("veth")), XdpMode::Generic);
    for kind in [None, Some("macvlan"), Some("bond"), Some("vlan")] {
        assert_eq!(
            XdpMode::for_interface_kind(kind),
            XdpMode::Native,
            "{kind:?}"
        );
    }
}

#[test]
fn out_of_range_numbers_are_named() {
    let e = err_of(&with(|t| {
        table(t, "port").insert("queues".into(), 0.into());
    }));
    assert!(e.starts_with("port.queues:"), "{e}");
    let e = err_of(&with(|t| {
        table(t, "farm").insert("buckets".into(), 0.into());
    }));
    assert!(e.starts_with("farm.buckets:"), "{e}");
    let e = err_of(&with(|t| {
        table(t, "polling").insert("min_sleep_us".into(), 5000.into());
    }));
    assert!(e.starts_with("polling.min_sleep_us:"), "{e}");
    let e = err_of(&with(|t| {
        table(t, "port").insert("queues".into(), (-1).into());
    }));
    assert!(e.contains("queues"), "{e}");
}

#[test]
fn vip_macs_are_derived() {
    let v4: IpAddr = "198.18.0.100".parse().unwrap();
    assert_eq!(vip_mac(v4, Delivery::Vmac), [0x02, 0x48, 198, 18, 0, 100]);
    assert_eq!(
        vip_mac(v4, Delivery::Multicast),
        [0x01, 0x00, 0x5e, 18, 0, 100]
    );
    let v6: IpAddr = "2001:2::100".parse().unwrap();
    assert_eq!(vip_mac(v6, Delivery::Vmac), [0x02, 0x86, 0, 0, 0x01, 0x00]);
    // vMACs are locally administered unicast, multicast MACs have the group bit.
    assert_eq!(vip_mac(v4, Delivery::Vmac)[0] & 0b11, 0b10);
    assert_eq!(vip_mac(v6, Delivery::Multicast)[0] & 1, 1);
}

#[test]
fn ranges_parse() {
    assert_eq!(
        BucketRanges::parse("0-2,5")
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
        vec![0, 1, 2, 5]
    );
    assert!(BucketRanges::parse("3-1").is_err());
    assert!(BucketRanges::parse("0-4294967295").is_err());
    assert!(BucketRanges::parse("").is_err());
    assert_eq!(parse_cpu_list("1").unwrap(), vec![1]);
}

proptest::proptest! {
    /// Arbitrary text never panics the parser: it is a config or an error.
    #[test]
    fn arbitrary_text_never_panics(s in ".{0,400}") {
        let _ = Config::from_toml(&s);
    }

    #[test]
    fn arbitrary_ranges_never_panic(s in "[0-9,\\- ]{0,40}") {
        let _ = BucketRanges::parse(&s);
    }
}

fn membership_config(key_file: &str) -> String {
    with(|t| {
        table(t, "farm").insert("ownership".into(), "membership".into());
        for (i, n) in nodes(t).iter_mut().enumerate() {
            let n = n.as_table_mut().unwrap();
            n.remove("buckets");
            n.insert(
                "heartbeat".into(),
                toml::Value::Array(vec![format!("198.18.0.{}:7100", 11 + i).into()]),
            );
        }
        let mut m = toml::Table::new();
        m.insert("key_file".into(), key_file.into());
        t.insert("membership".into(), m.into());
    })
}

#[test]
fn membership_mode_is_validated() {
    let dir = std::env::temp_dir().join(format!("herd-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("farm.key");
    std::fs::write(&key, b"0123456789abcdef0123").unwrap();
    let ok = membership_config(key.to_str().unwrap());
    let c = Config::from_toml(&ok).unwrap();
    assert_eq!(c.farm.ownership, Ownership::Membership);
    // The key file is read once, with the config, and never logged.
    assert_eq!(
        c.membership.keys,
        vec![KeyBytes(b"0123456789abcdef0123".to_vec())]
    );
    assert!(!format!("{c:?}").contains("0123456789abcdef"));
    assert_eq!(c.membership.period_ms, 25);
    assert_eq!(c.membership.dead_after_ms, 200);
    let e = err_of(&membership_config("/nonexistent/farm.key"));
    assert!(
        e.starts_with("membership.key_file: cannot read /nonexistent/farm.key"),
        "{e}"
    );
    let short = dir.join("short.key");
    std::fs::write(&short, b"tiny").unwrap();
    let e = err_of(&membership_config(short.to_str().unwrap()));
    assert!(
        e.starts_with("membership.key_file:") && e.contains("at least 16"),
        "{e}"
    );
    // A keyring: key_files instead of key_file, each key checked by index.
    let ring = |files: &[&std::path::Path], with_key_file: bool| {
        let mut t: toml::Table = toml::from_str(&ok).unwrap();
        let m = table(&mut t, "membership");
        if !with_key_file {
            m.remove("key_file");
        }
        let files: Vec<toml::Value> = files.iter().map(|f| f.to_str().unwrap().into()).collect();
        m.insert("key_files".into(), toml::Value::Array(files));
        toml::to_string(&t).unwrap()
    };
    let c = Config::from_toml(&ring(&[&key, &key], false)).unwrap();
    assert_eq!(c.membership.key_paths(), vec![key.as_path(), key.as_path()]);
    let e = err_of(&ring(&[&key, &short], false));
    assert!(
        e.starts_with("membership.key_files[1]:") && e.contains("at least 16"),
        "{e}"
    );
    let e = err_of(&ring(&[&key], true));
    assert!(
        e.starts_with("membership.key_files:") && e.contains("not both"),
        "{e}"
    );
    let e = err_of(&ring(&[], false));
    assert!(e.starts_with("membership.key_file: missing"), "{e}");
    let mut t: toml::Table = toml::from_str(&ok).unwrap();
    nodes(&mut t)[1].as_table_mut().unwrap().remove("heartbeat");
    let e = err_of(&toml::to_string(&t).unwrap());
    assert!(e.starts_with("farm.nodes[1].heartbeat: missing"), "{e}");
    let mut t: toml::Table = toml::from_str(&ok).unwrap();
    table(&mut t, "membership").insert("dead_after_ms".into(), 30.into());
    let e = err_of(&toml::to_string(&t).unwrap());
    assert!(e.starts_with("membership.dead_after_ms:"), "{e}");
    assert_eq!(c.membership.overflow_hold_ms, 1000);
    let mut t: toml::Table = toml::from_str(&ok).unwrap();
    table(&mut t, "membership").insert("overflow_hold_ms".into(), 150.into());
    let e = err_of(&toml::to_string(&t).unwrap());
    assert!(
        e.starts_with("membership.overflow_hold_ms:") && e.contains("at least dead_after_ms"),
        "{e}"
    );
    let mut t: toml::Table = toml::from_str(&ok).unwrap();
    table(&mut t, "membership").insert("split_brain".into(), "witness".into());
    let e = err_of(&toml::to_string(&t).unwrap());
    assert!(e.starts_with("membership.witness: missing"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn health_sections_default_and_parse() {
    let c = Config::from_toml(EXAMPLE).unwrap();
    assert!(c.health.autostart);
    assert_eq!(c.health.maxloop, 3);
    assert_eq!(c.scripts.graceful_timeout_ms, 30_000);
    assert_eq!(c.scripts.forced_timeout_ms, 5_000);
    assert!(c.control.http.is_none());
    let text = format!(
        "{EXAMPLE}\n[health]\nautostart = false\nmaxloop = 5\nloop_window_s = 600\n\
         [scripts]\nstart = \"/etc/herd/start\"\n\
         [[checkers]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1:80/health\"\nbody = \"ok\"\naction = \"restart\"\n\
         [[checkers]]\nname = \"app\"\nkind = \"process\"\npattern = \"^/usr/bin/app\"\nmin = 2\nmax = 4\n\
         [[checkers]]\nname = \"link\"\nkind = \"interface\"\ninterface = \"nic\"\naction = \"stop\"\n"
    );
    let c = Config::from_toml(&text).unwrap();
    assert!(!c.health.autostart);
    assert_eq!(c.checkers.len(), 3);
    assert_eq!(c.checkers[0].action, CheckerAction::Restart);
    assert_eq!(c.checkers[1].action, CheckerAction::Wait, "default action");
    assert_eq!(c.checkers[1].failures_before_down, 3);
    assert_eq!(
        HttpUrl::parse("http://[2001:2::1]:8080/x").unwrap().port,
        8080
    );
}

#[test]
fn bad_checkers_and_scripts_are_named() {
    let cases = [
        (
            "[[checkers]]\nname = \"a\"\nkind = \"tcp\"\n",
            "checkers[0].address: missing",
        ),
        (
            "[[checkers]]\nname = \"a\"\nkind = \"tcp\"\naddress = \"1.2.3.4\"\n",
            "checkers[0].address: ",
        ),
        (
            "[[checkers]]\nname = \"a\"\nkind = \"tcp\"\naddress = \"198.18.0.1:80\"\nurl = \"http://x/\"\n",
            "checkers[0].url: not a key of a tcp checker",
        ),
        (
            "[[checkers]]\nname = \"a\"\nkind = \"http\"\nurl = \"https://x/\"\n",
            "checkers[0].url:",
        ),
        (
            "[[checkers]]\nname = \"a\"\nkind = \"process\"\npattern = \"(\"\n",
            "checkers[0].pattern: bad regex",
        ),
        (
            "[[checkers]]\nname = \"a\"\nkind = \"process\"\n",
            "checkers[0].process:",
        ),
        (
            "[[checkers]]\nname = \"a\"\nkind = \"custom\"\ncommand = \"true\"\nfailures_before_down = 0\n",
            "checkers[0].failures_before_down:",
        ),
        (
            "[[checkers]]\nname = \"a\"\nkind = \"custom\"\ncommand = \"true\"\n[[checkers]]\nname = \"a\"\nkind = \"custom\"\ncommand = \"true\"\n",
            "checkers[1].name: duplicate",
        ),
        (
            "[[checkers]]\nname = \"a\"\nkind = \"custom\"\ncommand = \"true\"\naction = \"reboot\"\n",
            "action",
        ),
        ("[scripts]\nstart = \"start.sh\"\n", "scripts.start: start.sh must be an absolute path"),
        ("[health]\nmaxloop = 0\n", "health.maxloop:"),
        ("[health]\nmax_loop = 3\n", "health.max_loop: "),
    ];
    for (extra, want) in cases {
        let e = err_of(&format!("{EXAMPLE}\n{extra}"));
        assert!(e.contains(want), "{extra:?}: {e}");
    }
}

#[test]
fn membership_example_is_valid_with_its_key_file() {
    let text = include_str!("../../examples/farm-membership.toml");
    let dir = std::env::temp_dir().join(format!("herd-config-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("farm.key");
    std::fs::write(&key, b"0123456789abcdef0123").unwrap();
    let text = text.replace("/etc/herd/farm.key", key.to_str().unwrap());
    let c = Config::from_toml(&text).unwrap();
    assert_eq!(c.checkers.len(), 2);
    assert_eq!(c.checkers[0].action, CheckerAction::Restart);
    assert!(c.control.http.is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn continuity_defaults_and_bad_values_are_named() {
    let c = Config::from_toml(EXAMPLE).unwrap();
    assert!(c.continuity.enabled);
    assert_eq!(c.continuity.drain_timeout_ms, 300_000);
    let set = |key: &str, v: toml::Value| {
        with(|t| {
            let mut section = toml::Table::new();
            section.insert(key.into(), v);
            t.insert("continuity".into(), section.into());
        })
    };
    let c = Config::from_toml(&set("enabled", false.into())).unwrap();
    assert!(!c.continuity.enabled);
    for (key, v) in [
        ("flow_idle_timeout_ms", toml::Value::from(10)),
        ("drain_timeout_ms", toml::Value::from(100_000_000)),
        ("max_flows", toml::Value::from(0)),
    ] {
        let e = err_of(&set(key, v));
        assert!(e.starts_with(&format!("continuity.{key}:")), "{e}");
    }
    let e = err_of(&set("drain_timeout", 5.into()));
    assert!(e.contains("drain_timeout"), "{e}");
}

#[test]
fn a_log_level_is_checked_and_named() {
    let ok = with(|t| {
        t.insert(
            "log".into(),
            toml::from_str::<toml::Table>("level = \"info,membership=debug\"")
                .unwrap()
                .into(),
        );
    });
    assert_eq!(
        Config::from_toml(&ok).unwrap().log.directives(),
        "info,membership=debug"
    );
    for bad in ["loud", "membership=chatty", "=info", "a b=info"] {
        let text = with(|t| {
            let mut log = toml::Table::new();
            log.insert("level".into(), bad.into());
            t.insert("log".into(), log.into());
        });
        let e = err_of(&text);
        assert!(e.contains("log.level"), "{bad}: {e}");
    }
    assert_eq!(Config::from_toml(EXAMPLE).unwrap().log.directives(), "info");
}
