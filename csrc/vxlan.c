/* VXLAN codec: parse, build, flow hash, checksum.  See vxlan.h. */
#include <string.h>

#include "bytes.h"
#include "csum.h"
#include "vxlan.h"

int vxlan_parse(const uint8_t *pkt, size_t len, int accept_reserved,
		uint32_t *vni, size_t *inner_off)
{
	uint32_t gbp = 0;
	int r = vxlan_parse_gbp(pkt, len, accept_reserved, vni, inner_off, &gbp);
	/* Without a GBP network to read them, the GBP bits are reserved. */
	if (gbp && !accept_reserved && r != UVX_DROP_TRUNCATED && r != UVX_DROP_BAD_FLAGS)
		return UVX_DROP_RESERVED;
	return r;
}

int vxlan_parse_gbp(const uint8_t *pkt, size_t len, int accept_reserved,
		    uint32_t *vni, size_t *inner_off, uint32_t *gbp)
{
	*gbp = 0;
	if (len < VXLAN_HLEN)
		return UVX_DROP_TRUNCATED;

	const struct vxlanhdr *vh = (const struct vxlanhdr *)pkt;

	/* RFC 7348 section 5: "The I flag MUST be set to 1 for a valid VXLAN
	 * Network ID (VNI)." */
	if (!(vh->flags & VXLAN_HF_I))
		return UVX_DROP_BAD_FLAGS;

	/* The RFC says reserved bits "MUST be ignored on receipt".  We drop by
	 * default, as Linux does: extensions (GBP, GPE, RCO) put meaning in
	 * those bits, and reading such a packet as plain VXLAN would hand the
	 * container a frame it was never meant to see.  accept_reserved
	 * follows the RFC's letter instead.  The GBP bits go to the caller,
	 * who knows whether the VNI reads them (vxlan_parse: it does not). */
	uint32_t word = rd32(pkt);
	uint32_t reserved = word & ~(VXLAN_GBP_USED | ((uint32_t)VXLAN_HF_I << 24));
	if (!accept_reserved && (reserved || vh->reserved2))
		return UVX_DROP_RESERVED;
	*gbp = word & VXLAN_GBP_USED;

	*vni = ((uint32_t)vh->vni[0] << 16) | ((uint32_t)vh->vni[1] << 8) |
	       vh->vni[2];
	*inner_off = VXLAN_HLEN;
	return vxlan_check_inner(pkt + VXLAN_HLEN, len - VXLAN_HLEN);
}

void vxlan_gbp_put(uint8_t *vxh, uint16_t group)
{
	/* draft-smith-vxlan-group-policy section 2.1: G set, the ID in the
	 * low 16 bits of the first word; D and A clear (we learn, and apply
	 * policy at the receiving end). */
	if (!group)
		return;
	vxh[0] |= (uint8_t)(VXLAN_GBP_G >> 24);
	wr16(vxh + 2, group);
}

int vxlan_check_inner(const uint8_t *frame, size_t len)
{
	if (len < ETH_HLEN)
		return UVX_DROP_BAD_INNER;
	const uint8_t *src = frame + ETH_ALEN;
	/* A multicast source is never valid (IEEE 802.3), and an all-zero one
	 * would poison the FDB: both are what Linux's is_valid_ether_addr
	 * rejects. */
	if (src[0] & 1)
		return UVX_DROP_BAD_INNER;
	if (!(src[0] | src[1] | src[2] | src[3] | src[4] | src[5]))
		return UVX_DROP_BAD_INNER;
	return UVX_PASS;
}

void vxlan_build_hdr(uint8_t *out, uint32_t vni)
{
	/* Reserved fields MUST be zero on transmission (RFC 7348 section 5). */
	memset(out, 0, VXLAN_HLEN);
	out[0] = VXLAN_HF_I;
	out[4] = (uint8_t)(vni >> 16);
	out[5] = (uint8_t)(vni >> 8);
	out[6] = (uint8_t)vni;
}

#define FNV_OFFSET 2166136261u
#define FNV_PRIME  16777619u

static inline uint32_t fnv1a(uint32_t h, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= FNV_PRIME;
	}
	return h;
}


static int proto_has_ports(uint8_t proto)
{
	return proto == PROTO_TCP || proto == PROTO_UDP ||
	       proto == PROTO_SCTP;
}

