#include "shim.h"

uint16_t herd_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t herd_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *herd_pktmbuf_alloc(struct rte_mempool *pool)
{
	return rte_pktmbuf_alloc(pool);
}

void herd_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

void herd_pktmbuf_free_bulk(struct rte_mbuf **pkts, unsigned int n)
{
	rte_pktmbuf_free_bulk(pkts, n);
}

uint8_t *herd_pktmbuf_data(struct rte_mbuf *m)
{
	return rte_pktmbuf_mtod(m, uint8_t *);
}

uint16_t herd_pktmbuf_data_len(const struct rte_mbuf *m)
{
	return m->data_len;
}

uint16_t herd_pktmbuf_data_room(const struct rte_mbuf *m)
{
	return (uint16_t)(m->buf_len - m->data_off);
}

int herd_pktmbuf_set_len(struct rte_mbuf *m, uint16_t len)
{
	if (m->nb_segs != 1 || len > m->buf_len - m->data_off)
		return -1;
	m->data_len = len;
	m->pkt_len = len;
	return 0;
}

uint16_t herd_pktmbuf_nb_segs(const struct rte_mbuf *m)
{
	return m->nb_segs;
}

uint64_t herd_rdtsc(void)
{
	return rte_rdtsc();
}

unsigned int herd_lcore_id(void)
{
	return rte_lcore_id();
}

void herd_pause(void)
{
	rte_pause();
}

int herd_errno(void)
{
	return rte_errno;
}

const char *herd_dpdk_version(void)
{
	return rte_version();
}
