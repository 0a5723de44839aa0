/* Receive: UDP -> VXLAN -> switch -> TAP -> container.  The RX worker's
 * half of the packet path (worker.c calls uvx_udp_rx when the VXLAN socket
 * is readable); switching and writing to local ports are forward.c's.
 *
 *   uvx_udp_rx       one recvmmsg for up to a batch of reads; with UDP_GRO
 *                    a read holds many datagrams of one size, cut apart here
 *     vxlan_rcv      per datagram: parse and check the header, find the
 *                    VNI, admit the sender (a member VTEP), check the
 *                    inner frame, refuse a spoofed static source MAC,
 *                    learn its source as behind the sending VTEP
 *       deliver        a local port: joined into a TCP super-frame when the
 *                      port takes virtio-net headers (gro_rcv), else
 *                      written as it is (tap_xmit)
 *       flood_local    broadcast, multicast, unknown unicast: every local
 *                      port in the VNI, never back onto the wire
 *     gro_flush_port write out every super-frame still being joined
 *
 * A drop counts for the VNI once the header names a configured one; a TAP
 * write that fails counts for the port written to as well.
 */
#include <errno.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/uio.h>

#include "capture.h"
#include "forward.h"
#include "stats.h"

#ifndef UDP_GRO
#define UDP_GRO 104
#endif

static void gro_flush(struct uvx_dp *dp, struct gro_flow *f)
{
	int n = gro_finish(f);
	f->active = 0;
	tap_writev(dp, f->port, &f->vh, f->iov, n);
}

/* Write out what is being joined for port, or for every port (-1). */
static void gro_flush_port(struct uvx_dp *dp, struct uvx_worker *w, int32_t port)
{
	for (unsigned i = 0; i < GRO_FLOWS; i++)
		if (w->gro.flow[i].active && (port < 0 || w->gro.flow[i].port == port))
			gro_flush(dp, &w->gro.flow[i]);
}

/* Join TCP segments of one flow into a super-frame for a port that takes
 * virtio-net headers.  The payloads stay in the receive slots until the
 * flush at the end of the batch, so nothing is copied. */
static void gro_rcv(struct uvx_dp *dp, struct uvx_worker *w, int32_t port,
		    const uint8_t *frame, size_t len)
{
	struct tcp_view tv;
	if (!gro_candidate(frame, len, &tv)) {
		/* Anything else for this port keeps its place behind what
		 * is being joined for it. */
		gro_flush_port(dp, w, port);
		struct vnet_hdr vh = { 0 };
		size_t end;
		if (csum_partial_find(frame, len, &vh.csum_start, &vh.csum_offset, &end)) {
			vh.flags = VNET_F_NEEDS_CSUM;   /* see partial_csum_rule */
			tap_xmit(dp, port, frame, len, &vh);
		} else {
			tap_xmit(dp, port, frame, len, NULL);
		}
		return;
	}
	struct gro_flow *f = NULL, *free_slot = NULL;
	for (unsigned i = 0; i < GRO_FLOWS; i++) {
		struct gro_flow *g = &w->gro.flow[i];
		if (!g->active) {
			if (!free_slot)
				free_slot = g;
		} else if (g->port == port && gro_match(g, frame, &tv)) {
			f = g;
			break;
		}
	}
	if (f && !gro_fits(f, frame, &tv)) {
		gro_flush(dp, f);
		free_slot = f;
		f = NULL;
	}
	if (f) {
		gro_append(f, frame, &tv);
	} else {
		if (!free_slot) {
			/* All slots busy with other flows: make room. */
			free_slot = &w->gro.flow[0];
			gro_flush(dp, free_slot);
		}
		f = free_slot;
		gro_start(f, port, frame, &tv);
	}
	if (f->closed)
		gro_flush(dp, f);
}

