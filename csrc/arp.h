/* ARP suppression: a container's ARP request for an address the control
 * plane knows is answered on the spot, so it never floods the overlay.
 * (Linux's vxlan does the same with its "proxy" flag, from its neighbour
 * table; here the table is filled from the cluster store.) */
#ifndef UVX_ARP_H
#define UVX_ARP_H

#include <stddef.h>
#include <stdint.h>

#define ARP_FRAME_LEN 42           /* Ethernet + ARP for IPv4, unpadded */
/* A VNI's table starts with 2^ARP_BITS_MIN slots and doubles, under the
 * write lock (arp_table_put is configuration, never the packet path), up
 * to 2^ARP_BITS_MAX: 786,432 addresses at 3/4 full. */
#define ARP_BITS_MIN  6
#define ARP_BITS_MAX  20

struct arp_entry {
	uint32_t ip;               /* network byte order; 0: empty slot */
	uint8_t mac[6];
};

struct arp_table {
	uint32_t n;
	uint32_t bits;             /* 2^bits slots; 0: none yet */
	struct arp_entry *slot;
};

/* 0, -EEXIST-free (an existing address is updated), -EINVAL for 0.0.0.0,
 * -ENOMEM, -ENOSPC when the largest table is 3/4 full (probes stay
 * short).  May allocate: call it with the write lock held. */
int arp_table_put(struct arp_table *t, uint32_t ip, const uint8_t *mac);
int arp_table_del(struct arp_table *t, uint32_t ip);
const uint8_t *arp_table_find(const struct arp_table *t, uint32_t ip);
void arp_table_free(struct arp_table *t);

/* 1 and the target address if the frame is an ARP request for IPv4 over
 * Ethernet (RFC 826) that is not a probe or announcement; else 0. */
int arp_request_target(const uint8_t *frame, size_t len, uint32_t *tip);

/* Write the reply to request `req` (which arp_request_target accepted)
 * saying `tip` is at `mac` into out[ARP_FRAME_LEN]. */
void arp_build_reply(uint8_t *out, const uint8_t *req, const uint8_t *mac, uint32_t tip);

#endif
