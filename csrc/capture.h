/* Live capture on a datapath (capture.c): the state a running capture
 * keeps, and the hooks the packet path calls at each point where the
 * switch sees a frame.  Each hook is called only when a capture runs:
 *
 *	if (dp->cap)
 *		capture_frame(dp, ...);
 *
 * so with none the path pays that one branch.  dp->cap is set and
 * cleared under the write lock (uvx_capture_start, _stop); a worker holds
 * the read lock while it moves a batch, so it sees the capture whole or
 * not at all.  A hook runs on a worker and puts into that worker's ring
 * (uvx_wid): one producer per ring.
 */
#ifndef UVX_CAPTURE_H
#define UVX_CAPTURE_H

#include "capring.h"
#include "dp.h"

struct uvx_capture {
	struct uvx_capture_filter f;
	struct capring ring[UVX_WORKERS];
};

/* A frame in pieces seen at point (UVX_CAP_TAP_RX, UVX_CAP_TAP_TX) in
 * vni, read from or written to port. */
void capture_frame(struct uvx_dp *dp, unsigned point, uint32_t vni, int32_t port,
		   const struct iovec *iov, int niov);

/* A datagram from the wire, admitted to vni: its VXLAN header at pkt, the
 * inner frame from pkt + off to pkt + len, from the VTEP `from`; port: the
 * local port it is switched to (unicast), else -1. */
void capture_wire_rx(struct uvx_dp *dp, uint32_t vni, int32_t port, const uint8_t *pkt,
		     size_t off, size_t len, const struct sockaddr_in *from);

/* A datagram for the wire in vni, of a frame from port: to daddr
 * (network order) from source port sport to dport (host order), the
 * VXLAN header vxh, the inner frame in pieces. */
void capture_wire_tx(struct uvx_dp *dp, uint32_t vni, int32_t port, uint32_t daddr,
		     uint16_t sport, uint16_t dport, const uint8_t *vxh,
		     const struct iovec *iov, int niov);

/* The datapath goes: free a capture left running (no worker runs). */
void capture_free(struct uvx_dp *dp);

#endif
