/* Forwarding database.  See fdb.h. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fdb.h"

/* --- SipHash ---------------------------------------------------------------
 *
 * Aumasson and Bernstein, "SipHash: a fast short-input PRF" (INDOCRYPT
 * 2012, https://www.aumasson.jp/siphash/siphash.pdf), section 2: four
 * 64-bit words of state from the key, each 8-byte little-endian word of the
 * message mixed in with c SipRounds, the length in the last word's top
 * byte, then 0xff into v2 and d rounds.  Written from the paper; the FDB
 * uses SipHash-1-3, the variant Linux's hash tables use (hsiphash). */

static uint64_t rotl(uint64_t x, int b)
{
	return (x << b) | (x >> (64 - b));
}

static void sipround(uint64_t v[4])
{
	v[0] += v[1]; v[1] = rotl(v[1], 13); v[1] ^= v[0]; v[0] = rotl(v[0], 32);
	v[2] += v[3]; v[3] = rotl(v[3], 16); v[3] ^= v[2];
	v[0] += v[3]; v[3] = rotl(v[3], 21); v[3] ^= v[0];
	v[2] += v[1]; v[1] = rotl(v[1], 17); v[1] ^= v[2]; v[2] = rotl(v[2], 32);
}

static void sip_word(uint64_t v[4], uint64_t m, int c)
{
	v[3] ^= m;
	for (int r = 0; r < c; r++)
		sipround(v);
	v[0] ^= m;
}

uint64_t fdb_siphash(const uint64_t key[2], const uint8_t *in, size_t len,
		     int c, int d)
{
	uint64_t v[4] = {
		key[0] ^ 0x736f6d6570736575ull, key[1] ^ 0x646f72616e646f6dull,
		key[0] ^ 0x6c7967656e657261ull, key[1] ^ 0x7465646279746573ull,
	};
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t m = 0;
		for (int j = 7; j >= 0; j--)
			m = (m << 8) | in[i + (size_t)j];
		sip_word(v, m, c);
	}
	uint64_t last = (uint64_t)(len & 0xff) << 56;
	for (size_t j = 0; i + j < len; j++)
		last |= (uint64_t)in[i + j] << (8 * j);
	sip_word(v, last, c);
	v[2] ^= 0xff;
	for (int r = 0; r < d; r++)
		sipround(v);
	return v[0] ^ v[1] ^ v[2] ^ v[3];
}

static uint32_t fdb_hash(const struct fdb *f, uint32_t vni, const uint8_t *mac)
{
	uint8_t in[10];
	memcpy(in, &vni, 4);
	memcpy(in + 4, mac, 6);
	return (uint32_t)fdb_siphash(f->key, in, sizeof(in), 1, 3);
}

/* 16 random bytes: getrandom(2) (Linux 3.17), else /dev/urandom for the
 * older kernels uvxlan runs on. */
static int random_key(uint64_t key[2])
{
#ifdef SYS_getrandom
	if (syscall(SYS_getrandom, key, 16, 0) == 16)
		return 0;
#endif
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, key, 16);
	close(fd);
	return n == 16 ? 0 : -1;
}

/* --- The pool ----------------------------------------------------------- */

static uint32_t buckets_for(uint32_t capacity)
{
	uint32_t n = 16;
	while (n < capacity && n < (1u << 30))
		n <<= 1;
	return n;
}

