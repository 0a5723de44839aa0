/* Fuzz target for the whole receive path: a batch of datagrams from
 * chosen senders -> vxlan_rcv (decapsulation, VNI lookup, learning) ->
 * fdb_switch -> deliver -> TCP joining (gro_rcv) -> the write to the port,
 * on the datapath of fuzz_dp.c.  What reaches the ports is checked
 * (fuzz_dp_drain).
 *
 * The input is up to 32 datagrams, each:
 *   u8   sender: low 2 bits pick 127.0.0.2-4 (the VTEPs) or 127.0.0.9
 *        (a stranger); with bit 2 set, the next 4 bytes are the address
 *   u8   fix: FZ_FIX_* bits (fuzz_dp.h), applied to the inner frame
 *   u16  length (big-endian), cut to what is left of the input
 *   ...  the UDP payload: VXLAN header and inner frame
 *
 *   make fuzz-rcv     (FUZZ_RUNS or FUZZ_SECONDS; see the Makefile)
 */
#include <stdlib.h>
#include <string.h>

#include "../bytes.h"
#include "fuzz_dp.h"

#define MAX_DGRAMS 32

static struct fuzz_dp fz;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_dp_setup(&fz);
	fz.from_wire = 1;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *pkt[MAX_DGRAMS];
	size_t len[MAX_DGRAMS];
	struct sockaddr_in from[MAX_DGRAMS];
	unsigned n = 0;
	size_t at = 0;

	while (n < MAX_DGRAMS && at + 4 <= size) {
		uint8_t who = data[at], fix = data[at + 1];
		size_t l = rd16(data + at + 2);
		at += 4;
		from[n] = fz.sender[who & 3];
		if (who & 4) {
			if (at + 4 > size)
				break;
			memcpy(&from[n].sin_addr.s_addr, data + at, 4);
			at += 4;
		}
		if (l > size - at)
			l = size - at;
		pkt[n] = fuzz_frame_alloc(data + at, l);
		if (l > VXLAN_HLEN)
			fuzz_fix_frame(pkt[n] + VXLAN_HLEN, l - VXLAN_HLEN, fix);
		len[n++] = l;
		at += l;
	}
	fuzz_dp_reset(&fz, 0);
	uvx_rcv_datagrams(fz.dp, pkt, len, from, n);
	fuzz_dp_drain(&fz);
	for (unsigned i = 0; i < n; i++)
		fuzz_frame_free(pkt[i]);
	return 0;
}
