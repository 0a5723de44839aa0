/* Datapath lifecycle and configuration: VNIs, ports, flood lists, FDB API,
 * counters.  Nothing here runs per packet except fdb_snoop and tap_xmit. */
#include <errno.h>
#include <linux/filter.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "dp.h"

__thread unsigned uvx_wid;

/* Every change from Python runs under the write lock; see dp.h. */
#define LOCKED(dp, call)                                        \
	do {                                                    \
		pthread_rwlock_wrlock(&(dp)->cfg_lock);         \
		int r_ = (call);                                \
		pthread_rwlock_unlock(&(dp)->cfg_lock);         \
		return r_;                                      \
	} while (0)

#ifndef UVX_BUILD_VERSION
#define UVX_BUILD_VERSION "unknown"
#endif
#ifndef UVX_SOURCE_DIGEST
#define UVX_SOURCE_DIGEST "unknown"
#endif

const char *uvx_version(void)
{
	return UVX_BUILD_VERSION;
}

const char *uvx_source_digest(void)
{
	return UVX_SOURCE_DIGEST;
}

static const char *const drop_names[UVX_DROP__MAX] = {
	[UVX_PASS] = "pass",
	[UVX_DROP_TRUNCATED] = "truncated",
	[UVX_DROP_BAD_FLAGS] = "bad_flags",
	[UVX_DROP_RESERVED] = "reserved_bits",
	[UVX_DROP_UNKNOWN_VNI] = "unknown_vni",
	[UVX_DROP_BAD_INNER] = "bad_inner_frame",
	[UVX_DROP_NO_DEST] = "no_destination",
	[UVX_DROP_LEARN_LIMIT] = "learn_limit",
	[UVX_DROP_HAIRPIN] = "hairpin",
	[UVX_DROP_SPLIT_HORIZON] = "split_horizon",
	[UVX_DROP_TOO_BIG] = "too_big",
	[UVX_DROP_TAP_FULL] = "tap_full",
	[UVX_DROP_TAP_ERROR] = "tap_error",
	[UVX_DROP_UDP_ERROR] = "udp_error",
	[UVX_DROP_NO_PORT] = "no_port",
	[UVX_DROP_BAD_GSO] = "bad_gso",
	[UVX_DROP_ARP_UNKNOWN] = "arp_unknown",
};

const char *uvx_drop_reason_name(int reason)
{
	if (reason < 0 || reason >= UVX_DROP__MAX)
		return NULL;
	return drop_names[reason];
}

uint64_t uvx_now_ms(void)
{
	return mono_ns() / 1000000u;
}

void uvx_config_default(struct uvx_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->dst_port = 4789;          /* IANA-assigned (RFC 7348 section 5) */
	/* RFC 7348 section 5 recommends the dynamic/private range. */
	cfg->src_port_min = 49152;
	cfg->src_port_max = 65535;
	cfg->ageing_ms = 300 * 1000;   /* Linux's and 802.1D's default */
	cfg->learn_limit = 1024;
	cfg->fdb_capacity = 65536;
	cfg->batch = 32;
}

