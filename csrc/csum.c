/* Internet checksum; see csum.h. */
#include "csum.h"

uint64_t csum_add(const uint8_t *buf, size_t len, uint64_t sum)
{
	/* 32-bit words into a 64-bit accumulator: no carry is lost until
	 * 2^32 words, far beyond any packet. */
	while (len >= 8) {
		uint32_t a, b;
		memcpy(&a, buf, 4);
		memcpy(&b, buf + 4, 4);
		sum += (uint64_t)a + b;
		buf += 8;
		len -= 8;
	}
	if (len >= 4) {
		uint32_t a;
		memcpy(&a, buf, 4);
		sum += a;
		buf += 4;
		len -= 4;
	}
	if (len >= 2) {
		uint16_t a;
		memcpy(&a, buf, 2);
		sum += a;
		buf += 2;
		len -= 2;
	}
	if (len) {
		/* The odd byte is the high half of a network-order word. */
		uint16_t a = 0;
		memcpy(&a, buf, 1);
		sum += a;
	}
	return sum;
}
