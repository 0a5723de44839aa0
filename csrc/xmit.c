/* Transmit: container -> TAP -> switch -> VXLAN -> UDP.  The TX worker's
 * half of the packet path (worker.c calls uvx_tap_rx when a TAP is
 * readable); switching and writing to local ports are forward.c's.
 *
 *   uvx_tap_rx       drain up to a batch of frames from one TAP; with
 *                    IFF_VNET_HDR each may be a 64 KB TCP super-frame
 *     vxlan_xmit     per frame: check, learn the source, look up the
 *                    destination in (VNI, MAC)
 *       deliver_local  a local port in the same VNI: write to its TAP
 *                      (a super-frame as it is, or cut for a plain port)
 *       xmit_remote    remote VTEPs: a frame (or a super-frame's segment)
 *                      too big for the underlay is dropped and answered
 *                      (too_big, pmtud.c); else cut a super-frame into MSS
 *                      segments (tso_segment), encapsulate each, then
 *         xmit_gso       one sendmsg with UDP_SEGMENT per super-frame, or
 *         txq_add        queue UDP+VXLAN header + frame for sendmmsg; to a
 *                        VTEP under an injected fault (fault.h), txq_fault
 *                        first: lost, held, duplicated, corrupted
 *       flood          broadcast, multicast, unknown unicast: every other
 *                      local port and every VTEP in the VNI's flood list
 *   txq_flush        sendmmsg for everything queued, per socket
 *   fault_release    held frames that are due (also on the timer: uvx_fault_tick)
 *
 * A drop here counts for the VNI and for the port the frame came from
 * (w->port), except a TAP write, which counts for the port written to.
 */
#include <errno.h>
#include <netinet/udp.h>
#include <string.h>
#include <unistd.h>

#include "capture.h"
#include "fault.h"
#include "forward.h"
#include "stats.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
/* Largest UDP payload in one IPv4 datagram, GSO or not. */
#define UDP_PAYLOAD_MAX (65535 - IPV4_HLEN - UDP_HLEN)

static void txq_flush(struct uvx_dp *dp, struct uvx_worker *w)
{
	struct uvx_txq *q = &w->txq;
	unsigned done = 0;
	while (done < q->n) {
		/* One sendmmsg per run of datagrams for the same socket. */
		unsigned end = done + 1;
		while (end < q->n && q->fd[end] == q->fd[done])
			end++;
		int r = sendmmsg(q->fd[done], &q->msg[done], end - done, 0);
		if (r < 0) {
			/* The head datagram failed (no route, buffer full):
			 * drop it and go on with the rest. */
			drop(dp, q->vni[done], w->port, UVX_DROP_UDP_ERROR);
			done++;
			continue;
		}
		for (unsigned i = done; i < done + (unsigned)r; i++)
			count(q->vni[i]->ctr, 1, q->msg[i].msg_len);
		done += (unsigned)r;
	}
	q->n = 0;
	if (dp->fault)
		fault_reclaim(dp->fault);   /* the copies fault injection queued */
}

/* The pool socket a flow leaves on, or -1 for the raw socket. */
static int flow_socket(struct uvx_dp *dp, struct uvx_worker *w)
{
	return dp->npool ? (int)(w->hash % dp->npool) : -1;
}

/* The GBP group of the port the frame came from (gbp.h). */
static uint16_t source_group(struct uvx_dp *dp, struct uvx_worker *w)
{
	return w->port >= 0 && w->port < UVX_MAX_PORTS ? dp->ports[w->port].group : 0;
}

