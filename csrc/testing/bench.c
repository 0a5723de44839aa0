/* Timing loops for the micro benchmarks (benchmarks/test_micro.py): run a
 * codec, FDB or offload operation n times inside C and return nanoseconds
 * per operation, so the figure is the fast path's cost and not cffi's
 * per-call crossing.  Declared in testing.h; test-only. */
#include <time.h>

#include "../fdb.h"
#include "../offload.h"
#include "testing.h"

/* Keeps the compiler from dropping the loop body. */
static volatile uint64_t sink;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double per_op(uint64_t t0, uint32_t n)
{
	return (double)(now_ns() - t0) / (n ? n : 1);
}

double uvx_bench_encap(const uint8_t *frame, size_t len, uint32_t n)
{
	uint8_t hdr[VXLAN_ENCAP_LEN];
	uint64_t t0 = now_ns();
	for (uint32_t i = 0; i < n; i++) {
		uint16_t sport = vxlan_src_port(vxlan_flow_hash(frame, len), 49152, 65535);
		vxlan_fill_encap(hdr, i & VXLAN_VNI_MAX, len, sport, VXLAN_PORT_IANA);
		sink += hdr[0];
	}
	return per_op(t0, n);
}

double uvx_bench_decap(const uint8_t *pkt, size_t len, uint32_t n)
{
	uint64_t t0 = now_ns();
	for (uint32_t i = 0; i < n; i++) {
		uint32_t vni = 0;
		size_t off = 0;
		sink += (uint64_t)vxlan_parse(pkt, len, 0, &vni, &off) + vni;
	}
	return per_op(t0, n);
}

/* --- The FDB: one of the loop's own, of a datapath's default size ------- */

#define BENCH_FDB_CAPACITY 65536
static const struct fdb_dest bench_dest = { -1, 0x0200000a, VXLAN_PORT_IANA };

double uvx_bench_fdb_lookup(const uint8_t *macs, uint32_t nmacs, uint32_t n)
{
	struct fdb f;
	int was_learned;
	if (nmacs == 0 || fdb_init(&f, BENCH_FDB_CAPACITY) < 0)
		return -1;
	for (uint32_t i = 0; i < nmacs; i++)
		fdb_add_static(&f, 1, macs + (size_t)i * 6, &bench_dest, 0, &was_learned);
	uint64_t t0 = now_ns();
	for (uint32_t i = 0; i < n; i++)
		sink += (uint64_t)(uintptr_t)fdb_lookup(&f, 1, macs + (size_t)(i % nmacs) * 6);
	double ns = per_op(t0, n);
	fdb_free(&f);
	return ns;
}

double uvx_bench_fdb_learn(const uint8_t *macs, uint32_t nmacs, uint32_t n)
{
	struct fdb f;
	uint32_t learned = 0;
	if (nmacs == 0 || fdb_init(&f, BENCH_FDB_CAPACITY) < 0)
		return -1;
	uint64_t t0 = now_ns();
	for (uint32_t i = 0; i < n; i++)
		fdb_learn(&f, 1, macs + (size_t)(i % nmacs) * 6, &bench_dest, i, 0, &learned);
	double ns = per_op(t0, n);
	fdb_free(&f);
	return ns;
}

/* --- Segmentation and coalescing, per 64 KB ---------------------------- */

/* ns to cut one super-frame into checksummed segments (tso_parse and
 * tso_segment: headers rewritten, payload checksummed, nothing copied). */
double uvx_bench_tso(const uint8_t *frame, size_t len, uint16_t mss, int v6, uint32_t n)
{
	static struct seg segs[UVX_SEGS_MAX];
	const struct vnet_hdr vh = {
		.flags = VNET_F_NEEDS_CSUM,
		.gso_type = v6 ? VNET_GSO_TCPV6 : VNET_GSO_TCPV4,
		.gso_size = mss,
	};
	struct tso_info ti;
	uint64_t t0 = now_ns();
	for (uint32_t i = 0; i < n; i++) {
		if (tso_parse(frame, len, &vh, &ti) != UVX_PASS)
			return -1;
		for (unsigned first = 0; first < ti.nseg; first += UVX_SEGS_MAX) {
			unsigned k = ti.nseg - first < UVX_SEGS_MAX ? ti.nseg - first : UVX_SEGS_MAX;
			tso_segment(frame, &ti, first, k, segs);
			sink += segs[0].hdr[50];
		}
	}
	return per_op(t0, n);
}

/* ns to check and join n segments into one super-frame (gro_candidate
 * verifies each TCP checksum; the payload is gathered by iovec, not
 * copied). */
double uvx_bench_gro(const uint8_t *segs, const size_t *lens, unsigned nsegs, uint32_t n)
{
	static struct gro_flow f;
	struct tcp_view tv;
	uint64_t t0 = now_ns();
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
	return per_op(t0, n);
}
