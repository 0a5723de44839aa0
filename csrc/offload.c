/* Segmentation, coalescing and checksum completion.  See offload.h. */
#include <string.h>

#include "bytes.h"
#include "csum.h"
#include "offload.h"
#include "vxlan.h"


/* The TCP pseudo-header sum (RFC 793 / RFC 8200 section 8.1) for the IP
 * header at ip and tcplen bytes of TCP header and payload. */
static uint64_t tcp_pseudo(const uint8_t *ip, int v6, size_t tcplen)
{
	return v6 ? csum_pseudo6(ip + 8, ip + 24, PROTO_TCP, (uint32_t)tcplen)
		  : csum_pseudo4(ip + 12, ip + 16, PROTO_TCP, (uint32_t)tcplen);
}

int csum_complete(uint8_t *frame, size_t len, uint16_t start, uint16_t offset)
{
	/* Within the frame, and never over the Ethernet header: the MACs
	 * were checked before this runs (vxlan_check_inner), and a sum
	 * stored there would send a source MAC nobody checked. */
	if (start < ETH_HLEN || (size_t)start + offset + 2 > len)
		return UVX_DROP_BAD_GSO;
	uint64_t sum = csum_add(frame + start, len - start, 0);
	/* A sum that comes out 0 is stored as 0xffff, its equal in ones'
	 * complement: for UDP, 0 would mean no checksum at all (RFC 768),
	 * and IPv6 forbids it (RFC 8200 section 8.1).  Linux does the same
	 * (CSUM_MANGLED_0). */
	uint16_t c = csum_final(sum);
	csum_store(frame + start + offset, c ? c : 0xffff);
	return UVX_PASS;
}

int csum_partial_find(const uint8_t *f, size_t len, uint16_t *start,
		      uint16_t *offset, size_t *end)
{
	if (len < ETH_HLEN + 20)
		return 0;
	uint16_t proto = rd16(f + 12);
	const uint8_t *ip = f + ETH_HLEN;
	size_t l4off, l4len;
	uint8_t l4proto;
	uint64_t ph;
	if (proto == ETH_P_IPV4) {
		size_t ihl = (size_t)(ip[0] & 0x0f) * 4;
		size_t iplen = rd16(ip + 2);
		if ((ip[0] >> 4) != 4 || ihl < 20 || (rd16(ip + 6) & 0x3fff) ||
		    iplen > len - ETH_HLEN || iplen < ihl)
			return 0;
		l4proto = ip[9];
		l4off = ETH_HLEN + ihl;
		l4len = iplen - ihl;
		ph = csum_pseudo4(ip + 12, ip + 16, l4proto, (uint32_t)l4len);
	} else if (proto == ETH_P_IPV6) {
		if (len < ETH_HLEN + 40 || (ip[0] >> 4) != 6)
			return 0;
		l4proto = ip[6];
		l4off = ETH_HLEN + 40;
		l4len = rd16(ip + 4);
		if (l4len > len - l4off)
			return 0;
		ph = csum_pseudo6(ip + 8, ip + 24, l4proto, (uint32_t)l4len);
	} else {
		return 0;
	}
	uint16_t coff;
	if (l4proto == PROTO_TCP && l4len >= 20)
		coff = 16;
	else if (l4proto == PROTO_UDP && l4len >= 8)
		coff = 6;
	else
		return 0;
	uint16_t field;
	memcpy(&field, f + l4off + coff, 2);   /* machine order, as the sum */
	if (field != csum_fold16(ph))
		return 0;
	*start = (uint16_t)l4off;
	*offset = coff;
	*end = l4off + l4len;
	return 1;
}

static void ipv4_set_csum(uint8_t *ip, size_t ihl)
{
	ip[10] = ip[11] = 0;
	csum_store(ip + 10, csum_final(csum_add(ip, ihl, 0)));
}

/* --- Segmentation (transmit) -------------------------------------------- */