/* Queue one datagram: our header, then up to two pieces of inner frame. */
static void txq_put(struct uvx_dp *dp, struct uvx_worker *w, struct uvx_vni *v,
		    const struct fdb_dest *to, const uint8_t *h1, size_t l1,
		    const uint8_t *h2, size_t l2)
{
	struct uvx_txq *q = &w->txq;
	if (q->n == UVX_TXQ_LEN)
		txq_flush(dp, w);

	unsigned i = q->n++;
	int pool = flow_socket(dp, w);
	uint16_t sport = pool >= 0 ? dp->pool_port[pool]
		: vxlan_src_port(w->hash, dp->cfg.src_port_min, dp->cfg.src_port_max);
	vxlan_fill_encap(q->hdr[i], v->vni, l1 + l2, sport, to->udp_port);
	if (v->gbp.on)
		vxlan_gbp_put(q->hdr[i] + UDP_HLEN, source_group(dp, w));
	if (pool < 0 && dp->cfg.udp_csum)
		vxlan_fill_csum(q->hdr[i], h1, l1, h2, l2, dp->cfg.local_ip, to->ip);
	/* Raw socket: our UDP header goes too.  Pool socket: the kernel
	 * writes it (and its checksum), we start at the VXLAN header. */
	size_t skip = pool >= 0 ? UDP_HLEN : 0;
	q->iov[i][0] = (struct iovec){ q->hdr[i] + skip, VXLAN_ENCAP_LEN - skip };
	q->iov[i][1] = (struct iovec){ (void *)h1, l1 };
	q->iov[i][2] = (struct iovec){ (void *)h2, l2 };
	q->dst[i] = (struct sockaddr_in){ .sin_family = AF_INET };
	q->dst[i].sin_addr.s_addr = to->ip;
	q->dst[i].sin_port = pool >= 0 ? htons(to->udp_port) : 0;
	struct msghdr *h = &q->msg[i].msg_hdr;
	memset(h, 0, sizeof(*h));
	h->msg_name = &q->dst[i];
	h->msg_namelen = sizeof(q->dst[i]);
	h->msg_iov = q->iov[i];
	h->msg_iovlen = l2 ? 3 : 2;
	q->vni[i] = v;
	q->fd[i] = pool >= 0 ? dp->pool_fd[pool] : dp->tx_fd;
	if (dp->cap)
		capture_wire_tx(dp, v->vni, w->port, to->ip, sport, to->udp_port,
				q->hdr[i] + UDP_HLEN, &q->iov[i][1], l2 ? 2 : 1);
}

/* Fault injection (fault.h): a frame fault_judge held or copied, queued
 * copies times to where it was going; its VNI may have gone meanwhile. */
static void txq_put_slot(struct uvx_dp *dp, struct uvx_worker *w, uint32_t slot)
{
	struct fault_table *t = dp->fault;
	const struct fault_slot_meta *m = &t->meta[slot];
	struct uvx_vni *v = vni_find(dp, m->vni);
	if (!v) {
		drop(dp, NULL, -1, UVX_DROP_UNKNOWN_VNI);
		fault_slot_free(t, slot);
		return;
	}
	const struct fdb_dest to = { -1, m->ip, m->udp_port };
	uint32_t hash = w->hash;
	int32_t port = w->port;
	w->hash = m->hash;                 /* its flow's socket */
	w->port = m->port;                 /* its GBP group, as it was sent */
	for (unsigned c = 0; c < m->copies; c++)
		txq_put(dp, w, v, &to, fault_slot_data(t, slot), m->len, NULL, 0);
	w->hash = hash;
	w->port = port;
	/* Only now: a flush inside txq_put frees the slots in flight. */
	fault_inflight(t, slot);
}

/* A datagram to a VTEP that a fault entry covers: lost, held for later,
 * or sent now (once or twice, maybe a corrupted copy), perhaps with one
 * that was held back for it to overtake. */
static void txq_fault(struct uvx_dp *dp, struct uvx_worker *w, struct uvx_vni *v,
		      const struct fdb_dest *to, struct fault_entry *fe,
		      const uint8_t *h1, size_t l1, const uint8_t *h2, size_t l2)
{
	const struct fault_frame fr = { h1, l1, h2, l2, v->vni, to->ip, to->udp_port, w->hash,
					w->port };
	struct fault_verdict fv;
	fault_judge(dp->fault, fe, &fr, mono_ns(), &fv);
	if (fv.reason != UVX_PASS) {
		drop(dp, v, w->port, fv.reason);
		return;
	}
	if (fv.slot >= 0)
		txq_put_slot(dp, w, (uint32_t)fv.slot);
	else
		for (unsigned c = 0; c < fv.copies; c++)
			txq_put(dp, w, v, to, h1, l1, h2, l2);
	if (fv.release >= 0)
		txq_put_slot(dp, w, (uint32_t)fv.release);
}

static void txq_add(struct uvx_dp *dp, struct uvx_worker *w, struct uvx_vni *v,
		    const struct fdb_dest *to, const uint8_t *h1, size_t l1,
		    const uint8_t *h2, size_t l2)
{
	struct fault_entry *fe;
	if (dp->fault && (fe = fault_find(dp->fault, to->ip, v->vni))) {
		txq_fault(dp, w, v, to, fe, h1, l1, h2, l2);
		return;
	}
	txq_put(dp, w, v, to, h1, l1, h2, l2);
}

