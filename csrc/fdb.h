/* Forwarding database: (VNI, MAC) -> a local port or a remote VTEP.
 *
 * A fixed pool of entries allocated once (fdb_init), chained from a
 * power-of-two bucket array.  Learning on the packet path takes entries from
 * the pool's free list: nothing is allocated per packet.
 */
#ifndef UVX_FDB_H
#define UVX_FDB_H

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
	struct fdb_dest dest;
	uint64_t updated_ms;   /* last learned or configured */
	uint64_t used_ms;      /* last forwarded to */
	int32_t next;          /* bucket chain, or free list */
};

struct fdb {
	struct fdb_entry *entries;
	int32_t *buckets;
	uint32_t capacity;
	uint32_t mask;         /* buckets - 1 */
	int32_t free_head;
	uint32_t count;
};

enum fdb_learn_result {
	FDB_LEARN_NEW,         /* a new entry */
	FDB_LEARN_REFRESHED,   /* same place, timestamp updated */
	FDB_LEARN_MOVED,       /* the MAC moved to another port or VTEP */
	FDB_LEARN_STATIC,      /* a static entry: left as configured */
	FDB_LEARN_LIMIT,       /* the VNI is at its learned-entry cap */
	FDB_LEARN_FULL,        /* the pool is exhausted */
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

/* Add or replace a static entry.  Returns 0, or -1 if the pool is full.
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

#endif
