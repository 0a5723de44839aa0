/* Fuzz target for the parsers (VXLAN, ARP, the offloads' TCP views), the
 * FDB, and the capture's filter and ring.
 *
 * With clang:  clang -g -fsanitize=fuzzer,address,undefined -Icsrc \
 *                  csrc/fuzz/fuzz_vxlan.c csrc/vxlan.c csrc/fdb.c csrc/csum.c \
 *                  csrc/arp.c csrc/offload.c csrc/capring.c   (make fuzz)
 * Without it (gcc), -DUVX_FUZZ_STANDALONE adds a main() that feeds random
 * and mutated inputs for a number of iterations: what the test suite runs
 * under AddressSanitizer and UBSan (tests/system/test_sanitize.py).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../arp.h"
#include "../capring.h"
#include "../fdb.h"
#include "../offload.h"
#include "../uvx.h"
#include "../vxlan.h"

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz: invariant broken: %s\n", what);
		abort();
	}
}

/* The parser: any bytes, both reserved-bit policies. */
static void fuzz_parse(const uint8_t *data, size_t size)
{
	for (int accept = 0; accept < 2; accept++) {
		uint32_t vni = 0;
		size_t off = 0;
		int r = vxlan_parse(data, size, accept, &vni, &off);
		check(r >= 0 && r < UVX_DROP__MAX, "parse verdict in range");
		if (r == UVX_PASS) {
			check(off == VXLAN_HLEN && size >= VXLAN_HLEN + ETH_HLEN,
			      "pass implies a header and an inner frame");
			check(vni <= VXLAN_VNI_MAX, "vni fits 24 bits");
		}
		/* With the GBP bits left to the caller: the same verdict,
		 * but reserved_bits for those bits alone, which come back. */
		uint32_t gvni = 0, gbp = 0;
		size_t goff = 0;
		int g = vxlan_parse_gbp(data, size, accept, &gvni, &goff, &gbp);
		check(g >= 0 && g < UVX_DROP__MAX, "gbp parse verdict in range");
		check(!(gbp & ~VXLAN_GBP_USED), "only the GBP bits come back");
		if (g == r)
			check(g != UVX_PASS || (gvni == vni && goff == off), "same vni");
		else
			check(r == UVX_DROP_RESERVED && gbp && !accept,
			      "GBP bits are the only difference");
	}
	(void)vxlan_check_inner(data, size);
	uint32_t h = vxlan_flow_hash(data, size);
	uint16_t p = vxlan_src_port(h, 49152, 65535);
	check(p >= 49152, "source port in range");
}

/* Build, then parse what was built: the round trip must hold. */
static void fuzz_build(const uint8_t *data, size_t size)
{
	static uint8_t out[65536 + 64];
	if (size > 65535 - VXLAN_ENCAP_LEN)
		size = 65535 - VXLAN_ENCAP_LEN;
	uint32_t vni = size >= 3 ? ((uint32_t)data[0] << 16 | data[1] << 8 | data[2]) : 1;
	size_t n = vxlan_build_datagram(out, sizeof(out), vni, data, size,
					50000, 4789, 0x0100007f, 0x0200007f, size & 1);
	check(n == size + VXLAN_ENCAP_LEN, "build length");
	uint32_t got = 0;
	size_t off = 0;
	int r = vxlan_parse(out + UDP_HLEN, n - UDP_HLEN, 0, &got, &off);
	if (r == UVX_PASS)
		check(got == vni, "round trip keeps the vni");
	else
		check(r == UVX_DROP_BAD_INNER, "our own header always parses");

	/* A group on it: G and the ID come back, nothing else moves. */
	uint16_t group = size >= 5 ? (uint16_t)(data[3] << 8 | data[4]) : 7;
	vxlan_gbp_put(out + UDP_HLEN, group);
	uint32_t gbp = 0;
	r = vxlan_parse_gbp(out + UDP_HLEN, n - UDP_HLEN, 0, &got, &off, &gbp);
	check(r == UVX_PASS || r == UVX_DROP_BAD_INNER, "a GBP header parses");
	check(gbp == (group ? (VXLAN_GBP_G | group) : 0), "round trip keeps the group");
	if (r == UVX_PASS)
		check(got == vni, "round trip with a group keeps the vni");
}

