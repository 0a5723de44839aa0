/* The VTEP addresses admitted to one VNI ("only members speak"): a set of
 * IPv4 addresses with open addressing, at most half full, rebuilt (grown,
 * or without a removed address) under the datapath's write lock, read by
 * the receive path for every datagram.  Nothing is allocated per packet.
 *
 * Members are chosen by the operator, strangers by anyone: a lookup for a
 * stranger walks the run of occupied slots where its address lands, so
 * the slot must depend on every bit of the address, or the members of one
 * subnet (whose addresses share their first octets) would fill one run
 * that every stranger of that subnet walks to its end.
 */
#ifndef UVX_PEERS_H
#define UVX_PEERS_H

#include <stdint.h>

struct peer_set {
	uint32_t *slot;            /* addresses (network byte order); 0: free */
	uint32_t mask;             /* slots - 1, or 0 with none */
	uint32_t n;
};

/* MurmurHash3's 32-bit finalizer: each bit of x moves every bit of the
 * result, so the low bits a mask keeps spread keys that differ only in a
 * few bits (one subnet's addresses here, one group's rules in gbp.c). */
static inline uint32_t mix32(uint32_t x)
{
	x ^= x >> 16;
	x *= 0x85ebca6bu;
	x ^= x >> 13;
	x *= 0xc2b2ae35u;
	x ^= x >> 16;
	return x;
}

static inline int peer_set_has(const struct peer_set *ps, uint32_t ip)
{
	if (!ps->n || ip == 0)
		return 0;
	for (uint32_t s = mix32(ip) & ps->mask;; s = (s + 1) & ps->mask) {
		if (ps->slot[s] == ip)
			return 1;
		if (ps->slot[s] == 0)
			return 0;   /* at most half full: a free slot ends every walk */
	}
}

/* 0, -EEXIST, -EINVAL (0.0.0.0) or -ENOMEM. */
int peer_set_add(struct peer_set *ps, uint32_t ip);
/* 0 or -ENOENT (or -ENOMEM: the set is left as it was). */
int peer_set_del(struct peer_set *ps, uint32_t ip);
void peer_set_free(struct peer_set *ps);
/* The longest run of occupied slots: the most a lookup for a stranger
 * can read (for the tests). */
uint32_t peer_set_longest_run(const struct peer_set *ps);

#endif
