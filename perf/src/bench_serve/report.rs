//! What the bench prints: the header (machine, settings), per layout and
//! farm size the medians of each setup's figures with herd/nftables, each
//! round's ratios as bars and the CPU per request, and the last line,
//! `RESULT serve`, with every layout and size's comparisons.

use super::cpu::CPU_ROWS;
use super::figures::{Cell, Figures, Summary};
use super::nginx;
use super::options::{KernelNic, Layout, Options};
use super::parsers::model_name;
use super::setups::Setup;
use crate::median;
use anyhow::{Context, Result};
use std::process::Command;

/// The setups' columns, in order.
const SETUPS: [Setup; 3] = [Setup::Herd, Setup::Nft, Setup::Plain];

/// The machine and the settings the figures were measured with.
pub(super) fn print_header(o: &Options) -> Result<()> {
    let lscpu = Command::new("lscpu").output().context("running lscpu")?;
    println!(
        "CPU: {} ({} CPUs)   kernel {}",
        model_name(&String::from_utf8_lossy(&lscpu.stdout)).unwrap_or("unknown"),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "driver {}, kernel nodes' NIC {}, {} round(s) of {} s per client run; nginx {}, 1 worker",
        o.driver_label(),
        o.kernel_nic_label(),
        o.rounds,
        o.seconds,
        nginx::version()
    );
    // Each side as it runs best (docs/served-path.md): the kernel nodes'
    // veth takes the client's 64 KiB segments whole (GRO would have nothing
    // to merge, and GRO on the veth's NAPI measured slower on one
    // connection and new connections); Herd's nodes merge what the wire
    // cuts (their GRO), with their receive steered as described above.
    println!(
        "configurations: kernel nodes {}; herd nodes: the fastpath's GRO and offloads on (herd's defaults)",
        match o.kernel_nic {
            KernelNic::Veth =>
                "on a veth as it comes (the client's large segments whole, GRO off: nothing to merge), RPS to the packet CPU",
            KernelNic::Nic => "on the herd nodes' wire (a diagnosis, not their best)",
        }
    );
    if o.kernel_xdp_pass {
        println!(
            "kernel nodes: an XDP program that passes every frame on eth0 ({} mode)",
            o.kernel_xdp_mode().0
        );
    }
    Ok(())
}

/// A ratio as a bar, 20 characters to 1.0 (marked with `|` when short of
/// it), at most 40.
fn bar(ratio: f64) -> String {
    let width = if ratio.is_finite() {
        (ratio * 20.0).round().clamp(0.0, 40.0) as usize
    } else {
        0
    };
    let mut s = "#".repeat(width);
    if width < 20 {
        s += &" ".repeat(20 - width);
        s.push('|');
    }
    s
}

