/* Fuzz target for the transmit path: hostile virtio-net headers and frames
 * from a port -> vxlan_xmit (checks, checksum completion, ARP answers,
 * learning, switching) -> local delivery (a super-frame cut for a plain
 * port) or xmit_remote (tso_parse/tso_segment, encapsulation, UDP_SEGMENT
 * or the transmit queue and sendmmsg), on the datapath of fuzz_dp.c.  What
 * reaches the ports and the VTEPs' sockets is checked (fuzz_dp_drain).
 *
 * The input:
 *   u8   low 2 bits: the port the frames come from (0 and 2 take
 *        virtio-net headers); bits 2-3: how datagrams leave (0: the raw
 *        socket, 1: the pool, 2 and 3: the pool with UDP_SEGMENT)
 *   then up to 16 frames, each:
 *   u8   fix: FZ_FIX_* bits (fuzz_dp.h), applied to the frame
 *   u16  length (big-endian), cut to what is left of the input
 *   ...  a virtio-net header (10 bytes, on ports 0 and 2) and the frame
 *
 *   make fuzz-xmit     (FUZZ_RUNS or FUZZ_SECONDS; see the Makefile)
 */
#include <stdlib.h>
#include <string.h>

#include "../bytes.h"
#include "fuzz_dp.h"

#define MAX_FRAMES 16

static struct fuzz_dp fz;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_dp_setup(&fz);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *frame[MAX_FRAMES];
	size_t len[MAX_FRAMES];
	struct vnet_hdr vh[MAX_FRAMES];
	unsigned n = 0;

	if (size < 1)
		return 0;
	unsigned port = data[0] & 3, mode = (data[0] >> 2) & 3;
	size_t vlen = fz.vnet[port] ? VNET_HLEN : 0;
	size_t at = 1;
	while (n < MAX_FRAMES && at + 3 <= size) {
		uint8_t fix = data[at];
		size_t l = rd16(data + at + 1);
		at += 3;
		if (l > size - at)
			l = size - at;
		const uint8_t *p = data + at;
		at += l;
		/* As the TAP read does: too short for its header is dropped. */
		if (l < vlen)
			continue;
		memset(&vh[n], 0, sizeof(vh[n]));
		memcpy(&vh[n], p, vlen);
		frame[n] = fuzz_frame_alloc(p + vlen, l - vlen);
		fuzz_fix_frame(frame[n], l - vlen, fix);
		len[n++] = l - vlen;
	}
	fuzz_dp_reset(&fz, mode);
	uvx_xmit_frames(fz.dp, fz.port[port], frame, len, vh, n);
	fuzz_dp_drain(&fz);
	for (unsigned i = 0; i < n; i++)
		fuzz_frame_free(frame[i]);
	return 0;
}
