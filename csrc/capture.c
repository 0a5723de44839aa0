/* Live capture on a datapath: start, stop and drain (uvx.h's
 * uvx_capture_*), and the hooks the packet path calls (capture.h).  The
 * ring and the filter are capring.c's.
 *
 * Python's side (uvxlan/capture.py) starts a capture for a client of the
 * control socket, drains the rings while the client reads, and stops it
 * when the client goes.  A client that stops reading stops the draining:
 * the rings fill and the workers count what they miss, nothing more.
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <time.h>

#include "capture.h"
#include "stats.h"

static uint64_t realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void put(struct uvx_capture *c, unsigned point, uint32_t vni, int32_t port,
		const uint8_t *outer, size_t outer_len, const struct iovec *iov, int niov)
{
	capring_put(&c->ring[uvx_wid], realtime_ns(), (unsigned)__builtin_ctz(point), vni,
		    port, outer, outer_len, iov, niov);
}

void capture_frame(struct uvx_dp *dp, unsigned point, uint32_t vni, int32_t port,
		   const struct iovec *iov, int niov)
{
	struct uvx_capture *c = dp->cap;
	uint8_t head[CAPTURE_HEAD];
	if (!c || !capture_match(&c->f, point, vni, port, head, capture_head(head, iov, niov)))
		return;
	put(c, point, vni, port, NULL, 0, iov, niov);
}

void capture_wire_rx(struct uvx_dp *dp, uint32_t vni, int32_t port, const uint8_t *pkt,
		     size_t off, size_t len, const struct sockaddr_in *from)
{
	struct uvx_capture *c = dp->cap;
	if (!c || off < VXLAN_HLEN || off > len)
		return;
	const struct iovec iov = { (void *)(pkt + off), len - off };
	uint8_t head[CAPTURE_HEAD];
	if (!capture_match(&c->f, UVX_CAP_WIRE_RX, vni, port, head, capture_head(head, &iov, 1)))
		return;
	if (!(c->f.match & UVX_CAP_F_OUTER)) {
		put(c, UVX_CAP_WIRE_RX, vni, port, NULL, 0, &iov, 1);
		return;
	}
	/* As received: the sender's address and port, our own, and the
	 * VXLAN header's bytes (flags, reserved bits, VNI) as they came. */
	uint8_t outer[CAPTURE_OUTER_LEN];
	capture_outer(outer, from->sin_addr.s_addr, dp->cfg.local_ip, from->sin_port,
		      htons(dp->cfg.dst_port), pkt, len - off);
	put(c, UVX_CAP_WIRE_RX, vni, port, outer, sizeof(outer), &iov, 1);
}

void capture_wire_tx(struct uvx_dp *dp, uint32_t vni, int32_t port, uint32_t daddr,
		     uint16_t sport, uint16_t dport, const uint8_t *vxh,
		     const struct iovec *iov, int niov)
{
	struct uvx_capture *c = dp->cap;
	uint8_t head[CAPTURE_HEAD];
	if (!c || !capture_match(&c->f, UVX_CAP_WIRE_TX, vni, port, head,
				 capture_head(head, iov, niov)))
		return;
	if (!(c->f.match & UVX_CAP_F_OUTER)) {
		put(c, UVX_CAP_WIRE_TX, vni, port, NULL, 0, iov, niov);
		return;
	}
	size_t inner = 0;
	for (int i = 0; i < niov; i++)
		inner += iov[i].iov_len;
	uint8_t outer[CAPTURE_OUTER_LEN];
	capture_outer(outer, dp->cfg.local_ip, daddr, htons(sport), htons(dport), vxh, inner);
	put(c, UVX_CAP_WIRE_TX, vni, port, outer, sizeof(outer), iov, niov);
}

static void release(struct uvx_capture *c)
{
	if (!c)
		return;
	for (unsigned k = 0; k < UVX_WORKERS; k++)
		capring_free(&c->ring[k]);
	free(c);
}

void capture_free(struct uvx_dp *dp)
{
	release(dp->cap);
	dp->cap = NULL;
}

