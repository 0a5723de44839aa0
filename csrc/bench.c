/* Timing loops for the micro benchmarks: run a codec or FDB operation n
 * times inside C and return nanoseconds per operation, so the figure is the
 * fast path's cost and not cffi's per-call crossing. */
#include <time.h>

#include "dp.h"

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Keeps the compiler from dropping the loop body. */
static volatile uint64_t sink;

double uvx_bench_encap(const uint8_t *frame, size_t len, uint32_t n)
{
	uint8_t hdr[VXLAN_ENCAP_LEN];
	uint64_t t0 = now_ns();
	for (uint32_t i = 0; i < n; i++) {
		uint16_t sport = vxlan_src_port(vxlan_flow_hash(frame, len), 49152, 65535);
		vxlan_fill_encap(hdr, i & VXLAN_VNI_MAX, len, sport, 4789);
		sink += hdr[0];
	}
	return (double)(now_ns() - t0) / (n ? n : 1);
}

double uvx_bench_decap(const uint8_t *pkt, size_t len, uint32_t n)
{
	uint64_t t0 = now_ns();
	for (uint32_t i = 0; i < n; i++) {
		uint32_t vni = 0;
		size_t off = 0;
		sink += (uint64_t)vxlan_parse(pkt, len, 0, &vni, &off) + vni;
	}
	return (double)(now_ns() - t0) / (n ? n : 1);
}

double uvx_bench_fdb_lookup(struct uvx_dp *dp, uint32_t vni, const uint8_t *macs,
			    uint32_t nmacs, uint32_t n)
{
	uint64_t t0 = now_ns();
	for (uint32_t i = 0; i < n; i++)
		sink += (uint64_t)(uintptr_t)fdb_lookup(&dp->fdb, vni, macs + (size_t)(i % nmacs) * 6);
	return (double)(now_ns() - t0) / (n ? n : 1);
}

double uvx_bench_fdb_learn(struct uvx_dp *dp, uint32_t vni, const uint8_t *macs,
			   uint32_t nmacs, uint32_t n)
{
	struct uvx_vni *v = vni_find(dp, vni);
	if (!v)
		return -1;
	const struct fdb_dest d = { -1, 0x0200000a, 4789 };
	uint64_t t0 = now_ns();
	for (uint32_t i = 0; i < n; i++)
		fdb_learn(&dp->fdb, vni, macs + (size_t)(i % nmacs) * 6, &d, i,
			  dp->cfg.learn_limit, &v->learned);
	return (double)(now_ns() - t0) / (n ? n : 1);
}
