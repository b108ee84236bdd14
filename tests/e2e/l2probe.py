#!/usr/bin/python3
"""Raw layer-2 probes for the end-to-end tests, run inside the lab's client
namespace: ARP and neighbor solicitations for the VIPs (counting every
reply), and malformed frames sent at the VIP. Prints one JSON object."""

import json
import sys
import time

from scapy.all import (ARP, ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IP, IPv6,
                       IPv6ExtHdrHopByHop, TCP, UDP, Dot1Q, Ether, AsyncSniffer,
                       get_if_hwaddr, sendp, conf, raw)
from scapy.layers.inet6 import in6_getnsma, in6_getnsmac, inet_pton
import socket

conf.verb = 0
IFACE = "br0"
CLIENT4 = "198.18.0.2"
CLIENT6 = "2001:2::2"


def collect(send, lfilter, first_within=2.0, quiet_after=0.7):
    """Sends with `send`, returns every matching frame seen until
    `quiet_after` seconds after the first one (or `first_within` if none)."""
    sniffer = AsyncSniffer(iface=IFACE, lfilter=lfilter, store=True)
    sniffer.start()
    time.sleep(0.2)
    send()
    deadline = time.time() + first_within
    while time.time() < deadline and not sniffer.results:
        time.sleep(0.02)
    if sniffer.results:
        time.sleep(quiet_after)
    sniffer.stop()
    return list(sniffer.results or [])


def arp(vip):
    me = get_if_hwaddr(IFACE)
    req = Ether(dst="ff:ff:ff:ff:ff:ff", src=me) / ARP(op=1, hwsrc=me, psrc=CLIENT4, pdst=vip)
    got = collect(lambda: sendp(req, iface=IFACE),
                  lambda p: ARP in p and p[ARP].op == 2 and p[ARP].psrc == vip)
    return {"replies": [{"eth_src": p[Ether].src, "hwsrc": p[ARP].hwsrc, "eth_dst": p[Ether].dst} for p in got]}


def ns(vip6):
    me = get_if_hwaddr(IFACE)
    nsma = socket.inet_ntop(socket.AF_INET6, in6_getnsma(inet_pton(socket.AF_INET6, vip6)))
    req = (Ether(dst=in6_getnsmac(inet_pton(socket.AF_INET6, nsma)), src=me)
           / IPv6(src=CLIENT6, dst=nsma, hlim=255) / ICMPv6ND_NS(tgt=vip6) / ICMPv6NDOptSrcLLAddr(lladdr=me))
    got = collect(lambda: sendp(req, iface=IFACE),
                  lambda p: p.haslayer("ICMPv6ND_NA") and p["ICMPv6ND_NA"].tgt == vip6)
    out = []
    for p in got:
        lladdr = p["ICMPv6NDOptDstLLAddr"].lladdr if p.haslayer("ICMPv6NDOptDstLLAddr") else None
        out.append({"eth_src": p[Ether].src, "lladdr": lladdr, "src": p[IPv6].src})
    return {"replies": out}


def malformed(vip, vmac, vip6, vmac6):
    me = get_if_hwaddr(IFACE)
    e4 = Ether(dst=vmac, src=me, type=0x0800)
    e6 = Ether(dst=vmac6, src=me, type=0x86dd)
    good4 = raw(IP(src="198.19.9.9", dst=vip) / TCP(sport=1234, dport=80, flags="S"))
    good6 = raw(IPv6(src="2001:2:1::99", dst=vip6) / TCP(sport=1234, dport=80, flags="S"))
    frames = [
        raw(e4) + good4[:10],                       # IPv4 header cut short
        raw(e4) + bytes([0x43]) + good4[1:],        # IHL below 5
        raw(e4) + good4[:-4],                       # total length beyond the frame
        raw(e4) + raw(IP(src="198.19.9.9", dst=vip, proto=6) / b"\x00\x50"),  # TCP without ports
        raw(e6) + good6[:30],                       # IPv6 header cut short
        raw(e6) + good6[:-4],                       # payload length beyond the frame
        raw(e6) + raw(IPv6(src="2001:2:1::99", dst=vip6, nh=0, plen=8) / bytes([6, 9, 0, 0, 0, 0, 0, 0])),  # ext header overruns
        raw(Ether(dst=vmac, src=me) / Dot1Q(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / IP(dst=vip)),  # three VLAN tags
        raw(Ether(dst=vmac, src=me, type=0x0806)) + b"\x00\x01\x08\x00\x06",   # ARP cut short
        raw(e4) + good4[:2],                        # two bytes of IPv4
    ]
    for f in frames:
        sendp(f, iface=IFACE)
    return {"sent": len(frames)}


def main():
    cmd = sys.argv[1]
    if cmd == "arp":
        out = arp(sys.argv[2])
    elif cmd == "ns":
        out = ns(sys.argv[2])
    elif cmd == "malformed":
        out = malformed(*sys.argv[2:6])
    else:
        raise SystemExit(f"unknown probe {cmd}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