/* Send the held frames that are due, and set the timer for the next. */
static void fault_release(struct uvx_dp *dp, struct uvx_worker *w)
{
	int32_t port = w->port;
	w->port = -1;                      /* its port may be gone: count for none */
	uint64_t now = mono_ns();
	int64_t slot;
	while ((slot = fault_due(dp->fault, now)) >= 0)
		txq_put_slot(dp, w, (uint32_t)slot);
	txq_flush(dp, w);
	w->port = port;
	fault_arm(dp);
}

int uvx_fault_tick(struct uvx_dp *dp)
{
	uvx_wid = W_TX;
	uint64_t ticks;
	(void)!read(dp->timer_fd, &ticks, sizeof(ticks));
	pthread_rwlock_rdlock(&dp->cfg_lock);
	if (dp->fault)
		fault_release(dp, &dp->w[W_TX]);
	pthread_rwlock_unlock(&dp->cfg_lock);
	return 0;
}

/* Segments [0, n) of w->segs to one VTEP in one sendmsg with UDP_SEGMENT:
 * the kernel cuts the datagram every gso_size bytes, each piece one VXLAN
 * datagram.  Returns 0, or -1 if the kernel refused (the caller falls back
 * to sendmmsg). */
static int xmit_gso(struct uvx_dp *dp, struct uvx_worker *w, struct uvx_vni *v,
		    const struct fdb_dest *to, unsigned n, uint16_t gso_size)
{
	uint8_t vxh[VXLAN_HLEN];
	struct iovec iov[3 * UVX_SEGS_MAX];
	union {
		char buf[CMSG_SPACE(sizeof(uint16_t))];
		struct cmsghdr align;
	} ctl;
	size_t total = 0;

	vxlan_build_hdr(vxh, v->vni);
	if (v->gbp.on)
		vxlan_gbp_put(vxh, source_group(dp, w));
	for (unsigned i = 0; i < n; i++) {
		iov[3 * i] = (struct iovec){ vxh, VXLAN_HLEN };
		iov[3 * i + 1] = (struct iovec){ w->segs[i].hdr, w->segs[i].hdrlen };
		iov[3 * i + 2] = (struct iovec){ (void *)w->segs[i].payload, w->segs[i].plen };
		total += VXLAN_HLEN + w->segs[i].hdrlen + w->segs[i].plen;
	}
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(to->udp_port) };
	dst.sin_addr.s_addr = to->ip;
	struct msghdr mh = {
		.msg_name = &dst, .msg_namelen = sizeof(dst),
		.msg_iov = iov, .msg_iovlen = 3 * n,
		.msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf),
	};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_UDP;
	cm->cmsg_type = UDP_SEGMENT;
	cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
	memcpy(CMSG_DATA(cm), &gso_size, sizeof(gso_size));

	int pool = flow_socket(dp, w);
	if (sendmsg(dp->pool_fd[pool], &mh, 0) < 0) {
		if (errno == EAGAIN || errno == ENOBUFS || errno == ENOMEM) {
			/* A full send buffer: sendmmsg would not do better. */
			drop(dp, v, w->port, UVX_DROP_UDP_ERROR);
			return 0;
		}
		/* net/ipv4/udp.c udp_send_skb: EIO when the route's device
		 * cannot checksum for us or the route goes through IPsec
		 * (xfrm).  That is the underlay, not this frame: no
		 * UDP_SEGMENT send can succeed there, so stop trying and say
		 * so once.  Everything else is this super-frame's own (EINVAL
		 * for too many segments; EMSGSIZE, EINVAL on older kernels, for
		 * a segment over the device's MTU: both refused before now,
		 * see xmit_remote) or its route's (unreachable): it alone goes
		 * with sendmmsg, and GSO stays on for the rest. */
		if (errno == EIO) {
			dp->gso = 0;
			__atomic_fetch_or(&dp->events, UVX_EV_GSO_FAILED, __ATOMIC_RELAXED);
		}
		return -1;
	}
	count_n(v->ctr, 1, n, total + (size_t)n * UDP_HLEN);
	if (dp->cap)
		for (unsigned i = 0; i < n; i++)
			capture_wire_tx(dp, v->vni, w->port, to->ip, dp->pool_port[pool],
					to->udp_port, vxh, &iov[3 * i + 1], 2);
	return 0;
}

