/* Configuration and lifecycle: a datapath made and freed, its sockets and
 * send pool, VNIs and their flood lists, local ports, the FDB and ARP
 * tables as Python edits them.  Every change runs under the write lock
 * (LOCKED, dp.h); nothing here runs per packet.  The packet path is
 * xmit.c and rcv.c (with forward.c), the threads worker.c, the counters
 * stats.c. */
#include <errno.h>
#include <linux/filter.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "capture.h"
#include "dp.h"
#include "fault.h"

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

uint64_t uvx_now_ms(void)
{
	return mono_ms();
}

struct uvx_dp *uvx_dp_new(const struct uvx_config *cfg, int *err)
{
	*err = 0;
	if (cfg->batch < 1 || cfg->batch > UVX_BATCH_MAX ||
	    cfg->src_port_min > cfg->src_port_max || cfg->fdb_capacity == 0 ||
	    cfg->underlay_mtu <= VXLAN_OVERHEAD || cfg->underlay_mtu > 65535) {
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
	dp->timer_fd = -1;
	dp->epfd[W_TX] = dp->epfd[W_RX] = -1;
	punt_init(&dp->punt);
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
		dp->w[k].port = -1;
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
		h->msg_control = w->rctl[i];   /* UDP_GRO's size, SO_RXQ_OVFL's count */
	}
	return dp;
}

void uvx_dp_free(struct uvx_dp *dp)
{
	if (!dp)
		return;
	uvx_dp_stop_threads(dp);
	capture_free(dp);
	for (unsigned i = 0; i < UVX_MAX_VNIS; i++) {
		if (dp->vnis[i])
			gbp_policy_free(&dp->vnis[i]->gbp);
		free(dp->vnis[i]);
	}
	fdb_free(&dp->fdb);
	fault_table_free(dp->fault);   /* frames still held go with it */
	punt_free(&dp->punt);
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
	int r = uvx_socket_nofrag(fd);
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

int uvx_socket_nofrag(int fd)
{
	/* RFC 7348 section 4.3: VTEPs MUST NOT fragment VXLAN packets.
	 * IP_PMTUDISC_INTERFACE sends with the device's MTU,
	 * never fragments (a larger datagram fails with EMSGSIZE, see
	 * __ip_append_data's maxnonfragsize), leaves DF clear as Linux's
	 * vxlan does by default, and ignores ICMP "fragmentation needed" from
	 * the underlay, which anyone could forge.  Kernels before 3.13
	 * refuse it (EINVAL): IP_PMTUDISC_PROBE (2.6.22) never fragments
	 * either, and sets DF. */
	int v = IP_PMTUDISC_INTERFACE;
	if (setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &v, sizeof(v)) == 0)
		return 0;
	v = IP_PMTUDISC_PROBE;
	if (errno == EINVAL && setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &v, sizeof(v)) == 0)
		return 0;
	return -errno;
}

static int set_sockets(struct uvx_dp *dp, int udp_fd, int tx_fd)
{
	if (dp->running)
		return -EBUSY;
	dp->udp_fd = udp_fd;
	dp->tx_fd = tx_fd;
	/* The kernel drops what the socket's buffer has no room for, before
	 * any read: SO_RXQ_OVFL hands its running count to each read, so
	 * those are counted too (socket_overflow).  A kernel that refuses
	 * it leaves the count at 0. */
	dp->rx_ovfl = 0;
	int on = 1;
	if (udp_fd >= 0)
		(void)setsockopt(udp_fd, SOL_SOCKET, SO_RXQ_OVFL, &on, sizeof(on));
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
	/* Set by a worker (xmit.c), taken here: one atomic swap. */
	return __atomic_exchange_n(&dp->events, 0, __ATOMIC_RELAXED);
}

