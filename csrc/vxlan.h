/* VXLAN wire format (RFC 7348) and the codec that reads and writes it.
 *
 * Everything here is pure: no sockets, no state.  The datapath (xmit.c,
 * rcv.c) and the fuzz harness use it; Python's reference codec
 * (uvxlan/reference/wire.py) must produce the same bytes.
 */
#ifndef UVX_VXLAN_H
#define UVX_VXLAN_H

#include <stddef.h>
#include <stdint.h>

#include "drop.h"        /* the verdicts vxlan_parse and vxlan_check_inner return */

/* RFC 7348 section 5, the VXLAN header:
 *
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |R|R|R|R|I|R|R|R|            Reserved                           |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |                VXLAN Network Identifier (VNI) |   Reserved    |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 */
struct vxlanhdr {
	uint8_t flags;
	uint8_t reserved1[3];
	uint8_t vni[3];      /* network byte order */
	uint8_t reserved2;
};

#define VXLAN_HLEN      8u          /* the header above */
#define VXLAN_HF_I      0x08u       /* "I" flag: the VNI is valid */
#define VXLAN_VNI_MAX   0xFFFFFFu   /* 24 bits */
#define VXLAN_PORT_IANA 4789u       /* UDP destination port (section 5) */
#define IPV4_HLEN       20u         /* without options, as we send them */
#define UDP_HLEN        8u
#define ETH_HLEN        14u
#define ETH_ALEN        6u
/* Outer headers a userspace VTEP writes itself: UDP + VXLAN.  The kernel
 * adds the IPv4 header on the raw send socket. */
#define VXLAN_ENCAP_LEN (UDP_HLEN + VXLAN_HLEN)
/* Outer IPv4 + UDP + VXLAN + inner Ethernet: what the underlay MTU must hold
 * on top of the inner MTU (1500 - 50 = 1450). */
#define VXLAN_OVERHEAD  (IPV4_HLEN + UDP_HLEN + VXLAN_HLEN + ETH_HLEN)

/* The Group Based Policy extension (draft-smith-vxlan-group-policy-05
 * section 2.1; Linux's vxlan "gbp" flag, include/net/vxlan.h), which puts
 * meaning in the first word's reserved bits:
 *
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |G|R|R|R|I|R|R|R|R|D|R|R|A|R|R|R|        Group Policy ID        |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |                VXLAN Network Identifier (VNI) |   Reserved    |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * G: the Group Policy ID is present; D: do not learn the inner source;
 * A: policy was already applied, and MUST NOT be applied again.  As
 * values of the first word read in host order (rd32). */
#define VXLAN_GBP_G       0x80000000u
#define VXLAN_GBP_D       0x00400000u
#define VXLAN_GBP_A       0x00080000u
#define VXLAN_GBP_ID_MASK 0x0000ffffu
/* What a GBP network takes from the first word: G, and the 24 bits after
 * the flags byte, as Linux's VXLAN_GBP_USED_BITS (its unnamed bits there
 * are ignored, not dropped). */
#define VXLAN_GBP_USED    0x80ffffffu

/* Parse the VXLAN payload of a UDP datagram (what a UDP socket returns).
 * On UVX_PASS, *vni and *inner_off are set; the inner frame starts at
 * pkt + *inner_off and runs to pkt + len.  Bounds are checked before every
 * read. */
int vxlan_parse(const uint8_t *pkt, size_t len, int accept_reserved,
		uint32_t *vni, size_t *inner_off);

/* The same, with the GBP bits (VXLAN_GBP_USED) of the first word left to
 * the caller, who alone knows whether the VNI speaks GBP: they are put in
 * *gbp (0: none set) and never make UVX_DROP_RESERVED here.  Every other
 * reserved bit is judged as vxlan_parse judges it. */
int vxlan_parse_gbp(const uint8_t *pkt, size_t len, int accept_reserved,
		    uint32_t *vni, size_t *inner_off, uint32_t *gbp);

/* Mark a VXLAN header (VXLAN_HLEN bytes, as built above) with the G flag
 * and a group; group 0 leaves it plain, as Linux sends a frame whose
 * skb->mark is 0. */
void vxlan_gbp_put(uint8_t *vxh, uint16_t group);

/* Check an inner Ethernet frame before it enters the switch: at least an
 * Ethernet header, and a source MAC that is neither multicast nor zero. */
int vxlan_check_inner(const uint8_t *frame, size_t len);

/* Write the VXLAN header for vni into out (VXLAN_HLEN bytes). */
void vxlan_build_hdr(uint8_t *out, uint32_t vni);

/* Hash of the inner flow, for the outer UDP source port: MACs and
 * ethertype, plus IPv4/IPv6 addresses and protocol, plus TCP/UDP/SCTP ports
 * of unfragmented packets.  FNV-1a over those bytes in that order. */
uint32_t vxlan_flow_hash(const uint8_t *frame, size_t len);

/* Map a hash onto [min, max] (inclusive) without the bias of a modulo. */
uint16_t vxlan_src_port(uint32_t hash, uint16_t min, uint16_t max);

/* Build UDP header + VXLAN header + frame into out (capacity cap): exactly
 * the bytes the raw send socket carries.  Checksum is zero unless csum is
 * set, in which case it is computed over the IPv4 pseudo-header of
 * saddr -> daddr (network byte order).  Returns the length, or 0 if cap is
 * too small. */
size_t vxlan_build_datagram(uint8_t *out, size_t cap, uint32_t vni,
			    const uint8_t *frame, size_t len,
			    uint16_t sport, uint16_t dport,
			    uint32_t saddr, uint32_t daddr, int csum);

/* Fill the 16-byte UDP + VXLAN header for a datagram whose inner frame
 * (inner_len bytes) is kept elsewhere (scatter-gather send).  The UDP
 * checksum is left zero. */
void vxlan_fill_encap(uint8_t hdr[VXLAN_ENCAP_LEN], uint32_t vni, size_t inner_len,
		      uint16_t sport, uint16_t dport);

/* Compute and store the UDP checksum of hdr followed by the inner frame in
 * two pieces a and b (la even unless lb is 0), over the IPv4 pseudo-header
 * of saddr -> daddr (network byte order). */
void vxlan_fill_csum(uint8_t hdr[VXLAN_ENCAP_LEN], const uint8_t *a, size_t la,
		     const uint8_t *b, size_t lb, uint32_t saddr, uint32_t daddr);

#endif
