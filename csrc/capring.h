/* Live capture, the pure parts: the ring that holds captured frames, the
 * filter that picks them, and the outer headers shown with --outer.  No
 * datapath here (capture.c glues these to it), so the tests drive them
 * directly (csrc/testing/) and so does a fuzz target (csrc/fuzz/).
 *
 * The ring is a single-producer, single-consumer queue of fixed slots,
 * allocated once when a capture starts: the producer is one datapath
 * worker, the consumer the agent's event loop draining it.  A slot holds
 * a timestamp, the lengths, and up to snaplen bytes of the frame.  A frame
 * that finds every slot full is counted as missed and goes on its way:
 * the producer never waits, never allocates, and a reader that stalls
 * costs forwarding nothing.
 */
#ifndef UVX_CAPRING_H
#define UVX_CAPRING_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* What a slot holds before the frame's bytes. */
struct capring_slot {
	uint64_t ts_ns;            /* CLOCK_REALTIME when captured */
	uint32_t caplen;           /* bytes kept, at most snaplen */
	uint32_t origlen;          /* the frame's whole length */
	uint32_t point;            /* where: 0 for UVX_CAP_TAP_RX, 1, 2, 3 (the bit's position) */
	uint32_t vni;
	int32_t port;              /* the port it came from or goes to, or -1 */
	uint32_t pad;
};

/* head and tail on cache lines of their own: each has one writer. */
struct capring {
	uint64_t head __attribute__((aligned(64)));  /* producer: next slot to fill */
	uint64_t captured;         /* producer: frames put in */
	uint64_t missed;           /* producer: frames that found it full */
	uint64_t tail __attribute__((aligned(64)));  /* consumer: next slot to read */
	uint32_t nslots;
	uint32_t snaplen;
	size_t stride;             /* bytes per slot: header + snaplen, aligned */
	uint8_t *mem;
};

/* A record's header (UVX_CAPTURE_REC_HLEN): a pcap record header
 * (libpcap's pcap_sf_pkthdr, nanosecond flavour), then the slot's point,
 * VNI and port, each 32 bits in the host's byte order. */
#define CAPRING_REC_HLEN 28u

int capring_init(struct capring *r, uint32_t nslots, uint32_t snaplen);
void capring_free(struct capring *r);

/* Producer: put one frame seen at point (its index, see capring_slot)
 * in vni, from or to port: outer headers (outer_len bytes, may be 0)
 * first, then the pieces iov[0..niov); origlen is the sum, the bytes
 * kept stop at snaplen.  1 if put, 0 if the ring was full (missed). */
int capring_put(struct capring *r, uint64_t ts_ns, unsigned point, uint32_t vni,
		int32_t port, const uint8_t *outer, size_t outer_len,
		const struct iovec *iov, int niov);

/* Consumer: the oldest record's timestamp (1), or 0 if empty. */
int capring_peek(struct capring *r, uint64_t *ts_ns);
/* Consumer: write the oldest record into out (header, then the bytes)
 * and free its slot; its size, or 0 if empty or it does not fit in cap
 * (then it stays). */
size_t capring_take(struct capring *r, uint8_t *out, size_t cap);

/* Producer and consumer both read these counters: relaxed loads. */
uint64_t capring_captured(const struct capring *r);
uint64_t capring_missed(const struct capring *r);

/* The filter.  head is the frame's first headlen bytes (up to
 * CAPTURE_HEAD: enough for the MACs, one VLAN tag and the EtherType);
 * each field is read only if headlen holds it.  Does a frame seen at
 * point (UVX_CAP_*) in vni, from or to port, match f? */
#define CAPTURE_HEAD 18u
struct uvx_capture_filter;
int capture_match(const struct uvx_capture_filter *f, unsigned point, uint32_t vni,
		  int32_t port, const uint8_t *head, size_t headlen);

/* The first up to CAPTURE_HEAD bytes of a frame in pieces, into head;
 * returns how many. */
size_t capture_head(uint8_t *head, const struct iovec *iov, int niov);

/* The outer Ethernet + IPv4 + UDP + VXLAN headers of a datagram carrying
 * inner_len bytes of frame (CAPTURE_OUTER_LEN bytes into out), so that a
 * pcap of LINKTYPE_ETHERNET shows the datagram as the underlay carries it:
 * addresses and ports in network byte order, vxh the VXLAN header as sent
 * or received.  What the kernel adds below a userspace socket never
 * reaches it: the Ethernet addresses are zero, the IPv4 header is built
 * here (DF, TTL 64, id 0, its checksum right) and the UDP checksum is zero
 * (RFC 7348 section 5: SHOULD be zero over IPv4). */
#define CAPTURE_OUTER_LEN 50u
void capture_outer(uint8_t *out, uint32_t saddr, uint32_t daddr, uint16_t sport,
		   uint16_t dport, const uint8_t *vxh, size_t inner_len);

#endif