struct uvx_dp *uvx_dp_new(const struct uvx_config *cfg, int *err)
{
	*err = 0;
	if (cfg->batch < 1 || cfg->batch > UVX_BATCH_MAX ||
	    cfg->src_port_min > cfg->src_port_max || cfg->fdb_capacity == 0) {
		*err = -EINVAL;
		return NULL;
	}
	struct uvx_dp *dp = calloc(1, sizeof(*dp));
	if (!dp) {
		*err = -ENOMEM;
		return NULL;
	}
	dp->cfg = *cfg;
	dp->udp_fd = -1;
	dp->tx_fd = -1;
	dp->wake_fd = -1;
	dp->epfd[W_TX] = dp->epfd[W_RX] = -1;
	/* Writers first: Python's changes must not wait behind an endless
	 * stream of batches. */
	pthread_rwlockattr_t attr;
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&dp->cfg_lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	pthread_mutex_init(&dp->fdb_lock, NULL);
	for (unsigned i = 0; i < UVX_VNI_HASH; i++)
		dp->vni_index[i] = -1;
	for (unsigned i = 0; i < UVX_MAX_PORTS; i++)
		dp->ports[i].fd = -1;
	for (unsigned k = 0; k < UVX_WORKERS; k++) {
		dp->w[k].dp = dp;
		dp->w[k].id = k;
		dp->w[k].bufs = malloc((size_t)cfg->batch * UVX_SLOT);
		if (!dp->w[k].bufs) {
			uvx_dp_free(dp);
			*err = -ENOMEM;
			return NULL;
		}
	}
	if (fdb_init(&dp->fdb, cfg->fdb_capacity) < 0) {
		uvx_dp_free(dp);
		*err = -ENOMEM;
		return NULL;
	}
	/* recvmmsg state points into the slots once, here, not per call. */
	struct uvx_worker *w = &dp->w[W_RX];
	for (unsigned i = 0; i < cfg->batch; i++) {
		w->riov[i].iov_base = slot_frame(w, i);
		w->riov[i].iov_len = UVX_FRAME_MAX + 1;  /* +1: see MSG_TRUNC */
		struct msghdr *h = &w->rmsg[i].msg_hdr;
		h->msg_iov = &w->riov[i];
		h->msg_iovlen = 1;
		h->msg_name = &w->rsrc[i];
		h->msg_namelen = sizeof(w->rsrc[i]);
		h->msg_control = w->rctl[i];   /* used when UDP GRO is on */
	}
	return dp;
}

void uvx_dp_free(struct uvx_dp *dp)
{
	if (!dp)
		return;
	uvx_dp_stop_threads(dp);
	for (unsigned i = 0; i < UVX_MAX_VNIS; i++)
		free(dp->vnis[i]);
	fdb_free(&dp->fdb);
	for (unsigned k = 0; k < UVX_WORKERS; k++)
		free(dp->w[k].bufs);
	pthread_rwlock_destroy(&dp->cfg_lock);
	pthread_mutex_destroy(&dp->fdb_lock);
	free(dp);
}

int uvx_tx_socket_open(uint32_t local_ip)
{
	/* A raw IPPROTO_UDP socket: we write the UDP header ourselves so each
	 * inner flow gets its own source port (RFC 7348 section 5 asks for a
	 * hash of the inner headers there, for ECMP and RSS).  The kernel
	 * still builds the IPv4 header and routes. */
	int fd = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC,
			IPPROTO_UDP);
	if (fd < 0)
		return -errno;
	/* A raw socket also receives a copy of every UDP datagram; a filter
	 * that accepts nothing keeps its queue empty. */
	struct sock_filter drop_all = BPF_STMT(BPF_RET | BPF_K, 0);
	struct sock_fprog prog = { .len = 1, .filter = &drop_all };
	struct sockaddr_in sa = { .sin_family = AF_INET };
	sa.sin_addr.s_addr = local_ip;
	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) < 0 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

static int set_sockets(struct uvx_dp *dp, int udp_fd, int tx_fd)
{
	if (dp->running)
		return -EBUSY;
	dp->udp_fd = udp_fd;
	dp->tx_fd = tx_fd;
	return 0;
}

int uvx_dp_set_sockets(struct uvx_dp *dp, int udp_fd, int tx_fd)
{
	LOCKED(dp, set_sockets(dp, udp_fd, tx_fd));
}

static int set_pool(struct uvx_dp *dp, const int *fds, const uint16_t *ports,
		    unsigned n, int gso, int gro)
{
	if (n > UVX_POOL_MAX || (gso && n == 0))
		return -EINVAL;
	for (unsigned i = 0; i < n; i++) {
		dp->pool_fd[i] = fds[i];
		dp->pool_port[i] = ports[i];
	}
	dp->npool = n;
	dp->gso = gso;
	dp->gro = gro;
	return 0;
}

int uvx_dp_set_pool(struct uvx_dp *dp, const int *fds, const uint16_t *ports,
		    unsigned n, int gso, int gro)
{
	LOCKED(dp, set_pool(dp, fds, ports, n, gso, gro));
}

uint32_t uvx_dp_take_events(struct uvx_dp *dp)
{
	uint32_t ev = dp->events;
	dp->events = 0;
	return ev;
}