/// A table cell: the figure with `decimals` decimals, or `-` for none.
fn cell_or_dash(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

/// The tables of one layout and farm size.
pub(super) fn report(cell: &Cell) -> String {
    let mut out = format!(
        "\n-- layout {}, {} node(s): medians over {} round(s) --\n",
        cell.layout.name(),
        cell.nodes,
        cell.rounds.len()
    );
    out += &figure_table(cell);
    out += &ratio_bars(cell);
    out += &cpu_tables(cell);
    out
}

/// Each figure's median per setup, and herd/nftables.
fn figure_table(cell: &Cell) -> String {
    let med = |setup: Setup, f: &dyn Fn(&Figures) -> f64| {
        let mut v: Vec<f64> = cell.of(setup).iter().map(f).collect();
        (!v.is_empty()).then(|| median(&mut v))
    };
    let s = cell.summary();
    type Row<'a> = (&'a str, &'a dyn Fn(&Figures) -> f64, usize, String);
    let rows: [Row; 6] = [
        (
            "keep-alive req/s (wrk -c50)",
            &|f| f.keepalive.value,
            0,
            format!("{:.3}", s.keepalive_ratio),
        ),
        (
            "new connections req/s (ab -c20)",
            &|f| f.newconn.value,
            0,
            format!("{:.3}", s.newconn_ratio),
        ),
        (
            "one connection req/s (wrk -c1)",
            &|f| f.c1.value,
            0,
            format!("{:.3}", s.c1_ratio),
        ),
        (
            "one connection p50 us",
            &|f| f.c1_p50_us,
            1,
            format!("{:+.1} us", s.c1_p50_extra_us),
        ),
        (
            "bulk Gbit/s (curl)",
            &|f| f.bulk.value,
            2,
            format!("{:.3}", s.bulk_ratio),
        ),
        (
            "upload Gbit/s (curl -T)",
            &|f| f.upload.value,
            2,
            format!("{:.3}", s.upload_ratio),
        ),
    ];
    let mut out = format!(
        "{:<32} {:>10} {:>10} {:>10} {:>14}\n",
        "figure", "herd", "nftables", "plain", "herd/nftables"
    );
    for (name, f, decimals, ratio) in &rows {
        let v = SETUPS.map(|s| cell_or_dash(med(s, f), *decimals));
        out += &format!(
            "{name:<32} {:>10} {:>10} {:>10} {ratio:>14}\n",
            v[0], v[1], v[2]
        );
    }
    out
}

/// Each round's herd/nftables ratios, as bars.
fn ratio_bars(cell: &Cell) -> String {
    let mut out = "herd/nftables per round (20 # = 1.0):\n".to_string();
    type Ratio<'a> = (&'a str, &'a dyn Fn(&Figures, &Figures) -> f64);
    let charts: [Ratio; 5] = [
        ("keepalive", &|h, n| h.keepalive.value / n.keepalive.value),
        ("newconn", &|h, n| h.newconn.value / n.newconn.value),
        ("1 conn", &|h, n| h.c1.value / n.c1.value),
        ("bulk", &|h, n| h.bulk.value / n.bulk.value),
        ("upload", &|h, n| h.upload.value / n.upload.value),
    ];
    for (name, f) in charts {
        for (i, r) in cell.per_round(f).iter().enumerate() {
            out += &format!("{name:<10} r{} {r:5.2} |{}\n", i + 1, bar(*r));
        }
    }
    out
}

/// The CPU per request (per MB for bulk) of every setup run.
fn cpu_tables(cell: &Cell) -> String {
    let mut out = "CPU per request, us (bulk: per MB), medians over rounds:\n".to_string();
    for setup in SETUPS {
        let figs = cell.of(setup);
        if !figs.is_empty() {
            out += &cpu_table(setup, &figs);
        }
    }
    out
}

/// One setup's CPU table: a column per client run, a row per
/// [`CPU_ROWS`], each the median over the rounds of CPU µs per unit.
fn cpu_table(setup: Setup, figs: &[Figures]) -> String {
    let mut out = format!("{:<18}", setup.name());
    for (title, _) in figs[0].runs() {
        out += &format!(" {title:>10}");
    }
    out += "\n";
    for (row, label) in CPU_ROWS.iter().enumerate() {
        // Rows 2 and 3 are herd's and its lcores'.
        if setup != Setup::Herd && (row == 2 || row == 3) {
            continue;
        }
        out += &format!("  {label:<16}");
        for col in 0..figs[0].runs().len() {
            let mut v: Vec<f64> = figs
                .iter()
                .map(|f| {
                    let run = f.runs()[col].1;
                    run.cpu.rows()[row] * 1e6 / run.units
                })
                .collect();
            out += &format!(" {:>10.2}", median(&mut v));
        }
        out += "\n";
    }
    out
}

/// The `RESULT serve` line: unprefixed for layout `equal` with 1 node (or,
/// if that was not run, the first layout and size run, with a note).
pub(super) fn print_result(o: &Options, cells: &[Cell], layouts: &[Layout], node_counts: &[u32]) {
    let base_layout = if layouts.contains(&Layout::Equal) {
        Layout::Equal
    } else {
        layouts[0]
    };
    let base_nodes = if node_counts.contains(&1) {
        1
    } else {
        node_counts[0]
    };
    if (base_layout, base_nodes) != (Layout::Equal, 1) {
        println!(
            "\nnote: layout equal with 1 node was not run; the unprefixed RESULT keys are layout {} with {base_nodes} node(s)",
            base_layout.name()
        );
    }
    let keyed: Vec<(String, Summary)> = cells
        .iter()
        .map(|c| {
            (
                key_prefix(c.layout, c.nodes, base_layout, base_nodes),
                c.summary(),
            )
        })
        .collect();
    println!(
        "\n{}",
        result_line(
            &o.driver,
            &format!("{}/n{base_nodes}", base_layout.name()),
            &keyed
        )
    );
}

/// The RESULT key prefix of a layout and farm size, against the base ones.
fn key_prefix(layout: Layout, nodes: u32, base_layout: Layout, base_nodes: u32) -> String {
    let mut p = String::new();
    if layout != base_layout {
        p += layout.short();
        p.push('_');
    }
    if nodes != base_nodes {
        p += &format!("n{nodes}_");
    }
    p
}

/// The `RESULT serve` line of the keyed summaries (the unprefixed one
/// first), naming the base layout and farm size.
fn result_line(driver: &str, base: &str, cells: &[(String, Summary)]) -> String {
    let mut line = format!("RESULT serve driver={driver}");
    for (p, s) in cells
        .iter()
        .filter(|(p, _)| p.is_empty())
        .chain(cells.iter().filter(|(p, _)| !p.is_empty()))
    {
        line += &format!(
            " {p}keepalive_ratio={:.3} {p}newconn_ratio={:.3} {p}bulk_ratio={:.3} {p}upload_ratio={:.3} {p}c1_p50_extra_us={:.1} {p}c1_ratio={:.3}",
            s.keepalive_ratio, s.newconn_ratio, s.bulk_ratio, s.upload_ratio, s.c1_p50_extra_us, s.c1_ratio
        );
    }
    line + &format!(" base={base}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_serve::cpu::Cpu;
    use crate::bench_serve::figures::Run;

    #[test]
    fn bars_and_result_line() {
        assert_eq!(bar(1.0), "#".repeat(20));
        assert_eq!(bar(0.9), format!("{}  |", "#".repeat(18)));
        assert_eq!(bar(5.0).len(), 40);
        assert_eq!(bar(f64::NAN), format!("{}|", " ".repeat(20)));
        assert_eq!(key_prefix(Layout::Equal, 1, Layout::Equal, 1), "");
        assert_eq!(key_prefix(Layout::Equal, 3, Layout::Equal, 1), "n3_");
        assert_eq!(
            key_prefix(Layout::AsTheyCome, 3, Layout::Equal, 1),
            "atc_n3_"
        );
        let s = Summary {
            keepalive_ratio: 0.91234,
            newconn_ratio: 0.95,
            bulk_ratio: 0.5,
            upload_ratio: 0.75,
            c1_p50_extra_us: 12.34,
            c1_ratio: 0.8,
        };
        let n3 = Summary {
            keepalive_ratio: 1.0,
            ..s
        };
        assert_eq!(
            result_line("af_packet", "equal/n1", &[("n3_".into(), n3), (String::new(), s)]),
            "RESULT serve driver=af_packet keepalive_ratio=0.912 newconn_ratio=0.950 bulk_ratio=0.500 upload_ratio=0.750 c1_p50_extra_us=12.3 c1_ratio=0.800 n3_keepalive_ratio=1.000 n3_newconn_ratio=0.950 n3_bulk_ratio=0.500 n3_upload_ratio=0.750 n3_c1_p50_extra_us=12.3 n3_c1_ratio=0.800 base=equal/n1"
        );
    }

    #[test]
    fn summary_is_the_median_of_round_ratios() {
        let fig = |v: f64, p50: f64| Figures {
            keepalive: Run {
                value: v,
                units: 1.0,
                cpu: Cpu::default(),
            },
            newconn: Run {
                value: v,
                ..Run::default()
            },
            c1: Run {
                value: v,
                ..Run::default()
            },
            c1_p50_us: p50,
            bulk: Run {
                value: v,
                ..Run::default()
            },
            upload: Run {
                value: v,
                ..Run::default()
            },
        };
        let cell = Cell {
            layout: Layout::Equal,
            nodes: 1,
            rounds: vec![
                vec![
                    (Setup::Herd, fig(90.0, 30.0)),
                    (Setup::Nft, fig(100.0, 25.0)),
                ],
                vec![
                    (Setup::Nft, fig(100.0, 20.0)),
                    (Setup::Herd, fig(50.0, 40.0)),
                ],
                vec![
                    (Setup::Herd, fig(120.0, 20.0)),
                    (Setup::Nft, fig(100.0, 21.0)),
                ],
            ],
        };
        let s = cell.summary();
        assert_eq!(s.keepalive_ratio, 0.9);
        assert_eq!(s.c1_p50_extra_us, 5.0);
        let text = report(&cell);
        assert!(
            text.contains("keepalive  r2  0.50 |##########          |"),
            "{text}"
        );
    }
}
