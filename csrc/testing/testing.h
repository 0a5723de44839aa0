/* Hooks for the tests and the micro benchmarks: the codec one call at a
 * time, segmentation and coalescing with whole frames in and out, and C
 * timing loops.  They are built into a module of their own,
 * tests/support/_uvx_testing (csrc/testing/build_testing.py, run by
 * scripts/setup.sh), never into the product library.  This file is their
 * one declaration: cffi reads it the way build_ffi.py reads uvx.h.
 */
#ifndef UVX_TESTING_H
#define UVX_TESTING_H

#include <stddef.h>
#include <stdint.h>

#include "../drop.h"    /* the verdicts uvx_test_parse returns */
#include "../vxlan.h"   /* VXLAN_ENCAP_LEN, VXLAN_VNI_MAX, ... */

/* Stamped in by the build, checked by tests/support/native_testing.py. */
const char *uvx_testing_version(void);
const char *uvx_testing_source_digest(void);

/* The codec (vxlan.h), for tests beside the reference codec
 * (uvxlan/reference/wire.py). */
int uvx_test_parse(const uint8_t *pkt, size_t len, int accept_reserved,
		   uint32_t *vni, size_t *inner_off);
int uvx_test_check_inner(const uint8_t *frame, size_t len);
uint32_t uvx_test_flow_hash(const uint8_t *frame, size_t len);
uint16_t uvx_test_src_port(uint32_t hash, uint16_t min, uint16_t max);

/* The FDB's keyed hash (fdb.h): SipHash-c-d of in under the 16-byte key,
 * for a check against the paper's test vector. */
uint64_t uvx_test_siphash(const uint8_t *key, const uint8_t *in, size_t len,
			  int c, int d);
/* The admitted-VTEP set (peers.h) filled with ips[0..n): the longest
 * run of occupied slots, i.e. the most a lookup for a stranger reads;
 * -1 if an add failed. */
int64_t uvx_test_peer_longest_run(const uint32_t *ips, size_t n);

size_t uvx_test_build_datagram(uint8_t *out, size_t cap, uint32_t vni,
			       const uint8_t *frame, size_t len,
			       uint16_t sport, uint16_t dport,
			       uint32_t saddr, uint32_t daddr, int csum);

/* Segmentation and coalescing as the datapath does them (offload.h), for
 * tests beside uvxlan/reference/offload.py.
 *
 * uvx_tso_frames cuts a TCP super-frame into MSS segments, each written
 * whole (headers, then payload) into out, their lengths into lens; returns
 * the count, or -1 if the frame is not one we can cut or out is too small.
 *
 * uvx_gro_join joins n segments (end to end in segs, lengths in lens) the
 * way the receive path does: the super-frame into out, and the fields of
 * its virtio-net header into vh[6] in struct vnet_hdr's order (flags,
 * gso_type, hdr_len, gso_size, csum_start, csum_offset).  Returns its
 * length, or -1 if they are not one in-order flow that fits one frame. */
int uvx_tso_frames(const uint8_t *frame, size_t len, uint16_t mss, int v6,
		   uint8_t *out, size_t cap, size_t *lens, unsigned max);
int uvx_gro_join(const uint8_t *segs, const size_t *lens, unsigned n,
		 uint8_t *out, size_t cap, uint16_t *vh);

/* The answer to a frame too big for the underlay (pmtud.h), room being
 * the largest inner frame that fits: its bytes into out, and its length,
 * 0 when none is due, or -1 if cap is too small for it. */
int uvx_test_pmtud_reply(const uint8_t *frame, size_t len, size_t room,
			 uint8_t *out, size_t cap);

/* The capture ring and filter (capring.h), without a datapath.  A ring
 * of nslots slots keeping snaplen bytes per frame; put one frame (after
 * outer_len bytes of outer headers) as the producer; take the oldest
 * record into out (its size, 0 if none or it does not fit); its counters.  uvx_test_capring_race puts n frames, each holding its
 * sequence number, from a thread of its own while this one takes them:
 * returns how many were taken, with *missed the producer's count and
 * *in_order 1 if every frame taken came whole and in sequence. */
