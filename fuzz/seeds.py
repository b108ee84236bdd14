#!/usr/bin/python3
"""Writes the fuzz targets' seed inputs into corpus/<target>/seed-*
(run once; the fuzzer grows the corpus from there)."""

import struct
from pathlib import Path

from scapy.all import (ARP, ICMP, IP, TCP, UDP, Dot1Q, Ether, ICMPv6ND_NS, IPv6, IPv6ExtHdrFragment,
                       IPv6ExtHdrHopByHop, IPOption_RR, Raw)

HERE = Path(__file__).resolve().parent
VMAC4, VMAC6, CLIENT = "02:48:c6:12:00:64", "02:86:00:00:01:00", "02:00:00:00:00:cc"


def write(target, name, data):
    d = HERE / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


frames = {
    "tcp-syn": Ether(dst=VMAC4, src=CLIENT) / IP(src="198.19.0.7", dst="198.18.0.100") / TCP(sport=40000, dport=80, flags="S"),
    "tcp-7000": Ether(dst=VMAC4, src=CLIENT) / IP(src="198.19.0.7", dst="198.18.0.100") / TCP(sport=40001, dport=7000, flags="A") / Raw(b"x" * 20),
    "udp-9000": Ether(dst=VMAC4, src=CLIENT) / IP(src="198.19.0.8", dst="198.18.0.100") / UDP(sport=5000, dport=9000) / Raw(b"hello"),
    "icmp": Ether(dst=VMAC4, src=CLIENT) / IP(src="198.19.0.9", dst="198.18.0.100") / ICMP(),
    "fragment": Ether(dst=VMAC4, src=CLIENT) / IP(src="198.19.0.7", dst="198.18.0.100", flags="MF", frag=0) / UDP(sport=1, dport=9000) / Raw(b"y" * 32),
    "options": Ether(dst=VMAC4, src=CLIENT) / IP(src="198.19.0.7", dst="198.18.0.100", options=[IPOption_RR()]) / TCP(sport=40002, dport=80),
    "vlan": Ether(dst=VMAC4, src=CLIENT) / Dot1Q(vlan=7) / IP(src="198.19.0.7", dst="198.18.0.100") / TCP(sport=40003, dport=80),
    "arp": Ether(dst="ff:ff:ff:ff:ff:ff", src=CLIENT) / ARP(op=1, hwsrc=CLIENT, psrc="198.19.0.7", pdst="198.18.0.100"),
    "tcp6": Ether(dst=VMAC6, src=CLIENT) / IPv6(src="2001:2:1::7", dst="2001:2::100") / TCP(sport=40004, dport=80, flags="S"),
    "tcp6-ext": Ether(dst=VMAC6, src=CLIENT) / IPv6(src="2001:2:1::7", dst="2001:2::100") / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment() / TCP(sport=40005, dport=80),
    "ns": Ether(dst="33:33:ff:00:01:00", src=CLIENT) / IPv6(src="2001:2:1::7", dst="ff02::1:ff00:100", hlim=255) / ICMPv6ND_NS(tgt="2001:2::100"),
    "own": Ether(dst="02:00:00:00:00:01", src=CLIENT) / IP(src="198.19.0.7", dst="198.18.0.11") / TCP(sport=40006, dport=22),
}
for pick in range(4):
    for name, f in frames.items():
        write("decision", f"{pick}-{name}", bytes([pick]) + bytes(f))


def heartbeat_body(version, sender=2, moving=b"\x00", kept=b"\x00"):
    body = b"HRD1" + bytes([version, 1]) + struct.pack(">HQQQI", sender, 7, 42, 0b111, 1)
    body += bytes([1 | (2 << 1)]) + struct.pack(">QQQQ", 1, 40, 0x1234, 0)
    if version >= 6:
        body += bytes([5, 6])
    return body + moving + kept


write("heartbeat", "v6", heartbeat_body(6))
write("heartbeat", "v5", heartbeat_body(5))
write("heartbeat", "v6-ranges", heartbeat_body(6, moving=b"\x01\x00\x01" + struct.pack(">II", 10, 20)))
write("heartbeat", "v6-bitmap", heartbeat_body(6, kept=b"\x02" + struct.pack(">I", 64) + b"\xff" * 8))
write("heartbeat", "v6-allelse", heartbeat_body(6, sender=3, moving=b"\x03"))

root = HERE.parent
for name in ("examples/node.toml", "examples/farm-membership.toml", "dist/herd.toml"):
    write("config", Path(name).stem, (root / name).read_bytes())

write("census", "tcp",
      b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
      b"   0: 6400A8C6:0050 070013C6:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1 1\n"
      b"   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1\n")
write("census", "tcp6",
      b"  sl  local_address                         remote_address                        st\n"
      b"   0: 00000220000000000000000000010000:0050 01000220000000000000000007000000:9C41 01 0\n")
