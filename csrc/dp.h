/* Datapath state: the structs every file of the fast path shares (ports,
 * VNIs, the transmit queue, a worker's batch state, the datapath), the
 * locking rules, and the small inline helpers that go with them (VNI
 * lookup, the clock).  Not part of the public API.
 *
 * Who calls whom (down the page only, never back up):
 *   dp.c       configuration, lifecycle    -> worker.c, fdb.c, arp.c, peers.c, fault.c, punt.c
 *   fault_api.c  faults from Python, timer -> fault.c
 *   worker.c   the two threads; hook kicks -> xmit.c, rcv.c
 *   xmit.c     TAP -> wire                 -> forward.c, vxlan.c, offload.c, arp.c, pmtud.c,
 *                                             fault.c, fault_api.c, gbp.c, capture.c, punt.c
 *   rcv.c      wire -> TAP                 -> forward.c, vxlan.c, offload.c, gbp.c, capture.c,
 *                                             punt.c
 *   punt.c     Python hooks: rules, slots, rings (no calls into the path)
 *   forward.c  switch, write to a port     -> fdb.c
 *   vxlan.c, offload.c, pmtud.c (codecs)   -> csum.c
 *   stats.c    counters as Python reads them; the packet path counts
 *              inline (stats.h), into per-worker sets
 */
#ifndef UVX_DP_H
#define UVX_DP_H

#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "arp.h"
#include "fdb.h"
#include "gbp.h"
#include "offload.h"
#include "peers.h"
#include "pmtud.h"
#include "punt.h"
#include "uvx.h"

struct uvx_port {
	int fd;
	int used;
	int vnet;                  /* frames carry a struct vnet_hdr */
	uint32_t vni;
	struct uvx_vni *v;         /* its VNI: one with ports is never removed */
	/* rx: read from the TAP; tx: written to it.  One set per worker, so
	 * each is written by one thread only; readers add them up. */
	struct uvx_counters ctr[UVX_WORKERS];
	uint64_t drops[UVX_WORKERS][UVX_DROP__MAX];   /* see uvx_port_drops */
	/* Token bucket for the ICMP answers to its frames too big for the
	 * underlay (UVX_PMTUD_*), in thousandths of a reply; the TX worker's
	 * alone. */
	uint32_t pmtud_credit;
	uint64_t pmtud_ms;         /* when it was last filled */
	uint16_t group;            /* its GBP group (gbp.h) */
};

/* The VTEP addresses admitted to a VNI: open addressing on the IPv4
 * address (0, never a sender, marks a free slot), at most half full so a
 * probe for an address that is not there ends soon.  Grown and rebuilt
 * under the write lock (dp.c); read per datagram under the read lock. */
struct uvx_vni {
	uint32_t vni;
	int admit;                 /* enum uvx_admit_mode */
	int learning;              /* learn sources (else static entries only) */
	int flood_unknown;         /* flood unicast for MACs not in the FDB (else unknown_dst) */
	struct gbp_policy gbp;     /* group policy (gbp.h) */
	int hooked;                /* a hook's rule names it (punt.c) */
	struct peer_set peers;
	uint32_t learned;          /* learned FDB entries, for the cap */
	uint32_t nports;
	uint32_t nremotes;
	uint32_t remotes_cap;      /* grown under the write lock, up to UVX_VNI_REMOTES */
	int32_t ports[UVX_VNI_PORTS];
	struct fdb_dest *remotes;  /* the flood list */
	struct uvx_counters ctr[UVX_WORKERS];   /* rx: decapsulated; tx: encapsulated */
	uint64_t drops[UVX_WORKERS][UVX_DROP__MAX];   /* see uvx_vni_drops */
	int arp_mode;              /* enum uvx_arp_mode */
	struct arp_table *arp;     /* IP -> MAC from the control plane, or NULL */
	uint64_t arp_replied[UVX_WORKERS];
	/* Limits reached (uvx_vni_limits): on the packet path per worker,
	 * sources left unlearned at the VNI's cap or the FDB's; in the
	 * configuration (under the write lock), refused flood-list and ARP
	 * entries. */
	uint64_t learn_capped[UVX_WORKERS];
	uint64_t fdb_full[UVX_WORKERS];
	uint64_t flood_full;
	uint64_t arp_full;
};