/* Inner checksums left partial (partial_csum_rule).
 *
 * A Linux host whose VXLAN traffic leaves through a veth (containers, VMs
 * and CI runners on one machine) sends the inner TCP or UDP checksum as
 * its stack left it for offload: the field holds the folded pseudo-header
 * sum and nothing else, because the skb crosses the veth CHECKSUM_PARTIAL
 * and no NIC ever completes it.  The outer UDP checksum does not help us
 * tell: it is zero (noudpcsum, Linux's default for IPv4, as RFC 7348 section
 * 5 says it SHOULD be), or non-zero and computed for the completed frame
 * (udpcsum, local checksum offload), and either way the receiving kernel
 * hands the datagram to our socket without a check (a CHECKSUM_PARTIAL skb
 * is trusted on the host), while a datagram from a real wire with a
 * non-zero checksum reaches us only if the kernel verified it (RFC 7348
 * section 5: a receiver MAY verify a non-zero checksum and MUST drop the
 * packet if that fails).  A socket cannot see which of these it was.
 *
 * The rule: an inner checksum field equal to the pseudo-header sum of its
 * own IP header is taken as left partial, whatever the outer checksum, and
 * is completed: by the container's kernel (VIRTIO_NET_HDR_F_NEEDS_CSUM with
 * csum_start/csum_offset, which the TAP turns back into CHECKSUM_PARTIAL,
 * as Linux's own vxlan delivers such a frame) on a port that takes
 * virtio-net headers, else here, in place, before the write.  Everything
 * else is written as it came and the container verifies it: a segment
 * whose bytes changed after a full checksum was computed is still dropped
 * there (tests/system/test_partial_csum.py).  What this lets through is a
 * corrupted segment whose checksum field happens to equal exactly that
 * sum: one corrupted segment in 65536, the rate at which TCP's own checksum
 * already misses random damage.  Nothing is ever marked DATA_VALID that was
 * not summed here (gro_candidate). */
static void deliver(struct uvx_dp *dp, struct uvx_worker *w, int32_t port,
		    uint8_t *frame, size_t len)
{
	/* Group policy at the egress port (gbp.h), counted for it. */
	if (w->gbp_src >= 0 && !gbp_allows(dp, (uint16_t)w->gbp_src, port, port))
		return;
	if (port >= 0 && port < UVX_MAX_PORTS && dp->ports[port].vnet) {
		gro_rcv(dp, w, port, frame, len);
		return;
	}
	uint16_t start, offset;
	size_t end;
	if (csum_partial_find(frame, len, &start, &offset, &end))
		csum_complete(frame, end, start, offset);   /* bounds: found within end */
	tap_xmit(dp, port, frame, len, NULL);
}

