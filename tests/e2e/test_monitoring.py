"""What a monitoring system reads of a farm: the Prometheus alerting rules
and the Grafana dashboard in dist/ (checked and unit-tested by promtool
from Debian's `prometheus`), against the metrics a running node exports."""

import json
import re
from pathlib import Path

from lab import PY, down, lab, run, status, up, wait_for

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "dist/prometheus/herd-alerts.yml"
RULE_TESTS = ROOT / "dist/prometheus/herd-alerts.test.yml"
DASHBOARD = ROOT / "dist/grafana/herd-dashboard.json"


def scrape(node):
    url = f"http://198.18.0.{10 + int(node[1:])}:9100/metrics"
    return lab("client", "--", PY, "-c",
               f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=3).read().decode())").stdout


def used_metrics(text):
    return set(re.findall(r"\bherd_[a-z_]+", text))


def test_the_alert_rules_and_the_dashboard_read_what_a_node_exports(tmp_path):
    assert "SUCCESS" in run("promtool", "check", "rules", str(RULES)).stdout
    tested = run("promtool", "test", "rules", str(RULE_TESTS))
    assert "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10

    up(nodes=3, ownership="membership")
    try:
        wait_for(lambda: sum(status(n)["owned_buckets"] for n in ("s1", "s2", "s3")) == 4096, 15,
                 "the farm to converge")
        text = scrape("s1")
        scraped = tmp_path / "metrics.txt"
        scraped.write_text(text)
        # promtool's linter (names, HELP, types, units). The node speaks
        # OpenMetrics, whose counters carry their HELP on the family name
        # (`herd_failovers`) and samples as `herd_failovers_total`; promtool
        # reads the older text format and reports those as "no help text":
        # every other finding fails.
        lint = run("sh", "-c", f"promtool check metrics < {scraped}", check=False)
        for finding in filter(None, (lint.stdout + lint.stderr).splitlines()):
            name, _, problem = finding.partition(" ")
            assert (problem == "no help text" and name.endswith("_total")
                    and f"# HELP {name[:-len('_total')]} " in text), finding
        # What the node exports: its samples, and every family it declares
        # (a family without samples yet, such as the checkers of a node
        # that has none, still has its TYPE; counters' samples end _total).
        exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
                    if line.startswith("herd_")}
        for line in text.splitlines():
            if line.startswith("# TYPE herd_"):
                _, _, family, kind = line.split()
                exported.add(family + "_total" if kind == "counter" else family)
        for source, names in (("rules", used_metrics(RULES.read_text())),
                              ("dashboard", used_metrics(" ".join(exprs)))):
            missing = sorted(names - exported)
            assert not missing, f"the {source} use metrics no node exports: {missing}"
        # The build and the NIC's own counters are there.
        assert re.search(r'herd_build_info\{[^}]*protocol_versions="5-6"[^}]*\} 1', text), text
        for counter in ("imissed", "rx_nombuf"):
            assert f'herd_nic_packets_total{{counter="{counter}"}}' in text
        assert "herd_buckets 4096" in text
    finally:
        down()
