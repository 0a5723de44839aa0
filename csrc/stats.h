/* Counting on the packet path: packets, bytes and drops, per worker.
 *
 * Every counter has one writer, the worker whose set it is (uvx_wid), and
 * is read by Python's thread (stats.c adds the sets up): relaxed atomic
 * stores and loads, which cost a plain move.  Nothing here allocates.
 */
#ifndef UVX_STATS_H
#define UVX_STATS_H

#include "dp.h"

extern __thread unsigned uvx_wid;   /* the worker this thread counts for */

static inline void bump(uint64_t *c, uint64_t d)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + d, __ATOMIC_RELAXED);
}

/* Count one dropped frame: for its reason, and for the VNI and the port it
 * can be put down to (v NULL or port < 0: none).  See uvx_vni_drops and
 * uvx_port_drops for which port that is. */
static inline void drop(struct uvx_dp *dp, struct uvx_vni *v, int32_t port, int reason)
{
	bump(&dp->drops[uvx_wid][reason], 1);
	if (v)
		bump(&v->drops[uvx_wid][reason], 1);
	if (port >= 0 && port < UVX_MAX_PORTS)
		bump(&dp->ports[port].drops[uvx_wid][reason], 1);
}

/* Count n frames dropped where no VNI or port can be named (the kernel's
 * own drops, learnt after the fact). */
static inline void drop_n(struct uvx_dp *dp, int reason, uint64_t n)
{
	bump(&dp->drops[uvx_wid][reason], n);
}

static inline void count_n(struct uvx_counters *ctr, int tx, uint64_t packets,
			   uint64_t bytes)
{
	struct uvx_counters *c = &ctr[uvx_wid];
	if (tx) {
		bump(&c->tx_packets, packets);
		bump(&c->tx_bytes, bytes);
	} else {
		bump(&c->rx_packets, packets);
		bump(&c->rx_bytes, bytes);
	}
}

static inline void count(struct uvx_counters *ctr, int tx, size_t bytes)
{
	count_n(ctr, tx, 1, bytes);
}

#endif
