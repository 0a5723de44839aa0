/* Counters as Python reads them: drops by reason (globally, per VNI, per
 * port), packets and bytes per port and per VNI, ARP replies, and the
 * names of the drop reasons.  Each counter has a set per worker (stats.h);
 * these add the sets up.
 *
 * Reading never stalls the workers.  The global drop counts live as long
 * as the datapath and are read with no lock at all.  A VNI's or a port's
 * counters are read under cfg_lock taken for READING: the workers hold it
 * the same way while they move a batch, so neither waits for the other,
 * and a VNI cannot be freed (uvx_vni_del takes it for writing) while its
 * counters are being added up. */
#include <errno.h>
#include <string.h>

#include "stats.h"

__thread unsigned uvx_wid;

#define UVX_DROP_NAME(id, name, doc) [id] = name,
static const char *const drop_names[UVX_DROP__MAX] = {
	UVX_DROP_REASONS(UVX_DROP_NAME)
};
#undef UVX_DROP_NAME

const char *uvx_drop_reason_name(int reason)
{
	if (reason < 0 || reason >= UVX_DROP__MAX)
		return NULL;
	return drop_names[reason];
}

static uint64_t load(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

uint64_t uvx_drops(struct uvx_dp *dp, int reason)
{
	if (reason < 0 || reason >= UVX_DROP__MAX)
		return 0;
	uint64_t n = 0;
	for (unsigned k = 0; k < UVX_WORKERS; k++)
		n += load(&dp->drops[k][reason]);
	return n;
}

static void sum_drops(uint64_t (*drops)[UVX_DROP__MAX], uint64_t *out)
{
	for (int r = 0; r < UVX_DROP__MAX; r++) {
		out[r] = 0;
		for (unsigned k = 0; k < UVX_WORKERS; k++)
			out[r] += load(&drops[k][r]);
	}
}

static int vni_drops(struct uvx_dp *dp, uint32_t vni, uint64_t *out)
{
	struct uvx_vni *v = vni_find(dp, vni);
	if (!v)
		return -ENOENT;
	sum_drops(v->drops, out);
	return 0;
}

int uvx_vni_drops(struct uvx_dp *dp, uint32_t vni, uint64_t *out)
{
	READ_LOCKED(dp, int, vni_drops(dp, vni, out));
}

static int port_drops(struct uvx_dp *dp, int port, uint64_t *out)
{
	if (port < 0 || port >= UVX_MAX_PORTS || !dp->ports[port].used)
		return -ENOENT;
	sum_drops(dp->ports[port].drops, out);
	return 0;
}

int uvx_port_drops(struct uvx_dp *dp, int port, uint64_t *out)
{
	READ_LOCKED(dp, int, port_drops(dp, port, out));
}

static void sum_counters(const struct uvx_counters *ctr, struct uvx_counters *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned k = 0; k < UVX_WORKERS; k++) {
		out->rx_packets += load(&ctr[k].rx_packets);
		out->rx_bytes += load(&ctr[k].rx_bytes);
		out->tx_packets += load(&ctr[k].tx_packets);
		out->tx_bytes += load(&ctr[k].tx_bytes);
	}
}

static int port_counters(struct uvx_dp *dp, int port, struct uvx_counters *out)
{
	if (port < 0 || port >= UVX_MAX_PORTS || !dp->ports[port].used)
		return -ENOENT;
	sum_counters(dp->ports[port].ctr, out);
	return 0;
}

int uvx_port_counters(struct uvx_dp *dp, int port, struct uvx_counters *out)
{
	READ_LOCKED(dp, int, port_counters(dp, port, out));
}

static int vni_counters(struct uvx_dp *dp, uint32_t vni, struct uvx_counters *out)
{
	struct uvx_vni *v = vni_find(dp, vni);
	if (!v)
		return -ENOENT;
	sum_counters(v->ctr, out);
	return 0;
}

int uvx_vni_counters(struct uvx_dp *dp, uint32_t vni, struct uvx_counters *out)
{
	READ_LOCKED(dp, int, vni_counters(dp, vni, out));
}

static uint64_t vni_arp_replies(struct uvx_dp *dp, uint32_t vni)
{
	struct uvx_vni *v = vni_find(dp, vni);
	uint64_t n = 0;
	for (unsigned k = 0; v && k < UVX_WORKERS; k++)
		n += load(&v->arp_replied[k]);
	return n;
}

uint64_t uvx_vni_arp_replies(struct uvx_dp *dp, uint32_t vni)
{
	READ_LOCKED(dp, uint64_t, vni_arp_replies(dp, vni));
}

static int vni_limits(struct uvx_dp *dp, uint32_t vni, struct uvx_limits *out)
{
	struct uvx_vni *v = vni_find(dp, vni);
	if (!v)
		return -ENOENT;
	memset(out, 0, sizeof(*out));
	for (unsigned k = 0; k < UVX_WORKERS; k++) {
		out->learn_limit += load(&v->learn_capped[k]);
		out->fdb_full += load(&v->fdb_full[k]);
	}
	out->flood_full = v->flood_full;     /* written under the write lock */
	out->arp_full = v->arp_full;
	return 0;
}

int uvx_vni_limits(struct uvx_dp *dp, uint32_t vni, struct uvx_limits *out)
{
	READ_LOCKED(dp, int, vni_limits(dp, vni, out));
}