/* --- VNIs ---------------------------------------------------------------- */

static unsigned vni_slot(uint32_t vni)
{
	return (vni * 2654435761u) % UVX_VNI_HASH;
}

struct uvx_vni *vni_find(struct uvx_dp *dp, uint32_t vni)
{
	for (unsigned s = vni_slot(vni);; s = (s + 1) % UVX_VNI_HASH) {
		int16_t i = dp->vni_index[s];
		if (i < 0)
			return NULL;
		if (dp->vnis[i] && dp->vnis[i]->vni == vni)
			return dp->vnis[i];
	}
}

/* VNIs change rarely: rebuilding the index keeps lookups free of
 * tombstones.  The table is twice the maximum, so probes always end. */
static void vni_reindex(struct uvx_dp *dp)
{
	for (unsigned s = 0; s < UVX_VNI_HASH; s++)
		dp->vni_index[s] = -1;
	for (int16_t i = 0; i < UVX_MAX_VNIS; i++) {
		if (!dp->vnis[i])
			continue;
		unsigned s = vni_slot(dp->vnis[i]->vni);
		while (dp->vni_index[s] >= 0)
			s = (s + 1) % UVX_VNI_HASH;
		dp->vni_index[s] = i;
	}
}

static int vni_add(struct uvx_dp *dp, uint32_t vni)
{
	if (vni == 0 || vni > VXLAN_VNI_MAX)
		return -EINVAL;
	if (vni_find(dp, vni))
		return -EEXIST;
	for (unsigned i = 0; i < UVX_MAX_VNIS; i++) {
		if (dp->vnis[i])
			continue;
		struct uvx_vni *v = calloc(1, sizeof(*v));
		if (!v)
			return -ENOMEM;
		v->vni = vni;
		dp->vnis[i] = v;
		vni_reindex(dp);
		return 0;
	}
	return -ENOSPC;
}

int uvx_vni_add(struct uvx_dp *dp, uint32_t vni)
{
	LOCKED(dp, vni_add(dp, vni));
}

struct flush_ctx {
	struct uvx_dp *dp;
	uint32_t vni;
	int32_t port;
	int only_learned;
};

static int flush_match(struct fdb_entry *e, void *arg)
{
	struct flush_ctx *c = arg;
	if (c->vni && e->vni != c->vni)
		return 0;
	if (c->port >= 0 && e->dest.port != c->port)
		return 0;
	if (c->only_learned && (e->flags & FDB_F_STATIC))
		return 0;
	if (!(e->flags & FDB_F_STATIC)) {
		struct uvx_vni *v = vni_find(c->dp, e->vni);
		if (v && v->learned)
			v->learned--;
	}
	return 1;
}

static int vni_del(struct uvx_dp *dp, uint32_t vni)
{
	struct uvx_vni *v = vni_find(dp, vni);
	if (!v)
		return -ENOENT;
	if (v->nports)
		return -EBUSY;
	struct flush_ctx c = { dp, vni, -1, 0 };
	fdb_sweep(&dp->fdb, flush_match, &c);
	for (unsigned i = 0; i < UVX_MAX_VNIS; i++) {
		if (dp->vnis[i] == v) {
			dp->vnis[i] = NULL;
			break;
		}
	}
	free(v->arp);
	free(v);
	vni_reindex(dp);
	return 0;
}

int uvx_vni_del(struct uvx_dp *dp, uint32_t vni)
{
	LOCKED(dp, vni_del(dp, vni));
}

static int remote_add(struct uvx_dp *dp, uint32_t vni, uint32_t ip, uint16_t port)
{
	struct uvx_vni *v = vni_find(dp, vni);
	if (!v)
		return -ENOENT;
	/* Each VTEP once: head-end replication must never send two copies. */
	for (unsigned i = 0; i < v->nremotes; i++)
		if (v->remotes[i].ip == ip && v->remotes[i].udp_port == port)
			return -EEXIST;
	if (v->nremotes == UVX_VNI_REMOTES)
		return -ENOSPC;
	v->remotes[v->nremotes++] = (struct fdb_dest){ -1, ip, port };
	return 0;
}

