//! `herd-bench failover`: a three-node membership farm in the lab; a
//! client probes 64 UDP flows every 5 ms while a node is SIGKILLed; each
//! affected flow's outage is the longest time it went unanswered. Ten
//! crashes (rotating over the nodes), each followed by a restart and
//! reconvergence. Prints p50 / p99 / max over all affected flows.

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Options {
    #[arg(long, default_value_t = 10)]
    pub crashes: u32,
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
}

fn converged(nodes: u32) -> bool {
    let mut total = 0;
    for n in 1..=nodes {
        let Ok(v) = crate::lab::node_status(n) else {
            return false;
        };
        if v.membership.map_or(0, |m| m.view.len()) != nodes as usize {
            return false;
        }
        total += v.node.owned_buckets;
    }
    total == 4096
}

fn wait_converged(nodes: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !converged(nodes) {
        if Instant::now() > deadline {
            bail!("the farm did not converge within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub fn run(o: &Options) -> Result<()> {
    let spec = crate::lab::LabSpec::membership(o.nodes, "af_packet");
    crate::lab::up(&spec)?;
    let result = (|| -> Result<(Histogram<u64>, Histogram<u64>)> {
        let mut hist = Histogram::<u64>::new(3)?;
        let mut switch_us = Histogram::<u64>::new(3)?;
        let lab = crate::lab::sibling_binary("herd-lab");
        for i in 0..o.crashes {
            wait_converged(o.nodes)?;
            let victim = 1 + i % o.nodes;
            let prober = Command::new(&lab)
                .args(["client", "--"])
                .arg(&lab)
                .args([
                    "outage",
                    "--flows",
                    "64",
                    "--interval-ms",
                    "5",
                    "--duration-ms",
                    "2000",
                ])
                .stdout(Stdio::piped())
                .spawn()
                .context("starting the prober")?;
            std::thread::sleep(Duration::from_millis(700));
            crate::lab::kill(victim)?;
            let out = prober.wait_with_output()?;
            let flows: Vec<serde_json::Value> =
                serde_json::from_slice(&out.stdout).context("prober report")?;
            let gaps: Vec<f64> = flows
                .iter()
                .filter_map(|f| f["max_gap_ms"].as_f64())
                .filter(|g| *g > 50.0)
                .collect();
            let max = gaps.iter().cloned().fold(0.0, f64::max);
            println!(
                "crash {} of s{victim}: {} flows affected, longest outage {max:.0} ms",
                i + 1,
                gaps.len()
            );
            for g in gaps {
                hist.record(g.round() as u64)?;
            }
            // How long the survivors' lcores took to use the table the
            // membership published after the view change.
            for n in (1..=o.nodes).filter(|n| *n != victim) {
                for l in crate::lab::node_status(n)?.node.lcores {
                    switch_us.record(l.table.last_us)?;
                }
            }
            crate::lab::start(victim)?;
            crate::lab::wait_ready(victim, Duration::from_secs(30))?;
        }
        Ok((hist, switch_us))
    })();
    let _ = crate::lab::down();
    let (hist, switch_us) = result?;
    if hist.is_empty() {
        bail!("no flow was affected by any crash");
    }
    println!(
        "{} affected flows over {} crashes: p50 {} ms, p99 {} ms, max {} ms (goal p99 <= 250 ms)",
        hist.len(),
        o.crashes,
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.max()
    );
    println!(
        "view change to fastpath on the new table: p50 {} us, max {} us",
        switch_us.value_at_quantile(0.5),
        switch_us.max()
    );
    println!(
        "RESULT failover p50_ms={} p99_ms={} max_ms={} flows={} crashes={} table_switch_us_max={}",
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.max(),
        hist.len(),
        o.crashes,
        switch_us.max()
    );
    Ok(())
}