/* The FDB driven by the input as a little program of operations. */
static void fuzz_fdb(const uint8_t *data, size_t size)
{
	struct fdb f;
	if (fdb_init(&f, 16) < 0)
		return;
	uint32_t learned[4] = { 0 };
	for (size_t i = 0; i + 8 <= size; i += 8) {
		const uint8_t *op = data + i;
		uint32_t vni = op[1] & 3;
		uint8_t mac[6] = { 2, 0, 0, 0, op[2] & 7, op[3] & 3 };
		struct fdb_dest d = { (op[4] & 1) ? -1 : op[4] & 7, op[5], 4789 };
		switch (op[0] & 3) {
		case 0: {
			enum fdb_learn_result r =
				fdb_learn(&f, vni, mac, &d, op[6], 6, &learned[vni]);
			if (r == FDB_LEARN_NEW || r == FDB_LEARN_MOVED ||
			    r == FDB_LEARN_REFRESHED)
				check(fdb_lookup(&f, vni, mac) != NULL, "learned is found");
			break;
		}
		case 1: {
			int was = 0;
			if (fdb_add_static(&f, vni, mac, &d, op[6], &was) == 0) {
				struct fdb_entry *e = fdb_lookup(&f, vni, mac);
				check(e && (e->flags & FDB_F_STATIC), "static is found");
				if (was)
					learned[vni]--;
			}
			break;
		}
		case 2: {
			int flags = fdb_delete(&f, vni, mac);
			if (flags >= 0 && !(flags & FDB_F_STATIC))
				learned[vni]--;
			check(fdb_lookup(&f, vni, mac) == NULL, "deleted is gone");
			break;
		}
		default:
			break;
		}
		check(f.count <= f.capacity, "count within capacity");
		for (int v = 0; v < 4; v++)
			check(learned[v] <= 6, "learn cap held");
	}
	fdb_free(&f);
}

/* The ARP request parser on any frame; an accepted one gets a reply built
 * and a table round trip (put, find, delete) on its target. */
static void fuzz_arp(const uint8_t *data, size_t size)
{
	static struct arp_table t;
	uint32_t tip;
	if (!arp_request_target(data, size, &tip))
		return;
	uint8_t reply[ARP_FRAME_LEN];
	arp_build_reply(reply, data, data + 6, tip);
	if (arp_table_put(&t, tip, reply) == 0) {
		if (!arp_table_find(&t, tip))
			abort();
		/* Past a few growths, deletions too (the table grows to
		 * 2^ARP_BITS_MAX slots: the fuzzer would fill memory first). */
		if (t.n > (1u << (ARP_BITS_MIN + 5)))
			arp_table_del(&t, tip);
	}
}

/* The offloads on any frame: a virtio-net header from the first bytes
 * (its GSO type forced to TCP), the rest cut as a super-frame when
 * tso_parse accepts it, its partial checksum completed, and the whole input
 * looked at as a TCP segment to join. */
static void fuzz_offload(const uint8_t *data, size_t size)
{
	static struct seg segs[UVX_SEGS_MAX];
	static uint8_t copy[65536];
	struct tcp_view tv;
	if (gro_candidate(data, size, &tv))
		check(tv.hdrlen + tv.plen <= size, "a segment within its frame");
	if (size < VNET_HLEN)
		return;
	struct vnet_hdr vh;
	memcpy(&vh, data, VNET_HLEN);
	vh.gso_type = (vh.gso_type & 1) ? VNET_GSO_TCPV4 : VNET_GSO_TCPV6;
	const uint8_t *f = data + VNET_HLEN;
	size_t len = size - VNET_HLEN;
	struct tso_info ti;
	if (tso_parse(f, len, &vh, &ti) == UVX_PASS) {
		check(ti.hdrlen <= len && ti.hdrlen <= SEG_HDR_MAX, "headers within the frame");
		size_t total = 0;
		for (unsigned first = 0; first < ti.nseg; first += UVX_SEGS_MAX) {
			unsigned n = ti.nseg - first < UVX_SEGS_MAX ? ti.nseg - first : UVX_SEGS_MAX;
			tso_segment(f, &ti, first, n, segs);
			for (unsigned k = 0; k < n; k++)
				total += segs[k].plen;
		}
		check(total == ti.payload, "segments carry the payload once");
	}
	if (len > sizeof copy)
		return;
	memcpy(copy, f, len);
	(void)csum_complete(copy, len, vh.csum_start, vh.csum_offset);
}

/* The capture's filter, ring and outer headers (capring.h): the first 16
 * bytes choose the filter (points, fields, VNI, port, MAC, EtherType) and
 * where the frame is cut into two pieces; the rest is the frame.  The
 * filter reads a gathered head of exactly what the frame has; a record
 * taken from the ring is the outer headers then the frame, cut at the snap
 * length, with their whole length. */