int uvx_remote_add(struct uvx_dp *dp, uint32_t vni, uint32_t ip, uint16_t port)
{
	LOCKED(dp, remote_add(dp, vni, ip, port));
}

static int remote_del(struct uvx_dp *dp, uint32_t vni, uint32_t ip, uint16_t port)
{
	struct uvx_vni *v = vni_find(dp, vni);
	if (!v)
		return -ENOENT;
	for (unsigned i = 0; i < v->nremotes; i++) {
		if (v->remotes[i].ip == ip && v->remotes[i].udp_port == port) {
			v->remotes[i] = v->remotes[--v->nremotes];
			return 0;
		}
	}
	return -ENOENT;
}

int uvx_remote_del(struct uvx_dp *dp, uint32_t vni, uint32_t ip, uint16_t port)
{
	LOCKED(dp, remote_del(dp, vni, ip, port));
}

/* --- ARP suppression ----------------------------------------------------- */

/* The VNI's IP -> MAC table, made on first use; NULL if out of memory. */
static struct arp_table *vni_arp_table(struct uvx_vni *v)
{
	if (!v->arp)
		v->arp = calloc(1, sizeof(*v->arp));
	return v->arp;
}

static int vni_set_arp(struct uvx_dp *dp, uint32_t vni, int mode)
{
	struct uvx_vni *v = vni_find(dp, vni);
	if (!v)
		return -ENOENT;
	if (mode < UVX_ARP_OFF || mode > UVX_ARP_ANSWER_ONLY)
		return -EINVAL;
	if (mode != UVX_ARP_OFF && !vni_arp_table(v))
		return -ENOMEM;
	v->arp_mode = mode;
	return 0;
}

int uvx_vni_set_arp(struct uvx_dp *dp, uint32_t vni, int mode)
{
	LOCKED(dp, vni_set_arp(dp, vni, mode));
}

static int arp_add(struct uvx_dp *dp, uint32_t vni, uint32_t ip, const uint8_t *mac)
{
	struct uvx_vni *v = vni_find(dp, vni);
	if (!v)
		return -ENOENT;
	if (!vni_arp_table(v))
		return -ENOMEM;
	return arp_table_put(v->arp, ip, mac);
}

int uvx_arp_add(struct uvx_dp *dp, uint32_t vni, uint32_t ip, const uint8_t *mac)
{
	LOCKED(dp, arp_add(dp, vni, ip, mac));
}

static int arp_del(struct uvx_dp *dp, uint32_t vni, uint32_t ip)
{
	struct uvx_vni *v = vni_find(dp, vni);
	if (!v)
		return -ENOENT;
	return v->arp ? arp_table_del(v->arp, ip) : -ENOENT;
}

int uvx_arp_del(struct uvx_dp *dp, uint32_t vni, uint32_t ip)
{
	LOCKED(dp, arp_del(dp, vni, ip));
}

static int arp_lookup(struct uvx_dp *dp, uint32_t vni, uint32_t ip, uint8_t *mac)
{
	struct uvx_vni *v = vni_find(dp, vni);
	if (!v)
		return -ENOENT;
	const uint8_t *m = v->arp ? arp_table_find(v->arp, ip) : NULL;
	if (!m)
		return -ENOENT;
	memcpy(mac, m, 6);
	return 0;
}

int uvx_arp_lookup(struct uvx_dp *dp, uint32_t vni, uint32_t ip, uint8_t *mac)
{
	LOCKED(dp, arp_lookup(dp, vni, ip, mac));
}

static uint64_t vni_arp_replies(struct uvx_dp *dp, uint32_t vni)
{
	struct uvx_vni *v = vni_find(dp, vni);
	uint64_t n = 0;
	for (unsigned k = 0; v && k < UVX_WORKERS; k++)
		n += __atomic_load_n(&v->arp_replied[k], __ATOMIC_RELAXED);
	return n;
}

uint64_t uvx_vni_arp_replies(struct uvx_dp *dp, uint32_t vni)
{
	pthread_rwlock_wrlock(&dp->cfg_lock);
	uint64_t n = vni_arp_replies(dp, vni);
	pthread_rwlock_unlock(&dp->cfg_lock);
	return n;
}