static void flood_local(struct uvx_dp *dp, struct uvx_worker *w,
			struct uvx_vni *v, uint8_t *frame, size_t len)
{
	/* Split horizon: what came from a VTEP goes to local ports only;
	 * the sender already copied it to every other VTEP. */
	if (!v->nports) {
		drop(dp, v, -1, UVX_DROP_NO_DEST);
		return;
	}
	for (unsigned i = 0; i < v->nports; i++)
		deliver(dp, w, v->ports[i], frame, len);
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

/* A decapsulated frame from the admitted VTEP ip, switched: to a local
 * port, to all of them, or dropped (split horizon). */
/* The datagram a frame came in, for a capture at wire-in; none for a
 * frame a hook passed back. */
struct rcv_outer {
	const uint8_t *pkt;
	size_t off, len;
	const struct sockaddr_in *from;
};

static void rcv_switch(struct uvx_dp *dp, struct uvx_worker *w, struct uvx_vni *v,
		       uint8_t *frame, size_t flen, uint32_t ip, const struct rcv_outer *outer)
{
	/* The port matters only to an entry learned from this datagram (a
	 * static entry is matched by address): no walk of a flood list of
	 * thousands of VTEPs per datagram where the VNI does not learn. */
	const struct fdb_dest there = {
		-1, ip, v->learning ? vtep_port(dp, v, ip) : dp->cfg.dst_port
	};
	struct fdb_dest to;
	int verdict = fdb_switch(dp, v, frame + ETH_ALEN, &there, frame, w->now_ms, &to);
	if (verdict == FWD_DROPPED)
		return;                                      /* counted */
	if (dp->cap && outer)
		capture_wire_rx(dp, v->vni, verdict == FWD_UNICAST ? to.port : -1,
				outer->pkt, outer->off, outer->len, outer->from);
	if (verdict == FWD_FLOOD)
		flood_local(dp, w, v, frame, flen);          /* BUM or unknown */
	else if (to.port < 0)
		drop(dp, v, -1, UVX_DROP_SPLIT_HORIZON);
	else
		deliver(dp, w, to.port, frame, flen);
}

static void vxlan_rcv(struct uvx_dp *dp, struct uvx_worker *w,
		      uint8_t *pkt, size_t len,
		      const struct sockaddr_in *from)
{
	uint32_t vni = 0, gbp = 0;
	size_t off = 0;
	int reason = vxlan_parse_gbp(pkt, len, dp->cfg.accept_reserved, &vni, &off, &gbp);
	/* The VNI is checked before the inner frame, so a bad frame in an
	 * unknown VNI counts as what an operator would look for first. */
	if (reason == UVX_DROP_TRUNCATED || reason == UVX_DROP_BAD_FLAGS ||
	    reason == UVX_DROP_RESERVED) {
		drop(dp, NULL, -1, reason);
		return;
	}
	struct uvx_vni *v = vni_find(dp, vni);
	/* The GBP bits are reserved bits but where the VNI speaks GBP: the
	 * same verdict, before the VNI is looked at, as without GBP. */
	if (gbp && !dp->cfg.accept_reserved && !(v && v->gbp.on)) {
		drop(dp, NULL, -1, UVX_DROP_RESERVED);
		return;
	}
	if (!v) {
		drop(dp, NULL, -1, UVX_DROP_UNKNOWN_VNI);   /* no VNI of ours to count */
		return;
	}
	/* Only members speak (issue 10): a VNI admits the VTEPs it knows,
	 * unless it accepts anyone as Linux's vxlan does.  Checked before the
	 * inner frame, so all a stranger sends counts as one reason, and
	 * before anything is learned or delivered.  By the outer source
	 * address only: the source port is a per-flow hash (RFC 7348
	 * section 5). */
	if (!peer_admitted(v, from->sin_addr.s_addr)) {
		drop(dp, v, -1, UVX_DROP_UNKNOWN_VTEP);
		return;
	}
	if (reason != UVX_PASS) {
		drop(dp, v, -1, reason);
		return;
	}
	uint8_t *frame = pkt + off;     /* a receive slot: ours to complete */
	size_t flen = len - off;
	count(v->ctr, 0, len);
	/* The D bit (do not learn) is read by Linux and not acted on; nor
	 * here: the VNI's own learning setting decides. */
	w->gbp_src = gbp_source(&v->gbp, gbp);

	/* A Python hook's frames (punt.c): from an admitted VTEP, checked,
	 * before anything learns or switches them. */
	if (v->hooked && punt_frame(dp, w, v, -1, from->sin_addr.s_addr, UVX_HOOK_FROM_WIRE,
				    frame, flen, NULL)) {
		/* Taken at wire-in now, while its datagram is at hand (the
		 * port it goes to is known only after the hook: -1). */
		if (dp->cap)
			capture_wire_rx(dp, v->vni, -1, pkt, off, len, from);
		return;
	}
	const struct rcv_outer outer = { pkt, off, len, from };
	rcv_switch(dp, w, v, frame, flen, from->sin_addr.s_addr, &outer);
}

/* What a read's control messages say: the datagram size of a read that
 * UDP GRO joined (0: none), and the datagrams the kernel dropped for want
 * of room since the last read that said (socket_overflow). */
static size_t rx_cmsgs(struct uvx_dp *dp, struct msghdr *h)
{
	size_t size = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
		if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO &&
		    c->cmsg_len >= CMSG_LEN(sizeof(int))) {
			int v;
			memcpy(&v, CMSG_DATA(c), sizeof(v));
			size = v > 0 ? (size_t)v : 0;
		} else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL &&
			   c->cmsg_len >= CMSG_LEN(sizeof(uint32_t))) {
			uint32_t total;
			memcpy(&total, CMSG_DATA(c), sizeof(total));
			uint32_t lost = total - dp->rx_ovfl;   /* wraps as the kernel's */
			dp->rx_ovfl = total;
			if (lost)
				drop_n(dp, UVX_DROP_SOCKET_OVERFLOW, lost);
		}
	}
	return size;
}

