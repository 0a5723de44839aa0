/* Forwarding database.  See fdb.h. */
#include <stdlib.h>
#include <string.h>

#include "fdb.h"

static uint32_t fdb_hash(uint32_t vni, const uint8_t *mac)
{
	/* The low MAC bytes vary most between hosts; mix them with the VNI so
	 * one MAC in many VNIs spreads over buckets too. */
	uint64_t k = ((uint64_t)mac[0] << 40) | ((uint64_t)mac[1] << 32) |
		     ((uint64_t)mac[2] << 24) | ((uint64_t)mac[3] << 16) |
		     ((uint64_t)mac[4] << 8) | mac[5];
	k ^= (uint64_t)vni * 0x9E3779B97F4A7C15ull;
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	return (uint32_t)k;
}

int fdb_init(struct fdb *f, uint32_t capacity)
{
	uint32_t nbuckets = 16;
	while (nbuckets < capacity && nbuckets < (1u << 30))
		nbuckets <<= 1;

	memset(f, 0, sizeof(*f));
	f->entries = calloc(capacity, sizeof(*f->entries));
	f->buckets = malloc(nbuckets * sizeof(*f->buckets));
	if (!f->entries || !f->buckets) {
		fdb_free(f);
		return -1;
	}
	for (uint32_t i = 0; i < nbuckets; i++)
		f->buckets[i] = -1;
	for (uint32_t i = 0; i < capacity; i++)
		f->entries[i].next = i + 1 < capacity ? (int32_t)(i + 1) : -1;
	f->capacity = capacity;
	f->mask = nbuckets - 1;
	f->free_head = capacity ? 0 : -1;
	return 0;
}

void fdb_free(struct fdb *f)
{
	free(f->entries);
	free(f->buckets);
	f->entries = NULL;
	f->buckets = NULL;
}

struct fdb_entry *fdb_lookup(struct fdb *f, uint32_t vni, const uint8_t *mac)
{
	int32_t i = f->buckets[fdb_hash(vni, mac) & f->mask];
	while (i >= 0) {
		struct fdb_entry *e = &f->entries[i];
		if (e->vni == vni && memcmp(e->mac, mac, 6) == 0)
			return e;
		i = e->next;
	}
	return NULL;
}

static struct fdb_entry *fdb_create(struct fdb *f, uint32_t vni,
				    const uint8_t *mac)
{
	if (f->free_head < 0)
		return NULL;
	int32_t i = f->free_head;
	struct fdb_entry *e = &f->entries[i];
	f->free_head = e->next;

	uint32_t b = fdb_hash(vni, mac) & f->mask;
	memset(e, 0, sizeof(*e));
	e->vni = vni;
	memcpy(e->mac, mac, 6);
	e->next = f->buckets[b];
	f->buckets[b] = i;
	f->count++;
	return e;
}

static int same_dest(const struct fdb_dest *a, const struct fdb_dest *b)
{
	return a->port == b->port && a->ip == b->ip &&
	       a->udp_port == b->udp_port;
}

enum fdb_learn_result fdb_learn(struct fdb *f, uint32_t vni, const uint8_t *mac,
				const struct fdb_dest *dest, uint64_t now_ms,
				uint32_t limit, uint32_t *learned_in_vni)
{
	struct fdb_entry *e = fdb_lookup(f, vni, mac);
	if (e) {
		if (e->flags & FDB_F_STATIC)
			return FDB_LEARN_STATIC;
		e->updated_ms = now_ms;
		if (same_dest(&e->dest, dest))
			return FDB_LEARN_REFRESHED;
		e->dest = *dest;
		e->flags = dest->port < 0 ? FDB_F_REMOTE : 0;
		return FDB_LEARN_MOVED;
	}
	if (limit && *learned_in_vni >= limit)
		return FDB_LEARN_LIMIT;
	e = fdb_create(f, vni, mac);
	if (!e)
		return FDB_LEARN_FULL;
	e->dest = *dest;
	e->flags = dest->port < 0 ? FDB_F_REMOTE : 0;
	e->updated_ms = now_ms;
	e->used_ms = now_ms;
	(*learned_in_vni)++;
	return FDB_LEARN_NEW;
}

int fdb_add_static(struct fdb *f, uint32_t vni, const uint8_t *mac,
		   const struct fdb_dest *dest, uint64_t now_ms, int *was_learned)
{
	struct fdb_entry *e = fdb_lookup(f, vni, mac);
	*was_learned = e && !(e->flags & FDB_F_STATIC);
	if (!e)
		e = fdb_create(f, vni, mac);
	if (!e)
		return -1;
	e->dest = *dest;
	e->flags = (uint8_t)(FDB_F_STATIC | (dest->port < 0 ? FDB_F_REMOTE : 0));
	e->updated_ms = now_ms;
	e->used_ms = now_ms;
	return 0;
}

static void fdb_unlink(struct fdb *f, int32_t *link, int32_t i)
{
	struct fdb_entry *e = &f->entries[i];
	*link = e->next;
	e->next = f->free_head;
	f->free_head = i;
	f->count--;
}

int fdb_delete(struct fdb *f, uint32_t vni, const uint8_t *mac)
{
	int32_t *link = &f->buckets[fdb_hash(vni, mac) & f->mask];
	while (*link >= 0) {
		int32_t i = *link;
		struct fdb_entry *e = &f->entries[i];
		if (e->vni == vni && memcmp(e->mac, mac, 6) == 0) {
			int flags = e->flags;
			fdb_unlink(f, link, i);
			return flags;
		}
		link = &e->next;
	}
	return -1;
}

uint32_t fdb_sweep(struct fdb *f, fdb_visit_fn visit, void *ctx)
{
	uint32_t removed = 0;
	for (uint32_t b = 0; b <= f->mask; b++) {
		int32_t *link = &f->buckets[b];
		while (*link >= 0) {
			int32_t i = *link;
			if (visit(&f->entries[i], ctx)) {
				fdb_unlink(f, link, i);
				removed++;
			} else {
				link = &f->entries[i].next;
			}
		}
	}
	return removed;
}
