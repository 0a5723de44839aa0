/* Transmit: container -> TAP -> switch -> VXLAN -> UDP.
 *
 *   uvx_tap_rx       drain up to a batch of frames from one TAP
 *     vxlan_xmit     per frame: check, learn the source, look up the
 *                    destination in (VNI, MAC)
 *       tap_xmit       a local port in the same VNI: write to its TAP
 *       xmit_one       a remote VTEP: queue UDP+VXLAN header + frame
 *       flood          broadcast, multicast, unknown unicast: every other
 *                      local port and every VTEP in the VNI's flood list
 *   txq_flush        one sendmmsg for everything queued
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "dp.h"

static void txq_flush(struct uvx_dp *dp, struct uvx_worker *w)
{
	struct uvx_txq *q = &w->txq;
	unsigned done = 0;
	while (done < q->n) {
		int r = sendmmsg(dp->tx_fd, &q->msg[done], q->n - done, 0);
		if (r < 0) {
			/* The head datagram failed (no route, buffer full):
			 * drop it and go on with the rest. */
			drop(dp, UVX_DROP_UDP_ERROR);
			done++;
			continue;
		}
		for (unsigned i = done; i < done + (unsigned)r; i++)
			count(&q->vni[i]->ctr, 1, q->msg[i].msg_len);
		done += (unsigned)r;
	}
	q->n = 0;
}

static void xmit_one(struct uvx_dp *dp, struct uvx_worker *w, struct uvx_vni *v,
		     const struct fdb_dest *to, const uint8_t *frame, size_t len,
		     uint16_t sport)
{
	struct uvx_txq *q = &w->txq;
	if (q->n == UVX_TXQ_LEN)
		txq_flush(dp, w);

	unsigned i = q->n++;
	vxlan_fill_encap(q->hdr[i], v->vni, frame, len, sport, to->udp_port,
			 dp->cfg.local_ip, to->ip, dp->cfg.udp_csum);
	q->iov[i][0] = (struct iovec){ q->hdr[i], VXLAN_ENCAP_LEN };
	q->iov[i][1] = (struct iovec){ (void *)frame, len };
	q->dst[i] = (struct sockaddr_in){ .sin_family = AF_INET };
	q->dst[i].sin_addr.s_addr = to->ip;
	/* Raw sockets take the protocol, not a port, from the address. */
	struct msghdr *h = &q->msg[i].msg_hdr;
	memset(h, 0, sizeof(*h));
	h->msg_name = &q->dst[i];
	h->msg_namelen = sizeof(q->dst[i]);
	h->msg_iov = q->iov[i];
	h->msg_iovlen = 2;
	q->vni[i] = v;
}

/* Head-end replication (RFC 7348 section 4.2 leaves BUM delivery to the
 * VTEP; without multicast underlay we copy to each VTEP): every local port
 * of the VNI but the ingress one, and every VTEP on the flood list, once. */
static void flood(struct uvx_dp *dp, struct uvx_worker *w, struct uvx_vni *v,
		  int32_t ingress, const uint8_t *frame, size_t len)
{
	unsigned sent = 0;
	for (unsigned i = 0; i < v->nports; i++) {
		if (v->ports[i] == ingress)
			continue;
		tap_xmit(dp, v->ports[i], frame, len);
		sent++;
	}
	if (v->nremotes) {
		uint16_t sport = vxlan_src_port(vxlan_flow_hash(frame, len),
						dp->cfg.src_port_min,
						dp->cfg.src_port_max);
		for (unsigned i = 0; i < v->nremotes; i++)
			xmit_one(dp, w, v, &v->remotes[i], frame, len, sport);
		sent += v->nremotes;
	}
	if (!sent)
		drop(dp, UVX_DROP_NO_DEST);
}

static void vxlan_xmit(struct uvx_dp *dp, struct uvx_worker *w, int32_t port,
		       struct uvx_vni *v, const uint8_t *frame, size_t len)
{
	int reason = vxlan_check_inner(frame, len);
	if (reason != UVX_PASS) {
		drop(dp, reason);
		return;
	}
	const uint8_t *dst = frame;
	const struct fdb_dest here = { port, 0, 0 };
	fdb_snoop(dp, v, frame + ETH_ALEN, &here);

	if (mac_is_multicast(dst)) {
		flood(dp, w, v, port, frame, len);
		return;
	}
	struct fdb_entry *e = fdb_lookup(&dp->fdb, v->vni, dst);
	if (!e) {
		flood(dp, w, v, port, frame, len);
		return;
	}
	e->used_ms = w->now_ms;
	if (e->dest.port == port) {
		drop(dp, UVX_DROP_HAIRPIN);
	} else if (e->dest.port >= 0) {
		tap_xmit(dp, e->dest.port, frame, len);
	} else {
		uint16_t sport = vxlan_src_port(vxlan_flow_hash(frame, len),
						dp->cfg.src_port_min,
						dp->cfg.src_port_max);
		xmit_one(dp, w, v, &e->dest, frame, len, sport);
	}
}

int uvx_tap_rx(struct uvx_dp *dp, int port)
{
	if (port < 0 || port >= UVX_MAX_PORTS || !dp->ports[port].used)
		return -ENOENT;
	struct uvx_port *p = &dp->ports[port];
	struct uvx_vni *v = vni_find(dp, p->vni);
	struct uvx_worker *w = &dp->w;
	unsigned n = 0;
	int err = 0;

	w->now_ms = uvx_now_ms();
	/* Read the whole batch first: frames stay in their slots until the
	 * sendmmsg below has sent every copy queued from them. */
	for (unsigned reads = 0; reads < dp->cfg.batch; reads++) {
		ssize_t r = read(p->fd, slot_frame(w, n), UVX_FRAME_MAX + 1);
		if (r < 0) {
			if (errno != EAGAIN && errno != EINTR)
				err = -errno;
			break;
		}
		if (r == 0)
			break;
		if (r > UVX_FRAME_MAX) {
			drop(dp, UVX_DROP_TOO_BIG);
			continue;
		}
		w->len[n++] = (size_t)r;
	}
	for (unsigned i = 0; i < n; i++) {
		count(&p->ctr, 0, w->len[i]);
		vxlan_xmit(dp, w, port, v, slot_frame(w, i), w->len[i]);
	}
	txq_flush(dp, w);
	return n ? (int)n : err;
}