/* Datagrams waiting to be sent.  Each is up to three pieces: its own
 * UDP + VXLAN header, a segment's own headers when a super-frame was cut,
 * and the frame or payload left where it was read, so a flood to N VTEPs
 * queues N headers and no copies.  fd is the socket it leaves on: the raw
 * socket (the UDP header is ours) or a pool socket (the kernel's). */
#define UVX_TXQ_LEN 512
struct uvx_txq {
	unsigned n;
	struct mmsghdr msg[UVX_TXQ_LEN];
	struct iovec iov[UVX_TXQ_LEN][3];
	uint8_t hdr[UVX_TXQ_LEN][VXLAN_ENCAP_LEN];
	struct sockaddr_in dst[UVX_TXQ_LEN];
	struct uvx_vni *vni[UVX_TXQ_LEN];
	int fd[UVX_TXQ_LEN];
};

/* Everything one thread needs to move a batch: buffers with headroom,
 * recvmmsg state, the transmit queue, the segments of the super-frame being
 * sent and the flows being joined on receive.  One per worker (W_TX, W_RX),
 * so each has one user at a time. */
struct uvx_worker {
	struct uvx_dp *dp;
	unsigned id;               /* W_TX or W_RX */
	uint8_t *bufs;             /* batch slots of UVX_SLOT bytes */
	size_t len[UVX_BATCH_MAX];
	struct vnet_hdr vh[UVX_BATCH_MAX];
	struct mmsghdr rmsg[UVX_BATCH_MAX];
	struct iovec riov[UVX_BATCH_MAX];
	struct sockaddr_in rsrc[UVX_BATCH_MAX];
	uint8_t rctl[UVX_BATCH_MAX][64];   /* UDP_GRO segment size, SO_RXQ_OVFL count */
	uint64_t now_ms;
	int32_t port;              /* TX: the port the batch came from; RX: -1 */
	uint32_t hash;             /* flow hash of the frame being sent */
	int32_t gbp_src;           /* RX: the datagram's GBP group, -1: no policy */
	struct uvx_txq txq;
	struct seg segs[UVX_SEGS_MAX];
	struct gro_table gro;
	uint8_t pmtud_reply[PMTUD_REPLY_MAX];   /* TX: an ICMP answer being sent */
};

#define UVX_SLOT (UVX_HEADROOM + UVX_FRAME_MAX + 1)

/* The packet path on buffers in memory, the fuzz harnesses' way in
 * (csrc/fuzz/): the transmit path on frames from a port (xmit.c) and the
 * receive path on datagrams from given senders (rcv.c).  Exact-sized
 * buffers let AddressSanitizer see a read past a frame; a real datagram's
 * source could not be chosen. */
int uvx_xmit_frames(struct uvx_dp *dp, int port, uint8_t *const *frame,
		    const size_t *len, struct vnet_hdr *vh, unsigned n);
/* Fault injection's hooks (fault_api.c, xmit.c): set the TX thread's
 * timer to the first held frame; send the held frames that are due (the
 * TX thread, when the timer fires). */
struct fault_table;
void fault_arm(struct uvx_dp *dp);
int uvx_fault_tick(struct uvx_dp *dp);
void uvx_rcv_datagrams(struct uvx_dp *dp, uint8_t *const *pkt, const size_t *len,
		       const struct sockaddr_in *from, unsigned n);

static inline uint8_t *slot_frame(struct uvx_worker *w, unsigned i)
{
	return w->bufs + (size_t)i * UVX_SLOT + UVX_HEADROOM;
}

#define UVX_VNI_HASH (UVX_MAX_VNIS * 2)

/* Who runs what.  The TAP side and the UDP side each have a worker; with
 * threads on, each is a thread of its own blocking in epoll_wait, so the
 * two directions use both cores and Python is never woken for a packet.
 *
 * Locking: a worker holds cfg_lock for reading while it moves a batch;
 * every change from Python (VNIs, ports, flood lists, static FDB entries,
 * ageing) takes it for writing, so a worker never sees half a change.
 * The FDB is also written by the workers (learning), under fdb_lock, held
 * for one learn-and-look-up per frame.  Reading counters takes cfg_lock
 * for reading only (stats.c), which workers share. */
