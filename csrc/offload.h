/* Offloads: 64 KB TCP super-frames through TAP, cut and joined in C.
 *
 * A TAP opened with IFF_VNET_HDR prefixes every frame with a virtio-net
 * header.  With TUNSETOFFLOAD (CSUM, TSO4, TSO6) the container's stack
 * hands us TCP super-frames up to 64 KB with checksums left partial; we
 * segment them to the network's MSS before encapsulation (tso_*) and, on
 * receive, join in-order segments of one flow back into a super-frame for
 * the TAP (gro_*).  For TAP the offsets count from the Ethernet header.
 */
#ifndef UVX_OFFLOAD_H
#define UVX_OFFLOAD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "drop.h"        /* tso_parse and csum_complete return a verdict */

/* include/uapi/linux/virtio_net.h, legacy layout in host byte order (what
 * a TAP uses on little-endian hosts without TUNSETVNETBE). */
struct vnet_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len;      /* Ethernet + IP + TCP headers */
	uint16_t gso_size;     /* MSS: payload bytes per segment */
	uint16_t csum_start;   /* where the checksum's coverage starts */
	uint16_t csum_offset;  /* where, after csum_start, it is stored */
};

#define VNET_HLEN            10
#define VNET_F_NEEDS_CSUM    1
#define VNET_F_DATA_VALID    2
#define VNET_GSO_NONE        0
#define VNET_GSO_TCPV4       1
#define VNET_GSO_TCPV6       4
#define VNET_GSO_ECN         0x80

#define TCP_F_FIN 0x01
#define TCP_F_SYN 0x02
#define TCP_F_RST 0x04
#define TCP_F_PSH 0x08
#define TCP_F_ACK 0x10
#define TCP_F_URG 0x20
#define TCP_F_ECE 0x40
#define TCP_F_CWR 0x80

#define SEG_HDR_MAX 160        /* Ethernet(+VLAN) + IPv4/6 + TCP with options */
#define UVX_SEGS_MAX 64        /* segments cut per pass */
#define TSO_MSS_MIN 48         /* smallest gso_size taken (tso_parse) */

/* Complete a partial checksum (NEEDS_CSUM): sum from csum_start to the end
 * and store at csum_start + csum_offset.  Returns UVX_PASS, or a drop if
 * that is outside the frame or inside its Ethernet header. */
int csum_complete(uint8_t *frame, size_t len, uint16_t start, uint16_t offset);

/* Where an inner TCP or UDP checksum was left partial by its sender: the
 * field holds the folded pseudo-header sum, as Linux leaves it on a
 * CHECKSUM_PARTIAL skb (what a kernel vxlan host sends over a veth with
 * its offloads on).  Plain IPv4 (no fragments) or IPv6 (no extension
 * headers), untagged.  Returns 1 and fills start/offset (for NEEDS_CSUM or
 * csum_complete) and end (the L4 end: Ethernet padding is not summed), or
 * 0.  Header bytes only: the payload is not read.  See rcv.c for when it is
 * trusted. */
int csum_partial_find(const uint8_t *frame, size_t len, uint16_t *start,
		      uint16_t *offset, size_t *end);

/* What the headers of a TCP super-frame say; filled by tso_parse. */
struct tso_info {
	size_t l3off;          /* IP header */
	size_t l4off;          /* TCP header */
	size_t hdrlen;         /* all headers */
	size_t payload;        /* TCP payload bytes */
	uint16_t mss;
	int v6;
	unsigned nseg;
};

/* One segment: its own headers here, its payload left in the super-frame. */
struct seg {
	uint8_t hdr[SEG_HDR_MAX];
	size_t hdrlen;
	const uint8_t *payload;
	size_t plen;
};

int tso_parse(const uint8_t *frame, size_t len, const struct vnet_hdr *vh,
	      struct tso_info *ti);
/* Cut segments [first, first + n) into out, with full checksums. */
void tso_segment(const uint8_t *frame, const struct tso_info *ti,
		 unsigned first, unsigned n, struct seg *out);

/* Receive coalescing.  A flow is segments of one TCP connection for one
 * local port, in order, of equal size but the last. */
#define GRO_FLOWS 8
#define GRO_SEGS  64

struct gro_flow {
	int active;
	int32_t port;
	int v6;
	uint8_t hdr[SEG_HDR_MAX];
	size_t hdrlen, l3off, l4off;
	uint32_t next_seq;
	uint16_t mss;
	size_t total;          /* payload bytes held */
	unsigned nseg;
	int closed;            /* a short or PSH segment ended it */
	int partial;           /* its first segment's checksum was partial */
	struct vnet_hdr vh;
	struct iovec iov[GRO_SEGS + 2];
};

struct gro_table {
	struct gro_flow flow[GRO_FLOWS];
};

/* The headers of one plain TCP segment (no IP options, no fragments, no
 * VLAN tag): what receive coalescing needs to know. */
struct tcp_view {
	size_t l3off, l4off, hdrlen, plen;
	uint32_t seq, ack;
	uint8_t flags;
	int v6;
	int partial;           /* checksum left partial (csum_partial_find) */
};

/* Parse frame as a TCP segment that could be joined: structure, flags
 * (ACK, maybe PSH, nothing else), a payload, and a valid TCP checksum (the
 * container trusts a joined frame's checksum, so every part must be right)
 * or one left partial by its sender (v->partial; rcv.c says why that is
 * trusted as much).  Returns 1 and fills v, or 0. */
int gro_candidate(const uint8_t *frame, size_t len, struct tcp_view *v);

/* Same connection as the flow's first segment? */
int gro_match(const struct gro_flow *f, const uint8_t *frame, const struct tcp_view *v);
/* Can this segment follow the flow's last one in one super-frame? */
int gro_fits(const struct gro_flow *f, const uint8_t *frame, const struct tcp_view *v);
void gro_start(struct gro_flow *f, int32_t port, const uint8_t *frame,
	       const struct tcp_view *v);
void gro_append(struct gro_flow *f, const uint8_t *frame, const struct tcp_view *v);
/* Turn a held flow into [vnet_hdr, headers, payloads...] in f->iov and
 * return the iov count; the caller writes it and clears f->active. */
int gro_finish(struct gro_flow *f);

#endif
