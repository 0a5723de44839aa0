/* ICMP "fragmentation needed" and ICMPv6 Packet Too Big.  See pmtud.h. */
#include <string.h>

#include "bytes.h"
#include "csum.h"
#include "pmtud.h"
#include "vxlan.h"

#define IPV6_HLEN         40u
#define ICMP_HLEN         8u
#define PROTO_ICMP        1
#define PROTO_ICMPV6      58
#define IP_DF             0x4000
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED  4
#define ICMPV6_PKT_TOOBIG 2
#define NDISC_REDIRECT    137

/* RFC 1812 section 4.3.2.7: no ICMP error about an ICMP error.  These are
 * the error types (Linux's icmp_is_err). */
static int icmp_is_err(uint8_t type)
{
	return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
}

/* Ethernet header of the reply: back to the sender, from the address the
 * frame was for, in the same VLAN if it was tagged.  Returns its length. */
static size_t reply_eth(uint8_t *out, const uint8_t *frame, size_t l3off, uint16_t proto)
{
	memcpy(out, frame + ETH_ALEN, ETH_ALEN);
	memcpy(out + ETH_ALEN, frame, ETH_ALEN);
	if (l3off > ETH_HLEN)
		memcpy(out + 12, frame + 12, 4);     /* TPID and TCI */
	wr16(out + l3off - 2, proto);
	return l3off;
}

/* IPv4: iptunnel_pmtud_check_icmp's rules, and RFC 1812 section 4.3.2.7's
 * for the source (class E, which covers 255.255.255.255, as well). */
static size_t reply_v4(uint8_t *out, const uint8_t *f, size_t len, size_t l3off, size_t mtu)
{
	const uint8_t *ip = f + l3off;
	size_t avail = len - l3off;
	if (mtu < PMTUD_V4_MIN_MTU || avail < IPV4_HLEN || (ip[0] >> 4) != 4)
		return 0;
	size_t ihl = (size_t)(ip[0] & 0x0f) * 4;
	if (ihl < IPV4_HLEN || ihl > avail)
		return 0;
	/* DF, and not a fragment: exactly what Linux asks for. */
	if (rd16(ip + 6) != IP_DF)
		return 0;
	uint8_t s0 = ip[12], d0 = ip[16];
	if (s0 == 0 || s0 == 127 || s0 >= 224 || d0 >= 224)
		return 0;
	if (ip[9] == PROTO_ICMP && (ihl >= avail || icmp_is_err(ip[ihl])))
		return 0;
	/* Quote as much of the packet as fits in 576 bytes, and no more than
	 * the packet (not the Ethernet padding). */
	size_t quote = avail;
	size_t tot = rd16(ip + 2);
	if (tot >= ihl && tot < quote)
		quote = tot;
	if (quote > PMTUD_V4_MIN_MTU - IPV4_HLEN - ICMP_HLEN)
		quote = PMTUD_V4_MIN_MTU - IPV4_HLEN - ICMP_HLEN;

	size_t at = reply_eth(out, f, l3off, ETH_P_IPV4);
	uint8_t *nip = out + at;
	uint8_t *icmp = nip + IPV4_HLEN;
	memset(nip, 0, IPV4_HLEN + ICMP_HLEN);
	nip[0] = 0x45;
	wr16(nip + 2, (uint16_t)(IPV4_HLEN + ICMP_HLEN + quote));
	wr16(nip + 6, IP_DF);
	nip[8] = ip[8];                  /* the sender's TTL, as Linux does */
	nip[9] = PROTO_ICMP;
	memcpy(nip + 12, ip + 16, 4);    /* from the original destination */
	memcpy(nip + 16, ip + 12, 4);
	csum_store(nip + 10, csum_final(csum_add(nip, IPV4_HLEN, 0)));
	/* RFC 1191 section 4: the next-hop MTU in the low 16 bits of the
	 * second word, the high 16 unused (zero). */
	icmp[0] = ICMP_DEST_UNREACH;
	icmp[1] = ICMP_FRAG_NEEDED;
	wr16(icmp + 6, (uint16_t)mtu);
	memcpy(icmp + ICMP_HLEN, ip, quote);
	csum_store(icmp + 2, csum_final(csum_add(icmp, ICMP_HLEN + quote, 0)));
	return at + IPV4_HLEN + ICMP_HLEN + quote;
}

static int v6_unspecified(const uint8_t *a)
{
	static const uint8_t zero[16];
	return memcmp(a, zero, 16) == 0;
}