/* --- Ports --------------------------------------------------------------- */

static int port_add(struct uvx_dp *dp, int fd, uint32_t vni, uint32_t flags)
{
	struct uvx_vni *v = vni_find(dp, vni);
	if (!v)
		return -ENOENT;
	if (fd < 0)
		return -EBADF;
	if (v->nports == UVX_VNI_PORTS)
		return -ENOSPC;
	for (int i = 0; i < UVX_MAX_PORTS; i++) {
		struct uvx_port *p = &dp->ports[i];
		if (p->used)
			continue;
		memset(p, 0, sizeof(*p));
		p->used = 1;
		p->fd = fd;
		p->vni = vni;
		p->vnet = !!(flags & UVX_PORT_VNET_HDR);
		v->ports[v->nports++] = i;
		if (dp->running) {
			struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)i };
			epoll_ctl(dp->epfd[W_TX], EPOLL_CTL_ADD, fd, &ev);
		}
		return i;
	}
	return -ENOSPC;
}

int uvx_port_add(struct uvx_dp *dp, int fd, uint32_t vni, uint32_t flags)
{
	LOCKED(dp, port_add(dp, fd, vni, flags));
}

static int port_del(struct uvx_dp *dp, int port)
{
	if (port < 0 || port >= UVX_MAX_PORTS || !dp->ports[port].used)
		return -ENOENT;
	struct uvx_port *p = &dp->ports[port];
	struct uvx_vni *v = vni_find(dp, p->vni);
	if (dp->running)
		epoll_ctl(dp->epfd[W_TX], EPOLL_CTL_DEL, p->fd, NULL);
	if (v) {
		for (unsigned i = 0; i < v->nports; i++) {
			if (v->ports[i] == port) {
				v->ports[i] = v->ports[--v->nports];
				break;
			}
		}
	}
	/* Static entries pointing here go too: they would blackhole. */
	struct flush_ctx c = { dp, 0, port, 0 };
	fdb_sweep(&dp->fdb, flush_match, &c);
	p->used = 0;
	p->fd = -1;
	return 0;
}

int uvx_port_del(struct uvx_dp *dp, int port)
{
	LOCKED(dp, port_del(dp, port));
}

/* --- FDB ----------------------------------------------------------------- */

static int dest_from_args(struct uvx_dp *dp, struct uvx_vni *v, int32_t port,
			  uint32_t ip, uint16_t udp_port, struct fdb_dest *d)
{
	if (port >= 0) {
		if (port >= UVX_MAX_PORTS || !dp->ports[port].used ||
		    dp->ports[port].vni != v->vni)
			return -EINVAL;
		*d = (struct fdb_dest){ port, 0, 0 };
	} else {
		if (ip == 0)
			return -EINVAL;
		*d = (struct fdb_dest){ -1, ip, udp_port ? udp_port : dp->cfg.dst_port };
	}
	return 0;
}

static int fdb_add(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac,
		int32_t port, uint32_t ip, uint16_t udp_port)
{
	struct uvx_vni *v = vni_find(dp, vni);
	struct fdb_dest d;
	if (!v)
		return -ENOENT;
	if (mac_is_multicast(mac))
		return -EINVAL;
	int rc = dest_from_args(dp, v, port, ip, udp_port, &d);
	if (rc < 0)
		return rc;
	int was_learned = 0;
	if (fdb_add_static(&dp->fdb, vni, mac, &d, uvx_now_ms(), &was_learned) < 0)
		return -ENOSPC;
	if (was_learned && v->learned)
		v->learned--;
	return 0;
}

int uvx_fdb_add(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac,
		int32_t port, uint32_t ip, uint16_t udp_port)
{
	LOCKED(dp, fdb_add(dp, vni, mac, port, ip, udp_port));
}

static int fdb_del(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac)
{
	int flags = fdb_delete(&dp->fdb, vni, mac);
	if (flags < 0)
		return -ENOENT;
	struct uvx_vni *v = vni_find(dp, vni);
	if (v && !(flags & FDB_F_STATIC) && v->learned)
		v->learned--;
	return 0;
}

