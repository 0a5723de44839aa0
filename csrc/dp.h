/* Datapath internals shared by dp.c (configuration), xmit.c (TAP -> wire)
 * and rcv.c (wire -> TAP).  Not part of the public API. */
#ifndef UVX_DP_H
#define UVX_DP_H

#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "arp.h"
#include "fdb.h"
#include "offload.h"
#include "uvx.h"

struct uvx_port {
	int fd;
	int used;
	int vnet;                  /* frames carry a struct vnet_hdr */
	uint32_t vni;
	/* rx: read from the TAP; tx: written to it.  One set per worker, so
	 * each is written by one thread only; readers add them up. */
	struct uvx_counters ctr[UVX_WORKERS];
};

struct uvx_vni {
	uint32_t vni;
	uint32_t learned;          /* learned FDB entries, for the cap */
	uint32_t nports;
	uint32_t nremotes;
	int32_t ports[UVX_VNI_PORTS];
	struct fdb_dest remotes[UVX_VNI_REMOTES];   /* the flood list */
	struct uvx_counters ctr[UVX_WORKERS];   /* rx: decapsulated; tx: encapsulated */
	int arp_mode;              /* UVX_ARP_OFF, _ANSWER, _ANSWER_ONLY */
	struct arp_table *arp;     /* IP -> MAC from the control plane, or NULL */
	uint64_t arp_replied[UVX_WORKERS];
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
	uint8_t rctl[UVX_BATCH_MAX][64];   /* UDP_GRO segment size */
	uint64_t now_ms;
	uint32_t hash;             /* flow hash of the frame being sent */
	struct uvx_txq txq;
	struct seg segs[UVX_SEGS_MAX];
	struct gro_table gro;
};

#define UVX_SLOT (UVX_HEADROOM + UVX_FRAME_MAX + 1)

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
 * for one learn-and-look-up per frame. */
#define W_TX 0
#define W_RX 1
extern __thread unsigned uvx_wid;   /* the worker this thread counts for */

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
	uint32_t events;
	pthread_rwlock_t cfg_lock;
	pthread_mutex_t fdb_lock;
	int running;               /* worker threads started */
	int stopping;
	int wake_fd;               /* eventfd that ends the threads' waits */
	int epfd[UVX_WORKERS];
	pthread_t thread[UVX_WORKERS];
	struct uvx_worker w[UVX_WORKERS];
};

struct uvx_vni *vni_find(struct uvx_dp *dp, uint32_t vni);

/* Counters have one writer each (their worker) and are read by Python's
 * thread: relaxed atomic stores and loads, which cost a plain move. */
static inline void bump(uint64_t *c, uint64_t d)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + d, __ATOMIC_RELAXED);
}

static inline void drop(struct uvx_dp *dp, int reason)
{
	bump(&dp->drops[uvx_wid][reason], 1);
}

static inline void count_n(struct uvx_counters *ctr, int tx, uint64_t packets,
			   uint64_t bytes)
{
	struct uvx_counters *c = &ctr[uvx_wid];
	if (tx) {
		bump(&c->tx_packets, packets);
		bump(&c->tx_bytes, bytes);
	} else {
		bump(&c->rx_packets, packets);
		bump(&c->rx_bytes, bytes);
	}
}

static inline void count(struct uvx_counters *ctr, int tx, size_t bytes)
{
	count_n(ctr, tx, 1, bytes);
}

/* The monotonic clock in nanoseconds: ageing, lingering, benchmarks. */
static inline uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline int mac_is_multicast(const uint8_t *mac)
{
	return mac[0] & 1;   /* broadcast included */
}

/* Learn src as reachable at `at` (the frame passed vxlan_check_inner),
 * then look up dst: 1 and *out if it is a known unicast address. */
int fdb_switch(struct uvx_dp *dp, struct uvx_vni *v, const uint8_t *src,
	       const struct fdb_dest *at, const uint8_t *dst, uint64_t now,
	       struct fdb_dest *out);

/* Write one frame to a local port, with vh (NULL: a plain frame) when the
 * port takes virtio-net headers; counts the drop on failure. */
int tap_xmit(struct uvx_dp *dp, int32_t port, const uint8_t *frame, size_t len,
	     const struct vnet_hdr *vh);

/* The same for a frame in pieces: iov[1..niov) hold the frame, iov[0] is
 * left for the header (filled here, and skipped for a plain port). */
int tap_writev(struct uvx_dp *dp, int32_t port, const struct vnet_hdr *vh,
	       struct iovec *iov, int niov);

#endif
