/* Switching and delivery, shared by both directions of the packet path:
 * xmit.c (TAP -> wire) and rcv.c (wire -> TAP) call these per frame. */
#ifndef UVX_FORWARD_H
#define UVX_FORWARD_H

#include <sys/uio.h>

#include "dp.h"

/* What fdb_switch says to do with a frame. */
enum fwd_verdict {
	FWD_DROPPED = -1,   /* spoofed source, or unknown unicast not flooded:
	                       counted, go no further */
	FWD_FLOOD = 0,      /* BUM, or unknown unicast */
	FWD_UNICAST = 1,    /* to *out */
};

/* Check src against the static entries (a MAC pinned elsewhere: dropped,
 * counted as spoofed_mac), learn it as reachable at `at` if the VNI
 * learns (the frame passed vxlan_check_inner), then look up dst.  A
 * source left unlearned counts as learn_limit for the VNI (and the port
 * at->port, if it is one), and in the VNI's limits; the frame is still
 * forwarded.  Unicast to a MAC not in the FDB is flooded, or dropped as
 * unknown_dst if the VNI's flood_unknown is off.  Returns an enum
 * fwd_verdict. */
int fdb_switch(struct uvx_dp *dp, struct uvx_vni *v, const uint8_t *src,
	       const struct fdb_dest *at, const uint8_t *dst, uint64_t now,
	       struct fdb_dest *out);

/* Is src a static entry's MAC that lives elsewhere than `at`?  Then the
 * frame is counted as spoofed_mac (for the VNI, and the port at->port if
 * it is one) and 1 is returned: for frames handled before fdb_switch
 * (ARP requests answered locally). */
int fdb_src_spoofed(struct uvx_dp *dp, struct uvx_vni *v, const uint8_t *src,
		    const struct fdb_dest *at);

/* Write one frame to a local port, with vh (NULL: a plain frame) when the
 * port takes virtio-net headers; counts the drop on failure, for the port.
 * Returns 0, or -1 if it was dropped. */
int tap_xmit(struct uvx_dp *dp, int32_t port, const uint8_t *frame, size_t len,
	     const struct vnet_hdr *vh);

/* The same for a frame in pieces: iov[1..niov) hold the frame, iov[0] is
 * left for the header (filled here, and skipped for a plain port). */
int tap_writev(struct uvx_dp *dp, int32_t port, const struct vnet_hdr *vh,
	       struct iovec *iov, int niov);

#endif