/* The frame (or a super-frame's segments) would not fit the underlay:
 * drop it, and tell its sender what fits (pmtud.c), as Linux's vxlan does
 * for a bridged device (skb_tunnel_check_pmtu).  The answer goes to the
 * port the frame came from, at most UVX_PMTUD_PER_SEC a second after a
 * burst of UVX_PMTUD_BURST per port. */
static void too_big(struct uvx_dp *dp, struct uvx_worker *w, struct uvx_vni *v,
		    const uint8_t *frame, size_t len)
{
	drop(dp, v, w->port, UVX_DROP_FRAG_NEEDED);
	if (w->port < 0 || w->port >= UVX_MAX_PORTS)
		return;
	struct uvx_port *p = &dp->ports[w->port];
	const uint32_t full = UVX_PMTUD_BURST * 1000u;
	uint64_t gained = (w->now_ms - p->pmtud_ms) * UVX_PMTUD_PER_SEC;
	p->pmtud_credit = gained >= full - p->pmtud_credit ? full
		: p->pmtud_credit + (uint32_t)gained;
	p->pmtud_ms = w->now_ms;
	if (p->pmtud_credit < 1000)
		return;
	size_t room = dp->cfg.underlay_mtu - IPV4_HLEN - VXLAN_ENCAP_LEN;
	size_t n = pmtud_build_reply(w->pmtud_reply, frame, len, room);
	if (n == 0)
		return;
	p->pmtud_credit -= 1000;
	tap_xmit(dp, w->port, w->pmtud_reply, n, NULL);
}

/* A frame to one or more VTEPs: plain frames are queued; super-frames are
 * cut into segments once per pass and each segment sent to every VTEP. */
static void xmit_remote(struct uvx_dp *dp, struct uvx_worker *w, struct uvx_vni *v,
			const struct fdb_dest *to, unsigned nto,
			const uint8_t *frame, size_t len, const struct vnet_hdr *vh)
{
	/* Each datagram, outer IPv4 header included, must fit the underlay
	 * (RFC 7348 section 4.3: VTEPs MUST NOT fragment).  A super-frame is
	 * judged by its largest segment, as skb_gso_validate_network_len
	 * does for Linux's vxlan; the inner Ethernet header and any VLAN tag
	 * count, being inside the datagram. */
	const size_t outer = IPV4_HLEN + VXLAN_ENCAP_LEN;
	if (vh->gso_type == VNET_GSO_NONE) {
		if (outer + len > dp->cfg.underlay_mtu) {
			too_big(dp, w, v, frame, len);
			return;
		}
		/* The outer source port and the send socket follow the
		 * inner flow (RFC 7348 section 5). */
		w->hash = vxlan_flow_hash(frame, len);
		for (unsigned d = 0; d < nto; d++)
			txq_add(dp, w, v, &to[d], frame, len, NULL, 0);
		return;
	}
	struct tso_info ti;
	int reason = tso_parse(frame, len, vh, &ti);
	if (reason != UVX_PASS) {
		drop(dp, v, w->port, reason);
		return;
	}
	size_t seg_max = ti.hdrlen + (ti.payload < ti.mss ? ti.payload : ti.mss);
	if (outer + seg_max > dp->cfg.underlay_mtu) {
		too_big(dp, w, v, frame, len);
		return;
	}
	w->hash = vxlan_flow_hash(frame, len);
	/* One UDP_SEGMENT send holds at most UVX_SEGS_MAX segments (Linux
	 * takes UDP_MAX_SEGMENTS, 64 or more) and one IPv4 datagram's worth
	 * of payload, so the kernel never refuses a pass for its size. */
	size_t seg_dgram = VXLAN_HLEN + ti.hdrlen + ti.mss;
	unsigned per_gso = (unsigned)(UDP_PAYLOAD_MAX / seg_dgram);
	unsigned pass = UVX_SEGS_MAX < per_gso ? UVX_SEGS_MAX : per_gso;
	if (pass == 0)
		pass = 1;
	for (unsigned first = 0; first < ti.nseg; first += pass) {
		unsigned n = ti.nseg - first < pass ? ti.nseg - first : pass;
		/* The queue may point into w->segs: send it before reuse. */
		txq_flush(dp, w);
		tso_segment(frame, &ti, first, n, w->segs);
		for (unsigned d = 0; d < nto; d++) {
			/* A VTEP under an injected fault takes each segment
			 * through txq_add, to be judged one by one. */
			if (dp->gso && n > 1 &&
			    !(dp->fault && fault_find(dp->fault, to[d].ip, v->vni)) &&
			    xmit_gso(dp, w, v, &to[d], n, (uint16_t)seg_dgram) == 0)
				continue;
			for (unsigned i = 0; i < n; i++)
				txq_add(dp, w, v, &to[d], w->segs[i].hdr, w->segs[i].hdrlen,
					w->segs[i].payload, w->segs[i].plen);
		}
	}
	txq_flush(dp, w);
}

