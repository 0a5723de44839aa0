/* The test hooks declared in testing.h: the codec one call at a time, and
 * segmentation and coalescing with whole frames in and out.  Thin: each
 * calls the same code the datapath runs (vxlan.c, offload.c). */
#include <string.h>

#include "../fdb.h"
#include "../offload.h"
#include "../peers.h"
#include "../pmtud.h"
#include "testing.h"

#ifndef UVX_BUILD_VERSION
#define UVX_BUILD_VERSION "unknown"
#endif
#ifndef UVX_SOURCE_DIGEST
#define UVX_SOURCE_DIGEST "unknown"
#endif

const char *uvx_testing_version(void)
{
	return UVX_BUILD_VERSION;
}

const char *uvx_testing_source_digest(void)
{
	return UVX_SOURCE_DIGEST;
}

/* --- The codec ------------------------------------------------------------ */

int uvx_test_parse(const uint8_t *pkt, size_t len, int accept_reserved,
		   uint32_t *vni, size_t *inner_off)
{
	return vxlan_parse(pkt, len, accept_reserved, vni, inner_off);
}

int uvx_test_check_inner(const uint8_t *frame, size_t len)
{
	return vxlan_check_inner(frame, len);
}

uint32_t uvx_test_flow_hash(const uint8_t *frame, size_t len)
{
	return vxlan_flow_hash(frame, len);
}

uint16_t uvx_test_src_port(uint32_t hash, uint16_t min, uint16_t max)
{
	return vxlan_src_port(hash, min, max);
}

uint64_t uvx_test_siphash(const uint8_t *key, const uint8_t *in, size_t len,
			  int c, int d)
{
	/* The key as two little-endian words, as the paper reads it. */
	uint64_t k[2] = { 0, 0 };
	for (int i = 7; i >= 0; i--) {
		k[0] = (k[0] << 8) | key[i];
		k[1] = (k[1] << 8) | key[8 + i];
	}
	return fdb_siphash(k, in, len, c, d);
}

size_t uvx_test_build_datagram(uint8_t *out, size_t cap, uint32_t vni,
			       const uint8_t *frame, size_t len,
			       uint16_t sport, uint16_t dport,
			       uint32_t saddr, uint32_t daddr, int csum)
{
	return vxlan_build_datagram(out, cap, vni, frame, len, sport, dport,
				    saddr, daddr, csum);
}

/* --- Segmentation and coalescing ------------------------------------------ */

int uvx_tso_frames(const uint8_t *frame, size_t len, uint16_t mss, int v6,
		   uint8_t *out, size_t cap, size_t *lens, unsigned max)
{
	static struct seg segs[UVX_SEGS_MAX];
	const struct vnet_hdr vh = {
		.flags = VNET_F_NEEDS_CSUM,
		.gso_type = v6 ? VNET_GSO_TCPV6 : VNET_GSO_TCPV4,
		.gso_size = mss,
	};
	struct tso_info ti;
	if (tso_parse(frame, len, &vh, &ti) != UVX_PASS || ti.nseg > max)
		return -1;
	size_t at = 0;
	for (unsigned first = 0; first < ti.nseg; first += UVX_SEGS_MAX) {
		unsigned n = ti.nseg - first < UVX_SEGS_MAX ? ti.nseg - first : UVX_SEGS_MAX;
		tso_segment(frame, &ti, first, n, segs);
		for (unsigned k = 0; k < n; k++) {
			size_t l = segs[k].hdrlen + segs[k].plen;
			if (at + l > cap)
				return -1;
			memcpy(out + at, segs[k].hdr, segs[k].hdrlen);
			memcpy(out + at + segs[k].hdrlen, segs[k].payload, segs[k].plen);
			lens[first + k] = l;
			at += l;
		}
	}
	return (int)ti.nseg;
}

int uvx_gro_join(const uint8_t *segs, const size_t *lens, unsigned n,
		 uint8_t *out, size_t cap, uint16_t *vh)
{
	static struct gro_flow f;
	struct tcp_view tv;
	const uint8_t *p = segs;
	if (n == 0)
		return -1;
	for (unsigned i = 0; i < n; p += lens[i], i++) {
		if (!gro_candidate(p, lens[i], &tv))
			return -1;
		if (i == 0)
			gro_start(&f, 0, p, &tv);
		else if (gro_match(&f, p, &tv) && gro_fits(&f, p, &tv))
			gro_append(&f, p, &tv);
		else
			return -1;
	}
	int niov = gro_finish(&f);
	size_t at = 0;
	for (int i = 1; i < niov; i++) {
		if (at + f.iov[i].iov_len > cap)
			return -1;
		memcpy(out + at, f.iov[i].iov_base, f.iov[i].iov_len);
		at += f.iov[i].iov_len;
	}
	vh[0] = f.vh.flags;
	vh[1] = f.vh.gso_type;
	vh[2] = f.vh.hdr_len;
	vh[3] = f.vh.gso_size;
	vh[4] = f.vh.csum_start;
	vh[5] = f.vh.csum_offset;
	return (int)at;
}

int uvx_test_pmtud_reply(const uint8_t *frame, size_t len, size_t room,
			 uint8_t *out, size_t cap)
{
	uint8_t reply[PMTUD_REPLY_MAX];
	size_t n = pmtud_build_reply(reply, frame, len, room);
	if (n > cap)
		return -1;
	memcpy(out, reply, n);
	return (int)n;
}

int64_t uvx_test_peer_longest_run(const uint32_t *ips, size_t n)
{
	struct peer_set ps = { 0 };
	int64_t r = 0;
	for (size_t i = 0; i < n && r == 0; i++)
		if (peer_set_add(&ps, ips[i]) < 0)
			r = -1;
	if (r == 0)
		r = peer_set_longest_run(&ps);
	peer_set_free(&ps);
	return r;
}
