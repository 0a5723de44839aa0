/* Forwarding database: (VNI, MAC) -> a local port or a remote VTEP.
 *
 * A pool of entries chained from a power-of-two bucket array.  Learning on
 * the packet path takes entries from the pool's free list: nothing is
 * allocated per packet.
 *
 * Static entries never fail because learned ones filled the pool (issue
 * 10).  Learned entries are capped at the capacity the FDB was made with
 * (learn_max, fdb_capacity), whatever the VNI caps allow; a static entry
 * that would leave less room than that for learned ones doubles the pool
 * (fdb_add_static, which runs only under the datapath's write lock, never
 * on the packet path: the realloc and rehash happen while no worker holds
 * a pointer).  So the pool always holds every static entry plus learn_max
 * learned ones, and learning is refused (FULL) only at learn_max.
 *
 * The bucket of a (VNI, MAC) is SipHash-1-3 of it under a random 128-bit
 * key drawn at fdb_init (getrandom): nobody who does not know the key can
 * choose MACs that land in one bucket and make every lookup walk a long
 * chain (the attack of Crosby and Wallach, USENIX Security 2003).
 */
#ifndef UVX_FDB_H
#define UVX_FDB_H

#include <stddef.h>
#include <stdint.h>

#define FDB_F_STATIC  0x01   /* configured; learning never moves it */
#define FDB_F_REMOTE  0x02   /* behind a remote VTEP, else a local port */

/* Where a frame goes: a local port (TAP) or a remote VTEP. */
struct fdb_dest {
	int32_t port;          /* local port id, or -1 for remote */
	uint32_t ip;           /* remote VTEP IPv4, network byte order */
	uint16_t udp_port;     /* remote VTEP UDP port, host order */
};

struct fdb_entry {
	uint32_t vni;
	uint8_t mac[6];
	uint8_t flags;
	uint8_t in_use;        /* on a bucket chain, not the free list */
	struct fdb_dest dest;
	uint64_t updated_ms;   /* last learned or configured */
	uint64_t used_ms;      /* last forwarded to */
	int32_t next;          /* bucket chain, or free list */
};

struct fdb {
	struct fdb_entry *entries;
	int32_t *buckets;
	uint32_t capacity;     /* entries in the pool (grows for static ones) */
	uint32_t mask;         /* buckets - 1 */
	int32_t free_head;
	uint32_t count;
	uint32_t learned;      /* learned entries, all VNIs */
	uint32_t learn_max;    /* their cap: the capacity fdb_init was given */
	uint64_t key[2];       /* SipHash key, random per FDB */
};

enum fdb_learn_result {
	FDB_LEARN_NEW,         /* a new entry */
	FDB_LEARN_REFRESHED,   /* same place, timestamp updated */
	FDB_LEARN_MOVED,       /* the MAC moved to another port or VTEP */
	FDB_LEARN_STATIC,      /* a static entry: left as configured */
	FDB_LEARN_LIMIT,       /* the VNI is at its learned-entry cap */
	FDB_LEARN_FULL,        /* learned entries at learn_max, or no free entry */
};

int fdb_init(struct fdb *f, uint32_t capacity);
void fdb_free(struct fdb *f);

struct fdb_entry *fdb_lookup(struct fdb *f, uint32_t vni, const uint8_t *mac);

/* Learn mac as reachable at dest.  *learned_in_vni is the VNI's count of
 * learned entries, bumped on a new entry and checked against limit
 * (0: no cap). */
enum fdb_learn_result fdb_learn(struct fdb *f, uint32_t vni, const uint8_t *mac,
				const struct fdb_dest *dest, uint64_t now_ms,
				uint32_t limit, uint32_t *learned_in_vni);

/* Add or replace a static entry, growing the pool if it must (callers
 * hold the datapath's write lock).  Returns 0, or -1 out of memory.
 * *was_learned is set when it replaced a learned entry (the caller's
 * learned count drops by one). */
int fdb_add_static(struct fdb *f, uint32_t vni, const uint8_t *mac,
		   const struct fdb_dest *dest, uint64_t now_ms, int *was_learned);

/* Remove one entry.  Returns its flags, or -1 if there was none. */
int fdb_delete(struct fdb *f, uint32_t vni, const uint8_t *mac);

/* Visit every entry; when visit returns nonzero the entry is removed.
 * Used for ageing and for flushing a port, a VTEP or a VNI. */
typedef int (*fdb_visit_fn)(struct fdb_entry *e, void *ctx);
uint32_t fdb_sweep(struct fdb *f, fdb_visit_fn visit, void *ctx);

/* The entry in pool slot i, or NULL if that slot is free: a cursor over
 * the pool that stays valid across growth (indices never move), for a
 * dump in chunks. */
struct fdb_entry *fdb_slot(struct fdb *f, uint32_t i);

/* SipHash-c-d of in[0..len) under key (c compression, d finalization
 * rounds): the FDB uses 1-3; the tests check 2-4 against the paper's
 * vector. */
uint64_t fdb_siphash(const uint64_t key[2], const uint8_t *in, size_t len,
		     int c, int d);

#endif