int uvx_fdb_del(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac)
{
	LOCKED(dp, fdb_del(dp, vni, mac));
}

static int fdb_learn_api(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac,
		  int32_t port, uint32_t ip, uint16_t udp_port, uint64_t now_ms)
{
	struct uvx_vni *v = vni_find(dp, vni);
	struct fdb_dest d;
	if (!v)
		return -ENOENT;
	int rc = dest_from_args(dp, v, port, ip, udp_port, &d);
	if (rc < 0)
		return rc;
	return (int)fdb_learn(&dp->fdb, vni, mac, &d, now_ms,
			      dp->cfg.learn_limit, &v->learned);
}

int uvx_fdb_learn(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac,
		  int32_t port, uint32_t ip, uint16_t udp_port, uint64_t now_ms)
{
	LOCKED(dp, fdb_learn_api(dp, vni, mac, port, ip, udp_port, now_ms));
}

static void fdb_info(const struct fdb_entry *e, uint64_t now,
		     struct uvx_fdb_info *out)
{
	out->vni = e->vni;
	memcpy(out->mac, e->mac, 6);
	out->is_static = !!(e->flags & FDB_F_STATIC);
	out->is_remote = !!(e->flags & FDB_F_REMOTE);
	out->port = e->dest.port;
	out->remote_ip = e->dest.ip;
	out->remote_port = e->dest.udp_port;
	out->age_ms = now > e->updated_ms ? now - e->updated_ms : 0;
	out->idle_ms = now > e->used_ms ? now - e->used_ms : 0;
}

static int fdb_lookup_api(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac,
		   struct uvx_fdb_info *out)
{
	struct fdb_entry *e = fdb_lookup(&dp->fdb, vni, mac);
	if (!e)
		return -ENOENT;
	fdb_info(e, uvx_now_ms(), out);
	return 0;
}

int uvx_fdb_lookup(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac,
		   struct uvx_fdb_info *out)
{
	LOCKED(dp, fdb_lookup_api(dp, vni, mac, out));
}

static int fdb_dump(struct uvx_dp *dp, struct uvx_fdb_info *out, int max)
{
	uint64_t now = uvx_now_ms();
	int n = 0;
	for (uint32_t b = 0; b <= dp->fdb.mask && n < max; b++)
		for (int32_t i = dp->fdb.buckets[b]; i >= 0 && n < max;
		     i = dp->fdb.entries[i].next)
			fdb_info(&dp->fdb.entries[i], now, &out[n++]);
	return n;
}

int uvx_fdb_dump(struct uvx_dp *dp, struct uvx_fdb_info *out, int max)
{
	LOCKED(dp, fdb_dump(dp, out, max));
}

struct age_ctx {
	struct uvx_dp *dp;
	uint64_t now;
};

static int age_expired(struct fdb_entry *e, void *arg)
{
	struct age_ctx *c = arg;
	if (e->flags & FDB_F_STATIC)
		return 0;
	if (c->now < e->updated_ms + c->dp->cfg.ageing_ms)
		return 0;
	struct uvx_vni *v = vni_find(c->dp, e->vni);
	if (v && v->learned)
		v->learned--;
	return 1;
}

static int fdb_age(struct uvx_dp *dp, uint64_t now_ms)
{
	struct age_ctx c = { dp, now_ms };
	return (int)fdb_sweep(&dp->fdb, age_expired, &c);
}

int uvx_fdb_age(struct uvx_dp *dp, uint64_t now_ms)
{
	LOCKED(dp, fdb_age(dp, now_ms));
}

