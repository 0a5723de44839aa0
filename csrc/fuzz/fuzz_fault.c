/* Fuzz target for fault injection's parser (fault_payload_span: where a
 * corrupted bit goes) and its rules on any frame (fault_judge, with every
 * effect on, into exact-sized buffers so AddressSanitizer sees a read or
 * a flip past a frame), and the delay queue's invariants.
 *
 * With clang:  clang -g -fsanitize=fuzzer,address,undefined -Icsrc \
 *                  csrc/fuzz/fuzz_fault.c csrc/fault.c     (make fuzz-fault)
 * Without it (gcc), -DUVX_FUZZ_STANDALONE adds a main() that feeds random
 * frames, a third of them TCP/UDP/ICMP over IPv4 or IPv6 headers with
 * random lengths (tests/system/test_fault.py runs it under ASan + UBSan).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../bytes.h"
#include "../fault.h"

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz: invariant broken: %s\n", what);
		abort();
	}
}

static struct fault_table *table;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1464)
		size = 1464;
	uint8_t *f = malloc(size ? size : 1);
	check(f != NULL, "malloc");
	memcpy(f, data, size);
	size_t off = 0, end = 0;
	if (fault_payload_span(f, size, &off, &end))
		check(off < end && end <= size && off >= ETH_HLEN + 20, "span within the frame");

	if (!table) {
		table = fault_table_new(1464, 42);
		struct uvx_fault rule = {
			.peer_ip = 1, .vni = 1, .loss_ppm = 100000, .duplicate_ppm = 300000,
			.reorder_ppm = 300000, .corrupt_ppm = 1000000, .delay_us = 100,
			.jitter_us = 100, .rate_bps = 1000000000,
		};
		check(table && fault_table_set(table, &rule) == 0, "table");
	}
	static uint64_t now = 1000000000ull;
	now += 10000;
	size_t l1 = size / 3;
	const struct fault_frame fr = { f, l1, f + l1, size - l1, 1, 1, 4789, 0, -1 };
	struct fault_verdict v;
	fault_judge(table, fault_find(table, 1, 1), &fr, now, &v);
	check(v.reason == UVX_PASS || v.reason == UVX_DROP_FAULT_LOSS ||
	      v.reason == UVX_DROP_FAULT_RATE || v.reason == UVX_DROP_FAULT_QUEUE_FULL,
	      "verdict");
	if (v.slot >= 0) {
		/* A corrupted copy differs from the frame in at most one bit,
		 * within its payload. */
		const uint8_t *c = fault_slot_data(table, (uint32_t)v.slot);
		check(table->meta[v.slot].len == size, "copy length");
		for (size_t i = 0; i < size; i++)
			if (c[i] != f[i])
				check(i >= off && i < end && __builtin_popcount(c[i] ^ f[i]) == 1,
				      "one bit flipped, in the payload");
		fault_slot_free(table, (uint32_t)v.slot);
	}
	if (v.release >= 0)
		fault_slot_free(table, (uint32_t)v.release);
	int64_t s;
	while ((s = fault_due(table, now)) >= 0) {
		check(table->heap.due[s] <= now, "only what is due");
		check(table->meta[s].len <= 1464, "held length");
		fault_slot_free(table, (uint32_t)s);
	}
	check(table->nfree + fault_held(table) == table->nslots, "every slot free or held");
	free(f);
	return 0;
}

#ifdef UVX_FUZZ_STANDALONE
#include "standalone.h"

int main(int argc, char **argv)
{
	long iters = standalone_iterations(argc, argv);
	static uint8_t buf[1464];
	for (long i = 0; i < iters; i++) {
		size_t len = rnd() % (i & 1 ? 96 : sizeof(buf));
		for (size_t j = 0; j < len; j++)
			buf[j] = (uint8_t)rnd();
		/* A third: IPv4 or IPv6 (maybe behind a VLAN tag) carrying TCP,
		 * UDP or ICMP, with random lengths in the headers. */
		if (i % 3 == 0 && len >= 64) {
			size_t l3 = 14;
			if (rnd() % 4 == 0) {
				wr16(buf + 12, ETH_P_8021Q);
				l3 = 18;
			}
			static const uint8_t protos[4] = { 6, 17, 1, 58 };
			uint8_t proto = protos[rnd() % 4];
			if (rnd() % 2) {
				wr16(buf + l3 - 2, ETH_P_IPV4);
				buf[l3] = (uint8_t)(0x40 | (5 + rnd() % 3));
				buf[l3 + 6] = rnd() % 8 ? 0 : buf[l3 + 6];
				buf[l3 + 7] = rnd() % 8 ? 0 : buf[l3 + 7];
				buf[l3 + 9] = proto;
			} else {
				wr16(buf + l3 - 2, ETH_P_IPV6);
				buf[l3] = 0x60;
				buf[l3 + 6] = proto;
			}
		}
		LLVMFuzzerTestOneInput(buf, len);
	}
	printf("fuzz: %llu corrupted, %llu held back\n",
	       (unsigned long long)table->e[0].ctr.corrupted,
	       (unsigned long long)table->e[0].ctr.reordered);
	printf("fuzz: %ld inputs, no findings\n", iters);
	fault_table_free(table);
	return 0;
}
#endif
