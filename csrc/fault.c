/* Fault injection: the pieces and the rules (fault.h).  Nothing here knows
 * a datapath; fault_api.c sets the table up under the datapath's locks and
 * xmit.c sends what fault_judge and fault_due hand it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "fault.h"
#include "vxlan.h"

/* xorshift64* (Vigna, "An experimental exploration of Marsaglia's
 * xorshift generators, scrambled", 2016): a few instructions per draw,
 * good enough for choosing which frames to hurt. */
uint64_t fault_rand(uint64_t *state)
{
	uint64_t x = *state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1Dull;
}

int fault_hit(uint64_t *state, uint32_t ppm)
{
	if (ppm == 0)
		return 0;
	if (ppm >= UVX_FAULT_PPM)
		return 1;
	/* The high 32 bits are the best of xorshift64*'s output. */
	uint64_t r = fault_rand(state) >> 32;
	return r * UVX_FAULT_PPM < (uint64_t)ppm << 32;
}

/* --- Token bucket, kept as a time (GCRA) --------------------------------
 *
 * tat is the time up to which the rate's credit is spent.  A frame of B
 * bytes costs B * 8 / rate seconds of it; the bucket holds burst_ns, so
 * tat never lags now by more.  A frame may leave once tat + cost <= now;
 * else at tat + cost, held until then, unless that is more than
 * FAULT_RATE_LATENCY_NS away.  Frames leave in the order they came. */

void fault_bucket_init(struct fault_bucket *b, uint64_t rate_bps, size_t frame_max)
{
	b->rate_bps = rate_bps;
	b->tat = 0;
	b->burst_ns = 0;
	if (!rate_bps)
		return;
	uint64_t two_frames = (uint64_t)frame_max * 2 * 8 * 1000000000ull / rate_bps;
	b->burst_ns = two_frames > FAULT_RATE_BURST_NS ? two_frames : FAULT_RATE_BURST_NS;
}

int fault_bucket_take(struct fault_bucket *b, uint64_t now, uint64_t bytes, uint64_t *due)
{
	*due = now;
	if (!b->rate_bps)
		return 0;
	uint64_t tat = b->tat;
	if (tat + b->burst_ns < now)
		tat = now - b->burst_ns;           /* full: credit the burst only */
	/* bytes <= 128 KB and rate >= 8000: no overflow. */
	uint64_t after = tat + bytes * 8 * 1000000000ull / b->rate_bps;
	if (after > now + FAULT_RATE_LATENCY_NS)
		return -1;
	b->tat = after;
	if (after > now)
		*due = after;
	return 0;
}

/* --- The delay queue: a binary min-heap of slots ------------------------ */

int fault_heap_init(struct fault_heap *h, uint32_t cap)
{
	memset(h, 0, sizeof(*h));
	h->cap = cap;
	h->at = calloc(cap, sizeof(*h->at));
	h->pos = calloc(cap, sizeof(*h->pos));
	h->due = calloc(cap, sizeof(*h->due));
	h->seq = calloc(cap, sizeof(*h->seq));
	if (!h->at || !h->pos || !h->due || !h->seq) {
		fault_heap_free(h);
		return -ENOMEM;
	}
	return 0;
}

void fault_heap_free(struct fault_heap *h)
{
	free(h->at);
	free(h->pos);
	free(h->due);
	free(h->seq);
	memset(h, 0, sizeof(*h));
}

static int heap_before(const struct fault_heap *h, uint32_t a, uint32_t b)
{
	return h->due[a] < h->due[b] || (h->due[a] == h->due[b] && h->seq[a] < h->seq[b]);
}

static void heap_place(struct fault_heap *h, uint32_t i, uint32_t slot)
{
	h->at[i] = slot;
	h->pos[slot] = i;
}

