/* Path MTU discovery for a frame too big for the underlay.
 *
 * A container whose MTU is larger than what the underlay carries once
 * encapsulated (underlay MTU - 50 for an untagged frame) sends frames we
 * cannot pass without outer fragments.  We drop them (xmit.c) and, as
 * Linux's vxlan does for a bridged device (net/ipv4/ip_tunnel_core.c:
 * skb_tunnel_check_pmtu, iptunnel_pmtud_check_icmp{,v6},
 * iptunnel_pmtud_build_icmp{,v6}), tell the sender what fits: an ICMP
 * "fragmentation needed" (RFC 792, RFC 1191) for IPv4 with DF set, an
 * ICMPv6 Packet Too Big (RFC 4443 section 3.2, RFC 8201) for IPv6.  The
 * reply looks as if it came from the original destination (its IP and MAC
 * addresses), so the sender's stack takes it like one from a router.
 *
 * Pure: no state, no allocation; the caller owns the buffer and the rate
 * limit (a token bucket per port, xmit.c).
 */
#ifndef UVX_PMTUD_H
#define UVX_PMTUD_H

#include <stddef.h>
#include <stdint.h>

/* Linux sends no "fragmentation needed" with an MTU below 576
 * (iptunnel_pmtud_check_icmp; RFC 1191 section 3 and RFC 791's 576 as the
 * size every host takes), and IPv6 has no MTU below 1280 (RFC 8200
 * section 5). */
#define PMTUD_V4_MIN_MTU 576u
#define PMTUD_V6_MIN_MTU 1280u
/* The reply is at most the minimum MTU of its family (RFC 1812 section
 * 4.3.2.3 for IPv4, RFC 4443 section 2.4 (c) for IPv6) behind an Ethernet
 * header and a VLAN tag. */
#define PMTUD_REPLY_MAX  (14u + 4u + PMTUD_V6_MIN_MTU)

/* frame (len bytes, read only within them) could not be sent: its IP
 * packet is larger than the underlay carries.  room is the largest inner
 * frame that fits (Ethernet header included); the MTU told to the sender
 * is room minus the frame's own Ethernet header and VLAN tag, that is
 * what its IP packets may be.  Writes the reply into out
 * (PMTUD_REPLY_MAX bytes) and returns its length, or 0 when none is due:
 * not IPv4 or IPv6, IPv4 without DF or a fragment, a non-first IPv6
 * fragment, an ICMP error (or ICMPv6 error or redirect), a multicast or
 * broadcast destination MAC or IP, a source that is not one host
 * (RFC 1812 section 4.3.2.7, RFC 4443 section 2.4 (e)), or an MTU below
 * the family's minimum. */
size_t pmtud_build_reply(uint8_t *out, const uint8_t *frame, size_t len, size_t room);

#endif