int tso_parse(const uint8_t *f, size_t len, const struct vnet_hdr *vh,
	      struct tso_info *ti)
{
	size_t off = ETH_HLEN;
	if (len < ETH_HLEN)
		return UVX_DROP_BAD_GSO;
	uint16_t proto = rd16(f + 12);
	if (proto == ETH_P_8021Q) {
		if (len < off + 4)
			return UVX_DROP_BAD_GSO;
		proto = rd16(f + off + 2);
		off += 4;
	}
	int gso = vh->gso_type & ~VNET_GSO_ECN;
	memset(ti, 0, sizeof(*ti));
	ti->l3off = off;
	if (gso == VNET_GSO_TCPV4 && proto == ETH_P_IPV4) {
		if (len < off + 20)
			return UVX_DROP_BAD_GSO;
		size_t ihl = (size_t)(f[off] & 0x0f) * 4;
		if ((f[off] >> 4) != 4 || ihl < 20 || f[off + 9] != PROTO_TCP)
			return UVX_DROP_BAD_GSO;
		ti->l4off = off + ihl;
	} else if (gso == VNET_GSO_TCPV6 && proto == ETH_P_IPV6) {
		/* Extension headers are not walked: the stack does not put
		 * them on TSO frames it builds for a plain TCP socket. */
		if (len < off + 40 || f[off + 6] != PROTO_TCP)
			return UVX_DROP_BAD_GSO;
		ti->l4off = off + 40;
		ti->v6 = 1;
	} else {
		return UVX_DROP_BAD_GSO;
	}
	if (len < ti->l4off + 20)
		return UVX_DROP_BAD_GSO;
	size_t doff = (size_t)(f[ti->l4off + 12] >> 4) * 4;
	ti->hdrlen = ti->l4off + doff;
	/* No MSS under Linux's floor for TCP (tcp_min_snd_mss, 48, since
	 * CVE-2019-11479): no stack cuts finer, and one 64 KB frame cut
	 * every byte would be 65,000 datagrams to every VTEP it floods to. */
	if (doff < 20 || ti->hdrlen > SEG_HDR_MAX || ti->hdrlen > len ||
	    vh->gso_size < TSO_MSS_MIN)
		return UVX_DROP_BAD_GSO;
	/* A port that takes virtio-net headers gets the super-frame as it
	 * is, so its header must be one Linux takes from a TAP: hdr_len
	 * within the frame (tun_get_user), a checksum to complete within it
	 * (virtio_net_hdr_to_skb, skb_partial_csum_set). */
	if (vh->hdr_len > len || ((vh->flags & VNET_F_NEEDS_CSUM) &&
	    (size_t)vh->csum_start + vh->csum_offset + 2 > len))
		return UVX_DROP_BAD_GSO;
	ti->mss = vh->gso_size;
	ti->payload = len - ti->hdrlen;
	ti->nseg = (unsigned)((ti->payload + ti->mss - 1) / ti->mss);
	if (ti->nseg == 0)
		ti->nseg = 1;
	return UVX_PASS;
}

void tso_segment(const uint8_t *f, const struct tso_info *ti,
		 unsigned first, unsigned n, struct seg *out)
{
	uint32_t seq0 = rd32(f + ti->l4off + 4);
	uint16_t id0 = ti->v6 ? 0 : rd16(f + ti->l3off + 4);
	uint8_t flags0 = f[ti->l4off + 13];

	for (unsigned k = 0; k < n; k++) {
		unsigned i = first + k;
		struct seg *s = &out[k];
		size_t at = (size_t)i * ti->mss;
		size_t plen = ti->payload - at < ti->mss ? ti->payload - at : ti->mss;
		uint8_t *h = s->hdr;

		memcpy(h, f, ti->hdrlen);
		s->hdrlen = ti->hdrlen;
		s->payload = f + ti->hdrlen + at;
		s->plen = plen;

		uint8_t *ip = h + ti->l3off;
		uint8_t *th = h + ti->l4off;
		size_t tcplen = ti->hdrlen - ti->l4off + plen;
		if (ti->v6) {
			wr16(ip + 4, (uint16_t)(tcplen));
		} else {
			size_t ihl = ti->l4off - ti->l3off;
			wr16(ip + 2, (uint16_t)(ihl + tcplen));
			/* Consecutive IDs, as the kernel's TSO does. */
			wr16(ip + 4, (uint16_t)(id0 + i));
			ipv4_set_csum(ip, ihl);
		}
		wr32(th + 4, seq0 + (uint32_t)at);
		uint8_t fl = flags0;
		if (i + 1 < ti->nseg)
			fl &= (uint8_t)~(TCP_F_FIN | TCP_F_PSH);
		if (i > 0)
			fl &= (uint8_t)~TCP_F_CWR;
		th[13] = fl;

		th[16] = th[17] = 0;
		uint64_t sum = tcp_pseudo(ip, ti->v6, tcplen);
		sum = csum_add(th, ti->hdrlen - ti->l4off, sum);
		sum = csum_add(s->payload, plen, sum);
		csum_store(th + 16, csum_final(sum));
	}
}