static void heap_up(struct fault_heap *h, uint32_t i)
{
	uint32_t slot = h->at[i];
	while (i > 0) {
		uint32_t parent = (i - 1) / 2;
		if (!heap_before(h, slot, h->at[parent]))
			break;
		heap_place(h, i, h->at[parent]);
		i = parent;
	}
	heap_place(h, i, slot);
}

static void heap_down(struct fault_heap *h, uint32_t i)
{
	uint32_t slot = h->at[i];
	for (;;) {
		uint32_t c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && heap_before(h, h->at[c + 1], h->at[c]))
			c++;
		if (!heap_before(h, h->at[c], slot))
			break;
		heap_place(h, i, h->at[c]);
		i = c;
	}
	heap_place(h, i, slot);
}

void fault_heap_push(struct fault_heap *h, uint32_t slot, uint64_t due)
{
	/* Callers push only slots they own, at most cap of them. */
	h->due[slot] = due;
	h->seq[slot] = h->next_seq++;
	heap_place(h, h->n++, slot);
	heap_up(h, h->n - 1);
}

void fault_heap_remove(struct fault_heap *h, uint32_t slot)
{
	uint32_t i = h->pos[slot];
	uint32_t last = h->at[--h->n];
	if (i == h->n)
		return;
	heap_place(h, i, last);
	heap_up(h, i);
	heap_down(h, h->pos[last]);
}

void fault_heap_move(struct fault_heap *h, uint32_t slot, uint64_t due)
{
	fault_heap_remove(h, slot);
	fault_heap_push(h, slot, due);
}

uint64_t fault_heap_next(const struct fault_heap *h)
{
	return h->n ? h->due[h->at[0]] : UINT64_MAX;
}

int64_t fault_heap_pop_due(struct fault_heap *h, uint64_t now)
{
	if (!h->n || h->due[h->at[0]] > now)
		return -1;
	uint32_t slot = h->at[0];
	fault_heap_remove(h, slot);
	return slot;
}

/* --- Where corruption goes ---------------------------------------------- */

#define PROTO_ICMP   1
#define PROTO_ICMPV6 58

int fault_payload_span(const uint8_t *f, size_t len, size_t *off, size_t *end)
{
	size_t l3 = ETH_HLEN;
	if (len < l3)
		return 0;
	uint16_t type = rd16(f + 12);
	if (type == ETH_P_8021Q) {
		if (len < l3 + 4)
			return 0;
		type = rd16(f + 16);
		l3 += 4;
	}
	size_t l4, stop;
	uint8_t proto;
	if (type == ETH_P_IPV4) {
		if (len < l3 + 20 || (f[l3] >> 4) != 4)
			return 0;
		size_t ihl = (size_t)(f[l3] & 0x0f) * 4;
		size_t tot = rd16(f + l3 + 2);
		/* A fragment's L4 header is in the first one only; the rest
		 * carry no header we could step over. */
		if (ihl < 20 || (rd16(f + l3 + 6) & 0x3fff))
			return 0;
		proto = f[l3 + 9];
		l4 = l3 + ihl;
		stop = l3 + tot;
	} else if (type == ETH_P_IPV6) {
		if (len < l3 + 40 || (f[l3] >> 4) != 6)
			return 0;
		proto = f[l3 + 6];        /* extension headers: not followed */
		l4 = l3 + 40;
		stop = l4 + rd16(f + l3 + 4);
	} else {
		return 0;
	}
	if (stop > len)
		stop = len;               /* truncated: flip within what is here */
	size_t hl;
	if (proto == PROTO_TCP) {
		if (l4 + 20 > stop)
			return 0;
		hl = (size_t)(f[l4 + 12] >> 4) * 4;
		if (hl < 20)
			return 0;
	} else if (proto == PROTO_UDP || proto == PROTO_ICMP || proto == PROTO_ICMPV6) {
		hl = 8;                   /* ports, length, checksum / type, code, checksum, id, seq */
	} else {
		return 0;
	}
	if (l4 + hl >= stop)
		return 0;
	*off = l4 + hl;
	*end = stop;
	return 1;
}

