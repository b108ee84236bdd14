"""The status page at `/` of `control.http` (issue 15.2), in a real
browser: headless Chromium from Debian, run in the client namespace,
loads the page of node s1, lets its script fetch `/status.json`, and dumps
the resulting DOM. The page shows the nodes and the bucket map, and the
map changes after a node is killed; buckets moving out are marked."""

import json
import re
import subprocess

import pytest

from lab import Hold, PY, client, down, lab, status, up, wait_for

PAGE = "http://198.18.0.11:9100/"


def dom():
    """The page of s1 after its script ran (3 s of virtual time)."""
    r = subprocess.run(
        ["ip", "netns", "exec", "herd-client", "chromium", "--headless", "--no-sandbox",
         "--disable-gpu", "--virtual-time-budget=3000", "--dump-dom", PAGE],
        capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'data-updated="yes"' in r.stdout, r.stdout[-2000:]
    return r.stdout


def owners(html):
    """Buckets per owner, from the map's cells."""
    counts = {}
    for owner in re.findall(r'<i data-b="\d+" data-owner="([^"]+)"', html):
        counts[owner] = counts.get(owner, 0) + 1
    return counts


def rows(html):
    """The nodes table: name -> (liveness, state)."""
    return {name: (alive, state) for name, alive, state in
            re.findall(r'<tr data-node="([^"]+)" data-alive="(\w+)" data-state="(\w+)"', html)}


def settled(nodes):
    try:
        sts = [status(n) for n in nodes]
    except AssertionError:
        return False
    return (sum(s["owned_buckets"] for s in sts) == 4096
            and all(s["moving_in"] + s["moving_out"] == 0 for s in sts)
            and all(len(s["membership"]["view"]) == len(nodes) for s in sts))


@pytest.fixture(scope="module")
def farm():
    up(nodes=3, ownership="membership")
    wait_for(lambda: settled(("s1", "s2", "s3")), 15, "the farm to settle")
    yield
    down()


def test_the_page_shows_every_node_and_the_bucket_map_and_follows_a_crash(farm):
    html = dom()
    assert "Herd: farm lab, node s1" in html
    assert rows(html) == {"s1": ("true", "UP"), "s2": ("true", "UP"), "s3": ("true", "UP")}
    by_owner = owners(html)
    assert sum(by_owner.values()) == 4096, by_owner
    assert set(by_owner) == {"s1", "s2", "s3"} and min(by_owner.values()) > 1300, by_owner
    # The legend agrees with the map and with the node's own status.
    legend = dict(re.findall(r'<span data-node="([^"]+)" data-buckets="(\d+)"', html))
    assert {k: int(v) for k, v in legend.items()} == by_owner
    assert by_owner["s1"] == status("s1")["owned_buckets"]
    assert re.search(r'<tr data-counter="failovers"><th>failovers</th><td>0</td>', html)

    lab("kill", "s3")
    wait_for(lambda: settled(("s1", "s2")), 10, "s1 and s2 to take s3's share")
    html = dom()
    assert rows(html)["s3"] == ("false", "STOP"), rows(html)
    by_owner = owners(html)
    assert set(by_owner) == {"s1", "s2"} and sum(by_owner.values()) == 4096, by_owner
    assert re.search(r'<tr data-counter="failovers"><th>failovers</th><td>1</td>', html)
    # The recent events tell it.
    events = re.findall(r'<li class="(INFO|WARN|ERROR)">([^<]*)</li>', html)
    assert any("view" in text for _, text in events), events


def test_buckets_moving_out_are_marked_while_a_join_keeps_connections(farm):
    hold = Hold(first_source=7000, conns=200)
    try:
        lab("start", "s3")
        wait_for(lambda: status("s1")["moving_out"] > 0, 15, "s1 to move buckets out to s3")
        html = dom()
        marked = re.findall(r'<i data-b="\d+" data-owner="([^"]+)" [^>]*class="out"', html)
        assert marked and set(marked) == {"s3"}, set(marked)
    finally:
        hold.stop()
    wait_for(lambda: settled(("s1", "s2", "s3")), 20, "the join to end")


def test_the_page_is_self_contained_and_read_only(farm):
    code = (
        "import urllib.request, urllib.error, json\n"
        f"page = urllib.request.urlopen({PAGE!r}, timeout=3).read().decode()\n"
        f"st = json.load(urllib.request.urlopen({PAGE + 'status.json'!r}, timeout=3))\n"
        "try:\n"
        f"    urllib.request.urlopen(urllib.request.Request({PAGE!r}, data=b'x', method='POST'), timeout=3)\n"
        "    post = 200\n"
        "except urllib.error.HTTPError as e:\n"
        "    post = e.code\n"
        "print(json.dumps({'external': 'http://' in page or 'https://' in page, 'post': post,\n"
        "                  'node': st['node_name'], 'state': st['health']['state'],\n"
        "                  'map': len(st['membership']['bucket_map']['owners'])}))\n")
    r = json.loads(client(PY, "-c", code).stdout)
    assert r == {"external": False, "post": 405, "node": "s1", "state": "UP", "map": 4096}, r