/* A frame to a local port.  A port with virtio-net headers takes the
 * super-frame as it is; a plain one gets segments. */
static void deliver_local(struct uvx_dp *dp, struct uvx_worker *w, struct uvx_vni *v,
			  int32_t port, const uint8_t *frame, size_t len,
			  const struct vnet_hdr *vh)
{
	/* Group policy at the egress port (gbp.h), counted for the sender. */
	if (v->gbp.on && !gbp_allows(dp, source_group(dp, w), port, w->port))
		return;
	if (vh->gso_type == VNET_GSO_NONE || dp->ports[port].vnet) {
		tap_xmit(dp, port, frame, len, vh);
		return;
	}
	struct tso_info ti;
	int reason = tso_parse(frame, len, vh, &ti);
	if (reason != UVX_PASS) {
		drop(dp, v, w->port, reason);
		return;
	}
	/* The transmit queue never points into w->segs outside xmit_remote,
	 * which sends it before returning: the segments can be rewritten. */
	for (unsigned first = 0; first < ti.nseg; first += UVX_SEGS_MAX) {
		unsigned n = ti.nseg - first < UVX_SEGS_MAX ? ti.nseg - first : UVX_SEGS_MAX;
		tso_segment(frame, &ti, first, n, w->segs);
		for (unsigned i = 0; i < n; i++) {
			struct seg *s = &w->segs[i];
			struct iovec iov[3] = {
				{ NULL, 0 }, { s->hdr, s->hdrlen }, { (void *)s->payload, s->plen },
			};
			tap_writev(dp, port, NULL, iov, 3);
		}
	}
}

/* Head-end replication (RFC 7348 section 4.2 leaves BUM delivery to the
 * VTEP; without multicast underlay we copy to each VTEP): every local port
 * of the VNI but the ingress one, and every VTEP on the flood list, once. */
static void flood(struct uvx_dp *dp, struct uvx_worker *w, struct uvx_vni *v,
		  int32_t ingress, const uint8_t *frame, size_t len,
		  const struct vnet_hdr *vh)
{
	unsigned sent = 0;
	for (unsigned i = 0; i < v->nports; i++) {
		if (v->ports[i] == ingress)
			continue;
		deliver_local(dp, w, v, v->ports[i], frame, len, vh);
		sent++;
	}
	if (v->nremotes) {
		xmit_remote(dp, w, v, v->remotes, v->nremotes, frame, len, vh);
		sent += v->nremotes;
	}
	if (!sent)
		drop(dp, v, ingress, UVX_DROP_NO_DEST);
}

/* ARP suppression: 1 if the frame was an ARP request we answered (or, in
 * ANSWER_ONLY mode, dropped); 0 to switch it as usual. */
static int arp_reduce(struct uvx_dp *dp, struct uvx_vni *v, int32_t port,
		      const uint8_t *frame, size_t len)
{
	uint32_t tip;
	if (!arp_request_target(frame, len, &tip))
		return 0;
	/* Answered here, it never reaches fdb_switch: refuse a spoofed
	 * source first, as fdb_switch would. */
	const struct fdb_dest here = { port, 0, 0 };
	if (fdb_src_spoofed(dp, v, frame + ETH_ALEN, &here))
		return 1;
	const uint8_t *mac = arp_table_find(v->arp, tip);
	if (!mac) {
		if (v->arp_mode != UVX_ARP_ANSWER_ONLY)
			return 0;                      /* unknown: flood it */
		drop(dp, v, port, UVX_DROP_ARP_UNKNOWN);
		return 1;
	}
	uint8_t reply[ARP_FRAME_LEN];
	arp_build_reply(reply, frame, mac, tip);
	if (tap_xmit(dp, port, reply, sizeof(reply), NULL) == 0)
		bump(&v->arp_replied[uvx_wid], 1);
	return 1;
}

