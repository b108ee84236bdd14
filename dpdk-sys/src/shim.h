/* Herd's C shim over DPDK: the functions DPDK ships as `static inline` in its
 * headers have no symbol to link against, so each gets a real function here. */
#ifndef HERD_DPDK_SHIM_H
#define HERD_DPDK_SHIM_H

#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_cycles.h>
#include <rte_pause.h>
#include <rte_version.h>
#include <rte_bus_vdev.h>
/* libbpf (Debian's libbpf-dev): the XDP pre-filter's maps and tests. */
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <linux/if_link.h> /* XDP_FLAGS_*: the pre-filter's attach mode */

uint16_t herd_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t herd_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *herd_pktmbuf_alloc(struct rte_mempool *pool);
void herd_pktmbuf_free(struct rte_mbuf *m);
void herd_pktmbuf_free_bulk(struct rte_mbuf **pkts, unsigned int n);
uint8_t *herd_pktmbuf_data(struct rte_mbuf *m);
uint16_t herd_pktmbuf_data_len(const struct rte_mbuf *m);
/* Room in the first segment from the data start to the buffer's end. */
uint16_t herd_pktmbuf_data_room(const struct rte_mbuf *m);
/* Sets the length of a single-segment mbuf; returns -1 if it does not fit. */
int herd_pktmbuf_set_len(struct rte_mbuf *m, uint16_t len);
uint16_t herd_pktmbuf_nb_segs(const struct rte_mbuf *m);
uint64_t herd_rdtsc(void);
unsigned int herd_lcore_id(void);
void herd_pause(void);
int herd_errno(void);
const char *herd_dpdk_version(void);

#endif
