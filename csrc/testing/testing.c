/* The test hooks declared in testing.h: the codec one call at a time, and
 * segmentation and coalescing with whole frames in and out.  Thin: each
 * calls the same code the datapath runs (vxlan.c, offload.c). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../capring.h"
#include "../fault.h"
#include "../fdb.h"
#include "../offload.h"
#include "../peers.h"
#include "../pmtud.h"
#include "../uvx.h"
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

/* --- The capture ring and filter ----------------------------------------- */

struct capring *uvx_test_capring_new(uint32_t nslots, uint32_t snaplen)
{
	struct capring *r = malloc(sizeof(*r));
	if (r && capring_init(r, nslots, snaplen) < 0) {
		capring_free(r);
		free(r);
		r = NULL;
	}
	return r;
}

void uvx_test_capring_free(struct capring *r)
{
	if (r) {
		capring_free(r);
		free(r);
	}
}

int uvx_test_capring_put(struct capring *r, uint64_t ts_ns, unsigned point, uint32_t vni,
			 int32_t port, const uint8_t *outer, size_t outer_len,
			 const uint8_t *frame, size_t len)
{
	const struct iovec iov = { (void *)frame, len };
	return capring_put(r, ts_ns, point, vni, port, outer, outer_len, &iov, 1);
}

size_t uvx_test_capring_take(struct capring *r, uint8_t *out, size_t cap)
{
	return capring_take(r, out, cap);
}

void uvx_test_capring_counts(struct capring *r, uint64_t *captured, uint64_t *missed)
{
	*captured = capring_captured(r);
	*missed = capring_missed(r);
}

struct race {
	struct capring *r;
	uint64_t n;
	int done;
};

