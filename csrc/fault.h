/* Fault injection on the way to the wire (issue 14): loss, delay with
 * jitter, duplication, reordering, corruption and a rate limit, per remote
 * VTEP, per VNI, or per both, set live from Python (uvx_fault_set).
 *
 * Only the TX worker sends VXLAN (the receive side never sends back out:
 * split horizon), so everything here is that worker's alone on the packet
 * path, and Python's under the write lock: the PRNG, the token buckets,
 * the held frames.  The counters have that one writer and are read with
 * relaxed loads.  Nothing is allocated per packet: the table and its
 * frame slots are made when the first fault is set.
 *
 * The pieces, each testable on its own (csrc/testing):
 *   fault_rand        xorshift64*, seeded once
 *   fault_bucket_*    a token bucket in time (GCRA): when a frame may leave
 *   fault_heap_*      the delay queue: a binary heap of slots by due time
 *                     (then by sequence, so equal times keep their order),
 *                     each slot knowing its place so one can be moved
 *   fault_payload_span  where an inner frame's payload lies (corruption)
 *   fault_judge       one datagram through an entry's rules
 *
 * This file needs no datapath (fault_api.c and xmit.c bring one).
 */
#ifndef UVX_FAULT_H
#define UVX_FAULT_H

#include <stddef.h>
#include <stdint.h>

#include "uvx.h"   /* struct uvx_fault, its counters, UVX_FAULT_* */

/* The most frames held at once, and the bytes their slots may take: a
 * slot holds the largest inner frame the underlay carries. */
#define FAULT_SLOTS_MAX   4096u
#define FAULT_SLOTS_MIN   256u
#define FAULT_QUEUE_BYTES (16u << 20)

/* A frame picked for reordering waits this long at most for the next one
 * to overtake it. */
#define FAULT_REORDER_HOLD_NS 10000000ull
/* The rate limit holds a frame at most this long (the backlog tc's tbf
 * allows with latency 50ms); one that would wait longer is dropped. */
#define FAULT_RATE_LATENCY_NS 50000000ull
/* Its bucket holds this much time's worth of the rate (at least two of
 * the largest frames): short bursts pass at once. */
#define FAULT_RATE_BURST_NS   10000000ull

uint64_t fault_rand(uint64_t *state);
/* 1 with probability ppm / 1,000,000. */
int fault_hit(uint64_t *state, uint32_t ppm);

struct fault_bucket {
	uint64_t rate_bps;        /* 0: no limit */
	uint64_t burst_ns;
	uint64_t tat;             /* theoretical arrival time: credit used up to here */
};

void fault_bucket_init(struct fault_bucket *b, uint64_t rate_bps, size_t frame_max);
/* May bytes leave at now?  0 and *due (now, or when the bucket has room:
 * the frame is held until then), or -1: it would wait longer than
 * FAULT_RATE_LATENCY_NS (dropped; the bucket is left as it was). */
int fault_bucket_take(struct fault_bucket *b, uint64_t now, uint64_t bytes, uint64_t *due);

struct fault_heap {
	uint32_t n;
	uint32_t cap;
	uint32_t *at;             /* heap position -> slot */
	uint32_t *pos;            /* slot -> heap position */
	uint64_t *due;            /* per slot */
	uint64_t *seq;            /* per slot: ties keep their order */
	uint64_t next_seq;
};

int fault_heap_init(struct fault_heap *h, uint32_t cap);
void fault_heap_free(struct fault_heap *h);
void fault_heap_push(struct fault_heap *h, uint32_t slot, uint64_t due);
/* The slot that is due first if it is due at now, else -1; taken out. */
int64_t fault_heap_pop_due(struct fault_heap *h, uint64_t now);
/* Give a slot in the heap a new due time (and a new place among equals). */
void fault_heap_move(struct fault_heap *h, uint32_t slot, uint64_t due);
void fault_heap_remove(struct fault_heap *h, uint32_t slot);
/* When the first slot is due; UINT64_MAX when empty. */
uint64_t fault_heap_next(const struct fault_heap *h);

/* The bytes of an inner frame's L4 payload, after its Ethernet (one VLAN
 * tag), IPv4 or IPv6 and TCP, UDP or ICMP headers, up to the end of the
 * IP packet (Ethernet padding is in no checksum): 1 and [*off, *end), or
 * 0 when there are none (no IP, a fragment, an IPv6 extension header,
 * no payload).  Flipping a bit there is what the inner checksum catches. */
