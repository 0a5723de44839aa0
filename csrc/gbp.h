/* Group Based Policy (VXLAN-GBP, draft-smith-vxlan-group-policy-05): a
 * group per port, carried on the wire in the VXLAN header (vxlan.h), and
 * a policy table per VNI between groups that decides, frame by frame,
 * whether a frame of one group may reach a port of another.
 *
 * Where policy is applied: at the egress port, on the host the
 * destination lives on, with the source group from the wire (G flag and
 * ID; none: group 0) or from the local source port, and the destination
 * port's group.  So it holds for traffic from any sender, Linux's vxlan
 * with "gbp" among them, and the A bit is never set here (a sender that
 * sets it has applied policy itself, and the draft says it MUST NOT be
 * applied again: we skip it).
 *
 * The table: (source group, destination group) -> allow or deny, each
 * rule with a hit counter; pairs without a rule take the VNI's default
 * (allow in a new VNI, so turning GBP on changes nothing until a rule or
 * a default of deny says so).  Open addressing on the pair, at most half
 * full, rebuilt under the write lock when it grows or loses a rule, as
 * peers.c does; read per delivered frame under the read lock.
 */
#ifndef UVX_GBP_H
#define UVX_GBP_H

#include <stdint.h>

#include "uvx.h"

struct gbp_rule {
	uint64_t key;              /* (src << 16 | dst) + 1; 0: a free slot */
	uint32_t action;           /* enum uvx_gbp_action */
	uint64_t hits[UVX_WORKERS];
};

struct gbp_policy {
	int on;                    /* the VNI reads and sends the GBP bits */
	int dflt;                  /* the action for pairs without a rule */
	struct gbp_rule *slot;
	uint32_t mask;             /* slots - 1, or 0 with none */
	uint32_t n;
	uint64_t dflt_hits[UVX_WORKERS][2];   /* by action */
};

struct uvx_dp;

/* The source group of a datagram whose first VXLAN word had the GBP bits
 * gbp (vxlan_parse_gbp), on a VNI with policy p: its ID, 0 without the G
 * flag, or -1 where no policy applies (GBP off; the A bit set). */
int32_t gbp_source(const struct gbp_policy *p, uint32_t gbp);

/* May a frame of group src reach local port dst?  1: yes (counted for its
 * rule, or the default); 0: no, counted as gbp_denied for the port's VNI
 * and for count_port (-1: none).  A port that is gone is let through, for
 * the write to count it as no_port. */
int gbp_allows(struct uvx_dp *dp, uint16_t src, int32_t dst, int32_t count_port);

void gbp_policy_free(struct gbp_policy *p);

#endif