static int udp_rx_locked(struct uvx_dp *dp);

int uvx_udp_rx(struct uvx_dp *dp)
{
	uvx_wid = W_RX;
	pthread_rwlock_rdlock(&dp->cfg_lock);
	int r = udp_rx_locked(dp);
	pthread_rwlock_unlock(&dp->cfg_lock);
	return r;
}

/* Is this datagram a full-sized TCP segment in the middle of a burst
 * (no PSH, FIN, SYN or RST)?  Then the rest of the burst is on its way,
 * and joining it with this one saves the container a write per segment.
 * A cheap look, not a check: vxlan_rcv checks everything later. */
static int mid_burst(const uint8_t *pkt, size_t len)
{
	const size_t eth = VXLAN_HLEN + ETH_HLEN;
	if (len < eth + 40 || pkt[eth - 2] != 0x08 || pkt[eth - 1] != 0x00 ||
	    pkt[eth] != 0x45 || pkt[eth + 9] != 6)
		return 0;
	size_t doff = (size_t)(pkt[eth + 32] >> 4) * 4;
	uint8_t flags = pkt[eth + 33];
	return len > eth + 20 + doff &&
	       !(flags & (TCP_F_PSH | TCP_F_FIN | TCP_F_SYN | TCP_F_RST));
}

static int udp_rx_locked(struct uvx_dp *dp)
{
	struct uvx_worker *w = &dp->w[W_RX];
	if (dp->udp_fd < 0)
		return -EBADF;

	for (unsigned i = 0; i < dp->cfg.batch; i++) {
		struct msghdr *h = &w->rmsg[i].msg_hdr;
		h->msg_namelen = sizeof(w->rsrc[i]);
		h->msg_controllen = sizeof(w->rctl[i]);
	}
	int n = recvmmsg(dp->udp_fd, w->rmsg, dp->cfg.batch, MSG_DONTWAIT, NULL);
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -errno;
	/* Without UDP GRO a burst arrives a datagram at a time, and a batch
	 * cut short would end every joined super-frame after a segment or
	 * two.  Mid-burst, linger a few microseconds for the rest; a lone
	 * packet (a ping, an ACK, a burst's last segment) never waits. */
	if (dp->cfg.rx_linger_us && !dp->gro) {
		uint64_t until = 0;
		while ((unsigned)n < dp->cfg.batch &&
		       mid_burst(slot_frame(w, (unsigned)n - 1), w->rmsg[n - 1].msg_len)) {
			int m = recvmmsg(dp->udp_fd, &w->rmsg[n], dp->cfg.batch - (unsigned)n,
					 MSG_DONTWAIT, NULL);
			if (m > 0) {
				n += m;
				until = 0;
				continue;
			}
			uint64_t t = mono_ns() / 1000u;
			if (!until)
				until = t + dp->cfg.rx_linger_us;
			else if (t >= until)
				break;
		}
	}

	w->now_ms = mono_ms();
	for (int i = 0; i < n; i++) {
		struct msghdr *h = &w->rmsg[i].msg_hdr;
		size_t len = w->rmsg[i].msg_len;
		/* The slot holds one byte more than the largest datagram, so
		 * a read that fills it was cut short. */
		size_t gro = rx_cmsgs(dp, h);
		if ((h->msg_flags & MSG_TRUNC) || len > UVX_FRAME_MAX) {
			drop(dp, NULL, -1, UVX_DROP_TOO_BIG);   /* unread: no VNI */
			continue;
		}
		uint8_t *buf = slot_frame(w, (unsigned)i);
		size_t step = dp->gro ? gro : 0;
		if (!step || step > len)
			step = len;
		/* UDP GRO: equal-sized datagrams back to back, the last
		 * perhaps shorter; each is one VXLAN packet.  An empty
		 * datagram is parsed (and dropped as truncated) once. */
		size_t at = 0;
		do {
			size_t dlen = len - at < step ? len - at : step;
			vxlan_rcv(dp, w, buf + at, dlen, &w->rsrc[i]);
			at += dlen;
		} while (at < len);
	}
	gro_flush_port(dp, w, -1);
	punt_notify(dp, w);
	return n;
}

