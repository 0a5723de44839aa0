/* Live capture, the pure parts (capring.h): the ring, the filter, the
 * outer headers.  Nothing here locks or knows the datapath. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "capring.h"
#include "csum.h"
#include "uvx.h"

int capring_init(struct capring *r, uint32_t nslots, uint32_t snaplen)
{
	memset(r, 0, sizeof(*r));
	if (nslots == 0 || snaplen == 0)
		return -EINVAL;
	r->nslots = nslots;
	r->snaplen = snaplen;
	r->stride = (sizeof(struct capring_slot) + snaplen + 7) & ~(size_t)7;
	r->mem = malloc(r->stride * nslots);
	return r->mem ? 0 : -ENOMEM;
}

void capring_free(struct capring *r)
{
	free(r->mem);
	r->mem = NULL;
}

static struct capring_slot *slot_at(const struct capring *r, uint64_t i)
{
	return (struct capring_slot *)(r->mem + (size_t)(i % r->nslots) * r->stride);
}

static void bump_relaxed(uint64_t *c)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

int capring_put(struct capring *r, uint64_t ts_ns, unsigned point, uint32_t vni,
		int32_t port, const uint8_t *outer, size_t outer_len,
		const struct iovec *iov, int niov)
{
	uint64_t head = r->head;     /* ours alone */
	/* Acquire: the consumer's reads of the slot it freed are done. */
	if (head - __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE) >= r->nslots) {
		bump_relaxed(&r->missed);
		return 0;
	}
	struct capring_slot *s = slot_at(r, head);
	uint8_t *data = (uint8_t *)(s + 1);
	size_t kept = 0, total = outer_len;
	size_t n = outer_len < r->snaplen ? outer_len : r->snaplen;
	if (n)
		memcpy(data, outer, n);
	kept = n;
	for (int i = 0; i < niov; i++) {
		size_t len = iov[i].iov_len;
		total += len;
		n = r->snaplen - kept < len ? r->snaplen - kept : len;
		if (n)
			memcpy(data + kept, iov[i].iov_base, n);
		kept += n;
	}
	s->ts_ns = ts_ns;
	s->point = point;
	s->vni = vni;
	s->port = port;
	s->caplen = (uint32_t)kept;
	s->origlen = total > UINT32_MAX ? UINT32_MAX : (uint32_t)total;
	/* Release: the slot's bytes before the consumer sees the new head. */
	__atomic_store_n(&r->head, head + 1, __ATOMIC_RELEASE);
	bump_relaxed(&r->captured);
	return 1;
}

int capring_peek(struct capring *r, uint64_t *ts_ns)
{
	uint64_t tail = r->tail;     /* ours alone */
	if (tail == __atomic_load_n(&r->head, __ATOMIC_ACQUIRE))
		return 0;
	*ts_ns = slot_at(r, tail)->ts_ns;
	return 1;
}

size_t capring_take(struct capring *r, uint8_t *out, size_t cap)
{
	uint64_t tail = r->tail;
	if (tail == __atomic_load_n(&r->head, __ATOMIC_ACQUIRE))
		return 0;
	const struct capring_slot *s = slot_at(r, tail);
	size_t size = CAPRING_REC_HLEN + s->caplen;
	if (size > cap)
		return 0;
	uint32_t rec[7] = {
		(uint32_t)(s->ts_ns / 1000000000u), (uint32_t)(s->ts_ns % 1000000000u),
		s->caplen, s->origlen, s->point, s->vni, (uint32_t)s->port,
	};
	memcpy(out, rec, sizeof(rec));
	memcpy(out + CAPRING_REC_HLEN, s + 1, s->caplen);
	/* Release: done with the slot before the producer may reuse it. */
	__atomic_store_n(&r->tail, tail + 1, __ATOMIC_RELEASE);
	return size;
}

uint64_t capring_captured(const struct capring *r)
{
	return __atomic_load_n(&r->captured, __ATOMIC_RELAXED);
}

uint64_t capring_missed(const struct capring *r)
{
	return __atomic_load_n(&r->missed, __ATOMIC_RELAXED);
}

size_t capture_head(uint8_t *head, const struct iovec *iov, int niov)
{
	size_t got = 0;
	for (int i = 0; i < niov && got < CAPTURE_HEAD; i++) {
		size_t n = CAPTURE_HEAD - got < iov[i].iov_len ? CAPTURE_HEAD - got
			: iov[i].iov_len;
		if (n)
			memcpy(head + got, iov[i].iov_base, n);
		got += n;
	}
	return got;
}

/* IEEE 802.1Q and 802.1ad tags: the EtherType filter looks behind one. */
#define ETH_P_8021AD 0x88A8

int capture_match(const struct uvx_capture_filter *f, unsigned point, uint32_t vni,
		  int32_t port, const uint8_t *head, size_t headlen)
{
	if (!(f->points & point))
		return 0;
	if ((f->match & UVX_CAP_F_VNI) && vni != f->vni)
		return 0;
	if ((f->match & UVX_CAP_F_PORT) && port != f->port)
		return 0;
	if (f->match & UVX_CAP_F_MAC) {
		if (headlen < 2 * ETH_ALEN)
			return 0;
		if (memcmp(head, f->mac, ETH_ALEN) && memcmp(head + ETH_ALEN, f->mac, ETH_ALEN))
			return 0;
	}
	if (f->match & UVX_CAP_F_ETHERTYPE) {
		if (headlen < ETH_HLEN)
			return 0;
		uint16_t type = rd16(head + 12);
		if (type != f->ethertype) {
			if (type != ETH_P_8021Q && type != ETH_P_8021AD)
				return 0;
			if (headlen < ETH_HLEN + 4 || rd16(head + 16) != f->ethertype)
				return 0;
		}
	}
	return 1;
}

void capture_outer(uint8_t *out, uint32_t saddr, uint32_t daddr, uint16_t sport,
		   uint16_t dport, const uint8_t *vxh, size_t inner_len)
{
	size_t udp_len = UDP_HLEN + VXLAN_HLEN + inner_len;
	size_t ip_len = IPV4_HLEN + udp_len;
	uint8_t *ip = out + ETH_HLEN, *udp = ip + IPV4_HLEN;
	memset(out, 0, CAPTURE_OUTER_LEN - VXLAN_HLEN);
	wr16(out + 12, ETH_P_IPV4);
	ip[0] = 0x45;                                  /* version 4, 20 bytes */
	wr16(ip + 2, ip_len > 0xffff ? 0xffff : (uint16_t)ip_len);
	wr16(ip + 6, 0x4000);                          /* DF: never fragmented */
	ip[8] = 64;
	ip[9] = PROTO_UDP;
	memcpy(ip + 12, &saddr, 4);
	memcpy(ip + 16, &daddr, 4);
	csum_store(ip + 10, csum_final(csum_add(ip, IPV4_HLEN, 0)));
	memcpy(udp, &sport, 2);
	memcpy(udp + 2, &dport, 2);
	wr16(udp + 4, udp_len > 0xffff ? 0xffff : (uint16_t)udp_len);
	memcpy(udp + UDP_HLEN, vxh, VXLAN_HLEN);
}