int fdb_switch(struct uvx_dp *dp, struct uvx_vni *v, const uint8_t *src,
	       const struct fdb_dest *at, const uint8_t *dst, uint64_t now,
	       struct fdb_dest *out)
{
	int found = 0;
	pthread_mutex_lock(&dp->fdb_lock);
	enum fdb_learn_result r = fdb_learn(&dp->fdb, v->vni, src, at, now,
					    dp->cfg.learn_limit, &v->learned);
	if (!mac_is_multicast(dst)) {
		struct fdb_entry *e = fdb_lookup(&dp->fdb, v->vni, dst);
		if (e) {
			e->used_ms = now;
			*out = e->dest;    /* a copy: the entry may move once unlocked */
			found = 1;
		}
	}
	pthread_mutex_unlock(&dp->fdb_lock);
	/* The frame is still forwarded, as Linux's bridge does when
	 * fdb_max_learned is reached; only the address goes unlearned. */
	if (r == FDB_LEARN_LIMIT || r == FDB_LEARN_FULL)
		drop(dp, UVX_DROP_LEARN_LIMIT);
	return found;
}

/* --- Counters and local delivery ---------------------------------------- */

uint64_t uvx_drops(struct uvx_dp *dp, int reason)
{
	if (reason < 0 || reason >= UVX_DROP__MAX)
		return 0;
	uint64_t n = 0;
	for (unsigned k = 0; k < UVX_WORKERS; k++)
		n += __atomic_load_n(&dp->drops[k][reason], __ATOMIC_RELAXED);
	return n;
}

static void sum_counters(const struct uvx_counters *ctr, struct uvx_counters *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned k = 0; k < UVX_WORKERS; k++) {
		out->rx_packets += __atomic_load_n(&ctr[k].rx_packets, __ATOMIC_RELAXED);
		out->rx_bytes += __atomic_load_n(&ctr[k].rx_bytes, __ATOMIC_RELAXED);
		out->tx_packets += __atomic_load_n(&ctr[k].tx_packets, __ATOMIC_RELAXED);
		out->tx_bytes += __atomic_load_n(&ctr[k].tx_bytes, __ATOMIC_RELAXED);
	}
}

static int port_counters(struct uvx_dp *dp, int port, struct uvx_counters *out)
{
	if (port < 0 || port >= UVX_MAX_PORTS || !dp->ports[port].used)
		return -ENOENT;
	sum_counters(dp->ports[port].ctr, out);
	return 0;
}

int uvx_port_counters(struct uvx_dp *dp, int port, struct uvx_counters *out)
{
	LOCKED(dp, port_counters(dp, port, out));
}

static int vni_counters(struct uvx_dp *dp, uint32_t vni, struct uvx_counters *out)
{
	struct uvx_vni *v = vni_find(dp, vni);
	if (!v)
		return -ENOENT;
	sum_counters(v->ctr, out);
	return 0;
}

int uvx_vni_counters(struct uvx_dp *dp, uint32_t vni, struct uvx_counters *out)
{
	LOCKED(dp, vni_counters(dp, vni, out));
}

int tap_writev(struct uvx_dp *dp, int32_t port, const struct vnet_hdr *vh,
	       struct iovec *iov, int niov)
{
	if (port < 0 || port >= UVX_MAX_PORTS || !dp->ports[port].used) {
		drop(dp, UVX_DROP_NO_PORT);
		return -1;
	}
	struct uvx_port *p = &dp->ports[port];
	static const struct vnet_hdr plain;
	iov[0] = (struct iovec){ (void *)(vh ? vh : &plain), VNET_HLEN };
	/* A plain port gets the frame alone: skip the header slot. */
	int skip = p->vnet ? 0 : 1;
	ssize_t n = writev(p->fd, iov + skip, niov - skip);
	if (n < 0) {
		drop(dp, errno == EAGAIN ? UVX_DROP_TAP_FULL : UVX_DROP_TAP_ERROR);
		return -1;
	}
	count(p->ctr, 1, (size_t)n - (p->vnet ? VNET_HLEN : 0));
	return 0;
}

int tap_xmit(struct uvx_dp *dp, int32_t port, const uint8_t *frame, size_t len,
	     const struct vnet_hdr *vh)
{
	struct iovec iov[2] = { { NULL, 0 }, { (void *)frame, len } };
	return tap_writev(dp, port, vh, iov, 2);
}

/* --- Worker threads ------------------------------------------------------ */

#define WAKE_TOKEN UINT64_MAX

