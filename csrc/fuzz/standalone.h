/* What the standalone builds of the fuzz targets share (UVX_FUZZ_STANDALONE:
 * gcc, no libFuzzer): a xorshift64 generator, deterministic for a seed so
 * a failure can be replayed, and the command line `TARGET [ITERATIONS
 * [SEED]]`. */
#ifndef UVX_FUZZ_STANDALONE_H
#define UVX_FUZZ_STANDALONE_H

#include <stdint.h>
#include <stdlib.h>

static uint64_t rng_state;

static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* The iterations asked for (200,000 by default); seeds rnd(). */
static long standalone_iterations(int argc, char **argv)
{
	rng_state = argc > 2 ? strtoull(argv[2], NULL, 0) : 0x9e3779b97f4a7c15ull;
	return argc > 1 ? atol(argv[1]) : 200000;
}

#endif