/* --- The table ------------------------------------------------------------ */

struct fault_table *fault_table_new(size_t frame_max, uint64_t seed)
{
	struct fault_table *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	uint32_t n = (uint32_t)(FAULT_QUEUE_BYTES / frame_max);
	if (n > FAULT_SLOTS_MAX)
		n = FAULT_SLOTS_MAX;
	if (n < FAULT_SLOTS_MIN)
		n = FAULT_SLOTS_MIN;
	t->slot_size = frame_max;
	t->nslots = n;
	t->rng = seed ? seed : 0x9E3779B97F4A7C15ull;   /* xorshift must not start at 0 */
	t->store = malloc((size_t)n * frame_max);
	t->meta = calloc(n, sizeof(*t->meta));
	t->free = calloc(n, sizeof(*t->free));
	t->inflight = calloc(n, sizeof(*t->inflight));
	if (!t->store || !t->meta || !t->free || !t->inflight ||
	    fault_heap_init(&t->heap, n) < 0) {
		fault_table_free(t);
		return NULL;
	}
	for (uint32_t i = 0; i < n; i++)
		t->free[i] = n - 1 - i;       /* slot 0 is taken first */
	t->nfree = n;
	for (unsigned i = 0; i < UVX_FAULTS_MAX; i++)
		t->e[i].stash = -1;
	return t;
}

void fault_table_free(struct fault_table *t)
{
	if (!t)
		return;
	fault_heap_free(&t->heap);
	free(t->store);
	free(t->meta);
	free(t->free);
	free(t->inflight);
	free(t);
}

int fault_rule_holds(const struct uvx_fault *f)
{
	return f->delay_us || f->jitter_us || f->reorder_ppm || f->rate_bps;
}

static int rule_valid(const struct uvx_fault *f)
{
	if (f->peer_ip == 0 || (f->peer_ip == UVX_FAULT_ANY && f->vni == UVX_FAULT_ANY))
		return 0;
	if (f->vni != UVX_FAULT_ANY && f->vni > VXLAN_VNI_MAX)
		return 0;
	if (f->loss_ppm > UVX_FAULT_PPM || f->duplicate_ppm > UVX_FAULT_PPM ||
	    f->reorder_ppm > UVX_FAULT_PPM || f->corrupt_ppm > UVX_FAULT_PPM)
		return 0;
	if (f->delay_us > UVX_FAULT_DELAY_MAX || f->jitter_us > UVX_FAULT_DELAY_MAX)
		return 0;
	return f->rate_bps == 0 || (f->rate_bps >= UVX_FAULT_RATE_MIN &&
				    f->rate_bps <= 1000000000000ull);
}

static struct fault_entry *entry_exact(struct fault_table *t, uint32_t ip, uint32_t vni)
{
	for (uint32_t i = 0; i < t->hi; i++)
		if (t->e[i].used && t->e[i].f.peer_ip == ip && t->e[i].f.vni == vni)
			return &t->e[i];
	return NULL;
}

int fault_table_set(struct fault_table *t, const struct uvx_fault *f)
{
	if (!rule_valid(f))
		return -EINVAL;
	struct fault_entry *e = entry_exact(t, f->peer_ip, f->vni);
	if (!e) {
		for (unsigned i = 0; i < UVX_FAULTS_MAX && !e; i++)
			if (!t->e[i].used)
				e = &t->e[i];
		if (!e)
			return -ENOSPC;
		memset(e, 0, sizeof(*e));
		e->used = 1;
		e->stash = -1;
		t->n++;
		uint32_t idx = (uint32_t)(e - t->e);
		if (idx >= t->hi)
			t->hi = idx + 1;
	}
	/* A new or changed rate starts with a full bucket. */
	if (e->f.rate_bps != f->rate_bps)
		fault_bucket_init(&e->bucket, f->rate_bps,
				  t->slot_size + IPV4_HLEN + VXLAN_ENCAP_LEN);
	e->f = *f;
	return 0;
}

