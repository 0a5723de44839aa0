/* The Internet checksum (RFC 1071), fast enough for the data path.
 *
 * Sums are kept in the machine's byte order: the ones'-complement sum is
 * independent of byte order (RFC 1071 section 2(B)), so the folded result,
 * stored with memcpy, is already in network order on any host.  Callers
 * chain csum_add over pieces of even length, then csum_fold once.
 */
#ifndef UVX_CSUM_H
#define UVX_CSUM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

uint64_t csum_add(const uint8_t *buf, size_t len, uint64_t sum);

/* Fold to 16 bits; returns the sum itself (not inverted). */
static inline uint16_t csum_fold16(uint64_t sum)
{
	sum = (sum & 0xffffffffu) + (sum >> 32);
	sum = (sum & 0xffffffffu) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

/* The checksum to store: the inverted fold. */
static inline uint16_t csum_final(uint64_t sum)
{
	return (uint16_t)~csum_fold16(sum);
}

static inline void csum_store(uint8_t *at, uint16_t c)
{
	memcpy(at, &c, 2);
}

/* IPv4 pseudo-header (RFC 793 / RFC 768) for proto and L4 length. */
static inline uint64_t csum_pseudo4(const uint8_t *saddr, const uint8_t *daddr,
				    uint8_t proto, uint32_t l4len)
{
	uint8_t ph[12];
	memcpy(ph, saddr, 4);
	memcpy(ph + 4, daddr, 4);
	ph[8] = 0;
	ph[9] = proto;
	ph[10] = (uint8_t)(l4len >> 8);
	ph[11] = (uint8_t)l4len;
	return csum_add(ph, sizeof(ph), 0);
}

/* IPv6 pseudo-header (RFC 8200 section 8.1). */
static inline uint64_t csum_pseudo6(const uint8_t *saddr, const uint8_t *daddr,
				    uint8_t proto, uint32_t l4len)
{
	uint8_t ph[40];
	memcpy(ph, saddr, 16);
	memcpy(ph + 16, daddr, 16);
	ph[32] = (uint8_t)(l4len >> 24);
	ph[33] = (uint8_t)(l4len >> 16);
	ph[34] = (uint8_t)(l4len >> 8);
	ph[35] = (uint8_t)l4len;
	ph[36] = ph[37] = ph[38] = 0;
	ph[39] = proto;
	return csum_add(ph, sizeof(ph), 0);
}

#endif