static int v6_loopback(const uint8_t *a)
{
	static const uint8_t one[16] = { [15] = 1 };
	return memcmp(a, one, 16) == 0;
}

/* IPv6: iptunnel_pmtud_check_icmpv6's rules (a source that is one host,
 * not a later fragment, not an ICMPv6 error or redirect), and a
 * destination that is not multicast: the reply comes from it. */
static size_t reply_v6(uint8_t *out, const uint8_t *f, size_t len, size_t l3off, size_t mtu)
{
	const uint8_t *ip = f + l3off;
	size_t avail = len - l3off;
	if (mtu < PMTUD_V6_MIN_MTU || avail < IPV6_HLEN || (ip[0] >> 4) != 6)
		return 0;
	const uint8_t *src = ip + 8, *dst = ip + 24;
	if (src[0] == 0xff || dst[0] == 0xff || v6_unspecified(src) || v6_loopback(src))
		return 0;
	/* Walk the extension headers to the upper layer (RFC 8200 section
	 * 4), as ipv6_skip_exthdr does; a chain that runs past the frame
	 * gets no reply. */
	uint8_t next = ip[6];
	size_t off = IPV6_HLEN;
	for (unsigned hops = 0; hops < 8; hops++) {
		size_t hlen;
		if (next == 0 || next == 43 || next == 60) {        /* hop-by-hop, routing, dest. */
			if (off + 2 > avail)
				return 0;
			hlen = ((size_t)ip[off + 1] + 1) * 8;
		} else if (next == 51) {                            /* AH (RFC 4302) */
			if (off + 2 > avail)
				return 0;
			hlen = ((size_t)ip[off + 1] + 2) * 4;
		} else if (next == 44) {                            /* fragment */
			if (off + 8 > avail)
				return 0;
			if (rd16(ip + off + 2) & 0xfff8)
				return 0;                           /* not the first */
			hlen = 8;
		} else {
			break;
		}
		next = ip[off];
		off += hlen;
	}
	if (next == PROTO_ICMPV6) {
		if (off >= avail)
			return 0;
		/* RFC 4443 section 2.4 (e.1): no error about an error (types
		 * below 128); Linux adds redirects. */
		if (ip[off] < 128 || ip[off] == NDISC_REDIRECT)
			return 0;
	}
	size_t quote = avail;
	if (quote > PMTUD_V6_MIN_MTU - IPV6_HLEN - ICMP_HLEN)
		quote = PMTUD_V6_MIN_MTU - IPV6_HLEN - ICMP_HLEN;

	size_t at = reply_eth(out, f, l3off, ETH_P_IPV6);
	uint8_t *nip = out + at;
	uint8_t *icmp = nip + IPV6_HLEN;
	uint32_t plen = (uint32_t)(ICMP_HLEN + quote);
	memset(nip, 0, IPV6_HLEN + ICMP_HLEN);
	nip[0] = 0x60;
	wr16(nip + 4, (uint16_t)plen);
	nip[6] = PROTO_ICMPV6;
	nip[7] = ip[7];                  /* the sender's hop limit, as Linux does */
	memcpy(nip + 8, dst, 16);
	memcpy(nip + 24, src, 16);
	icmp[0] = ICMPV6_PKT_TOOBIG;
	wr32(icmp + 4, (uint32_t)mtu);
	memcpy(icmp + ICMP_HLEN, ip, quote);
	/* RFC 4443 section 2.3: over the pseudo-header too. */
	uint64_t sum = csum_pseudo6(nip + 8, nip + 24, PROTO_ICMPV6, plen);
	csum_store(icmp + 2, csum_final(csum_add(icmp, plen, sum)));
	return at + IPV6_HLEN + plen;
}

size_t pmtud_build_reply(uint8_t *out, const uint8_t *f, size_t len, size_t room)
{
	if (len < ETH_HLEN || (f[0] & 1))     /* link-layer multicast or broadcast */
		return 0;
	size_t l3off = ETH_HLEN;
	uint16_t proto = rd16(f + 12);
	if (proto == ETH_P_8021Q) {
		if (len < ETH_HLEN + 4)
			return 0;
		proto = rd16(f + 16);
		l3off += 4;
	}
	if (room <= l3off)
		return 0;
	size_t mtu = room - l3off;
	if (mtu > 65535)
		mtu = 65535;
	if (proto == ETH_P_IPV4)
		return reply_v4(out, f, len, l3off, mtu);
	if (proto == ETH_P_IPV6)
		return reply_v6(out, f, len, l3off, mtu);
	return 0;
}
