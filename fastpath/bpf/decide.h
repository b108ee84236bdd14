// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
// What Herd's kernel-side programs share: the decision's maps (written
// by fastpath/src/prefilter.rs), the hash, the common frame's decision
// and the heartbeat check. Included by the XDP pre-filter (prefilter.c,
// af_xdp) and the ingress guard (guard.c: af_packet's socket filter and
// the heartbeats' tc path); each object has its own copy of the maps,
// written alike.
//
// The decision reads a copy of the frame's first bytes (a stack buffer
// filled with bpf_xdp_load_bytes / bpf_skb_load_bytes): one code for an
// XDP frame and a socket buffer.
#ifndef HERD_DECIDE_H
#define HERD_DECIDE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#define STATE_ELSEWHERE 0
#define STATE_OWNED 1
#define STATE_DPDK 2

/* herd_counts entries (per CPU). */
#define COUNT_PASSED 0		/* to the kernel (an owned bucket) */
#define COUNT_DROPPED 1		/* another node's bucket */
#define COUNT_TO_DPDK 2		/* to the fastpath */
#define COUNT_HEARTBEAT 3	/* a peer's heartbeat, on the kernel's path */
#define COUNT_HEARTBEAT_JUNK 4	/* to the heartbeat port, not from a peer */
#define COUNTS 5

/* What herd_decide says of a frame. */
#define DECIDE_FASTPATH 0	/* the fastpath decides */
#define DECIDE_OWNED 1
#define DECIDE_ELSEWHERE 2
#define DECIDE_HEARTBEAT 3	/* a peer's heartbeat to this node */
#define DECIDE_JUNK 4		/* to this node's heartbeat port, not from a peer */

/* The bytes a decision reads: Ethernet, an IPv6 header and UDP's ports
 * (an option-less IPv4 header and the ports fit in it too). */
#define HEAD 58

/* VIP address (as in the header) -> 1. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} herd_vips4 SEC(".maps");

/* IPv6 VIP address (16 bytes, as in the header) -> 1. */
struct herd_vip6 {
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct herd_vip6);
	__type(value, __u8);
} herd_vips6 SEC(".maps");

/* A VIP MAC (6 bytes, 2 zero) -> 1. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, __u64);
	__type(value, __u8);
} herd_vip_macs SEC(".maps");

/* (protocol << 16 | destination port) -> affinity: 0 client-ip,
 * 1 client-ip-port. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} herd_rules SEC(".maps");

/* The node's own (NIC) MAC, 6 bytes in a u64. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} herd_own_mac SEC(".maps");

struct herd_table_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_INNER_MAP);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct herd_table_inner);
} herd_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTS);
	__type(key, __u32);
	__type(value, __u64);
} herd_counts SEC(".maps");

/* This node's heartbeat endpoints: an address (IPv4 as ::ffff:a.b.c.d)
 * and the UDP port, in network order. Empty: heartbeats take the
 * fastpath's way. */
struct herd_endpoint {
	__u8 addr[16];
	__u16 port;
	__u16 zero;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct herd_endpoint);
	__type(value, __u8);
} herd_hb_local SEC(".maps");

/* Every peer's heartbeat address (IPv4 as ::ffff:a.b.c.d) -> 1. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct herd_endpoint);
	__type(value, __u8);
} herd_hb_peers SEC(".maps");

static __always_inline void count(__u32 what)
{
	__u64 *c = bpf_map_lookup_elem(&herd_counts, &what);
	if (c)
		*c += 1;
}

static __always_inline __u64 rotl64(__u64 x, int r)
{
	return (x << r) | (x >> (64 - r));
}

/* herd-hash v1 of a 4..8-byte key (XXH3-64's 4-to-8 path, seeded):
 * `first` and `last` are the key's first and last four bytes read as
 * little-endian words (packet/src/hash.rs, xxh3_4to8). */
static __always_inline __u64 herd_hash(__u64 len, __u32 first, __u32 last)
{
	const __u64 secret_8 = 0x1cad21f72c81017cULL;
	const __u64 secret_16 = 0xdb979083e96dd4deULL;
	const __u64 rrmxmx = 0x9FB21C651E98DF25ULL;
	__u64 seed = 0x48657264ULL;
	seed ^= (__u64)__builtin_bswap32((__u32)seed) << 32;
	__u64 bitflip = (secret_8 ^ secret_16) - seed;
	__u64 h = ((__u64)last | (__u64)first << 32) ^ bitflip;
	h ^= rotl64(h, 49) ^ rotl64(h, 24);
	h *= rrmxmx;
	h ^= (h >> 35) + len;
	h *= rrmxmx;
	return h ^ (h >> 28);
}

/* (h * n) >> 64: the bucket of hash h among n. */
static __always_inline __u64 mul_hi(__u64 a, __u64 b)
{
	__u64 a_lo = a & 0xffffffff, a_hi = a >> 32;
	__u64 b_lo = b & 0xffffffff, b_hi = b >> 32;
	__u64 lo_lo = a_lo * b_lo, hi_lo = a_hi * b_lo;
	__u64 lo_hi = a_lo * b_hi, hi_hi = a_hi * b_hi;
	__u64 cross = (lo_lo >> 32) + (hi_lo & 0xffffffff) + lo_hi;
	return (hi_lo >> 32) + (cross >> 32) + hi_hi;
}

