/* Python hooks: frames that match a rule leave the fast path for the
 * agent, which hands them to a hook and gives back a verdict (issue 14).
 *
 *   worker (xmit.c, rcv.c)                    agent's loop (uvxlan/hooks.py)
 *   ─────────────────────                     ──────────────────────────────
 *   punt_frame: a rule matches (VNI,          uvx_hook_take: read the "up"
 *     EtherType, MAC, direction) → copy   ──▶   rings, hand each frame to its
 *     into a free slot, push on "up";          hook's client
 *     no free slot → hook_queue_full      ◀──  uvx_hook_verdict / uvx_hook_inject:
 *   punt_notify: end of batch, wake the        push on "down"; uvx_hook_kick
 *     loop (one eventfd write)                 wakes the worker (or, without
 *   xmit_hook_run / rcv_hook_run: pop          threads, runs it here)
 *     "down", go on from the punt point
 *     (never punted twice), recycle
 *
 * Each worker has its own slots and rings, so every ring has one producer
 * and one consumer (a worker and the loop's thread) and needs no lock.  A
 * slot is the worker's while free, the loop's from "up" until its verdict,
 * the worker's again from "down".  Injected frames have slots of their own
 * (UVX_HOOK_INJECT per worker), the loop's while free.  Slots are mapped
 * when the first hook is added; a frame that matches no rule is never
 * copied, and a VNI with no rule costs one test of v->hooked.
 */
#ifndef UVX_PUNT_H
#define UVX_PUNT_H

#include <stddef.h>
#include <stdint.h>

#include "offload.h"     /* struct vnet_hdr */
#include "uvx.h"         /* UVX_HOOK_*, UVX_WORKERS */

#define PUNT_SLOTS (UVX_HOOK_SLOTS + UVX_HOOK_INJECT)
#define PUNT_RING  512   /* a power of two, at least PUNT_SLOTS */
#define PUNT_BYTES UVX_FRAME_MAX
#define PUNT_EPOLL_TOKEN (UINT64_MAX - 2)   /* a kick_fd in a worker's epoll set (worker.c has -0, -1) */

/* A single-producer, single-consumer ring of slot numbers. */
struct punt_ring {
	uint32_t head;             /* the consumer's */
	uint32_t tail;             /* the producer's */
	uint16_t idx[PUNT_RING];
};

/* What goes with a frame in its slot. */
struct punt_meta {
	uint32_t hook;
	uint32_t vni;
	int32_t port;              /* the port it came from or goes to, or -1 */
	uint32_t remote_ip;        /* from the wire: the VTEP that sent it */
	int32_t gbp_src;           /* from the wire: its GBP group (dp.h gbp_src) */
	uint32_t len;
	uint8_t dir;               /* UVX_HOOK_FROM_PORT, _FROM_WIRE; injected: _TO_PORT too */
	uint8_t verdict;           /* UVX_HOOK_PASS, _DROP */
	uint8_t injected;
	struct vnet_hdr vh;        /* from a port with offloads: as the TAP gave it */
};

/* One worker's slots and rings. */
struct punt_side {
	struct punt_meta meta[PUNT_SLOTS];
	uint8_t *data;             /* PUNT_SLOTS * PUNT_BYTES, mapped once */
	uint16_t free[UVX_HOOK_SLOTS];   /* the worker's free punt slots */
	unsigned nfree;
	struct punt_ring up;       /* worker -> loop: punted */
	struct punt_ring down;     /* loop -> worker: verdicts and injections */
	struct punt_ring inject_free;    /* worker -> loop: free inject slots */
	int kick_fd;               /* eventfd: "down" has work (with threads) */
	int notify;                /* punted in this batch: wake the loop */
	uint64_t punted;           /* the worker's counter */
};

struct punt_rule {
	uint32_t hook;
	uint32_t vni;
	uint16_t ethertype;        /* 0: any */
	uint8_t mac[6];
	uint8_t any_mac;
	uint8_t dirs;              /* UVX_HOOK_FROM_PORT | UVX_HOOK_FROM_WIRE */
};

struct punt {
	int on;                    /* slots mapped, fds open */
	int fd;                    /* eventfd: frames wait in an "up" ring */
	unsigned nrules;
	struct punt_rule rules[UVX_HOOK_RULES];
	struct punt_side side[UVX_WORKERS];
};

struct uvx_dp;
struct uvx_vni;
struct uvx_worker;

/* A frame handed back to a worker: its slot's number, what goes with it
 * and where it is. */
struct punt_job {
	uint16_t slot;
	struct punt_meta *m;
	uint8_t *frame;
};

/* Lifecycle (dp.c): nothing mapped until the first hook; all freed. */
void punt_init(struct punt *p);
void punt_free(struct punt *p);
/* A VNI just made: hooked if a rule names it. */
void punt_vni_added(struct uvx_dp *dp, struct uvx_vni *v);

/* The packet path (a worker, under the read lock).  1 if the frame was
 * taken (punted, or dropped as hook_queue_full): the caller stops there;
 * 0 if no rule matches.  vh NULL: no virtio-net header. */
int punt_frame(struct uvx_dp *dp, struct uvx_worker *w, struct uvx_vni *v,
	       int32_t port, uint32_t remote_ip, unsigned dir,
	       const uint8_t *frame, size_t len, const struct vnet_hdr *vh);
/* End of a batch: wake the loop if anything was punted. */
void punt_notify(struct uvx_dp *dp, struct uvx_worker *w);

/* A worker's share of the verdicts: up to max jobs from its "down" ring
 * (the kick eventfd read first, so nothing pushed later is missed), and,
 * once what was queued from them has been sent, their slots back. */
unsigned punt_pop(struct uvx_dp *dp, unsigned wid, struct punt_job *jobs, unsigned max);
void punt_recycle(struct uvx_dp *dp, unsigned wid, const struct punt_job *jobs, unsigned n);

/* Whether a worker has verdicts or injections to run (the loop's view). */
int punt_pending(struct punt_side *s);

/* The rest of each direction's path for frames back from a hook (xmit.c,
 * rcv.c); worker.c runs them. */
void xmit_hook_run(struct uvx_dp *dp);
void rcv_hook_run(struct uvx_dp *dp);

#endif