#define FZ_CAP_SNAP 256u
static void fuzz_capture(const uint8_t *data, size_t size)
{
	static struct capring ring;
	static uint8_t rec[CAPRING_REC_HLEN + FZ_CAP_SNAP];
	if (!ring.mem && capring_init(&ring, 4, FZ_CAP_SNAP) < 0)
		abort();
	if (size < 16)
		return;
	struct uvx_capture_filter f = {
		.points = data[0] & 15u, .match = data[1] & 31u,
		.vni = (uint32_t)data[2] << 16 | (uint32_t)data[3] << 8 | data[4],
		.port = (int32_t)(data[5] & 3u) - 1, .ethertype = (uint16_t)(data[12] << 8 | data[13]),
	};
	memcpy(f.mac, data + 6, 6);
	const uint8_t *frame = data + 16;
	size_t len = size - 16, cut = data[14] % (len + 1);
	const struct iovec iov[2] = { { (void *)frame, cut }, { (void *)(frame + cut), len - cut } };
	uint8_t head[CAPTURE_HEAD];
	size_t headlen = capture_head(head, iov, 2);
	check(headlen == (len < CAPTURE_HEAD ? len : CAPTURE_HEAD) &&
	      !memcmp(head, frame, headlen), "the head is the frame's first bytes");
	unsigned point = 1u << (data[15] & 3u);
	int match = capture_match(&f, point, f.vni ^ (data[15] >> 7), f.port, head, headlen);
	check(!match || (f.points & point), "a frame matches only at a point asked for");

	uint8_t outer[CAPTURE_OUTER_LEN];
	size_t outer_len = (f.match & UVX_CAP_F_OUTER) ? sizeof(outer) : 0;
	if (outer_len)
		capture_outer(outer, 0x0100007f, 0x0200007f, 4096, 46354, data + 2, len);
	check(capring_put(&ring, size, data[15] & 3u, f.vni, f.port, outer, outer_len, iov, 2)
	      == 1, "room after a take");
	size_t n = capring_take(&ring, rec, sizeof(rec));
	uint32_t h[CAPRING_REC_HLEN / 4];
	memcpy(h, rec, sizeof(h));
	size_t keep = outer_len + len < FZ_CAP_SNAP ? outer_len + len : FZ_CAP_SNAP;
	check(n == CAPRING_REC_HLEN + keep && h[2] == keep && h[3] == outer_len + len,
	      "a record keeps the snap length and says the whole length");
	check(h[4] == (data[15] & 3u) && h[5] == f.vni && (int32_t)h[6] == f.port,
	      "a record names its point, VNI and port");
	check(!memcmp(rec + CAPRING_REC_HLEN, outer, keep < outer_len ? keep : outer_len) &&
	      (keep <= outer_len || !memcmp(rec + CAPRING_REC_HLEN + outer_len, frame,
					     keep - outer_len)),
	      "a record holds the outer headers, then the frame");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_capture(data, size);
	fuzz_parse(data, size);
	fuzz_build(data, size);
	fuzz_fdb(data, size);
	fuzz_arp(data, size);
	fuzz_offload(data, size);
	return 0;
}

#ifdef UVX_FUZZ_STANDALONE
#include "standalone.h"

int main(int argc, char **argv)
{
	long iters = standalone_iterations(argc, argv);
	static uint8_t buf[2048];
	for (long i = 0; i < iters; i++) {
		size_t len = rnd() % (i & 1 ? 64 : sizeof(buf));
		for (size_t j = 0; j < len; j++)
			buf[j] = (uint8_t)rnd();
		/* Half the inputs start as valid VXLAN, so the checks past the
		 * header are reached too. */
		if ((i & 2) && len >= 8) {
			memset(buf, 0, 8);
			buf[0] = 0x08;
			buf[4 + rnd() % 3] = (uint8_t)rnd();
			if (rnd() % 4 == 0)
				buf[rnd() % 8] |= (uint8_t)(1u << (rnd() % 8));
		}
		/* A quarter look like ARP requests up to their last fields. */
		if ((i & 12) == 4 && len >= 42) {
			static const uint8_t arp[8] = { 0, 1, 8, 0, 6, 4, 0, 1 };
			buf[12] = 0x08;
			buf[13] = 0x06;
			memcpy(buf + 14, arp, rnd() % 9);
		}
		/* A quarter look like a virtio-net header and a TCP/IPv4
		 * frame up to the TCP header (or just an Ethernet + IPv4
		 * TCP header for the joiner). */
		if ((i & 12) == 8 && len >= 64) {
			size_t at = (i & 16) ? VNET_HLEN : 0;
			buf[at + 12] = 0x08;
			buf[at + 13] = 0x00;
			buf[at + 14] = 0x45;
			buf[at + 14 + 9] = 6;
			if (rnd() % 2)
				buf[at + 14 + 20 + 12] = 0x50;
		}
		LLVMFuzzerTestOneInput(buf, len);
	}
	printf("fuzz: %ld inputs, no findings\n", iters);
	return 0;
}
#endif