uint32_t vxlan_flow_hash(const uint8_t *frame, size_t len)
{
	if (len < ETH_HLEN)
		return fnv1a(FNV_OFFSET, frame, len);

	/* MACs and ethertype: always there. */
	uint32_t h = fnv1a(FNV_OFFSET, frame, ETH_HLEN);
	size_t off = ETH_HLEN;
	uint16_t proto = rd16(frame + 12);

	/* One 802.1Q tag is looked through, so tagged flows spread too. */
	if (proto == ETH_P_8021Q && len >= off + 4) {
		proto = rd16(frame + off + 2);
		off += 4;
	}

	if (proto == ETH_P_IPV4 && len >= off + 20) {
		const uint8_t *ip = frame + off;
		size_t ihl = (size_t)(ip[0] & 0x0f) * 4;
		if ((ip[0] >> 4) != 4 || ihl < 20 || len < off + ihl)
			return h;
		h = fnv1a(h, ip + 12, 8);   /* saddr, daddr */
		h = fnv1a(h, ip + 9, 1);    /* protocol */
		/* Only the first fragment carries ports; hashing them on one
		 * fragment but not the next would reorder the packet. */
		int fragmented = (rd16(ip + 6) & 0x3fff) != 0;
		if (!fragmented && proto_has_ports(ip[9]) &&
		    len >= off + ihl + 4)
			h = fnv1a(h, ip + ihl, 4);
	} else if (proto == ETH_P_IPV6 && len >= off + 40) {
		const uint8_t *ip = frame + off;
		h = fnv1a(h, ip + 8, 32);   /* saddr, daddr */
		h = fnv1a(h, ip + 6, 1);    /* next header */
		/* Extension headers are not walked: such flows hash on
		 * addresses alone, which keeps them in order. */
		if (proto_has_ports(ip[6]) && len >= off + 40 + 4)
			h = fnv1a(h, ip + 40, 4);
	}
	return h;
}

uint16_t vxlan_src_port(uint32_t hash, uint16_t min, uint16_t max)
{
	uint32_t range = (uint32_t)max - min + 1;
	return (uint16_t)(min + (uint32_t)(((uint64_t)hash * range) >> 32));
}

void vxlan_fill_encap(uint8_t hdr[VXLAN_ENCAP_LEN], uint32_t vni, size_t inner_len,
		      uint16_t sport, uint16_t dport)
{
	wr16(hdr + 0, sport);
	wr16(hdr + 2, dport);
	wr16(hdr + 4, (uint16_t)(VXLAN_ENCAP_LEN + inner_len));
	wr16(hdr + 6, 0);
	vxlan_build_hdr(hdr + UDP_HLEN, vni);
}

void vxlan_fill_csum(uint8_t hdr[VXLAN_ENCAP_LEN], const uint8_t *a, size_t la,
		     const uint8_t *b, size_t lb, uint32_t saddr, uint32_t daddr)
{
	/* RFC 7348 section 5: the UDP checksum "SHOULD be transmitted as
	 * zero" over IPv4; if it is not zero it "MUST be correctly
	 * calculated across the entire packet". */
	uint16_t ulen = (uint16_t)(VXLAN_ENCAP_LEN + la + lb);
	hdr[6] = hdr[7] = 0;
	uint64_t sum = csum_pseudo4((const uint8_t *)&saddr, (const uint8_t *)&daddr,
				    PROTO_UDP, ulen);
	/* hdr is 16 bytes, an even length, so what follows keeps its
	 * 16-bit alignment in the sum. */
	sum = csum_add(hdr, VXLAN_ENCAP_LEN, sum);
	sum = csum_add(a, la, sum);
	sum = csum_add(b, lb, sum);
	uint16_t c = csum_final(sum);
	/* Zero means "no checksum" in UDP over IPv4 (RFC 768). */
	csum_store(hdr + 6, c ? c : 0xffff);
}

size_t vxlan_build_datagram(uint8_t *out, size_t cap, uint32_t vni,
			    const uint8_t *frame, size_t len,
			    uint16_t sport, uint16_t dport,
			    uint32_t saddr, uint32_t daddr, int csum)
{
	if (len > 0xffff - VXLAN_ENCAP_LEN || cap < VXLAN_ENCAP_LEN + len)
		return 0;
	vxlan_fill_encap(out, vni, len, sport, dport);
	if (csum)
		vxlan_fill_csum(out, frame, len, NULL, 0, saddr, daddr);
	memcpy(out + VXLAN_ENCAP_LEN, frame, len);
	return VXLAN_ENCAP_LEN + len;
}