/* may_punt: 0 for a frame back from a hook, which goes on from the punt
 * point and is never taken again. */
static void vxlan_xmit(struct uvx_dp *dp, struct uvx_worker *w, int32_t port,
		       struct uvx_vni *v, uint8_t *frame, size_t len,
		       struct vnet_hdr *vh, int may_punt)
{
	int reason = vxlan_check_inner(frame, len);
	if (reason != UVX_PASS) {
		drop(dp, v, port, reason);
		return;
	}
	/* A plain frame with its checksum left partial is completed once,
	 * here, before any copy goes anywhere: the wire needs it whole, and
	 * a TAP told "needs checksum" must not get one already filled. */
	if (vh->gso_type == VNET_GSO_NONE && (vh->flags & VNET_F_NEEDS_CSUM)) {
		reason = csum_complete(frame, len, vh->csum_start, vh->csum_offset);
		if (reason != UVX_PASS) {
			drop(dp, v, port, reason);
			return;
		}
		vh->flags = VNET_F_DATA_VALID;
	}
	/* A super-frame is checked once, before it goes anywhere: a port
	 * that takes virtio-net headers gets it as it is, and must never be
	 * handed one we would refuse to cut (an unknown GSO type, no MSS,
	 * headers or checksum past the frame). */
	struct tso_info ti;
	if (vh->gso_type != VNET_GSO_NONE &&
	    (reason = tso_parse(frame, len, vh, &ti)) != UVX_PASS) {
		drop(dp, v, port, reason);
		return;
	}
	/* Once per frame: one back from a hook (may_punt 0) was taken here
	 * before it went out. */
	if (dp->cap && may_punt) {
		const struct iovec iov = { frame, len };
		capture_frame(dp, UVX_CAP_TAP_RX, v->vni, port, &iov, 1);
	}
	/* A Python hook's frames (punt.c): checked and checksummed as above,
	 * before anything answers, learns or switches them. */
	if (v->hooked && may_punt &&
	    punt_frame(dp, w, v, port, 0, UVX_HOOK_FROM_PORT, frame, len, vh))
		return;
	if (v->arp_mode != UVX_ARP_OFF && arp_reduce(dp, v, port, frame, len))
		return;
	const struct fdb_dest here = { port, 0, 0 };
	struct fdb_dest to;
	int verdict = fdb_switch(dp, v, frame + ETH_ALEN, &here, frame, w->now_ms, &to);
	if (verdict == FWD_DROPPED)
		return;                                      /* counted */
	if (verdict == FWD_FLOOD)
		flood(dp, w, v, port, frame, len, vh);       /* BUM or unknown */
	else if (to.port == port)
		drop(dp, v, port, UVX_DROP_HAIRPIN);
	else if (to.port >= 0)
		deliver_local(dp, w, v, to.port, frame, len, vh);
	else
		xmit_remote(dp, w, v, &to, 1, frame, len, vh);
}

static int tap_rx_locked(struct uvx_dp *dp, int port);

int uvx_tap_rx(struct uvx_dp *dp, int port)
{
	uvx_wid = W_TX;
	pthread_rwlock_rdlock(&dp->cfg_lock);
	int r = tap_rx_locked(dp, port);
	pthread_rwlock_unlock(&dp->cfg_lock);
	return r;
}