static void *worker_main(void *arg)
{
	struct uvx_worker *w = arg;
	struct uvx_dp *dp = w->dp;
	struct epoll_event ev[64];

	while (!__atomic_load_n(&dp->stopping, __ATOMIC_ACQUIRE)) {
		int n = epoll_wait(dp->epfd[w->id], ev, 64, -1);
		for (int i = 0; i < n; i++) {
			if (ev[i].data.u64 == WAKE_TOKEN)
				continue;
			if (w->id == W_RX) {
				uvx_udp_rx(dp);
				continue;
			}
			int port = (int)ev[i].data.u64;
			if (uvx_tap_rx(dp, port) < 0) {
				/* A TAP whose interface is gone stays readable
				 * and fails every read: stop watching it. */
				pthread_rwlock_rdlock(&dp->cfg_lock);
				if (port < UVX_MAX_PORTS && dp->ports[port].used)
					epoll_ctl(dp->epfd[W_TX], EPOLL_CTL_DEL,
						  dp->ports[port].fd, NULL);
				pthread_rwlock_unlock(&dp->cfg_lock);
			}
		}
	}
	return NULL;
}

static int start_threads(struct uvx_dp *dp)
{
	if (dp->running)
		return -EALREADY;
	if (dp->udp_fd < 0)
		return -EBADF;
	dp->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (dp->wake_fd < 0)
		return -errno;
	struct epoll_event wake = { .events = EPOLLIN, .data.u64 = WAKE_TOKEN };
	for (unsigned k = 0; k < UVX_WORKERS; k++) {
		dp->epfd[k] = epoll_create1(EPOLL_CLOEXEC);
		if (dp->epfd[k] < 0 ||
		    epoll_ctl(dp->epfd[k], EPOLL_CTL_ADD, dp->wake_fd, &wake) < 0)
			goto fail;
	}
	struct epoll_event uev = { .events = EPOLLIN, .data.u64 = 0 };
	if (epoll_ctl(dp->epfd[W_RX], EPOLL_CTL_ADD, dp->udp_fd, &uev) < 0)
		goto fail;
	for (int i = 0; i < UVX_MAX_PORTS; i++) {
		if (!dp->ports[i].used)
			continue;
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)i };
		if (epoll_ctl(dp->epfd[W_TX], EPOLL_CTL_ADD, dp->ports[i].fd, &ev) < 0)
			goto fail;
	}
	dp->stopping = 0;
	for (unsigned k = 0; k < UVX_WORKERS; k++) {
		if (pthread_create(&dp->thread[k], NULL, worker_main, &dp->w[k]) != 0) {
			/* Stop the one that did start before giving up. */
			dp->stopping = 1;
			uint64_t one = 1;
			(void)!write(dp->wake_fd, &one, sizeof(one));
			for (unsigned j = 0; j < k; j++)
				pthread_join(dp->thread[j], NULL);
			errno = EAGAIN;
			goto fail;
		}
	}
	dp->running = 1;
	return 0;
fail:;
	int e = -errno;
	for (unsigned k = 0; k < UVX_WORKERS; k++) {
		if (dp->epfd[k] >= 0)
			close(dp->epfd[k]);
		dp->epfd[k] = -1;
	}
	close(dp->wake_fd);
	dp->wake_fd = -1;
	return e;
}

int uvx_dp_start_threads(struct uvx_dp *dp)
{
	LOCKED(dp, start_threads(dp));
}

int uvx_dp_stop_threads(struct uvx_dp *dp)
{
	/* Not under the write lock: the threads take the read lock to
	 * finish their batch, and joining them while holding it would
	 * deadlock. */
	if (!dp->running)
		return 0;
	__atomic_store_n(&dp->stopping, 1, __ATOMIC_RELEASE);
	uint64_t one = 1;
	(void)!write(dp->wake_fd, &one, sizeof(one));
	for (unsigned k = 0; k < UVX_WORKERS; k++)
		pthread_join(dp->thread[k], NULL);
	for (unsigned k = 0; k < UVX_WORKERS; k++) {
		close(dp->epfd[k]);
		dp->epfd[k] = -1;
	}
	close(dp->wake_fd);
	dp->wake_fd = -1;
	dp->running = 0;
	return 0;
}