static void *race_producer(void *arg)
{
	struct race *a = arg;
	uint8_t frame[64];
	for (uint64_t i = 0; i < a->n; i++) {
		/* The sequence number at both ends: a torn slot shows. */
		memset(frame, (int)(i & 0xff), sizeof(frame));
		memcpy(frame, &i, sizeof(i));
		memcpy(frame + sizeof(frame) - sizeof(i), &i, sizeof(i));
		const struct iovec iov = { frame, sizeof(frame) };
		capring_put(a->r, i, 0, 1, -1, NULL, 0, &iov, 1);
	}
	__atomic_store_n(&a->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* One record taken from the race's ring: 1 if it was whole and after
 * the last one (*last updated), 0 if not. */
static int race_check(const uint8_t *rec, size_t got, int64_t taken, uint64_t *last)
{
	uint64_t head, tail;
	memcpy(&head, rec + CAPRING_REC_HLEN, sizeof(head));
	memcpy(&tail, rec + CAPRING_REC_HLEN + 64 - sizeof(tail), sizeof(tail));
	int ok = got == CAPRING_REC_HLEN + 64 && head == tail && (!taken || head > *last);
	*last = head;
	return ok;
}

int64_t uvx_test_capring_race(uint32_t nslots, uint64_t n, uint64_t *missed,
			      int *in_order)
{
	struct capring r;
	if (capring_init(&r, nslots, 64) < 0)
		return -1;
	struct race a = { &r, n, 0 };
	pthread_t t;
	if (pthread_create(&t, NULL, race_producer, &a)) {
		capring_free(&r);
		return -1;
	}
	uint8_t rec[CAPRING_REC_HLEN + 64];
	int64_t taken = 0;
	uint64_t last = 0;
	int ok = 1, finished = 0;
	for (;;) {
		size_t got = capring_take(&r, rec, sizeof(rec));
		if (got) {
			ok &= race_check(rec, got, taken++, &last);
			continue;
		}
		if (finished)
			break;
		/* Once it is done, one more pass takes what is left. */
		finished = __atomic_load_n(&a.done, __ATOMIC_ACQUIRE);
	}
	pthread_join(t, NULL);
	*missed = capring_missed(&r);
	*in_order = ok;
	capring_free(&r);
	return taken;
}

int uvx_test_capture_match(uint32_t f_points, uint32_t f_match, uint32_t f_vni,
			   int32_t f_port, const uint8_t *f_mac, uint16_t f_ethertype,
			   unsigned point, uint32_t vni, int32_t port,
			   const uint8_t *frame, size_t len)
{
	struct uvx_capture_filter f = {
		.points = f_points, .match = f_match, .vni = f_vni, .port = f_port,
		.ethertype = f_ethertype,
	};
	memcpy(f.mac, f_mac, sizeof(f.mac));
	const struct iovec iov = { (void *)frame, len };
	uint8_t head[CAPTURE_HEAD];
	return capture_match(&f, point, vni, port, head, capture_head(head, &iov, 1));
}

void uvx_test_capture_outer(uint8_t *out, uint32_t saddr, uint32_t daddr,
			    uint16_t sport, uint16_t dport, const uint8_t *vxh,
			    size_t inner_len)
{
	capture_outer(out, saddr, daddr, sport, dport, vxh, inner_len);
}

/* --- Fault injection's pieces (fault.h) ----------------------------------- */

void *uvx_test_heap_new(uint32_t cap)
{
	struct fault_heap *h = calloc(1, sizeof(*h));
	if (h && fault_heap_init(h, cap) < 0) {
		free(h);
		return NULL;
	}
	return h;
}

void uvx_test_heap_free(void *h)
{
	if (h)
		fault_heap_free(h);
	free(h);
}

void uvx_test_heap_push(void *h, uint32_t slot, uint64_t due)
{
	fault_heap_push(h, slot, due);
}

int64_t uvx_test_heap_pop_due(void *h, uint64_t now)
{
	return fault_heap_pop_due(h, now);
}

void uvx_test_heap_move(void *h, uint32_t slot, uint64_t due)
{
	fault_heap_move(h, slot, due);
}

void uvx_test_heap_remove(void *h, uint32_t slot)
{
	fault_heap_remove(h, slot);
}

uint64_t uvx_test_heap_next(void *h)
{
	return fault_heap_next(h);
}

void uvx_test_bucket_run(uint64_t rate_bps, size_t frame_max, const uint64_t *now,
			 const uint32_t *bytes, unsigned n, int64_t *due)
{
	struct fault_bucket b;
	fault_bucket_init(&b, rate_bps, frame_max);
	for (unsigned i = 0; i < n; i++) {
		uint64_t at;
		due[i] = fault_bucket_take(&b, now[i], bytes[i], &at) < 0 ? -1 : (int64_t)at;
	}
}

int uvx_test_payload_span(const uint8_t *frame, size_t len, size_t *off, size_t *end)
{
	return fault_payload_span(frame, len, off, end);
}

void *uvx_test_fault_new(size_t frame_max, uint64_t seed, const uint32_t *rule,
			 uint64_t rate_bps)
{
	struct fault_table *t = fault_table_new(frame_max, seed);
	if (!t)
		return NULL;
	struct uvx_fault f = {
		.peer_ip = 1, .vni = 1,
		.loss_ppm = rule[0], .duplicate_ppm = rule[1], .reorder_ppm = rule[2],
		.corrupt_ppm = rule[3], .delay_us = rule[4], .jitter_us = rule[5],
		.rate_bps = rate_bps,
	};
	if (fault_table_set(t, &f) < 0) {
		fault_table_free(t);
		return NULL;
	}
	return t;
}

void uvx_test_fault_free(void *t)
{
	fault_table_free(t);
}

void uvx_test_fault_judge(void *tp, const uint8_t *frame, size_t len, uint64_t now,
			  struct uvx_test_verdict *out)
{
	struct fault_table *t = tp;
	/* Split in two pieces, as a segment's headers and payload come. */
	size_t l1 = len / 2;
	const struct fault_frame fr = { frame, l1, frame + l1, len - l1, 1, 1, 4789, 0, -1 };
	struct fault_verdict v;
	fault_judge(t, fault_find(t, 1, 1), &fr, now, &v);
	*out = (struct uvx_test_verdict){ v.reason, v.copies, v.slot, v.release };
}

int64_t uvx_test_fault_due(void *t, uint64_t now)
{
	return fault_due(t, now);
}

size_t uvx_test_fault_slot(void *tp, uint32_t slot, uint8_t *out, size_t cap,
			   unsigned *copies)
{
	struct fault_table *t = tp;
	size_t n = t->meta[slot].len < cap ? t->meta[slot].len : cap;
	memcpy(out, fault_slot_data(t, slot), n);
	*copies = t->meta[slot].copies;
	fault_slot_free(t, slot);
	return n;
}

void uvx_test_fault_counters(void *tp, uint64_t *counters)
{
	struct fault_table *t = tp;
	memcpy(counters, &fault_find(t, 1, 1)->ctr, sizeof(struct uvx_fault_counters));
}

uint32_t uvx_test_fault_free_slots(void *t)
{
	return ((struct fault_table *)t)->nfree;
}
