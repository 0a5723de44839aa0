/* Timing loops for the micro benchmarks: run a codec or FDB operation n
 * times inside C and return nanoseconds per operation, so the figure is the
 * fast path's cost and not cffi's per-call crossing. */
#include <string.h>

#include "dp.h"

/* Keeps the compiler from dropping the loop body. */
static volatile uint64_t sink;

double uvx_bench_encap(const uint8_t *frame, size_t len, uint32_t n)
{
	uint8_t hdr[VXLAN_ENCAP_LEN];
	uint64_t t0 = mono_ns();
	for (uint32_t i = 0; i < n; i++) {
		uint16_t sport = vxlan_src_port(vxlan_flow_hash(frame, len), 49152, 65535);
		vxlan_fill_encap(hdr, i & VXLAN_VNI_MAX, len, sport, 4789);
		sink += hdr[0];
	}
	return (double)(mono_ns() - t0) / (n ? n : 1);
}

double uvx_bench_decap(const uint8_t *pkt, size_t len, uint32_t n)
{
	uint64_t t0 = mono_ns();
	for (uint32_t i = 0; i < n; i++) {
		uint32_t vni = 0;
		size_t off = 0;
		sink += (uint64_t)vxlan_parse(pkt, len, 0, &vni, &off) + vni;
	}
	return (double)(mono_ns() - t0) / (n ? n : 1);
}

double uvx_bench_fdb_lookup(struct uvx_dp *dp, uint32_t vni, const uint8_t *macs,
			    uint32_t nmacs, uint32_t n)
{
	uint64_t t0 = mono_ns();
	for (uint32_t i = 0; i < n; i++)
		sink += (uint64_t)(uintptr_t)fdb_lookup(&dp->fdb, vni, macs + (size_t)(i % nmacs) * 6);
	return (double)(mono_ns() - t0) / (n ? n : 1);
}

double uvx_bench_fdb_learn(struct uvx_dp *dp, uint32_t vni, const uint8_t *macs,
			   uint32_t nmacs, uint32_t n)
{
	struct uvx_vni *v = vni_find(dp, vni);
	if (!v)
		return -1;
	const struct fdb_dest d = { -1, 0x0200000a, 4789 };
	uint64_t t0 = mono_ns();
	for (uint32_t i = 0; i < n; i++)
		fdb_learn(&dp->fdb, vni, macs + (size_t)(i % nmacs) * 6, &d, i,
			  dp->cfg.learn_limit, &v->learned);
	return (double)(mono_ns() - t0) / (n ? n : 1);
}

/* --- Segmentation and coalescing, per 64 KB ---------------------------- */

static void vh_for(struct vnet_hdr *vh, size_t hdrlen, uint16_t mss, int v6)
{
	*vh = (struct vnet_hdr){
		.flags = VNET_F_NEEDS_CSUM,
		.gso_type = v6 ? VNET_GSO_TCPV6 : VNET_GSO_TCPV4,
		.hdr_len = (uint16_t)hdrlen,
		.gso_size = mss,
	};
}

/* Cut a TCP super-frame into MSS segments, each written whole (headers,
 * then payload) into out; their lengths into lens.  Returns the count, or
 * -1 if the frame is not a super-frame we can cut or out is too small.
 * For tests (C beside uvxlan.offload_ref) and for uvx_bench_tso. */
int uvx_tso_frames(const uint8_t *frame, size_t len, uint16_t mss, int v6,
		   uint8_t *out, size_t cap, size_t *lens, unsigned max)
{
	struct vnet_hdr vh;
	struct tso_info ti;
	static struct seg segs[UVX_SEGS_MAX];
	vh_for(&vh, 0, mss, v6);
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

/* Join n segments (laid end to end in segs, lengths in lens) the way the
 * receive path does; the super-frame into out (cap bytes) and its
 * virtio-net header into *vh.  Returns its length, or -1 if they are not
 * one in-order flow that fits in one super-frame. */
int uvx_gro_join(const uint8_t *segs, const size_t *lens, unsigned n,
		 uint8_t *out, size_t cap, struct vnet_hdr *vh)
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
	*vh = f.vh;
	return (int)at;
}

/* ns to cut one super-frame into checksummed segments (tso_parse and
 * tso_segment: headers rewritten, payload checksummed, nothing copied). */
double uvx_bench_tso(const uint8_t *frame, size_t len, uint16_t mss, int v6, uint32_t n)
{
	struct vnet_hdr vh;
	struct tso_info ti;
	static struct seg segs[UVX_SEGS_MAX];
	vh_for(&vh, 0, mss, v6);
	uint64_t t0 = mono_ns();
	for (uint32_t i = 0; i < n; i++) {
		if (tso_parse(frame, len, &vh, &ti) != UVX_PASS)
			return -1;
		for (unsigned first = 0; first < ti.nseg; first += UVX_SEGS_MAX) {
			unsigned k = ti.nseg - first < UVX_SEGS_MAX ? ti.nseg - first : UVX_SEGS_MAX;
			tso_segment(frame, &ti, first, k, segs);
			sink += segs[0].hdr[50];
		}
	}
	return (double)(mono_ns() - t0) / (n ? n : 1);
}

/* ns to check and join n segments into one super-frame (gro_candidate
 * verifies each TCP checksum; the payload is gathered by iovec, not
 * copied). */
double uvx_bench_gro(const uint8_t *segs, const size_t *lens, unsigned nsegs, uint32_t n)
{
	static struct gro_flow f;
	struct tcp_view tv;
	uint64_t t0 = mono_ns();
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *p = segs;
		for (unsigned k = 0; k < nsegs; p += lens[k], k++) {
			if (!gro_candidate(p, lens[k], &tv))
				return -1;
			if (k == 0)
				gro_start(&f, 0, p, &tv);
			else if (gro_fits(&f, p, &tv))
				gro_append(&f, p, &tv);
		}
		sink += (uint64_t)gro_finish(&f);
	}
	return (double)(mono_ns() - t0) / (n ? n : 1);
}
