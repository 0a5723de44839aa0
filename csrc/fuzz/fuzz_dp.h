/* The datapath the packet-path fuzz targets (fuzz_rcv.c, fuzz_xmit.c) run
 * on: a real struct uvx_dp (uvx_dp_new) with three VNIs, four ports, three
 * remote VTEPs, static FDB entries and ARP entries, set up in one function
 * (fuzz_dp_setup).  Every frame the datapath writes lands in a socket of
 * the harness, and is checked and thrown away after each run.
 *
 *   VNI 100  ports 0 (virtio-net), 1 (plain), 2 (virtio-net); flood list
 *            and admitted: VTEPs 0 and 1; ARP answered; static entries to
 *            ports 0..2 and to VTEPs 0 and 1; VXLAN-GBP on, ports 0 and 1
 *            in groups 10 and 20, two rules that deny
 *   VNI 200  port 3 (plain); no flood list; admits anyone; ARP
 *            answer-only; a static entry to port 3
 *   VNI 300  no ports; flood list and admitted: VTEP 2
 *
 * The underlay MTU is 1500: bigger frames and segments are answered with
 * ICMP through their port (pmtud.c).
 *
 * The VTEPs are loopback addresses 127.0.0.2-4, each a UDP socket of ours
 * that the transmit path's datagrams land in: nothing leaves the machine.
 * A fourth sender, 127.0.0.9, is a stranger to every VNI (heard only in
 * VNI 200, which admits anyone).
 */
#ifndef UVX_FUZZ_DP_H
#define UVX_FUZZ_DP_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#include "../dp.h"

#define FZ_PORTS   4
#define FZ_VTEPS   3
#define FZ_SENDERS 4     /* the three VTEPs and the stranger */
#define FZ_POOL    2

#define FZ_VNI_A 100
#define FZ_VNI_B 200
#define FZ_VNI_C 300

/* The static MACs: 02:00:00:00:00:0N. */
#define FZ_MAC_PORT0 1
#define FZ_MAC_PORT1 2
#define FZ_MAC_PORT2 3
#define FZ_MAC_VTEP0 4
#define FZ_MAC_VTEP1 5
#define FZ_MAC_PORT3 6

/* The snap length of the capture the datapath runs (every point, outer
 * headers): below a full frame, so records are cut too. */
#define FZ_CAPTURE_SNAP 1200u
/* VXLAN-GBP groups of ports 0 and 1 in VNI 100 (port 2 has none). */
#define FZ_GROUP_PORT0 10
#define FZ_GROUP_PORT1 20

struct fuzz_dp {
	struct uvx_dp *dp;
	int port[FZ_PORTS];            /* port ids */
	int vnet[FZ_PORTS];            /* the port takes virtio-net headers */
	int peer[FZ_PORTS];            /* the harness's end of each port */
	struct sockaddr_in sender[FZ_SENDERS];
	int sink[FZ_VTEPS];            /* where the VTEPs' datagrams land */
	int pool_fd[FZ_POOL];
	uint16_t pool_port[FZ_POOL];
	/* Frames from the wire: DATA_VALID must mean we verified the sum.
	 * (From a port it may not: a frame completed where its sender's
	 * NEEDS_CSUM said goes on marked valid, as the sender asked.) */
	int from_wire;
};

/* Make the datapath above; exits with a message if anything fails. */
void fuzz_dp_setup(struct fuzz_dp *f);

/* Before each run: forget what the last one learned, and set the send
 * mode (0: the raw socket, 1: the pool, 2: the pool with UDP_SEGMENT), so
 * a run never depends on the one before. */
void fuzz_dp_reset(struct fuzz_dp *f, unsigned send_mode);

/* After each run: read and check everything written to the ports and sent
 * to the VTEPs (aborts on a frame that breaks a rule; see fuzz_dp.c). */
void fuzz_dp_drain(struct fuzz_dp *f);

/* Write into buf what a harness input asks for: make the IP lengths and
 * checksums of an Ethernet frame valid (fix bit 0), its TCP or UDP
 * checksum valid (bit 1) or left partial as a sending kernel leaves it
 * (bit 2), so the fuzzer reaches the paths behind those checks. */
#define FZ_FIX_IP      1u
#define FZ_FIX_L4      2u
#define FZ_FIX_PARTIAL 4u
void fuzz_fix_frame(uint8_t *frame, size_t len, unsigned fix);

/* A buffer of exactly len bytes after UVX_HEADROOM, as a batch slot has;
 * fuzz_free gives it back. */
uint8_t *fuzz_frame_alloc(const uint8_t *data, size_t len);
void fuzz_frame_free(uint8_t *frame);

#endif
