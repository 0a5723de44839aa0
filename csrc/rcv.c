/* Receive: UDP -> VXLAN -> switch -> TAP -> container.
 *
 *   uvx_udp_rx       one recvmmsg for up to a batch of datagrams
 *     vxlan_rcv      per datagram: parse and check the header, find the
 *                    VNI, check the inner frame, learn its source as
 *                    behind the sending VTEP
 *       tap_xmit       a local port: write the inner frame to its TAP
 *       flood_local    broadcast, multicast, unknown unicast: every local
 *                      port in the VNI, never back onto the wire
 */
#include <errno.h>

#include "dp.h"

static void flood_local(struct uvx_dp *dp, struct uvx_vni *v,
			const uint8_t *frame, size_t len)
{
	/* Split horizon: what came from a VTEP goes to local ports only;
	 * the sender already copied it to every other VTEP. */
	if (!v->nports) {
		drop(dp, UVX_DROP_NO_DEST);
		return;
	}
	for (unsigned i = 0; i < v->nports; i++)
		tap_xmit(dp, v->ports[i], frame, len);
}

/* The UDP port to reach a VTEP we learned from: the one its flood-list
 * entry names, else ours.  Never the datagram's source port, which is a
 * per-flow hash (RFC 7348 section 5). */
static uint16_t vtep_port(struct uvx_dp *dp, struct uvx_vni *v, uint32_t ip)
{
	for (unsigned i = 0; i < v->nremotes; i++)
		if (v->remotes[i].ip == ip)
			return v->remotes[i].udp_port;
	return dp->cfg.dst_port;
}

static void vxlan_rcv(struct uvx_dp *dp, struct uvx_worker *w,
		      const uint8_t *pkt, size_t len,
		      const struct sockaddr_in *from)
{
	uint32_t vni = 0;
	size_t off = 0;
	int reason = vxlan_parse(pkt, len, dp->cfg.accept_reserved, &vni, &off);
	/* The VNI is checked before the inner frame, so a bad frame in an
	 * unknown VNI counts as what an operator would look for first. */
	if (reason == UVX_DROP_TRUNCATED || reason == UVX_DROP_BAD_FLAGS ||
	    reason == UVX_DROP_RESERVED) {
		drop(dp, reason);
		return;
	}
	struct uvx_vni *v = vni_find(dp, vni);
	if (!v) {
		drop(dp, UVX_DROP_UNKNOWN_VNI);
		return;
	}
	if (reason != UVX_PASS) {
		drop(dp, reason);
		return;
	}
	const uint8_t *frame = pkt + off;
	size_t flen = len - off;
	count(&v->ctr, 0, len);

	const struct fdb_dest there = {
		-1, from->sin_addr.s_addr, vtep_port(dp, v, from->sin_addr.s_addr)
	};
	fdb_snoop(dp, v, frame + ETH_ALEN, &there);

	if (mac_is_multicast(frame)) {
		flood_local(dp, v, frame, flen);
		return;
	}
	struct fdb_entry *e = fdb_lookup(&dp->fdb, vni, frame);
	if (!e) {
		flood_local(dp, v, frame, flen);
		return;
	}
	e->used_ms = w->now_ms;
	if (e->dest.port < 0) {
		drop(dp, UVX_DROP_SPLIT_HORIZON);
		return;
	}
	tap_xmit(dp, e->dest.port, frame, flen);
}

int uvx_udp_rx(struct uvx_dp *dp)
{
	struct uvx_worker *w = &dp->w;
	if (dp->udp_fd < 0)
		return -EBADF;

	for (unsigned i = 0; i < dp->cfg.batch; i++)
		w->rmsg[i].msg_hdr.msg_namelen = sizeof(w->rsrc[i]);
	int n = recvmmsg(dp->udp_fd, w->rmsg, dp->cfg.batch, MSG_DONTWAIT, NULL);
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -errno;

	w->now_ms = uvx_now_ms();
	for (int i = 0; i < n; i++) {
		size_t len = w->rmsg[i].msg_len;
		/* The slot holds one byte more than the largest datagram, so
		 * a read that fills it was cut short. */
		if ((w->rmsg[i].msg_hdr.msg_flags & MSG_TRUNC) ||
		    len > UVX_FRAME_MAX) {
			drop(dp, UVX_DROP_TOO_BIG);
			continue;
		}
		vxlan_rcv(dp, w, slot_frame(w, (unsigned)i), len, &w->rsrc[i]);
	}
	return n;
}