/* --- Coalescing (receive) ------------------------------------------------ */

int gro_candidate(const uint8_t *f, size_t len, struct tcp_view *v)
{
	if (len < ETH_HLEN + 40)
		return 0;
	uint16_t proto = rd16(f + 12);
	const uint8_t *ip = f + ETH_HLEN;
	size_t iplen;
	memset(v, 0, sizeof(*v));
	v->l3off = ETH_HLEN;
	if (proto == ETH_P_IPV4) {
		/* No options, no fragments: what TSO produced on the far side. */
		if (ip[0] != 0x45 || ip[9] != PROTO_TCP || (rd16(ip + 6) & 0x3fff))
			return 0;
		iplen = rd16(ip + 2);
		v->l4off = ETH_HLEN + 20;
	} else if (proto == ETH_P_IPV6) {
		if ((ip[0] >> 4) != 6 || ip[6] != PROTO_TCP || len < ETH_HLEN + 60)
			return 0;
		iplen = 40 + (size_t)rd16(ip + 4);
		v->l4off = ETH_HLEN + 40;
		v->v6 = 1;
	} else {
		return 0;
	}
	/* Ethernet may pad short frames; the IP length is what counts. */
	if (iplen > len - ETH_HLEN || iplen < v->l4off - ETH_HLEN + 20)
		return 0;
	const uint8_t *th = f + v->l4off;
	size_t doff = (size_t)(th[12] >> 4) * 4;
	v->hdrlen = v->l4off + doff;
	if (doff < 20 || v->hdrlen > SEG_HDR_MAX || v->hdrlen > ETH_HLEN + iplen)
		return 0;
	v->plen = ETH_HLEN + iplen - v->hdrlen;
	v->flags = th[13];
	if (v->plen == 0 || (v->flags & ~(TCP_F_ACK | TCP_F_PSH)) ||
	    !(v->flags & TCP_F_ACK))
		return 0;
	v->seq = rd32(th + 4);
	v->ack = rd32(th + 8);

	size_t tcplen = ETH_HLEN + iplen - v->l4off;
	uint64_t ph = tcp_pseudo(ip, v->v6, tcplen);
	if (csum_fold16(csum_add(th, tcplen, ph)) == 0xffff)
		return 1;
	/* Left partial: the field holds the pseudo-header sum alone. */
	uint16_t field;
	memcpy(&field, th + 16, 2);
	v->partial = field == csum_fold16(ph);
	return v->partial;
}

int gro_match(const struct gro_flow *f, const uint8_t *frame, const struct tcp_view *v)
{
	if (f->v6 != v->v6 || f->hdrlen != v->hdrlen)
		return 0;
	const uint8_t *a = f->hdr + f->l3off, *b = frame + v->l3off;
	int same_addrs = v->v6 ? !memcmp(a + 8, b + 8, 32) : !memcmp(a + 12, b + 12, 8);
	return same_addrs && !memcmp(f->hdr + f->l4off, frame + v->l4off, 4) &&
	       !memcmp(f->hdr, frame, ETH_HLEN);
}

