/* The admitted VTEPs of a VNI.  See peers.h. */
#include <errno.h>
#include <stdlib.h>

#include "peers.h"

/* Put ip in a set with room for it (no check for duplicates). */
static void peer_insert(struct peer_set *ps, uint32_t ip)
{
	uint32_t s = mix32(ip) & ps->mask;
	while (ps->slot[s])
		s = (s + 1) & ps->mask;
	ps->slot[s] = ip;
	ps->n++;
}

/* The set rebuilt in size slots, without drop_ip (0: none): growing, and
 * removing without tombstones (peers change rarely; lookups stay short). */
static int peer_rebuild(struct peer_set *ps, uint32_t size, uint32_t drop_ip)
{
	uint32_t *slot = calloc(size, sizeof(*slot));
	if (!slot)
		return -ENOMEM;
	struct peer_set next = { slot, size - 1, 0 };
	for (uint32_t i = 0; ps->slot && i <= ps->mask; i++)
		if (ps->slot[i] && ps->slot[i] != drop_ip)
			peer_insert(&next, ps->slot[i]);
	free(ps->slot);
	*ps = next;
	return 0;
}

int peer_set_add(struct peer_set *ps, uint32_t ip)
{
	if (ip == 0)
		return -EINVAL;
	if (peer_set_has(ps, ip))
		return -EEXIST;
	/* At most half full, so a walk for a stranger ends soon. */
	uint32_t size = ps->slot ? ps->mask + 1 : 0;
	if (2 * (ps->n + 1) > size) {
		int rc = peer_rebuild(ps, size ? 2 * size : 16, 0);
		if (rc < 0)
			return rc;
	}
	peer_insert(ps, ip);
	return 0;
}

int peer_set_del(struct peer_set *ps, uint32_t ip)
{
	if (!peer_set_has(ps, ip))
		return -ENOENT;
	return peer_rebuild(ps, ps->mask + 1, ip);
}

void peer_set_free(struct peer_set *ps)
{
	free(ps->slot);
	*ps = (struct peer_set){ NULL, 0, 0 };
}

uint32_t peer_set_longest_run(const struct peer_set *ps)
{
	uint32_t longest = 0, run = 0;
	if (!ps->n)
		return 0;
	/* Twice round, so a run that wraps past the end is counted whole. */
	for (uint32_t i = 0; i < 2 * (ps->mask + 1); i++) {
		run = ps->slot[i & ps->mask] ? run + 1 : 0;
		if (run > longest)
			longest = run;
	}
	return longest;
}
