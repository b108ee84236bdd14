// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
// Herd's XDP pre-filter (af_xdp ports): decides the common frame in the
// driver, as the fastpath's IPv4 fast path (fastpath/src/decision.rs,
// `ipv4_fast`) would:
//   - an untagged, option-less, unfragmented IPv4 TCP/UDP datagram to a
//     VIP's MAC and address, with a rule for its destination port, whose
//     bucket this node owns and which is not moving -> XDP_PASS to the
//     kernel, the destination MAC rewritten to the NIC's;
//   - the same whose bucket another node owns (not moving) -> XDP_DROP;
//   - everything else (ARP, IPv6, the node's own traffic, no rule, moving
//     buckets, anything it does not parse) -> the AF_XDP socket of the
//     queue (`xsks_map`, the name DPDK's af_xdp PMD fills), where the
//     fastpath decides as without the pre-filter.
// The bucket table is an inner map swapped whole into `herd_table` (slot
// 0): entry 0 holds the bucket count, entry 1 + b the state of bucket b.
// A packet reads one table; a new one replaces it atomically.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#define STATE_ELSEWHERE 0
#define STATE_OWNED 1
#define STATE_DPDK 2

#define COUNT_PASSED 0
#define COUNT_DROPPED 1
#define COUNT_TO_DPDK 2

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

/* VIP address (as in the header) -> 1. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} herd_vips4 SEC(".maps");

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
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} herd_counts SEC(".maps");

static __always_inline void count(__u32 what)
{
	__u64 *c = bpf_map_lookup_elem(&herd_counts, &what);
	if (c)
		*c += 1;
}

static __always_inline int to_dpdk(struct xdp_md *ctx)
{
	count(COUNT_TO_DPDK);
	return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, 0);
}

static __always_inline __u64 rotl64(__u64 x, int r)
{
	return (x << r) | (x >> (64 - r));
}

/* herd-hash v1 of a 4..8-byte key (XXH3-64's 4-to-8 path, seeded):
 * `first` and `last` are the key's first and last four bytes read as
 * little-endian words (fastpath/src/hash.rs, xxh3_4to8). */
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

static __always_inline __u64 mac_of(const __u8 *m)
{
	return (__u64)m[0] | (__u64)m[1] << 8 | (__u64)m[2] << 16 |
	       (__u64)m[3] << 24 | (__u64)m[4] << 32 | (__u64)m[5] << 40;
}

SEC("xdp")
int herd_prefilter(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data;
	__u8 *end = (__u8 *)(long)ctx->data_end;
	/* Ethernet, an option-less IPv4 header and the two ports. */
	if (data + 14 + 24 > end)
		return to_dpdk(ctx);
	__u8 *ip = data + 14;
	__u32 total_len = (__u32)ip[2] << 8 | ip[3];
	__u32 fragment = ((__u32)ip[6] << 8 | ip[7]) & 0x3fff;
	__u8 protocol = ip[9];
	if (data[12] != 0x08 || data[13] != 0x00 || ip[0] != 0x45 || fragment != 0 ||
	    total_len < 24 || (__u64)total_len > (__u64)(end - ip) ||
	    (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP))
		return to_dpdk(ctx);
	__u32 zero = 0;
	__u64 *own = bpf_map_lookup_elem(&herd_own_mac, &zero);
	if (!own)
		return to_dpdk(ctx);
	__u64 dst_mac = mac_of(data);
	if (mac_of(data + 6) == *own || !bpf_map_lookup_elem(&herd_vip_macs, &dst_mac))
		return to_dpdk(ctx);
	__u32 daddr = (__u32)ip[16] | (__u32)ip[17] << 8 | (__u32)ip[18] << 16 | (__u32)ip[19] << 24;
	if (!bpf_map_lookup_elem(&herd_vips4, &daddr))
		return to_dpdk(ctx);
	__u8 *ports = ip + 20;
	__u32 rule = (__u32)protocol << 16 | (__u32)ports[2] << 8 | ports[3];
	__u8 *affinity = bpf_map_lookup_elem(&herd_rules, &rule);
	if (!affinity)
		return to_dpdk(ctx);
	/* The key bytes 4, a0..a3[, port] in one little-endian word. */
	__u64 word = 4 | (__u64)ip[12] << 8 | (__u64)ip[13] << 16 | (__u64)ip[14] << 24 |
		     (__u64)ip[15] << 32;
	__u64 len = 5;
	if (*affinity) {
		word |= (__u64)ports[0] << 40 | (__u64)ports[1] << 48;
		len = 7;
	}
	__u32 first = (__u32)word;
	__u32 last = (__u32)(word >> ((len - 4) * 8));
	__u64 hash = herd_hash(len, first, last);

	void *table = bpf_map_lookup_elem(&herd_table, &zero);
	if (!table)
		return to_dpdk(ctx);
	__u32 *n = bpf_map_lookup_elem(table, &zero);
	if (!n || *n == 0)
		return to_dpdk(ctx);
	__u32 slot = (__u32)mul_hi(hash, *n) + 1;
	__u32 *state = bpf_map_lookup_elem(table, &slot);
	if (!state)
		return to_dpdk(ctx);
	if (*state == STATE_OWNED) {
		for (int i = 0; i < 6; i++)
			data[i] = (__u8)(*own >> (8 * i));
		count(COUNT_PASSED);
		return XDP_PASS;
	}
	if (*state == STATE_ELSEWHERE) {
		count(COUNT_DROPPED);
		return XDP_DROP;
	}
	return to_dpdk(ctx);
}

char _license[] SEC("license") = "Dual BSD/GPL";