/* --- VNIs ---------------------------------------------------------------- */

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
		v->admit = UVX_ADMIT_MEMBERS;   /* deny what is not known */
		v->learning = 1;
		v->flood_unknown = 1;      /* as Linux's vxlan and bridge */
		punt_vni_added(dp, v);     /* a hook's rule may name it already */
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
	arp_table_free(v->arp);
	gbp_policy_free(&v->gbp);
	free(v->remotes);
	peer_set_free(&v->peers);
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
	if (v->nremotes == v->remotes_cap) {
		/* Grown here, under the write lock, never on the packet path. */
		if (v->nremotes == UVX_VNI_REMOTES) {
			v->flood_full++;            /* reported, never silent */
			return -ENOSPC;
		}
		uint32_t cap = v->remotes_cap ? 2 * v->remotes_cap : 16;
		struct fdb_dest *r = realloc(v->remotes, cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		v->remotes = r;
		v->remotes_cap = cap;
	}
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

/* --- Admission and learning ---------------------------------------------- */

static int vni_set_admit(struct uvx_dp *dp, uint32_t vni, int mode)
{
	struct uvx_vni *v = vni_find(dp, vni);
	if (!v)
		return -ENOENT;
	if (mode != UVX_ADMIT_MEMBERS && mode != UVX_ADMIT_ANY)
		return -EINVAL;
	v->admit = mode;
	return 0;
}

int uvx_vni_set_admit(struct uvx_dp *dp, uint32_t vni, int mode)
{
	LOCKED(dp, vni_set_admit(dp, vni, mode));
}

static int vni_set_learning(struct uvx_dp *dp, uint32_t vni, int on)
{
	struct uvx_vni *v = vni_find(dp, vni);
	if (!v)
		return -ENOENT;
	v->learning = !!on;
	if (!on) {
		/* What was learned before goes too: nothing learned stays. */
		struct flush_ctx c = { dp, vni, -1, 1 };
		fdb_sweep(&dp->fdb, flush_match, &c);
	}
	return 0;
}

int uvx_vni_set_learning(struct uvx_dp *dp, uint32_t vni, int on)
{
	LOCKED(dp, vni_set_learning(dp, vni, on));
}

static int vni_set_flood_unknown(struct uvx_dp *dp, uint32_t vni, int on)
{
	struct uvx_vni *v = vni_find(dp, vni);
	if (!v)
		return -ENOENT;
	v->flood_unknown = !!on;
	return 0;
}

int uvx_vni_set_flood_unknown(struct uvx_dp *dp, uint32_t vni, int on)
{
	LOCKED(dp, vni_set_flood_unknown(dp, vni, on));
}

static int peer_add(struct uvx_dp *dp, uint32_t vni, uint32_t ip)
{
	struct uvx_vni *v = vni_find(dp, vni);
	return v ? peer_set_add(&v->peers, ip) : -ENOENT;
}

int uvx_peer_add(struct uvx_dp *dp, uint32_t vni, uint32_t ip)
{
	LOCKED(dp, peer_add(dp, vni, ip));
}

static int peer_del(struct uvx_dp *dp, uint32_t vni, uint32_t ip)
{
	struct uvx_vni *v = vni_find(dp, vni);
	return v ? peer_set_del(&v->peers, ip) : -ENOENT;
}

int uvx_peer_del(struct uvx_dp *dp, uint32_t vni, uint32_t ip)
{
	LOCKED(dp, peer_del(dp, vni, ip));
}

static int peer_count(struct uvx_dp *dp, uint32_t vni)
{
	struct uvx_vni *v = vni_find(dp, vni);
	return v ? (int)v->peers.n : -ENOENT;
}

int uvx_peer_count(struct uvx_dp *dp, uint32_t vni)
{
	READ_LOCKED(dp, int, peer_count(dp, vni));
}

static int vni_sizes(struct uvx_dp *dp, uint32_t vni, struct uvx_vni_sizes *out)
{
	struct uvx_vni *v = vni_find(dp, vni);
	if (!v)
		return -ENOENT;
	/* Written under the write lock: the read lock keeps them still. */
	out->flood = v->nremotes;
	out->admitted = v->peers.n;
	out->arp = v->arp ? v->arp->n : 0;
	out->ports = v->nports;
	/* Workers learn under the read lock and fdb_lock. */
	pthread_mutex_lock(&dp->fdb_lock);
	out->learned = v->learned;
	pthread_mutex_unlock(&dp->fdb_lock);
	return 0;
}

int uvx_vni_sizes(struct uvx_dp *dp, uint32_t vni, struct uvx_vni_sizes *out)
{
	READ_LOCKED(dp, int, vni_sizes(dp, vni, out));
}

static int fdb_sizes(struct uvx_dp *dp, struct uvx_fdb_sizes *out)
{
	pthread_mutex_lock(&dp->fdb_lock);
	out->entries = dp->fdb.count;
	out->learned = dp->fdb.learned;
	out->learn_max = dp->fdb.learn_max;
	out->capacity = dp->fdb.capacity;
	pthread_mutex_unlock(&dp->fdb_lock);
	return 0;
}

int uvx_fdb_sizes(struct uvx_dp *dp, struct uvx_fdb_sizes *out)
{
	READ_LOCKED(dp, int, fdb_sizes(dp, out));
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
	int rc = arp_table_put(v->arp, ip, mac);
	if (rc == -ENOSPC)
		v->arp_full++;              /* reported, never silent */
	return rc;
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
	/* The tables change only under the write lock: reading needs the
	 * read lock alone, which the workers share. */
	READ_LOCKED(dp, int, arp_lookup(dp, vni, ip, mac));
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
		p->v = v;
		p->vnet = !!(flags & UVX_PORT_VNET_HDR);
		p->pmtud_credit = UVX_PMTUD_BURST * 1000u;
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
		return -ENOMEM;   /* the pool grows for static entries: never full */
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

/* A read: the read lock (which the workers share) keeps the pool where it
 * is, the FDB mutex keeps learning off the entry while it is copied. */
static int fdb_read_locked(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac,
			   struct uvx_fdb_info *out)
{
	pthread_mutex_lock(&dp->fdb_lock);
	int rc = fdb_lookup_api(dp, vni, mac, out);
	pthread_mutex_unlock(&dp->fdb_lock);
	return rc;
}

int uvx_fdb_lookup(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac,
		   struct uvx_fdb_info *out)
{
	READ_LOCKED(dp, int, fdb_read_locked(dp, vni, mac, out));
}

/* One chunk of a dump: the read lock and the FDB mutex for max entries at
 * most, so a worker waits for one chunk (a microsecond or so per hundred
 * entries), never for the whole table. */
static int fdb_dump_chunk(struct uvx_dp *dp, uint32_t *cursor,
			  struct uvx_fdb_info *out, int max)
{
	uint64_t now = uvx_now_ms();
	int n = 0;
	uint32_t i = *cursor;
	pthread_mutex_lock(&dp->fdb_lock);
	for (; i < dp->fdb.capacity && n < max; i++) {
		const struct fdb_entry *e = fdb_slot(&dp->fdb, i);
		if (e)
			fdb_info(e, now, &out[n++]);
	}
	*cursor = i < dp->fdb.capacity ? i : UVX_FDB_DUMP_END;
	pthread_mutex_unlock(&dp->fdb_lock);
	return n;
}

int uvx_fdb_dump(struct uvx_dp *dp, uint32_t *cursor, struct uvx_fdb_info *out,
		 int max)
{
	if (max < 0)
		return -EINVAL;
	if (*cursor == UVX_FDB_DUMP_END)
		return 0;
	READ_LOCKED(dp, int, fdb_dump_chunk(dp, cursor, out, max));
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