struct capring;
struct capring *uvx_test_capring_new(uint32_t nslots, uint32_t snaplen);
void uvx_test_capring_free(struct capring *r);
int uvx_test_capring_put(struct capring *r, uint64_t ts_ns, unsigned point, uint32_t vni,
			 int32_t port, const uint8_t *outer, size_t outer_len,
			 const uint8_t *frame, size_t len);
size_t uvx_test_capring_take(struct capring *r, uint8_t *out, size_t cap);
void uvx_test_capring_counts(struct capring *r, uint64_t *captured, uint64_t *missed);
int64_t uvx_test_capring_race(uint32_t nslots, uint64_t n, uint64_t *missed,
			      int *in_order);
/* The filter on one frame: f_* as struct uvx_capture_filter's fields
 * (mac: 6 bytes), the frame seen at point in vni, from or to port. */
int uvx_test_capture_match(uint32_t f_points, uint32_t f_match, uint32_t f_vni,
			   int32_t f_port, const uint8_t *f_mac, uint16_t f_ethertype,
			   unsigned point, uint32_t vni, int32_t port,
			   const uint8_t *frame, size_t len);
/* The outer headers --outer shows (CAPTURE_OUTER_LEN, 50, bytes into out). */
void uvx_test_capture_outer(uint8_t *out, uint32_t saddr, uint32_t daddr,
			    uint16_t sport, uint16_t dport, const uint8_t *vxh,
			    size_t inner_len);
/* Fault injection's pieces (fault.h), on their own: the delay queue (a
 * heap of slots by due time), the token bucket run over a sequence of
 * frames (due[i]: when frame i may leave, -1 if dropped), where corruption
 * goes, and a fault table with one entry (peer 1, VNI 1) whose rule is
 * loss, duplicate, reorder, corrupt (ppm), delay and jitter (us), in
 * rule[0..6), judging whole frames at given times.  uvx_test_fault_slot
 * copies a slot's frame out and frees it (copies: how many to send);
 * counters[8] in struct uvx_fault_counters' order. */
struct uvx_test_verdict {
	int reason;
	unsigned copies;
	int32_t slot;
	int32_t release;
};
void *uvx_test_heap_new(uint32_t cap);
void uvx_test_heap_free(void *h);
void uvx_test_heap_push(void *h, uint32_t slot, uint64_t due);
int64_t uvx_test_heap_pop_due(void *h, uint64_t now);
void uvx_test_heap_move(void *h, uint32_t slot, uint64_t due);
void uvx_test_heap_remove(void *h, uint32_t slot);
uint64_t uvx_test_heap_next(void *h);
void uvx_test_bucket_run(uint64_t rate_bps, size_t frame_max, const uint64_t *now,
			 const uint32_t *bytes, unsigned n, int64_t *due);
int uvx_test_payload_span(const uint8_t *frame, size_t len, size_t *off, size_t *end);
void *uvx_test_fault_new(size_t frame_max, uint64_t seed, const uint32_t *rule,
			 uint64_t rate_bps);
void uvx_test_fault_free(void *t);
void uvx_test_fault_judge(void *t, const uint8_t *frame, size_t len, uint64_t now,
			  struct uvx_test_verdict *out);
int64_t uvx_test_fault_due(void *t, uint64_t now);
size_t uvx_test_fault_slot(void *t, uint32_t slot, uint8_t *out, size_t cap,
			   unsigned *copies);
void uvx_test_fault_counters(void *t, uint64_t *counters);
uint32_t uvx_test_fault_free_slots(void *t);

/* Timing loops for benchmarks/test_micro.py: nanoseconds per operation,
 * measured inside C so the figure is the fast path's cost and not cffi's
 * per-call crossing.  The FDB loops use an FDB of their own (65536
 * entries, as a datapath has by default) holding nmacs MACs (6 bytes
 * each) in VNI 1. */
double uvx_bench_encap(const uint8_t *frame, size_t len, uint32_t n);
double uvx_bench_decap(const uint8_t *pkt, size_t len, uint32_t n);
double uvx_bench_fdb_lookup(const uint8_t *macs, uint32_t nmacs, uint32_t n);
double uvx_bench_fdb_learn(const uint8_t *macs, uint32_t nmacs, uint32_t n);
double uvx_bench_tso(const uint8_t *frame, size_t len, uint16_t mss, int v6, uint32_t n);
double uvx_bench_gro(const uint8_t *segs, const size_t *lens, unsigned nsegs, uint32_t n);

#endif