static int filter_ok(const struct uvx_capture_filter *f)
{
	const uint32_t points = UVX_CAP_TAP_RX | UVX_CAP_TAP_TX | UVX_CAP_WIRE_RX | UVX_CAP_WIRE_TX;
	const uint32_t match = UVX_CAP_F_VNI | UVX_CAP_F_PORT | UVX_CAP_F_MAC |
		UVX_CAP_F_ETHERTYPE | UVX_CAP_F_OUTER;
	return f->points && !(f->points & ~points) && !(f->match & ~match) &&
	       f->snaplen >= UVX_CAPTURE_SNAP_MIN && f->snaplen <= UVX_CAPTURE_SNAP_MAX &&
	       f->slots <= UVX_CAPTURE_SLOTS_MAX && f->vni <= VXLAN_VNI_MAX;
}

int uvx_capture_start(struct uvx_dp *dp, const struct uvx_capture_filter *f)
{
	if (!filter_ok(f))
		return -EINVAL;
	struct uvx_capture *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->f = *f;
	uint32_t slots = f->slots;
	if (!slots) {
		size_t stride = sizeof(struct capring_slot) + f->snaplen;
		size_t fit = UVX_CAPTURE_RING_BYTES / stride;
		slots = fit < 16 ? 16 : fit > UVX_CAPTURE_SLOTS_MAX ? UVX_CAPTURE_SLOTS_MAX
			: (uint32_t)fit;
	}
	c->f.slots = slots;
	if ((uint64_t)slots * (sizeof(struct capring_slot) + f->snaplen) > UVX_CAPTURE_RING_MAX) {
		release(c);
		return -EFBIG;
	}
	/* Allocated here, before the lock: the workers wait for nothing. */
	for (unsigned k = 0; k < UVX_WORKERS; k++) {
		if (capring_init(&c->ring[k], slots, f->snaplen) < 0) {
			release(c);
			return -ENOMEM;
		}
	}
	pthread_rwlock_wrlock(&dp->cfg_lock);
	int busy = dp->cap != NULL;
	if (!busy)
		dp->cap = c;
	pthread_rwlock_unlock(&dp->cfg_lock);
	if (busy) {
		release(c);
		return -EBUSY;
	}
	return 0;
}

static void fill(const struct uvx_capture *c, struct uvx_capture_stats *out)
{
	out->captured = out->missed = out->drained = 0;
	for (unsigned k = 0; k < UVX_WORKERS; k++) {
		out->captured += capring_captured(&c->ring[k]);
		out->missed += capring_missed(&c->ring[k]);
		out->drained += c->ring[k].tail;    /* the drain's own, on this thread */
	}
	out->slots = c->f.slots;
	out->snaplen = c->f.snaplen;
}

int uvx_capture_stop(struct uvx_dp *dp, struct uvx_capture_stats *out)
{
	pthread_rwlock_wrlock(&dp->cfg_lock);
	struct uvx_capture *c = dp->cap;
	dp->cap = NULL;
	pthread_rwlock_unlock(&dp->cfg_lock);
	if (!c)
		return -ENOENT;
	if (out)
		fill(c, out);
	release(c);          /* no worker holds it: they took the read lock */
	return 0;
}

int uvx_capture_stats(struct uvx_dp *dp, struct uvx_capture_stats *out)
{
	pthread_rwlock_rdlock(&dp->cfg_lock);
	struct uvx_capture *c = dp->cap;
	if (c)
		fill(c, out);
	pthread_rwlock_unlock(&dp->cfg_lock);
	return c ? 0 : -ENOENT;
}

int uvx_capture_drain(struct uvx_dp *dp, uint8_t *buf, size_t cap)
{
	if (cap > INT_MAX)
		cap = INT_MAX;
	pthread_rwlock_rdlock(&dp->cfg_lock);
	struct uvx_capture *c = dp->cap;
	size_t done = 0;
	while (c) {
		/* The oldest head of the rings: one time order across workers. */
		struct capring *next = NULL;
		uint64_t best = 0;
		for (unsigned k = 0; k < UVX_WORKERS; k++) {
			uint64_t ts;
			if (capring_peek(&c->ring[k], &ts) && (!next || ts < best)) {
				next = &c->ring[k];
				best = ts;
			}
		}
		size_t n = next ? capring_take(next, buf + done, cap - done) : 0;
		if (!n)
			break;
		done += n;
	}
	pthread_rwlock_unlock(&dp->cfg_lock);
	return c ? (int)done : -ENOENT;
}