int fdb_init(struct fdb *f, uint32_t capacity)
{
	uint32_t nbuckets = buckets_for(capacity);

	memset(f, 0, sizeof(*f));
	if (random_key(f->key) < 0)
		return -1;
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
	f->learn_max = capacity;
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

/* Twice the entries, buckets to match, every chain rebuilt.  Only for a
 * static entry, under the write lock (fdb.h). */
static int fdb_grow(struct fdb *f)
{
	if (f->capacity >= (1u << 30))
		return -1;
	uint32_t cap = f->capacity ? f->capacity * 2 : 16;
	uint32_t nbuckets = buckets_for(cap);
	struct fdb_entry *e = realloc(f->entries, (size_t)cap * sizeof(*e));
	if (!e)
		return -1;
	f->entries = e;
	int32_t *b = malloc((size_t)nbuckets * sizeof(*b));
	if (!b)
		return -1;     /* the pool is larger, its old buckets still hold */
	free(f->buckets);
	f->buckets = b;
	f->mask = nbuckets - 1;
	for (uint32_t i = 0; i < nbuckets; i++)
		b[i] = -1;
	memset(&e[f->capacity], 0, (size_t)(cap - f->capacity) * sizeof(*e));
	for (uint32_t i = cap; i-- > f->capacity;) {
		e[i].next = f->free_head;
		f->free_head = (int32_t)i;
	}
	for (uint32_t i = 0; i < f->capacity; i++) {
		if (!e[i].in_use)
			continue;
		uint32_t h = fdb_hash(f, e[i].vni, e[i].mac) & f->mask;
		e[i].next = b[h];
		b[h] = (int32_t)i;
	}
	f->capacity = cap;
	return 0;
}

struct fdb_entry *fdb_lookup(struct fdb *f, uint32_t vni, const uint8_t *mac)
{
	int32_t i = f->buckets[fdb_hash(f, vni, mac) & f->mask];
	while (i >= 0) {
		struct fdb_entry *e = &f->entries[i];
		if (e->vni == vni && memcmp(e->mac, mac, 6) == 0)
			return e;
		i = e->next;
	}
	return NULL;
}

struct fdb_entry *fdb_slot(struct fdb *f, uint32_t i)
{
	return i < f->capacity && f->entries[i].in_use ? &f->entries[i] : NULL;
}

static struct fdb_entry *fdb_create(struct fdb *f, uint32_t vni,
				    const uint8_t *mac)
{
	if (f->free_head < 0)
		return NULL;
	int32_t i = f->free_head;
	struct fdb_entry *e = &f->entries[i];
	f->free_head = e->next;

	uint32_t b = fdb_hash(f, vni, mac) & f->mask;
	memset(e, 0, sizeof(*e));
	e->vni = vni;
	memcpy(e->mac, mac, 6);
	e->in_use = 1;
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
	if (f->learned >= f->learn_max)
		return FDB_LEARN_FULL;
	e = fdb_create(f, vni, mac);
	if (!e)
		return FDB_LEARN_FULL;
	e->dest = *dest;
	e->flags = dest->port < 0 ? FDB_F_REMOTE : 0;
	e->updated_ms = now_ms;
	e->used_ms = now_ms;
	f->learned++;
	(*learned_in_vni)++;
	return FDB_LEARN_NEW;
}

int fdb_add_static(struct fdb *f, uint32_t vni, const uint8_t *mac,
		   const struct fdb_dest *dest, uint64_t now_ms, int *was_learned)
{
	struct fdb_entry *e = fdb_lookup(f, vni, mac);
	*was_learned = e && !(e->flags & FDB_F_STATIC);
	/* Room for every static entry and learn_max learned ones, so neither
	 * kind ever runs out because of the other. */
	uint32_t statics = f->count - f->learned + (!e || *was_learned);
	if ((uint64_t)statics + f->learn_max > f->capacity) {
		if (fdb_grow(f) < 0)
			return -1;
		e = fdb_lookup(f, vni, mac);   /* the pool moved */
	}
	if (!e)
		e = fdb_create(f, vni, mac);
	if (!e)
		return -1;
	if (*was_learned)
		f->learned--;
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
	if (!(e->flags & FDB_F_STATIC))
		f->learned--;
	e->in_use = 0;
	e->next = f->free_head;
	f->free_head = i;
	f->count--;
}

int fdb_delete(struct fdb *f, uint32_t vni, const uint8_t *mac)
{
	int32_t *link = &f->buckets[fdb_hash(f, vni, mac) & f->mask];
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