int gro_fits(const struct gro_flow *f, const uint8_t *frame, const struct tcp_view *v)
{
	const uint8_t *a = f->hdr, *b = frame;
	if (f->closed || f->nseg >= GRO_SEGS || v->seq != f->next_seq ||
	    v->plen > f->mss || f->total + v->plen > 65535 - f->hdrlen)
		return 0;
	/* Same ACK, window and options (timestamps included), as Linux's
	 * tcp_gro_receive requires. */
	if (memcmp(a + f->l4off + 8, b + v->l4off + 8, 4) ||
	    memcmp(a + f->l4off + 14, b + v->l4off + 14, 2) ||
	    memcmp(a + f->l4off + 20, b + v->l4off + 20, f->hdrlen - f->l4off - 20))
		return 0;
	/* Same TOS/TTL/DF (IPv4) or traffic class/flow/hop limit (IPv6). */
	if (v->v6)
		return !memcmp(a + f->l3off, b + v->l3off, 4) &&
		       a[f->l3off + 7] == b[v->l3off + 7];
	return a[f->l3off + 1] == b[v->l3off + 1] && a[f->l3off + 8] == b[v->l3off + 8] &&
	       (a[f->l3off + 6] & 0x40) == (b[v->l3off + 6] & 0x40);
}

static void gro_add_payload(struct gro_flow *f, const uint8_t *frame,
			    const struct tcp_view *v)
{
	f->iov[2 + f->nseg].iov_base = (void *)(frame + v->hdrlen);
	f->iov[2 + f->nseg].iov_len = v->plen;
	f->nseg++;
	f->total += v->plen;
	f->next_seq = v->seq + (uint32_t)v->plen;
	if (v->flags & TCP_F_PSH) {
		f->hdr[f->l4off + 13] |= TCP_F_PSH;
		f->closed = 1;
	}
	/* A short segment is the last of its burst. */
	if (v->plen < f->mss)
		f->closed = 1;
}

void gro_start(struct gro_flow *f, int32_t port, const uint8_t *frame,
	       const struct tcp_view *v)
{
	f->active = 1;
	f->port = port;
	f->v6 = v->v6;
	f->hdrlen = v->hdrlen;
	f->l3off = v->l3off;
	f->l4off = v->l4off;
	memcpy(f->hdr, frame, v->hdrlen);
	f->mss = (uint16_t)v->plen;
	f->total = 0;
	f->nseg = 0;
	f->closed = 0;
	f->partial = v->partial;
	gro_add_payload(f, frame, v);
}

void gro_append(struct gro_flow *f, const uint8_t *frame, const struct tcp_view *v)
{
	gro_add_payload(f, frame, v);
}

int gro_finish(struct gro_flow *f)
{
	uint8_t *ip = f->hdr + f->l3off;
	uint8_t *th = f->hdr + f->l4off;
	size_t tcplen = f->hdrlen - f->l4off + f->total;

	memset(&f->vh, 0, sizeof(f->vh));
	if (f->nseg == 1 && f->partial) {
		/* Alone and left partial: the field holds the pseudo-header
		 * sum already; the receiver completes it. */
		f->vh.flags = VNET_F_NEEDS_CSUM;
		f->vh.csum_start = (uint16_t)f->l4off;
		f->vh.csum_offset = 16;
	} else if (f->nseg == 1) {
		/* Alone, it goes as it came: its checksum was verified. */
		f->vh.flags = VNET_F_DATA_VALID;
	} else {
		if (f->v6) {
			wr16(ip + 4, (uint16_t)tcplen);
		} else {
			wr16(ip + 2, (uint16_t)(f->l4off - f->l3off + tcplen));
			ipv4_set_csum(ip, f->l4off - f->l3off);
		}
		/* CHECKSUM_PARTIAL: the field holds the pseudo-header sum and
		 * the receiver (the kernel, via the TAP) completes it. */
		uint64_t ph = tcp_pseudo(ip, f->v6, tcplen);
		csum_store(th + 16, csum_fold16(ph));
		f->vh.flags = VNET_F_NEEDS_CSUM;
		f->vh.gso_type = f->v6 ? VNET_GSO_TCPV6 : VNET_GSO_TCPV4;
		f->vh.hdr_len = (uint16_t)f->hdrlen;
		f->vh.gso_size = f->mss;
		f->vh.csum_start = (uint16_t)f->l4off;
		f->vh.csum_offset = 16;
	}
	f->iov[0].iov_base = &f->vh;
	f->iov[0].iov_len = VNET_HLEN;
	f->iov[1].iov_base = f->hdr;
	f->iov[1].iov_len = f->hdrlen;
	return (int)(2 + f->nseg);
}