int fault_payload_span(const uint8_t *frame, size_t len, size_t *off, size_t *end);

enum fault_slot_state { SLOT_FREE, SLOT_HELD, SLOT_OUT, SLOT_INFLIGHT };

/* A frame being held (or a corrupted copy on its way out). */
struct fault_slot_meta {
	uint32_t len;
	uint32_t vni;
	uint32_t ip;              /* destination VTEP, network byte order */
	uint16_t udp_port;
	uint8_t copies;           /* 2: duplicated */
	uint8_t state;            /* enum fault_slot_state */
	uint32_t hash;            /* the inner flow's: its send socket */
	int32_t stash_of;         /* the entry whose reordered frame it is, or -1 */
	int32_t port;             /* the port it came from (fault_frame) */
};

struct fault_entry {
	int used;
	struct uvx_fault f;       /* the key and the settings, as given */
	struct fault_bucket bucket;
	int32_t stash;            /* a frame held back behind the next, or -1 */
	struct uvx_fault_counters ctr;
};

struct fault_table {
	uint32_t n;               /* entries in use */
	uint32_t hi;              /* entries [0, hi) may be in use */
	struct fault_entry e[UVX_FAULTS_MAX];
	uint64_t rng;
	size_t slot_size;
	uint32_t nslots;
	uint8_t *store;           /* nslots * slot_size */
	struct fault_slot_meta *meta;
	uint32_t *free;           /* stack of free slots */
	uint32_t nfree;
	uint32_t *inflight;       /* slots queued to the socket, freed once sent */
	uint32_t ninflight;
	struct fault_heap heap;
};

/* A table whose slots hold inner frames of up to frame_max bytes; NULL
 * without memory. */
struct fault_table *fault_table_new(size_t frame_max, uint64_t seed);
void fault_table_free(struct fault_table *t);
/* Set (add or change, counters kept) or clear an entry: 0, -EINVAL,
 * -ENOSPC (UVX_FAULTS_MAX in use), -ENOENT (clear). */
int fault_table_set(struct fault_table *t, const struct uvx_fault *f);
int fault_table_clear(struct fault_table *t, uint32_t peer_ip, uint32_t vni, uint64_t now);
/* Does any rule need frames held (delay, jitter, reordering, a rate)? */
int fault_rule_holds(const struct uvx_fault *f);

/* The entry for a datagram to ip in vni: (peer, VNI) before (peer, any)
 * before (any, VNI); NULL for none. */
struct fault_entry *fault_find(struct fault_table *t, uint32_t ip, uint32_t vni);

/* One datagram: its inner frame in up to two pieces, where it goes. */
struct fault_frame {
	const uint8_t *p1;
	size_t l1;
	const uint8_t *p2;
	size_t l2;
	uint32_t vni;
	uint32_t ip;
	uint16_t udp_port;
	uint32_t hash;
	int32_t port;             /* the port it came from: its GBP group, a capture's port */
};

/* What fault_judge decided.  reason: UVX_PASS, or the drop to count.
 * Otherwise copies (1 or 2) go now, from slot when it is >= 0 (a corrupted
 * copy; SLOT_OUT) or else from the frame's own pieces, followed by the
 * frame in release (>= 0: one held back that this one overtook; SLOT_OUT);
 * copies 0: the frame is held (the delay queue sends it). */
struct fault_verdict {
	int reason;
	unsigned copies;
	int32_t slot;
	int32_t release;
};

void fault_judge(struct fault_table *t, struct fault_entry *e,
		 const struct fault_frame *fr, uint64_t now, struct fault_verdict *out);
/* A held frame that is due at now, taken out of the queue (SLOT_OUT); -1
 * for none. */
int64_t fault_due(struct fault_table *t, uint64_t now);
static inline uint8_t *fault_slot_data(struct fault_table *t, uint32_t slot)
{
	return t->store + (size_t)slot * t->slot_size;
}
/* A SLOT_OUT frame queued to the socket (freed at the next fault_reclaim)
 * or not sent after all (freed now). */
void fault_inflight(struct fault_table *t, uint32_t slot);
void fault_slot_free(struct fault_table *t, uint32_t slot);
/* The transmit queue was sent: its slots are free again. */
void fault_reclaim(struct fault_table *t);
/* Frames held now. */
uint32_t fault_held(const struct fault_table *t);

#endif