/* The receive path on datagrams already in memory, as if one recvmmsg had
 * read them from the senders in from[]: vxlan_rcv on each, then the flush
 * at the end of the batch.  For the fuzz harness (csrc/fuzz/fuzz_rcv.c),
 * which cannot choose the source of a real datagram.  The buffers are
 * written (checksums completed in place) and must stay until it returns. */
void uvx_rcv_datagrams(struct uvx_dp *dp, uint8_t *const *pkt, const size_t *len,
		       const struct sockaddr_in *from, unsigned n)
{
	struct uvx_worker *w = &dp->w[W_RX];
	uvx_wid = W_RX;
	pthread_rwlock_rdlock(&dp->cfg_lock);
	w->now_ms = mono_ms();
	for (unsigned i = 0; i < n; i++)
		vxlan_rcv(dp, w, pkt[i], len[i], &from[i]);
	gro_flush_port(dp, w, -1);
	punt_notify(dp, w);
	pthread_rwlock_unlock(&dp->cfg_lock);
}

/* Frames back from a Python hook for this side (punt.h): passed ones go
 * on from the punt point, their VNI, sender and frame checked again (the
 * VNI or the VTEP may have gone, a hook may have rewritten the frame);
 * injected ones are written to their port.  Joined super-frames point
 * into the slots, so they are written before the slots go back. */
void rcv_hook_run(struct uvx_dp *dp)
{
	struct uvx_worker *w = &dp->w[W_RX];
	struct punt_job jobs[UVX_BATCH_MAX];
	uvx_wid = W_RX;
	pthread_rwlock_rdlock(&dp->cfg_lock);
	w->now_ms = mono_ms();
	unsigned n;
	while ((n = punt_pop(dp, W_RX, jobs, UVX_BATCH_MAX)) > 0) {
		for (unsigned k = 0; k < n; k++) {
			struct punt_meta *m = jobs[k].m;
			uint8_t *frame = jobs[k].frame;
			if (m->injected) {
				if (m->port < 0 || m->port >= UVX_MAX_PORTS ||
				    !dp->ports[m->port].used || dp->ports[m->port].vni != m->vni)
					drop(dp, NULL, -1, UVX_DROP_NO_PORT);
				else {
					/* A frame the hook made has no group: 0. */
					w->gbp_src = gbp_source(&dp->ports[m->port].v->gbp, 0);
					deliver(dp, w, m->port, frame, m->len);
				}
				continue;
			}
			struct uvx_vni *v = vni_find(dp, m->vni);
			int reason = UVX_PASS;
			if (!v)
				reason = UVX_DROP_UNKNOWN_VNI;
			else if (m->verdict == UVX_HOOK_DROP)
				reason = UVX_DROP_HOOK_DROP;
			else if (!peer_admitted(v, m->remote_ip))
				reason = UVX_DROP_UNKNOWN_VTEP;
			else
				reason = vxlan_check_inner(frame, m->len);
			if (reason != UVX_PASS)
				drop(dp, v, -1, reason);
			else {
				/* Judged by group policy as it came. */
				w->gbp_src = m->gbp_src;
				rcv_switch(dp, w, v, frame, m->len, m->remote_ip, NULL);
			}
		}
		gro_flush_port(dp, w, -1);
		punt_recycle(dp, W_RX, jobs, n);
	}
	pthread_rwlock_unlock(&dp->cfg_lock);
}