static int tap_rx_locked(struct uvx_dp *dp, int port)
{
	if (port < 0 || port >= UVX_MAX_PORTS || !dp->ports[port].used)
		return -ENOENT;
	struct uvx_port *p = &dp->ports[port];
	struct uvx_vni *v = p->v;
	struct uvx_worker *w = &dp->w[W_TX];
	size_t vlen = p->vnet ? VNET_HLEN : 0;
	unsigned n = 0;
	int err = 0;

	w->now_ms = mono_ms();
	/* Held frames that are due go before the new ones. */
	if (dp->fault)
		fault_release(dp, w);
	w->port = port;
	/* Read the whole batch first: frames stay in their slots until every
	 * copy queued from them has been sent.  The virtio-net header lands
	 * in the headroom, just before the frame. */
	for (unsigned reads = 0; reads < dp->cfg.batch; reads++) {
		uint8_t *f = slot_frame(w, n);
		ssize_t r = read(p->fd, f - vlen, UVX_FRAME_MAX + 1 + vlen);
		if (r < 0) {
			if (errno != EAGAIN && errno != EINTR)
				err = -errno;
			break;
		}
		if (r == 0)
			break;
		if ((size_t)r < vlen || (size_t)r - vlen > UVX_FRAME_MAX) {
			drop(dp, v, port, UVX_DROP_TOO_BIG);
			continue;
		}
		if (vlen)
			memcpy(&w->vh[n], f - vlen, VNET_HLEN);
		else
			memset(&w->vh[n], 0, sizeof(w->vh[n]));
		w->len[n++] = (size_t)r - vlen;
	}
	for (unsigned i = 0; i < n; i++) {
		count(p->ctr, 0, w->len[i]);
		vxlan_xmit(dp, w, port, v, slot_frame(w, i), w->len[i], &w->vh[i], 1);
	}
	txq_flush(dp, w);
	if (dp->fault)
		fault_release(dp, w);
	punt_notify(dp, w);
	return n ? (int)n : err;
}

/* The transmit path on frames already in memory, as if read in one batch
 * from port (vh[i] as the TAP gave it; zeros for a plain port): for the
 * fuzz harness (csrc/fuzz/fuzz_xmit.c).  Its buffers end where each frame
 * does, so AddressSanitizer sees a read past the frame that a batch slot
 * would hide; each has UVX_HEADROOM before it, as a slot does. */
int uvx_xmit_frames(struct uvx_dp *dp, int port, uint8_t *const *frame,
		    const size_t *len, struct vnet_hdr *vh, unsigned n)
{
	uvx_wid = W_TX;
	pthread_rwlock_rdlock(&dp->cfg_lock);
	int r = -ENOENT;
	if (port >= 0 && port < UVX_MAX_PORTS && dp->ports[port].used) {
		struct uvx_port *p = &dp->ports[port];
		struct uvx_worker *w = &dp->w[W_TX];
		w->now_ms = mono_ms();
		w->port = port;
		for (unsigned i = 0; i < n; i++) {
			count(p->ctr, 0, len[i]);
			vxlan_xmit(dp, w, port, p->v, frame[i], len[i], &vh[i], 1);
		}
		txq_flush(dp, w);
		punt_notify(dp, w);
		r = 0;
	}
	pthread_rwlock_unlock(&dp->cfg_lock);
	return r;
}

/* Frames back from a Python hook for this side (punt.h): passed ones go
 * on from the punt point, checked again (a hook may have rewritten them);
 * injected ones take the whole path, as if their port had sent them.
 * The port may have gone, or been reused for another VNI, meanwhile. */
void xmit_hook_run(struct uvx_dp *dp)
{
	struct uvx_worker *w = &dp->w[W_TX];
	struct punt_job jobs[UVX_BATCH_MAX];
	uvx_wid = W_TX;
	pthread_rwlock_rdlock(&dp->cfg_lock);
	w->now_ms = mono_ms();
	unsigned n;
	while ((n = punt_pop(dp, W_TX, jobs, UVX_BATCH_MAX)) > 0) {
		for (unsigned k = 0; k < n; k++) {
			struct punt_meta *m = jobs[k].m;
			int32_t port = m->port;
			if (port < 0 || port >= UVX_MAX_PORTS || !dp->ports[port].used ||
			    dp->ports[port].vni != m->vni) {
				drop(dp, NULL, -1, UVX_DROP_NO_PORT);
				continue;
			}
			struct uvx_port *p = &dp->ports[port];
			if (!m->injected && m->verdict == UVX_HOOK_DROP) {
				drop(dp, p->v, port, UVX_DROP_HOOK_DROP);
				continue;
			}
			w->port = port;
			vxlan_xmit(dp, w, port, p->v, jobs[k].frame, m->len, &m->vh, 0);
		}
		/* The queue points into the slots: send it before they go back. */
		txq_flush(dp, w);
		punt_recycle(dp, W_TX, jobs, n);
	}
	/* Frames an injected fault held meanwhile: due ones out, the timer
	 * set for the rest (else they wait for the next read from a TAP). */
	if (dp->fault)
		fault_release(dp, w);
	pthread_rwlock_unlock(&dp->cfg_lock);
}
