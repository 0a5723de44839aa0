/* uvxlan fast path: the public C API (what Python sees through cffi).
 *
 * One datapath (struct uvx_dp) per agent: the VNIs, local ports (TAP fds),
 * remote VTEPs, the FDB, counters and the preallocated batch buffers.  The
 * agent's event loop calls uvx_tap_rx() when a TAP is readable and
 * uvx_udp_rx() when the VXLAN socket is; each drains up to a batch, switches,
 * encapsulates or decapsulates, and sends, all without returning to Python
 * per packet.
 *
 * Functions return 0 or a count on success and -errno on failure.
 */
#ifndef UVX_H
#define UVX_H

#include <stdint.h>

#include "vxlan.h"

#define UVX_BATCH_MAX     64     /* frames per rx call */
#define UVX_MAX_PORTS     1024   /* local ports per datapath */
#define UVX_MAX_VNIS      4096
#define UVX_VNI_PORTS     256    /* local ports in one VNI */
#define UVX_VNI_REMOTES   256    /* remote VTEPs in one VNI's flood list */
#define UVX_HEADROOM      64     /* room before each frame for outer headers */
#define UVX_FRAME_MAX     65535  /* largest frame or datagram a buffer holds */
#define UVX_WORKERS       2      /* the TAP side and the UDP side */

struct uvx_config {
	uint32_t local_ip;        /* underlay IPv4, network byte order */
	uint16_t dst_port;        /* default remote UDP port (4789) */
	uint16_t src_port_min;    /* outer source port range (49152..65535) */
	uint16_t src_port_max;
	uint32_t ageing_ms;       /* learned entries expire after this (300 s) */
	uint32_t learn_limit;     /* learned entries per VNI; 0 = no cap */
	uint32_t fdb_capacity;    /* entries in the pool, static + learned */
	uint32_t batch;           /* frames per rx call, 1..UVX_BATCH_MAX */
	uint8_t accept_reserved;  /* accept reserved bits, as RFC 7348 says */
	uint8_t udp_csum;         /* compute the outer UDP checksum */
	uint32_t rx_linger_us;    /* mid-burst, wait this long for the rest */
};

struct uvx_counters {
	uint64_t rx_packets;
	uint64_t rx_bytes;
	uint64_t tx_packets;
	uint64_t tx_bytes;
};

struct uvx_fdb_info {
	uint32_t vni;
	uint8_t mac[6];
	uint8_t is_static;
	uint8_t is_remote;
	int32_t port;             /* local port id, or -1 */
	uint32_t remote_ip;       /* network byte order */
	uint16_t remote_port;
	uint64_t age_ms;          /* since last learned or configured */
	uint64_t idle_ms;         /* since last used to forward */
};

struct uvx_dp;

/* The build stamps these in; the Python wrapper refuses a stale library. */
const char *uvx_version(void);
const char *uvx_source_digest(void);

void uvx_config_default(struct uvx_config *cfg);
struct uvx_dp *uvx_dp_new(const struct uvx_config *cfg, int *err);
void uvx_dp_free(struct uvx_dp *dp);

/* The VXLAN UDP socket (bound to local_ip:dst_port, for receiving) and the
 * raw IPPROTO_UDP socket we send on (so each flow gets its own outer source
 * port).  The datapath does not own them. */
int uvx_tx_socket_open(uint32_t local_ip);
int uvx_dp_set_sockets(struct uvx_dp *dp, int udp_fd, int tx_fd);

int uvx_vni_add(struct uvx_dp *dp, uint32_t vni);
int uvx_vni_del(struct uvx_dp *dp, uint32_t vni);
int uvx_remote_add(struct uvx_dp *dp, uint32_t vni, uint32_t ip, uint16_t port);
int uvx_remote_del(struct uvx_dp *dp, uint32_t vni, uint32_t ip, uint16_t port);

/* ARP suppression per VNI (see arp.h).  Modes: OFF, every ARP request is
 * switched like any frame; ANSWER, requests for an address in the table
 * are answered to the asking port and go nowhere else, the rest flood;
 * ANSWER_ONLY, the rest are dropped (counted as arp_unknown). */
