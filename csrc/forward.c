/* Switching and delivery: learn a frame's source and look up its
 * destination in the FDB (fdb_switch), and write a frame to a local port
 * (tap_xmit, tap_writev).  Both directions use these; see forward.h. */
#include <errno.h>
#include <unistd.h>

#include "capture.h"
#include "forward.h"
#include "stats.h"

/* Is the static entry e where a frame from `at` may come from?  For a
 * VTEP, its address alone: the UDP source port is a per-flow hash. */
static int static_owner(const struct fdb_entry *e, const struct fdb_dest *at)
{
	if (e->dest.port >= 0 || at->port >= 0)
		return e->dest.port == at->port;
	return e->dest.ip == at->ip;
}

int fdb_src_spoofed(struct uvx_dp *dp, struct uvx_vni *v, const uint8_t *src,
		    const struct fdb_dest *at)
{
	pthread_mutex_lock(&dp->fdb_lock);
	const struct fdb_entry *s = fdb_lookup(&dp->fdb, v->vni, src);
	int spoofed = s && (s->flags & FDB_F_STATIC) && !static_owner(s, at);
	pthread_mutex_unlock(&dp->fdb_lock);
	if (spoofed)
		drop(dp, v, at->port, UVX_DROP_SPOOFED_MAC);
	return spoofed;
}

int fdb_switch(struct uvx_dp *dp, struct uvx_vni *v, const uint8_t *src,
	       const struct fdb_dest *at, const uint8_t *dst, uint64_t now,
	       struct fdb_dest *out)
{
	int found = FWD_FLOOD;
	enum fdb_learn_result r = FDB_LEARN_STATIC;
	pthread_mutex_lock(&dp->fdb_lock);
	/* A source MAC pinned elsewhere is spoofed: dropped, learning on or
	 * off.  Linux's vxlan_snoop drops such a frame only while learning
	 * (a permanent entry); uvxlan knows where each of its MACs lives. */
	const struct fdb_entry *s = fdb_lookup(&dp->fdb, v->vni, src);
	if (s && (s->flags & FDB_F_STATIC)) {
		if (!static_owner(s, at)) {
			pthread_mutex_unlock(&dp->fdb_lock);
			drop(dp, v, at->port, UVX_DROP_SPOOFED_MAC);
			return FWD_DROPPED;
		}
	} else if (v->learning) {
		r = fdb_learn(&dp->fdb, v->vni, src, at, now,
			      dp->cfg.learn_limit, &v->learned);
	}
	if (!mac_is_multicast(dst)) {
		struct fdb_entry *e = fdb_lookup(&dp->fdb, v->vni, dst);
		if (e) {
			e->used_ms = now;
			*out = e->dest;    /* a copy: the entry may move once unlocked */
			found = FWD_UNICAST;
		}
	}
	pthread_mutex_unlock(&dp->fdb_lock);
	/* The frame is still forwarded, as Linux's bridge does when
	 * fdb_max_learned is reached; only the address goes unlearned. */
	if (r == FDB_LEARN_LIMIT || r == FDB_LEARN_FULL) {
		drop(dp, v, at->port, UVX_DROP_LEARN_LIMIT);
		bump(r == FDB_LEARN_LIMIT ? &v->learn_capped[uvx_wid] : &v->fdb_full[uvx_wid], 1);
	}
	/* Where the control plane programs every destination (a store
	 * network that does not learn), a unicast MAC not in the FDB has
	 * gone, typically a detached container that a neighbour cache still
	 * names.  Flooding it would hand every other container, among them
	 * the one that took its address over, traffic that is not its own.
	 * Dropped, as a Linux bridge port with "flood off" (BR_FLOOD clear)
	 * gets no unknown unicast; the sender's neighbour entry fails and it
	 * asks again (ARP), which is answered. */
	if (found == FWD_FLOOD && !v->flood_unknown && !mac_is_multicast(dst)) {
		drop(dp, v, at->port, UVX_DROP_UNKNOWN_DST);
		return FWD_DROPPED;
	}
	return found;
}

int tap_writev(struct uvx_dp *dp, int32_t port, const struct vnet_hdr *vh,
	       struct iovec *iov, int niov)
{
	if (port < 0 || port >= UVX_MAX_PORTS || !dp->ports[port].used) {
		drop(dp, NULL, -1, UVX_DROP_NO_PORT);   /* whose it was is gone */
		return -1;
	}
	struct uvx_port *p = &dp->ports[port];
	if (dp->cap)
		capture_frame(dp, UVX_CAP_TAP_TX, p->vni, port, iov + 1, niov - 1);
	static const struct vnet_hdr plain;
	iov[0] = (struct iovec){ (void *)(vh ? vh : &plain), VNET_HLEN };
	/* A plain port gets the frame alone: skip the header slot. */
	int skip = p->vnet ? 0 : 1;
	ssize_t n = writev(p->fd, iov + skip, niov - skip);
	if (n < 0) {
		drop(dp, p->v, port, errno == EAGAIN ? UVX_DROP_TAP_FULL : UVX_DROP_TAP_ERROR);
		return -1;
	}
	count(p->ctr, 1, (size_t)n - (p->vnet ? VNET_HLEN : 0));
	return 0;
}

int tap_xmit(struct uvx_dp *dp, int32_t port, const uint8_t *frame, size_t len,
	     const struct vnet_hdr *vh)
{
	struct iovec iov[2] = { { NULL, 0 }, { (void *)frame, len } };
	return tap_writev(dp, port, vh, iov, 2);
}