#define W_TX 0
#define W_RX 1

struct uvx_capture;

struct uvx_dp {
	struct uvx_config cfg;
	int udp_fd;
	int tx_fd;
	struct fdb fdb;
	struct uvx_port ports[UVX_MAX_PORTS];
	struct uvx_vni *vnis[UVX_MAX_VNIS];
	int16_t vni_index[UVX_VNI_HASH];   /* open addressing into vnis[] */
	uint64_t drops[UVX_WORKERS][UVX_DROP__MAX];
	int pool_fd[UVX_POOL_MAX];
	uint16_t pool_port[UVX_POOL_MAX];
	unsigned npool;
	int gso;                   /* send super-frames with UDP_SEGMENT */
	int gro;                   /* the VXLAN socket has UDP_GRO on */
	uint32_t rx_ovfl;          /* the kernel's count of datagrams the VXLAN
				    * socket had no room for, as last read */
	uint32_t events;
	pthread_rwlock_t cfg_lock;
	pthread_mutex_t fdb_lock;
	int running;               /* worker threads started */
	int stopping;
	int wake_fd;               /* eventfd that ends the threads' waits */
	int epfd[UVX_WORKERS];
	pthread_t thread[UVX_WORKERS];
	struct uvx_worker w[UVX_WORKERS];
	struct uvx_capture *cap;   /* a live capture, or NULL (capture.h) */
	/* Fault injection (fault.h): NULL until the first fault is set; the
	 * TX thread's timer for the frames it holds (-1 without threads). */
	struct fault_table *fault;
	int timer_fd;
	uint64_t timer_at;         /* the due time it is set to */
	struct punt punt;          /* Python hooks: rules, slots, rings */
};

/* Every change from Python runs under the write lock, so a worker never
 * sees half of one. */
#define LOCKED(dp, call)                                        \
	do {                                                    \
		pthread_rwlock_wrlock(&(dp)->cfg_lock);         \
		int r_ = (call);                                \
		pthread_rwlock_unlock(&(dp)->cfg_lock);         \
		return r_;                                      \
	} while (0)

/* The same for a read that must not see half a change (counters of a VNI
 * being removed): workers hold this lock for reading too, so it never
 * stalls them. */
#define READ_LOCKED(dp, type, call)                             \
	do {                                                    \
		pthread_rwlock_rdlock(&(dp)->cfg_lock);         \
		type r_ = (call);                               \
		pthread_rwlock_unlock(&(dp)->cfg_lock);         \
		return r_;                                      \
	} while (0)

/* Is ip (network byte order) admitted to send into v? */
static inline int peer_admitted(const struct uvx_vni *v, uint32_t ip)
{
	return v->admit == UVX_ADMIT_ANY || peer_set_has(&v->peers, ip);
}

static inline unsigned vni_slot(uint32_t vni)
{
	return (vni * 2654435761u) % UVX_VNI_HASH;
}

/* The VNI's state, or NULL: one probe in the common case, per datagram
 * on the receive side.  The index is rebuilt under the write lock (dp.c),
 * and twice the size of the table, so a probe always ends. */
static inline struct uvx_vni *vni_find(struct uvx_dp *dp, uint32_t vni)
{
	for (unsigned s = vni_slot(vni);; s = (s + 1) % UVX_VNI_HASH) {
		int16_t i = dp->vni_index[s];
		if (i < 0)
			return NULL;
		if (dp->vnis[i] && dp->vnis[i]->vni == vni)
			return dp->vnis[i];
	}
}

/* The monotonic clock in nanoseconds: ageing, lingering, benchmarks. */
static inline uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t mono_ms(void)
{
	return mono_ns() / 1000000u;
}

static inline int mac_is_multicast(const uint8_t *mac)
{
	return mac[0] & 1;   /* broadcast included */
}

#endif