int fault_table_clear(struct fault_table *t, uint32_t peer_ip, uint32_t vni, uint64_t now)
{
	struct fault_entry *e = entry_exact(t, peer_ip, vni);
	if (!e)
		return -ENOENT;
	if (e->stash >= 0) {
		/* What it held back goes at once, no longer tied to it. */
		t->meta[e->stash].stash_of = -1;
		fault_heap_move(&t->heap, (uint32_t)e->stash, now);
	}
	e->used = 0;
	e->stash = -1;
	t->n--;
	while (t->hi && !t->e[t->hi - 1].used)
		t->hi--;
	return 0;
}

struct fault_entry *fault_find(struct fault_table *t, uint32_t ip, uint32_t vni)
{
	struct fault_entry *peer_any = NULL, *any_vni = NULL;
	for (uint32_t i = 0; i < t->hi; i++) {
		struct fault_entry *e = &t->e[i];
		if (!e->used)
			continue;
		if (e->f.peer_ip == ip) {
			if (e->f.vni == vni)
				return e;
			if (e->f.vni == UVX_FAULT_ANY)
				peer_any = e;
		} else if (e->f.peer_ip == UVX_FAULT_ANY && e->f.vni == vni) {
			any_vni = e;
		}
	}
	return peer_any ? peer_any : any_vni;
}

static int64_t slot_take(struct fault_table *t)
{
	if (!t->nfree)
		return -1;
	return t->free[--t->nfree];
}

void fault_slot_free(struct fault_table *t, uint32_t slot)
{
	t->meta[slot].state = SLOT_FREE;
	t->meta[slot].stash_of = -1;
	t->free[t->nfree++] = slot;
}

void fault_inflight(struct fault_table *t, uint32_t slot)
{
	t->meta[slot].state = SLOT_INFLIGHT;
	t->inflight[t->ninflight++] = slot;
}

void fault_reclaim(struct fault_table *t)
{
	for (uint32_t i = 0; i < t->ninflight; i++)
		fault_slot_free(t, t->inflight[i]);
	t->ninflight = 0;
}

uint32_t fault_held(const struct fault_table *t)
{
	return t->heap.n;
}

static void bump(uint64_t *c)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

/* Copy the frame into a slot; flip one bit of its payload if asked and
 * there is one.  Returns whether it was corrupted. */
static int slot_fill(struct fault_table *t, uint32_t slot, const struct fault_frame *fr,
		     unsigned copies, int corrupt)
{
	uint8_t *d = fault_slot_data(t, slot);
	memcpy(d, fr->p1, fr->l1);
	if (fr->l2)
		memcpy(d + fr->l1, fr->p2, fr->l2);
	struct fault_slot_meta *m = &t->meta[slot];
	m->len = (uint32_t)(fr->l1 + fr->l2);
	m->vni = fr->vni;
	m->ip = fr->ip;
	m->udp_port = fr->udp_port;
	m->copies = (uint8_t)copies;
	m->hash = fr->hash;
	m->port = fr->port;
	m->stash_of = -1;
	m->state = SLOT_OUT;
	size_t off, end;
	if (!corrupt || !fault_payload_span(d, m->len, &off, &end))
		return 0;
	uint64_t bit = fault_rand(&t->rng) % ((end - off) * 8);
	d[off + bit / 8] ^= (uint8_t)(1u << (bit % 8));
	return 1;
}

/* Effects in netem's order: loss, duplication, corruption, then when it
 * leaves (rate, delay and jitter), then reordering. */
