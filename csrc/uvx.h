/* uvxlan fast path: the public C API, and the only declaration of it.
 *
 * One datapath (struct uvx_dp) per agent: the VNIs, local ports (TAP fds),
 * remote VTEPs, the FDB, counters and the preallocated batch buffers.  The
 * agent's event loop calls uvx_tap_rx() when a TAP is readable and
 * uvx_udp_rx() when the VXLAN socket is; each drains up to a batch, switches,
 * encapsulates or decapsulates, and sends, all without returning to Python
 * per packet.
 *
 * cffi reads this file (csrc/build_ffi.py turns it into the cdef): every
 * `#define NAME value` reaches Python as a constant the compiler fills in,
 * and each header included below shows Python its constants and enums.
 *
 * Functions return 0 or a count on success and -errno on failure.
 */
#ifndef UVX_H
#define UVX_H

#include <stddef.h>
#include <stdint.h>

#include "drop.h"    /* enum uvx_drop_reason */
#include "fdb.h"     /* enum fdb_learn_result: what uvx_fdb_learn returns */
#include "vxlan.h"   /* VXLAN_HLEN, VXLAN_VNI_MAX, VXLAN_OVERHEAD, ... */

#define UVX_BATCH_MAX     64     /* frames per rx call */
#define UVX_MAX_PORTS     1024   /* local ports per datapath */
#define UVX_MAX_VNIS      4096
#define UVX_VNI_PORTS     256    /* local ports in one VNI */
#define UVX_VNI_REMOTES   4096   /* remote VTEPs in one VNI's flood list (grown to it) */
#define UVX_VNI_ARP_MAX   786432 /* addresses in one VNI's ARP table (grown to it) */
#define UVX_HEADROOM      64     /* room before each frame for outer headers */
#define UVX_FRAME_MAX     65535  /* largest frame or datagram a buffer holds */
#define UVX_WORKERS       2      /* the TAP side and the UDP side */

/* What a datapath is made with.  Every field is set by the caller: the
 * defaults live in one place, Python's uvxlan.config.DatapathConfig. */
