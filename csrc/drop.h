/* Drop reasons: the one list.
 *
 * Every path that discards a frame ends in exactly one of these, with a
 * counter (stats.h) and a name (uvx_drop_reason_name).  Each is written
 * once, here, as X(id, name, what it means); the enum below, the name table
 * (stats.c) and what cffi shows Python (csrc/build_ffi.py reads these lines)
 * are all made from it.  Keep one X(...) per line and append new reasons at
 * the end: the numbers are part of the API.
 */
#ifndef UVX_DROP_H
#define UVX_DROP_H

#define UVX_DROP_REASONS(X)                                                          \
	X(UVX_PASS,               "pass",            "not a drop")                      \
	X(UVX_DROP_TRUNCATED,     "truncated",       "datagram shorter than the VXLAN header") \
	X(UVX_DROP_BAD_FLAGS,     "bad_flags",       "I flag clear")                    \
	X(UVX_DROP_RESERVED,      "reserved_bits",   "a reserved flag or field bit set") \
	X(UVX_DROP_UNKNOWN_VNI,   "unknown_vni",     "VNI not configured on this host") \
	X(UVX_DROP_BAD_INNER,     "bad_inner_frame", "inner frame too short, or bad source MAC") \
	X(UVX_DROP_NO_DEST,       "no_destination",  "nowhere to send it (empty flood list)") \
	X(UVX_DROP_LEARN_LIMIT,   "learn_limit",     "source not learned: the VNI or the FDB at its cap") \
	X(UVX_DROP_HAIRPIN,       "hairpin",         "destination is the ingress port") \
	X(UVX_DROP_SPLIT_HORIZON, "split_horizon",   "from the wire, for a MAC behind a VTEP") \
	X(UVX_DROP_TOO_BIG,       "too_big",         "larger than a buffer")            \
	X(UVX_DROP_TAP_FULL,      "tap_full",        "TAP queue full (EAGAIN)")         \
	X(UVX_DROP_TAP_ERROR,     "tap_error",       "TAP write failed otherwise")      \
	X(UVX_DROP_UDP_ERROR,     "udp_error",       "sendmmsg refused the datagram")   \
	X(UVX_DROP_NO_PORT,       "no_port",         "frame for a port that has been removed") \
	X(UVX_DROP_BAD_GSO,       "bad_gso",         "a super-frame we cannot segment") \
	X(UVX_DROP_ARP_UNKNOWN,   "arp_unknown",     "ARP request for an address the store does not know, with flooding them off") \
	X(UVX_DROP_UNKNOWN_VTEP,  "unknown_vtep",    "from an address not admitted to the VNI") \
	X(UVX_DROP_SPOOFED_MAC,   "spoofed_mac",     "source MAC is a static entry that points elsewhere") \
	X(UVX_DROP_FRAG_NEEDED,   "frag_needed",     "larger than the underlay carries (ICMP sent back for IPv4 with DF)") \
	X(UVX_DROP_UNKNOWN_DST,   "unknown_dst",     "unicast to a MAC not in the FDB, where unknown unicast is not flooded") \
	X(UVX_DROP_FAULT_LOSS,    "fault_loss",      "lost on purpose: an injected fault (uvxlan fault --loss)") \
	X(UVX_DROP_FAULT_RATE,    "fault_rate",      "over an injected rate limit for longer than its backlog (uvxlan fault --rate)") \
	X(UVX_DROP_FAULT_QUEUE_FULL, "fault_queue_full", "no room left to hold a frame an injected fault delays") \
	X(UVX_DROP_GBP_DENIED,    "gbp_denied",      "group policy denies the source group the destination port's group") \
	X(UVX_DROP_HOOK_DROP,     "hook_drop",       "a Python hook said drop, or gave no verdict in time") \
	X(UVX_DROP_HOOK_QUEUE_FULL, "hook_queue_full", "matched a hook's rule with every slot waiting for a verdict") \
	X(UVX_DROP_SOCKET_OVERFLOW, "socket_overflow", "dropped by the kernel at the VXLAN socket before the agent read it: its buffer full (mostly) or a bad UDP checksum")

#define UVX_DROP_ENUM(id, name, doc) id,
enum uvx_drop_reason {
	UVX_DROP_REASONS(UVX_DROP_ENUM)
	UVX_DROP__MAX
};
#undef UVX_DROP_ENUM

#endif