void fault_judge(struct fault_table *t, struct fault_entry *e,
		 const struct fault_frame *fr, uint64_t now, struct fault_verdict *out)
{
	const struct uvx_fault *f = &e->f;
	*out = (struct fault_verdict){ UVX_PASS, 1, -1, -1 };
	bump(&e->ctr.matched);
	if (fault_hit(&t->rng, f->loss_ppm)) {
		bump(&e->ctr.lost);
		out->reason = UVX_DROP_FAULT_LOSS;
		return;
	}
	unsigned copies = 1 + (unsigned)fault_hit(&t->rng, f->duplicate_ppm);
	int corrupt = fault_hit(&t->rng, f->corrupt_ppm);
	int reorder = e->stash < 0 && fault_hit(&t->rng, f->reorder_ppm);

	uint64_t due = now;
	if (f->delay_us || f->jitter_us) {
		int64_t d = (int64_t)f->delay_us * 1000;
		if (f->jitter_us) {
			uint64_t span = 2ull * f->jitter_us * 1000 + 1;
			d += (int64_t)(fault_rand(&t->rng) % span) - (int64_t)f->jitter_us * 1000;
		}
		if (d > 0)
			due += (uint64_t)d;
	}
	uint64_t tat = e->bucket.tat;
	if (f->rate_bps) {
		uint64_t wire = (IPV4_HLEN + VXLAN_ENCAP_LEN + fr->l1 + fr->l2) * copies;
		uint64_t leave;
		if (fault_bucket_take(&e->bucket, now, wire, &leave) < 0) {
			bump(&e->ctr.rate_dropped);
			out->reason = UVX_DROP_FAULT_RATE;
			return;
		}
		/* The delay comes on top of the wait for the rate, as a link's
		 * propagation delay does after its serialisation. */
		due += leave - now;
	}
	int64_t slot = -1;
	if (reorder || due > now || corrupt) {
		slot = slot_take(t);
		if (slot < 0) {
			e->bucket.tat = tat;      /* it never left: give the credit back */
			bump(&e->ctr.queue_full);
			out->reason = UVX_DROP_FAULT_QUEUE_FULL;
			return;
		}
		if (slot_fill(t, (uint32_t)slot, fr, copies, corrupt))
			bump(&e->ctr.corrupted);
	}
	if (copies > 1)
		bump(&e->ctr.duplicated);

	if (reorder) {
		/* Held until the next frame overtakes it, or for a while. */
		t->meta[slot].state = SLOT_HELD;
		t->meta[slot].stash_of = (int32_t)(e - t->e);
		fault_heap_push(&t->heap, (uint32_t)slot, due + FAULT_REORDER_HOLD_NS);
		e->stash = (int32_t)slot;
		bump(&e->ctr.reordered);
		out->copies = 0;
		return;
	}
	int32_t stash = e->stash;
	if (due > now) {
		t->meta[slot].state = SLOT_HELD;
		fault_heap_push(&t->heap, (uint32_t)slot, due);
		bump(&e->ctr.delayed);
		out->copies = 0;
		if (stash >= 0) {
			/* The one held back leaves right after this one. */
			t->meta[stash].stash_of = -1;
			fault_heap_move(&t->heap, (uint32_t)stash, due);
			e->stash = -1;
		}
		return;
	}
	out->copies = copies;
	out->slot = (int32_t)slot;
	if (stash >= 0) {
		fault_heap_remove(&t->heap, (uint32_t)stash);
		t->meta[stash].state = SLOT_OUT;
		t->meta[stash].stash_of = -1;
		e->stash = -1;
		out->release = stash;
	}
}

int64_t fault_due(struct fault_table *t, uint64_t now)
{
	int64_t slot = fault_heap_pop_due(&t->heap, now);
	if (slot < 0)
		return -1;
	struct fault_slot_meta *m = &t->meta[slot];
	if (m->stash_of >= 0) {
		/* Held back and nothing overtook it in time. */
		t->e[m->stash_of].stash = -1;
		m->stash_of = -1;
	}
	m->state = SLOT_OUT;
	return slot;
}