#define UVX_ARP_OFF          0
#define UVX_ARP_ANSWER       1
#define UVX_ARP_ANSWER_ONLY  2
int uvx_vni_set_arp(struct uvx_dp *dp, uint32_t vni, int mode);
int uvx_arp_add(struct uvx_dp *dp, uint32_t vni, uint32_t ip, const uint8_t *mac);
int uvx_arp_del(struct uvx_dp *dp, uint32_t vni, uint32_t ip);
int uvx_arp_lookup(struct uvx_dp *dp, uint32_t vni, uint32_t ip, uint8_t *mac);
uint64_t uvx_vni_arp_replies(struct uvx_dp *dp, uint32_t vni);
/* A local port: a TAP fd (or any fd that reads and writes whole frames).
 * UVX_PORT_VNET_HDR: the TAP was opened with IFF_VNET_HDR and offloads, so
 * every frame carries a virtio-net header and may be a 64 KB super-frame. */
#define UVX_PORT_VNET_HDR 1u
int uvx_port_add(struct uvx_dp *dp, int fd, uint32_t vni, uint32_t flags);

/* UDP sockets to send from, bound to local_ip on ports of the source range:
 * a flow's hash picks one, so its datagrams keep one source port.  With gso,
 * a super-frame leaves in one sendmsg (UDP_SEGMENT); with gro, the VXLAN
 * socket has UDP_GRO on and a read may hold many datagrams.  Without a
 * pool, datagrams leave on the raw socket (sendmmsg). */
#define UVX_POOL_MAX 64
int uvx_dp_set_pool(struct uvx_dp *dp, const int *fds, const uint16_t *ports,
		    unsigned n, int gso, int gro);

/* One-time events for the agent to log, cleared when read. */
#define UVX_EV_GSO_FAILED 1u   /* UDP_SEGMENT failed at run time: off now */
uint32_t uvx_dp_take_events(struct uvx_dp *dp);
int uvx_port_del(struct uvx_dp *dp, int port);

/* FDB.  port >= 0: a local port; port < 0: the remote VTEP ip:udp_port. */
int uvx_fdb_add(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac,
		int32_t port, uint32_t ip, uint16_t udp_port);
int uvx_fdb_del(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac);
int uvx_fdb_learn(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac,
		  int32_t port, uint32_t ip, uint16_t udp_port, uint64_t now_ms);
int uvx_fdb_lookup(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac,
		   struct uvx_fdb_info *out);
int uvx_fdb_dump(struct uvx_dp *dp, struct uvx_fdb_info *out, int max);
/* Remove learned entries not refreshed for ageing_ms; returns how many. */
int uvx_fdb_age(struct uvx_dp *dp, uint64_t now_ms);
uint64_t uvx_now_ms(void);

/* Run the packet path on threads of its own: one reads the TAPs, one the
 * VXLAN socket, each blocking in epoll_wait inside C.  Ports added later
 * join.  Stop before closing any fd the datapath uses. */
int uvx_dp_start_threads(struct uvx_dp *dp);
int uvx_dp_stop_threads(struct uvx_dp *dp);

/* The packet path: drain up to a batch, return frames handled or -errno.
 * Called by the threads above, or by an event loop when they are off. */
int uvx_tap_rx(struct uvx_dp *dp, int port);
int uvx_udp_rx(struct uvx_dp *dp);

uint64_t uvx_drops(struct uvx_dp *dp, int reason);
const char *uvx_drop_reason_name(int reason);
int uvx_port_counters(struct uvx_dp *dp, int port, struct uvx_counters *out);
int uvx_vni_counters(struct uvx_dp *dp, uint32_t vni, struct uvx_counters *out);

/* Timing loops for benchmarks/test_micro.py: ns per operation, in C. */
double uvx_bench_encap(const uint8_t *frame, size_t len, uint32_t n);
double uvx_bench_decap(const uint8_t *pkt, size_t len, uint32_t n);
double uvx_bench_fdb_lookup(struct uvx_dp *dp, uint32_t vni, const uint8_t *macs,
			    uint32_t nmacs, uint32_t n);
double uvx_bench_fdb_learn(struct uvx_dp *dp, uint32_t vni, const uint8_t *macs,
			   uint32_t nmacs, uint32_t n);
double uvx_bench_tso(const uint8_t *frame, size_t len, uint16_t mss, int v6, uint32_t n);
double uvx_bench_gro(const uint8_t *segs, const size_t *lens, unsigned nsegs, uint32_t n);

/* Segmentation and coalescing as the datapath does them, whole frames in
 * and out: for tests beside the pure-Python reference (offload_ref.py). */
struct vnet_hdr;
int uvx_tso_frames(const uint8_t *frame, size_t len, uint16_t mss, int v6,
		   uint8_t *out, size_t cap, size_t *lens, unsigned max);
int uvx_gro_join(const uint8_t *segs, const size_t *lens, unsigned n,
		 uint8_t *out, size_t cap, struct vnet_hdr *vh);

#endif
