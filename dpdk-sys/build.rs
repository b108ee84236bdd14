//! Finds the system DPDK with pkg-config, compiles the C shim for DPDK's
//! static inline functions and generates the bindings with bindgen.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/shim.h");
    println!("cargo:rerun-if-changed=src/shim.c");

    let dpdk = pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
        .expect("DPDK 22.11 not found by pkg-config: install Debian's libdpdk-dev");

    // DPDK's pkg-config cflags carry `-include rte_config.h` and `-march=...`,
    // which `Library` does not expose; read them raw for cc and clang.
    let cflags = String::from_utf8(
        std::process::Command::new("pkg-config")
            .args(["--cflags", "libdpdk"])
            .output()
            .expect("pkg-config runs")
            .stdout,
    )
    .expect("pkg-config prints UTF-8");
    let cflags: Vec<&str> = cflags.split_whitespace().collect();

    let mut shim = cc::Build::new();
    shim.file("src/shim.c").opt_level(3).warnings(false);
    for flag in &cflags {
        shim.flag(flag);
    }
    shim.flag("-DALLOW_EXPERIMENTAL_API");
    shim.compile("herd_dpdk_shim");

    // The shared libraries pkg-config named, whole: the drivers are plugins
    // and need the EAL and ethdev loaded even where Herd calls nothing of them.
    for lib in &dpdk.libs {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
    // rte_vdev_init (creating the TAP after the NIC is known) lives in the
    // vdev bus driver, which pkg-config does not list for applications.
    println!("cargo:rustc-link-lib=dylib=rte_bus_vdev");
    // libbpf: the XDP pre-filter's maps, the TAP's direct egress (and
    // loading both in tests).
    println!("cargo:rustc-link-lib=dylib=bpf");

    let bindings = bindgen::Builder::default()
        .header("src/shim.h")
        .clang_args(cflags.iter().copied())
        .clang_arg("-DALLOW_EXPERIMENTAL_API")
        .allowlist_function("herd_.*")
        .allowlist_function("rte_eal_(init|cleanup|mp_wait_lcore|remote_launch|wait_lcore|process_type)")
        .allowlist_function("rte_vdev_(init|uninit)").allowlist_function("rte_eth_(dev_configure|dev_start|dev_stop|dev_close|dev_info_get|rx_queue_setup|tx_queue_setup|promiscuous_enable|promiscuous_disable|allmulticast_enable|macaddr_get|dev_count_avail|dev_get_port_by_name|stats_get|link_get_nowait|dev_socket_id|find_next_owned_by|dev_set_mtu)")
        .allowlist_function("bpf_object__(open_mem|load|close|find_program_by_name|find_map_fd_by_name)")
        .allowlist_function("bpf_program__fd|bpf_map_(create|update_elem|lookup_elem|delete_elem)|bpf_prog_test_run_opts|bpf_obj_get_info_by_fd|libbpf_set_print|bpf_xdp_(attach|detach|query_id)|bpf_prog_get_fd_by_id|bpf_tc_(hook_create|hook_destroy|attach|detach)")
        .allowlist_type("bpf_test_run_opts|bpf_map_info|bpf_map_create_opts|bpf_object_open_opts|bpf_tc_hook|bpf_tc_opts|bpf_tc_attach_point")
        .allowlist_var("BPF_F_INNER_MAP|XDP_FLAGS_(SKB|DRV)_MODE")
        .allowlist_function("rte_pktmbuf_pool_create")
        .allowlist_function("rte_mempool_(free|avail_count|in_use_count)")
        .allowlist_function("rte_lcore_(count|is_enabled)")
        .allowlist_function("rte_get_(next_lcore|main_lcore|tsc_hz)")
        .allowlist_function("rte_(socket_id|strerror)")
        .allowlist_type("rte_eth_conf|rte_eth_dev_info|rte_ether_addr|rte_eth_stats|rte_eth_link|rte_eth_rxconf|rte_eth_txconf")
        .allowlist_var("RTE_ETH_.*|RTE_MAX_LCORE|RTE_MBUF_DEFAULT_BUF_SIZE|RTE_PKTMBUF_HEADROOM|SOCKET_ID_ANY")
        // Packed-and-aligned DPDK structs that bindgen cannot lay out are
        // kept opaque: Herd never reads their fields.
        .opaque_type("rte_l2tpv2_combined_msg_hdr|rte_arp_hdr|rte_arp_ipv4")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen over the DPDK headers");

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("bindings written");
}