/* The little-endian word of the 8 bytes at `p`. */
static __always_inline __u64 le64(const __u8 *p)
{
	__u64 w = 0;
#pragma unroll
	for (int i = 7; i >= 0; i--)
		w = w << 8 | p[i];
	return w;
}

/* XXH3's 128-bit multiply folded to 64 bits, of the key's words (lo, hi)
 * against the secret's (s_lo, s_hi), seeded. */
static __always_inline __u64 mix16(__u64 lo, __u64 hi, __u64 s_lo, __u64 s_hi, __u64 seed)
{
	__u64 a = lo ^ (s_lo + seed), b = hi ^ (s_hi - seed);
	return (a * b) ^ mul_hi(a, b);
}

/* herd-hash v1 of a 17..19-byte key `k` (an IPv6 key: XXH3-64's
 * 17-to-128 path, seeded; packet/src/hash.rs, xxh3_17to32). */
static __always_inline __u64 herd_hash6(__u64 len, const __u8 *k)
{
	const __u64 prime64_1 = 0x9E3779B185EBCA87ULL;
	__u64 seed = 0x48657264ULL;
	__u64 h = len * prime64_1;
	h += mix16(le64(k), le64(k + 8), 0xbe4ba423396cfeb8ULL, 0x1cad21f72c81017cULL, seed);
	h += mix16(le64(k + len - 16), le64(k + len - 8), 0xdb979083e96dd4deULL,
		   0x1f67b3b7a4a44072ULL, seed);
	h ^= h >> 37;
	h *= 0x165667919E3779F9ULL;
	return h ^ (h >> 32);
}

static __always_inline __u64 mac_of(const __u8 *m)
{
	return (__u64)m[0] | (__u64)m[1] << 8 | (__u64)m[2] << 16 |
	       (__u64)m[3] << 24 | (__u64)m[4] << 32 | (__u64)m[5] << 40;
}

/* A UDP datagram from `src` to `dst` port `port` (each address 16
 * bytes, IPv4 mapped): a peer's heartbeat, junk to this node's heartbeat
 * port, or neither (-1). */
static __always_inline int heartbeat(const struct herd_endpoint *dst,
				     const struct herd_endpoint *src)
{
	if (!bpf_map_lookup_elem(&herd_hb_local, dst))
		return -1;
	if (bpf_map_lookup_elem(&herd_hb_peers, src))
		return DECIDE_HEARTBEAT;
	return DECIDE_JUNK;
}

static __always_inline void mapped4(struct herd_endpoint *e, const __u8 *a)
{
	__builtin_memset(e, 0, sizeof(*e));
	e->addr[10] = 0xff;
	e->addr[11] = 0xff;
	e->addr[12] = a[0];
	e->addr[13] = a[1];
	e->addr[14] = a[2];
	e->addr[15] = a[3];
}

/* Whether the frame's first bytes `b` (`frame_len` of them in the
 * frame) are a UDP datagram to one of this node's heartbeat endpoints:
 * untagged IPv4 without options or fragments, or IPv6 whose next header
 * is UDP. DECIDE_HEARTBEAT from a peer's address, DECIDE_JUNK from any
 * other, DECIDE_FASTPATH when it is no such datagram. */
static __always_inline int herd_heartbeat(const __u8 *b, __u32 frame_len)
{
	struct herd_endpoint dst, src;
	if (frame_len >= HEAD && b[12] == 0x86 && b[13] == 0xdd && (b[14] >> 4) == 6 &&
	    b[20] == IPPROTO_UDP) {
		__builtin_memset(&dst, 0, sizeof(dst));
		__builtin_memset(&src, 0, sizeof(src));
		__builtin_memcpy(src.addr, b + 22, 16);
		__builtin_memcpy(dst.addr, b + 38, 16);
		dst.port = (__u16)b[56] | (__u16)b[57] << 8;
	} else if (frame_len >= 14 + 28 && b[12] == 0x08 && b[13] == 0x00 && b[14] == 0x45 &&
		   (((__u32)b[20] << 8 | b[21]) & 0x3fff) == 0 && b[23] == IPPROTO_UDP) {
		mapped4(&dst, b + 30);
		mapped4(&src, b + 26);
		dst.port = (__u16)b[36] | (__u16)b[37] << 8;
	} else {
		return DECIDE_FASTPATH;
	}
	int hb = heartbeat(&dst, &src);
	return hb < 0 ? DECIDE_FASTPATH : hb;
}

