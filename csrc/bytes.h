/* Network-order reads and writes, and the EtherTypes and IP protocol
 * numbers the parsers here compare against.  Every read of a packet is
 * bounds-checked by its caller before it gets here. */
#ifndef UVX_BYTES_H
#define UVX_BYTES_H

#include <stdint.h>

static inline uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static inline uint32_t rd32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	       ((uint32_t)p[2] << 8) | p[3];
}

static inline void wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

#define ETH_P_IPV4  0x0800
#define ETH_P_ARP   0x0806
#define ETH_P_IPV6  0x86DD
#define ETH_P_8021Q 0x8100

/* Our own names: <netinet/in.h> has IPPROTO_* as enum members too. */
#define PROTO_TCP   6
#define PROTO_UDP   17
#define PROTO_SCTP  132

#endif
