/* ARP suppression: the table and the request/reply codec (RFC 826). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "arp.h"
#include "uvx.h"
#include "bytes.h"
#include "vxlan.h"

#define ARP_OFF       ETH_HLEN

/* Fibonacci hashing: the product's high bits mix every bit of the
 * address (its low bits would depend on the first octets only, and a
 * whole subnet would share one slot). */
_Static_assert((3u << ARP_BITS_MAX) / 4 == UVX_VNI_ARP_MAX, "UVX_VNI_ARP_MAX is 3/4 of the largest table");

static unsigned arp_slot(const struct arp_table *t, uint32_t ip)
{
	return (ip * 2654435761u) >> (32 - t->bits);
}

static unsigned arp_mask(const struct arp_table *t)
{
	return (1u << t->bits) - 1;
}

/* The slot holding ip, or the empty one where it would go. */
static unsigned arp_probe(const struct arp_table *t, uint32_t ip)
{
	unsigned s = arp_slot(t, ip);
	while (t->slot[s].ip && t->slot[s].ip != ip)
		s = (s + 1) & arp_mask(t);
	return s;
}

/* Rehash into 2^bits slots. */
static int arp_table_resize(struct arp_table *t, uint32_t bits)
{
	struct arp_table next = { 0, bits, calloc(1u << bits, sizeof(struct arp_entry)) };
	if (!next.slot)
		return -ENOMEM;
	for (unsigned i = 0; t->bits && i <= arp_mask(t); i++) {
		if (t->slot[i].ip) {
			next.slot[arp_probe(&next, t->slot[i].ip)] = t->slot[i];
			next.n++;
		}
	}
	free(t->slot);
	*t = next;
	return 0;
}

int arp_table_put(struct arp_table *t, uint32_t ip, const uint8_t *mac)
{
	if (ip == 0)
		return -EINVAL;
	if (!t->bits || (arp_table_find(t, ip) == NULL
			 && t->n + 1 > (3u << t->bits) / 4)) {
		/* At most 3/4 full, so probes stay short. */
		if (t->bits == ARP_BITS_MAX)
			return -ENOSPC;
		int rc = arp_table_resize(t, t->bits ? t->bits + 1 : ARP_BITS_MIN);
		if (rc < 0)
			return rc;
	}
	unsigned s = arp_probe(t, ip);
	if (!t->slot[s].ip) {
		t->n++;
		t->slot[s].ip = ip;
	}
	memcpy(t->slot[s].mac, mac, 6);
	return 0;
}

void arp_table_free(struct arp_table *t)
{
	if (t)
		free(t->slot);
	free(t);
}

const uint8_t *arp_table_find(const struct arp_table *t, uint32_t ip)
{
	if (ip == 0 || !t->bits)
		return NULL;
	unsigned s = arp_probe(t, ip);
	return t->slot[s].ip ? t->slot[s].mac : NULL;
}

int arp_table_del(struct arp_table *t, uint32_t ip)
{
	if (ip == 0 || !t->bits)
		return -ENOENT;
	unsigned s = arp_probe(t, ip);
	if (!t->slot[s].ip)
		return -ENOENT;
	/* Backward-shift deletion: pull later entries of the probe run
	 * into the hole, so lookups need no tombstones. */
	unsigned hole = s;
	for (unsigned j = (s + 1) & arp_mask(t); t->slot[j].ip; j = (j + 1) & arp_mask(t)) {
		unsigned home = arp_slot(t, t->slot[j].ip);
		/* Movable if its home is not in (hole, j], cyclically. */
		int between = hole <= j ? (home > hole && home <= j)
					: (home > hole || home <= j);
		if (!between) {
			t->slot[hole] = t->slot[j];
			hole = j;
		}
	}
	t->slot[hole].ip = 0;
	t->n--;
	return 0;
}

int arp_request_target(const uint8_t *frame, size_t len, uint32_t *tip)
{
	if (len < ARP_FRAME_LEN || rd16(frame + 12) != ETH_P_ARP)
		return 0;
	const uint8_t *a = frame + ARP_OFF;
	/* htype Ethernet, ptype IPv4, hlen 6, plen 4, op request. */
	if (rd16(a) != 1 || rd16(a + 2) != 0x0800 || a[4] != 6 || a[5] != 4 ||
	    rd16(a + 6) != 1)
		return 0;
	uint32_t spa, tpa;
	memcpy(&spa, a + 14, 4);
	memcpy(&tpa, a + 24, 4);
	/* A probe (sender 0.0.0.0, RFC 5227) or a gratuitous announcement
	 * (sender = target) is about the sender's own address: answering
	 * it for someone else would fake a conflict.  Let those flood. */
	if (spa == 0 || spa == tpa)
		return 0;
	*tip = tpa;
	return 1;
}

void arp_build_reply(uint8_t *out, const uint8_t *req, const uint8_t *mac, uint32_t tip)
{
	const uint8_t *ra = req + ARP_OFF;
	uint8_t *a = out + ARP_OFF;
	memcpy(out, ra + 8, 6);          /* to the requester's hardware address */
	memcpy(out + 6, mac, 6);
	out[12] = 0x08;
	out[13] = 0x06;
	static const uint8_t hdr[8] = { 0, 1, 8, 0, 6, 4, 0, 2 };   /* op reply */
	memcpy(a, hdr, 8);
	memcpy(a + 8, mac, 6);           /* sender: the answer */
	memcpy(a + 14, &tip, 4);
	memcpy(a + 18, ra + 8, 10);      /* target: the requester's sha + spa */
}