/* The decision on the frame's first `HEAD` bytes `b` (those of them the
 * frame has: `frame_len`), as the fastpath's fast paths
 * (packet/src/decision.rs, `ipv4_fast` and `ipv6_fast`) decide without
 * tracking flows:
 *   - an untagged, option-less, unfragmented IPv4 TCP/UDP datagram, or an
 *     untagged IPv6 one with no extension header, to a VIP's MAC and
 *     address, with a rule for its destination port, whose bucket this
 *     node owns and which is not moving -> DECIDE_OWNED; another node's
 *     (not moving) -> DECIDE_ELSEWHERE;
 *   - a UDP datagram (IPv4 as above, or IPv6 with no extension header)
 *     to one of this node's heartbeat endpoints: from a peer's address
 *     DECIDE_HEARTBEAT, from any other DECIDE_JUNK;
 *   - everything else (ARP, NDP, the node's own traffic,
 *     no rule, moving buckets, anything it does not parse) ->
 *     DECIDE_FASTPATH. */
static __always_inline int herd_decide(const __u8 *b, __u32 frame_len)
{
	int hb = herd_heartbeat(b, frame_len);
	if (hb != DECIDE_FASTPATH)
		return hb;
	if (frame_len < 14 + 24)
		return DECIDE_FASTPATH;
	__u32 zero = 0;
	__u64 *own = bpf_map_lookup_elem(&herd_own_mac, &zero);
	if (!own)
		return DECIDE_FASTPATH;
	__u64 dst_mac = mac_of(b);
	if (mac_of(b + 6) == *own || !bpf_map_lookup_elem(&herd_vip_macs, &dst_mac))
		return DECIDE_FASTPATH;
	const __u8 *ip = b + 14;
	const __u8 *ports;
	__u8 protocol;
	int ipv6;
	if (b[12] == 0x08 && b[13] == 0x00) {
		__u32 total_len = (__u32)ip[2] << 8 | ip[3];
		__u32 fragment = ((__u32)ip[6] << 8 | ip[7]) & 0x3fff;
		protocol = ip[9];
		if (ip[0] != 0x45 || fragment != 0 || total_len < 24 ||
		    total_len > frame_len - 14 ||
		    (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP))
			return DECIDE_FASTPATH;
		__u32 daddr = (__u32)ip[16] | (__u32)ip[17] << 8 | (__u32)ip[18] << 16 |
			      (__u32)ip[19] << 24;
		if (!bpf_map_lookup_elem(&herd_vips4, &daddr))
			return DECIDE_FASTPATH;
		ports = ip + 20;
		ipv6 = 0;
	} else if (b[12] == 0x86 && b[13] == 0xdd) {
		/* No extension header: TCP or UDP right after the fixed header. */
		if (frame_len < HEAD)
			return DECIDE_FASTPATH;
		__u32 payload_len = (__u32)ip[4] << 8 | ip[5];
		protocol = ip[6];
		if ((ip[0] >> 4) != 6 || payload_len < 4 || payload_len > frame_len - 54 ||
		    (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP))
			return DECIDE_FASTPATH;
		struct herd_vip6 vip;
		__builtin_memcpy(vip.addr, ip + 24, 16);
		if (!bpf_map_lookup_elem(&herd_vips6, &vip))
			return DECIDE_FASTPATH;
		ports = ip + 40;
		ipv6 = 1;
	} else {
		return DECIDE_FASTPATH;
	}
	__u32 rule = (__u32)protocol << 16 | (__u32)ports[2] << 8 | ports[3];
	__u8 *affinity = bpf_map_lookup_elem(&herd_rules, &rule);
	if (!affinity)
		return DECIDE_FASTPATH;
	__u64 hash;
	if (ipv6) {
		/* The key bytes 6, a0..a15[, port]. */
		__u8 key[19];
		key[0] = 6;
		__builtin_memcpy(key + 1, ip + 8, 16);
		key[17] = ports[0];
		key[18] = ports[1];
		hash = *affinity ? herd_hash6(19, key) : herd_hash6(17, key);
	} else {
		/* The key bytes 4, a0..a3[, port] in one little-endian word. */
		__u64 word = 4 | (__u64)ip[12] << 8 | (__u64)ip[13] << 16 |
			     (__u64)ip[14] << 24 | (__u64)ip[15] << 32;
		__u64 len = 5;
		if (*affinity) {
			word |= (__u64)ports[0] << 40 | (__u64)ports[1] << 48;
			len = 7;
		}
		hash = herd_hash(len, (__u32)word, (__u32)(word >> ((len - 4) * 8)));
	}

	void *table = bpf_map_lookup_elem(&herd_table, &zero);
	if (!table)
		return DECIDE_FASTPATH;
	__u32 *n = bpf_map_lookup_elem(table, &zero);
	if (!n || *n == 0)
		return DECIDE_FASTPATH;
	__u32 slot = (__u32)mul_hi(hash, *n) + 1;
	__u32 *state = bpf_map_lookup_elem(table, &slot);
	if (!state)
		return DECIDE_FASTPATH;
	if (*state == STATE_OWNED)
		return DECIDE_OWNED;
	if (*state == STATE_ELSEWHERE)
		return DECIDE_ELSEWHERE;
	return DECIDE_FASTPATH;
}

#endif