struct uvx_config {
	uint32_t local_ip;        /* underlay IPv4, network byte order */
	uint16_t dst_port;        /* default remote UDP port */
	uint16_t src_port_min;    /* outer source port range */
	uint16_t src_port_max;
	uint32_t ageing_ms;       /* learned entries expire after this */
	uint32_t learn_limit;     /* learned entries per VNI; 0 = no cap */
	uint32_t fdb_capacity;    /* entries in the pool, static + learned */
	uint32_t batch;           /* frames per rx call, 1..UVX_BATCH_MAX */
	uint8_t accept_reserved;  /* accept reserved bits, as RFC 7348 says */
	uint8_t udp_csum;         /* compute the outer UDP checksum */
	uint32_t rx_linger_us;    /* mid-burst, wait this long for the rest */
	/* The largest IPv4 packet the underlay carries: a frame whose
	 * datagram (outer IPv4 + UDP + VXLAN + the frame) would be larger is
	 * dropped as frag_needed, never fragmented; VXLAN_OVERHEAD + 1 up to
	 * 65535. */
	uint32_t underlay_mtu;
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

/* Who may send into a VNI (issue 10).  MEMBERS, every new VNI's mode: a
 * datagram is accepted only from an admitted VTEP address (uvx_peer_add),
 * anything else is dropped before learning or delivery and counted as
 * unknown_vtep.  ANY: from anyone, as Linux's vxlan.  Admission is by the
 * outer source address alone: the source port is a per-flow hash (RFC
 * 7348 section 5).  Learning (on for a new VNI) off: no source is learned,
 * from the wire or from a port; forwarding uses static entries alone.
 * Whatever the modes, a frame whose source MAC is a static entry that
 * points elsewhere (another port; a VTEP with another address) is dropped
 * as spoofed_mac. */
enum uvx_admit_mode {
	UVX_ADMIT_MEMBERS,
	UVX_ADMIT_ANY,
};
int uvx_vni_set_admit(struct uvx_dp *dp, uint32_t vni, int mode);
int uvx_vni_set_learning(struct uvx_dp *dp, uint32_t vni, int on);
/* Unicast for a MAC not in the FDB: flooded (on, every new VNI's mode, as
 * Linux's vxlan sends it to its default destinations), or dropped and
 * counted as unknown_dst (off: where the control plane programs every
 * destination, such a MAC has gone, and its frames belong to nobody). */
int uvx_vni_set_flood_unknown(struct uvx_dp *dp, uint32_t vni, int on);
int uvx_peer_add(struct uvx_dp *dp, uint32_t vni, uint32_t ip);
int uvx_peer_del(struct uvx_dp *dp, uint32_t vni, uint32_t ip);
int uvx_peer_count(struct uvx_dp *dp, uint32_t vni);

/* VXLAN Group Based Policy per VNI (gbp.h; draft-smith-vxlan-group-policy).
 * GBP on: the G flag and group ID are read from the wire (else, as for
 * every new VNI, those bits are reserved bits: dropped unless
 * accept_reserved) and sent, with the group of the port a frame came
 * from (uvx_port_set_group; 0, a new port's, sends no G flag, as Linux).
 * Frames are then delivered to a local port only if the policy allows
 * the pair (source group, the port's group): a rule, else the VNI's
 * default (ALLOW in a new VNI); denied ones count as gbp_denied.  Up to
 * UVX_GBP_RULES_MAX rules per VNI, each with a hit counter. */
enum uvx_gbp_action {
	UVX_GBP_ALLOW,
	UVX_GBP_DENY,
};
#define UVX_GBP_GROUP_MAX 65535
#define UVX_GBP_RULES_MAX 16384
int uvx_vni_set_gbp(struct uvx_dp *dp, uint32_t vni, int on);
int uvx_port_set_group(struct uvx_dp *dp, int port, uint32_t group);
int uvx_gbp_set_default(struct uvx_dp *dp, uint32_t vni, int action);
int uvx_gbp_rule_set(struct uvx_dp *dp, uint32_t vni, uint32_t src, uint32_t dst,
		     int action);
int uvx_gbp_rule_del(struct uvx_dp *dp, uint32_t vni, uint32_t src, uint32_t dst);
struct uvx_gbp_info {
	uint8_t on;
	uint8_t default_action;
	uint32_t rules;
	uint64_t default_allowed;  /* frames of pairs without a rule */
	uint64_t default_denied;
};
int uvx_gbp_info(struct uvx_dp *dp, uint32_t vni, struct uvx_gbp_info *out);
struct uvx_gbp_rule_info {
	uint16_t src;
	uint16_t dst;
	uint8_t action;
	uint64_t hits;             /* frames it decided */
};
/* Up to max rules of the VNI, in no order; returns how many. */
int uvx_gbp_rules(struct uvx_dp *dp, uint32_t vni, struct uvx_gbp_rule_info *out, int max);

/* ARP suppression per VNI (see arp.h).  Modes: OFF, every ARP request is
 * switched like any frame; ANSWER, requests for an address in the table
 * are answered to the asking port and go nowhere else, the rest flood;
 * ANSWER_ONLY, the rest are dropped (counted as arp_unknown). */
enum uvx_arp_mode {
	UVX_ARP_OFF,
	UVX_ARP_ANSWER,
	UVX_ARP_ANSWER_ONLY,
};
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
int uvx_port_del(struct uvx_dp *dp, int port);

/* UDP sockets to send from, bound to local_ip on ports of the source range:
 * a flow's hash picks one, so its datagrams keep one source port.  With gso,
 * a super-frame leaves in one sendmsg (UDP_SEGMENT); with gro, the VXLAN
 * socket has UDP_GRO on and a read may hold many datagrams.  Without a
 * pool, datagrams leave on the raw socket (sendmmsg). */
#define UVX_POOL_MAX 64
int uvx_dp_set_pool(struct uvx_dp *dp, const int *fds, const uint16_t *ports,
		    unsigned n, int gso, int gro);

/* Make a socket we send VXLAN on never fragment: a datagram larger than
 * its device's MTU fails (EMSGSIZE) instead of leaving in fragments, and
 * no ICMP from the underlay lowers what it sends.  0 or -errno. */
int uvx_socket_nofrag(int fd);

/* Answers to frames too big for the underlay (ICMP "fragmentation
 * needed", ICMPv6 Packet Too Big), per port: a token bucket of this many,
 * refilled at this many per second, so a flood of big frames costs the
 * agent little. */
#define UVX_PMTUD_BURST    16
#define UVX_PMTUD_PER_SEC  100

/* One-time events for the agent to log, cleared when read. */
#define UVX_EV_GSO_FAILED 1u   /* the kernel cannot do UDP_SEGMENT on the underlay: off now */
uint32_t uvx_dp_take_events(struct uvx_dp *dp);

/* FDB.  port >= 0: a local port; port < 0: the remote VTEP ip:udp_port. */
int uvx_fdb_add(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac,
		int32_t port, uint32_t ip, uint16_t udp_port);
int uvx_fdb_del(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac);
int uvx_fdb_learn(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac,
		  int32_t port, uint32_t ip, uint16_t udp_port, uint64_t now_ms);
int uvx_fdb_lookup(struct uvx_dp *dp, uint32_t vni, const uint8_t *mac,
		   struct uvx_fdb_info *out);
/* Up to max entries from pool slot *cursor on (0 to start); *cursor is
 * left where the next call goes on, UVX_FDB_DUMP_END when all were seen.
 * Each call holds the FDB's locks for its own chunk only, so a dump of a
 * full table never stalls the workers for more than one chunk; an entry
 * added or removed meanwhile may be missed. */
#define UVX_FDB_DUMP_END 0xffffffff
int uvx_fdb_dump(struct uvx_dp *dp, uint32_t *cursor, struct uvx_fdb_info *out,
		 int max);
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

/* Counters, readable while the threads run (they never stall them).
 *
 * Drops by reason (drop.h): uvx_drops for the whole datapath, every reason.
 * uvx_vni_drops and uvx_port_drops fill out[0..UVX_DROP__MAX) for one VNI
 * or one port, with the drops that can be put down to it: not those of a
 * datagram refused before its VNI is known (truncated, bad_flags,
 * reserved_bits, unknown_vni, too_big from the wire).  A port counts the
 * frames it sent that were dropped, and those that could not be written
 * to it (tap_full, tap_error). */
uint64_t uvx_drops(struct uvx_dp *dp, int reason);
int uvx_vni_drops(struct uvx_dp *dp, uint32_t vni, uint64_t *out);
int uvx_port_drops(struct uvx_dp *dp, int port, uint64_t *out);
const char *uvx_drop_reason_name(int reason);
int uvx_port_counters(struct uvx_dp *dp, int port, struct uvx_counters *out);
int uvx_vni_counters(struct uvx_dp *dp, uint32_t vni, struct uvx_counters *out);

/* Limits a VNI reached, since it was made: sources left unlearned at its
 * learn_limit, or with the FDB's learned entries at fdb_capacity (both
 * also counted as the learn_limit drop; the frame is still forwarded);
 * VTEPs refused by a full flood list (UVX_VNI_REMOTES), addresses by a
 * full ARP table. */
struct uvx_limits {
	uint64_t learn_limit;
	uint64_t fdb_full;
	uint64_t flood_full;
	uint64_t arp_full;
};
int uvx_vni_limits(struct uvx_dp *dp, uint32_t vni, struct uvx_limits *out);

/* How full a VNI's tables are: sources learned in it (its learn_limit
 * caps them), VTEPs in its flood list (up to UVX_VNI_REMOTES) and
 * admitted, addresses in its ARP table (up to UVX_VNI_ARP_MAX), ports.
 * And the FDB's: entries (static and learned), learned ones (capped at
 * the fdb_capacity it was made with), the pool's size (grown for static
 * entries).  Read under the read lock and, for what learning changes,
 * fdb_lock: a worker waits for a few loads at most. */
struct uvx_vni_sizes {
	uint32_t learned;
	uint32_t flood;
	uint32_t admitted;
	uint32_t arp;
	uint32_t ports;
};
int uvx_vni_sizes(struct uvx_dp *dp, uint32_t vni, struct uvx_vni_sizes *out);
struct uvx_fdb_sizes {
	uint32_t entries;
	uint32_t learned;
	uint32_t learn_max;
	uint32_t capacity;
};
int uvx_fdb_sizes(struct uvx_dp *dp, struct uvx_fdb_sizes *out);


/* Live capture (capture.c; `uvxlan capture`).  Frames are taken where the
 * switch sees them, at the points asked for: read from a port (TAP_RX),
 * written to one (TAP_TX), decapsulated from the wire once admitted
 * (WIRE_RX), encapsulated for it (WIRE_TX, each datagram, segments of a
 * super-frame each).  A filter picks them (match: the fields compared;
 * a MAC matches as source or destination, an EtherType also behind one
 * VLAN tag) and up to snaplen bytes of each go to a ring per worker,
 * with the outer Ethernet/IPv4/UDP/VXLAN headers first at the wire
 * points if UVX_CAP_F_OUTER (capring.h says what they hold).  slots per worker (0: as many as
 * UVX_CAPTURE_RING_BYTES hold, at most UVX_CAPTURE_SLOTS_MAX).  One
 * capture at a time; with none, the packet path pays one branch per
 * point.  The rings are allocated by start, freed by stop; a frame that
 * finds its ring full is counted as missed, never waited for. */
#define UVX_CAP_TAP_RX      1u
#define UVX_CAP_TAP_TX      2u
#define UVX_CAP_WIRE_RX     4u
#define UVX_CAP_WIRE_TX     8u
#define UVX_CAP_F_VNI       1u
#define UVX_CAP_F_PORT      2u
#define UVX_CAP_F_MAC       4u
#define UVX_CAP_F_ETHERTYPE 8u
#define UVX_CAP_F_OUTER     16u
#define UVX_CAPTURE_RING_BYTES  (8u << 20)
#define UVX_CAPTURE_RING_MAX    (256u << 20)   /* slots asked for: at most this per worker */
#define UVX_CAPTURE_SLOTS_MAX   65536
#define UVX_CAPTURE_SNAP_MIN    64
/* The largest frame plus the outer headers --outer adds (Ethernet, IPv4,
 * UDP, VXLAN). */
#define UVX_CAPTURE_SNAP_MAX    (UVX_FRAME_MAX + ETH_HLEN + IPV4_HLEN + VXLAN_ENCAP_LEN)
/* The header each drained frame starts with (uvx_capture_drain). */
#define UVX_CAPTURE_REC_HLEN    28
struct uvx_capture_filter {
	uint32_t points;          /* UVX_CAP_TAP_RX | ... */
	uint32_t match;           /* UVX_CAP_F_* */
	uint32_t vni;
	int32_t port;
	uint8_t mac[6];
	uint16_t ethertype;
	uint32_t snaplen;         /* UVX_CAPTURE_SNAP_MIN..UVX_CAPTURE_SNAP_MAX */
	uint32_t slots;
};
struct uvx_capture_stats {
	uint64_t captured;        /* frames put in the rings */
	uint64_t missed;          /* frames that found a ring full */
	uint64_t drained;         /* frames moved out by uvx_capture_drain */
	uint32_t slots;           /* per worker */
	uint32_t snaplen;
};
/* 0, -EBUSY if a capture runs, -EINVAL for a bad filter, -EFBIG for
 * rings over UVX_CAPTURE_RING_MAX, -ENOMEM. */
int uvx_capture_start(struct uvx_dp *dp, const struct uvx_capture_filter *f);
/* Ends the capture; its last counts into out (may be NULL).  -ENOENT if none. */
int uvx_capture_stop(struct uvx_dp *dp, struct uvx_capture_stats *out);
int uvx_capture_stats(struct uvx_dp *dp, struct uvx_capture_stats *out);
/* Moves captured frames into buf as records, oldest first across the
 * workers, as many as fit in cap.  A record is UVX_CAPTURE_REC_HLEN bytes
 * of header, seven 32-bit fields in the host's order: seconds,
 * nanoseconds, bytes kept, length (a pcap record header so far), the
 * point (the position of its UVX_CAP_* bit: 0 for TAP_RX ... 3 for
 * WIRE_TX), the VNI, the port (-1: none); then the bytes kept.  Bytes written (0: nothing waiting), or -ENOENT.
 * Takes the read lock: the workers never wait for it. */
int uvx_capture_drain(struct uvx_dp *dp, uint8_t *buf, size_t cap);
/* Fault injection, a lab tool (fault.h; issue 14): on the way to the wire,
 * for datagrams to one remote VTEP (peer_ip), in one VNI, or both (the
 * other UVX_FAULT_ANY); the most specific entry applies, (peer, VNI)
 * before (peer, any) before (any, VNI).  Off by default, kept in memory
 * only.  Probabilities are in parts per million of the datagrams the
 * entry sees; delay and jitter (uniform in [-jitter, +jitter]) in
 * microseconds; the rate in bits per second of outer datagrams (0: none).
 * Delay, jitter, reordering and a rate hold frames, sent by the TX thread
 * when due: they need the threads (else -EOPNOTSUPP). */
#define UVX_FAULTS_MAX      64
#define UVX_FAULT_ANY       0xFFFFFFFFu
#define UVX_FAULT_PPM       1000000u
#define UVX_FAULT_DELAY_MAX 10000000u   /* microseconds: 10 s */
#define UVX_FAULT_RATE_MIN  8000u       /* bits per second */
struct uvx_fault {
	uint32_t peer_ip;         /* network byte order, or UVX_FAULT_ANY */
	uint32_t vni;             /* or UVX_FAULT_ANY */
	uint32_t loss_ppm;
	uint32_t duplicate_ppm;
	uint32_t reorder_ppm;     /* held back behind the next datagram */
	uint32_t corrupt_ppm;     /* a bit flipped in the inner L4 payload */
	uint32_t delay_us;
	uint32_t jitter_us;
	uint64_t rate_bps;
};
/* What an entry did: datagrams it saw (matched), lost (the fault_loss
 * drop), delayed (held for the delay or the rate), duplicated, reordered,
 * corrupted, rate_dropped (the fault_rate drop: over the rate for longer
 * than the backlog allows), queue_full (fault_queue_full: no slot left to
 * hold it). */
struct uvx_fault_counters {
	uint64_t matched;
	uint64_t lost;
	uint64_t delayed;
	uint64_t duplicated;
	uint64_t reordered;
	uint64_t corrupted;
	uint64_t rate_dropped;
	uint64_t queue_full;
};
/* Set (add, or change keeping the counters) or clear one entry; clearing
 * sends what it held back at once.  uvx_fault_list fills up to max entries
 * and their counters and returns how many. */
int uvx_fault_set(struct uvx_dp *dp, const struct uvx_fault *f);
int uvx_fault_clear(struct uvx_dp *dp, uint32_t peer_ip, uint32_t vni);
int uvx_fault_list(struct uvx_dp *dp, struct uvx_fault *out,
		   struct uvx_fault_counters *ctr, int max);
/* Python hooks (punt.c): frames of a VNI that match a rule go to the
 * agent, which gives each back with a verdict; the rest never leave C.
 * A rule: a VNI, an EtherType (0: any; the field at offset 12, so 0x8100
 * for a tagged frame), a MAC (source or destination; NULL: any) and the
 * directions it applies to.  The first rule that matches names the hook.
 * Frames wait in UVX_HOOK_SLOTS slots per worker; with none free, a frame
 * that matches is dropped (hook_queue_full), never passed: a hook may be
 * a policy.  uvx_hook_fd is readable when frames wait: uvx_hook_take
 * until it returns fewer than max.  Each taken frame's data is the
 * caller's until it gives uvx_hook_verdict its token, once: PASS goes on
 * from where the frame was taken (with new bytes if data is not NULL),
 * never taken again; DROP counts hook_drop.  uvx_hook_inject sends a new
 * frame, from a port (as if its container sent it) or to a port (to its
 * container); -EAGAIN when UVX_HOOK_INJECT are in flight.  Verdicts and
 * injections run at uvx_hook_kick. */
#define UVX_HOOK_RULES     64
#define UVX_HOOK_SLOTS     256
#define UVX_HOOK_INJECT    64
#define UVX_HOOK_FROM_PORT 1     /* sent by a container, before switching */
#define UVX_HOOK_FROM_WIRE 2     /* from a VTEP, decapsulated, before switching */
#define UVX_HOOK_TO_PORT   4     /* injected: written to the port's container */
#define UVX_HOOK_PASS      0
#define UVX_HOOK_DROP      1
struct uvx_punt {
	uint32_t token;           /* for uvx_hook_verdict */
	uint32_t hook;
	uint32_t vni;
	int32_t port;             /* from this port, or -1 (from the wire) */
	uint32_t remote_ip;       /* from the wire: the sending VTEP, network order */
	uint32_t dir;
	uint32_t len;
	uint8_t *data;
};
int uvx_hook_add(struct uvx_dp *dp, uint32_t hook, uint32_t vni, uint16_t ethertype,
		 const uint8_t *mac, uint32_t dirs);
int uvx_hook_del(struct uvx_dp *dp, uint32_t hook);
int uvx_hook_fd(struct uvx_dp *dp);
int uvx_hook_take(struct uvx_dp *dp, struct uvx_punt *out, int max);
int uvx_hook_verdict(struct uvx_dp *dp, uint32_t token, int verdict,
		     const uint8_t *data, size_t len);
int uvx_hook_inject(struct uvx_dp *dp, int32_t port, int dir,
		    const uint8_t *data, size_t len);
int uvx_hook_kick(struct uvx_dp *dp);
uint64_t uvx_hook_punted(struct uvx_dp *dp);

#endif
