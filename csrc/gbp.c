/* Group Based Policy: the table, the per-frame decision and its API.  See
 * gbp.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"

/* 64 bits: (65535 << 16 | 65535) + 1 would wrap to 0, the free slot. */
static uint64_t rule_key(uint32_t src, uint32_t dst)
{
	return (uint64_t)(src << 16 | dst) + 1u;
}

/* Every bit of both groups moves the slot (mix32, peers.h), so the rules
 * of one source group do not fill one run. */
static uint32_t rule_slot(uint64_t wide)
{
	return mix32((uint32_t)wide ^ (uint32_t)(wide >> 32));
}

static struct gbp_rule *rule_find(const struct gbp_policy *p, uint64_t key)
{
	if (!p->n)
		return NULL;
	for (uint32_t s = rule_slot(key) & p->mask;; s = (s + 1) & p->mask) {
		if (p->slot[s].key == key)
			return &p->slot[s];
		if (!p->slot[s].key)
			return NULL;
	}
}

int32_t gbp_source(const struct gbp_policy *p, uint32_t gbp)
{
	if (!p->on)
		return -1;
	if (!(gbp & VXLAN_GBP_G))
		return 0;
	/* draft-smith-vxlan-group-policy section 2.1: "Policies MUST NOT be
	 * applied by devices when the A bit is set."  Its sender is a member
	 * VTEP (admission runs first), trusted with that as with its VNI. */
	if (gbp & VXLAN_GBP_A)
		return -1;
	return (int32_t)(gbp & VXLAN_GBP_ID_MASK);
}

int gbp_allows(struct uvx_dp *dp, uint16_t src, int32_t dst, int32_t count_port)
{
	if (dst < 0 || dst >= UVX_MAX_PORTS || !dp->ports[dst].used)
		return 1;
	struct uvx_port *port = &dp->ports[dst];
	struct gbp_policy *p = &port->v->gbp;
	int action;
	struct gbp_rule *r = rule_find(p, rule_key(src, port->group));
	if (r) {
		action = (int)r->action;
		bump(&r->hits[uvx_wid], 1);
	} else {
		action = p->dflt;
		bump(&p->dflt_hits[uvx_wid][action == UVX_GBP_DENY], 1);
	}
	if (action == UVX_GBP_ALLOW)
		return 1;
	drop(dp, port->v, count_port, UVX_DROP_GBP_DENIED);
	return 0;
}

void gbp_policy_free(struct gbp_policy *p)
{
	free(p->slot);
	p->slot = NULL;
	p->mask = p->n = 0;
}

/* --- The table, under the write lock ---------------------------------- */

static void rule_insert(struct gbp_policy *p, const struct gbp_rule *r)
{
	uint32_t s = rule_slot(r->key) & p->mask;
	while (p->slot[s].key)
		s = (s + 1) & p->mask;
	p->slot[s] = *r;
	p->n++;
}

/* The table rebuilt in size slots, without the rule keyed drop_key (0:
 * none), hit counts kept: growing, and removing without tombstones. */
static int rule_rebuild(struct gbp_policy *p, uint32_t size, uint64_t drop_key)
{
	struct gbp_rule *slot = calloc(size, sizeof(*slot));
	if (!slot)
		return -ENOMEM;
	struct gbp_policy next = *p;
	next.slot = slot;
	next.mask = size - 1;
	next.n = 0;
	for (uint32_t i = 0; p->slot && i <= p->mask; i++)
		if (p->slot[i].key && p->slot[i].key != drop_key)
			rule_insert(&next, &p->slot[i]);
	free(p->slot);
	*p = next;
	return 0;
}

static struct gbp_policy *policy_of(struct uvx_dp *dp, uint32_t vni)
{
	struct uvx_vni *v = vni_find(dp, vni);
	return v ? &v->gbp : NULL;
}

static int valid_action(int action)
{
	return action == UVX_GBP_ALLOW || action == UVX_GBP_DENY;
}

static int set_gbp(struct uvx_dp *dp, uint32_t vni, int on)
{
	struct gbp_policy *p = policy_of(dp, vni);
	if (!p)
		return -ENOENT;
	p->on = !!on;
	return 0;
}

int uvx_vni_set_gbp(struct uvx_dp *dp, uint32_t vni, int on)
{
	LOCKED(dp, set_gbp(dp, vni, on));
}

static int set_default(struct uvx_dp *dp, uint32_t vni, int action)
{
	struct gbp_policy *p = policy_of(dp, vni);
	if (!p)
		return -ENOENT;
	if (!valid_action(action))
		return -EINVAL;
	p->dflt = action;
	return 0;
}

int uvx_gbp_set_default(struct uvx_dp *dp, uint32_t vni, int action)
{
	LOCKED(dp, set_default(dp, vni, action));
}

static int rule_set(struct uvx_dp *dp, uint32_t vni, uint32_t src, uint32_t dst,
		    int action)
{
	struct gbp_policy *p = policy_of(dp, vni);
	if (!p)
		return -ENOENT;
	if (src > UVX_GBP_GROUP_MAX || dst > UVX_GBP_GROUP_MAX || !valid_action(action))
		return -EINVAL;
	uint64_t key = rule_key(src, dst);
	struct gbp_rule *r = rule_find(p, key);
	if (r) {
		r->action = (uint32_t)action;
		return 0;
	}
	if (p->n >= UVX_GBP_RULES_MAX)
		return -ENOSPC;
	uint32_t size = p->slot ? p->mask + 1 : 0;
	if (2 * (p->n + 1) > size) {
		int rc = rule_rebuild(p, size ? 2 * size : 16, 0);
		if (rc < 0)
			return rc;
	}
	const struct gbp_rule fresh = { key, (uint32_t)action, { 0 } };
	rule_insert(p, &fresh);
	return 0;
}

int uvx_gbp_rule_set(struct uvx_dp *dp, uint32_t vni, uint32_t src, uint32_t dst,
		     int action)
{
	LOCKED(dp, rule_set(dp, vni, src, dst, action));
}

static int rule_del(struct uvx_dp *dp, uint32_t vni, uint32_t src, uint32_t dst)
{
	struct gbp_policy *p = policy_of(dp, vni);
	if (!p)
		return -ENOENT;
	if (src > UVX_GBP_GROUP_MAX || dst > UVX_GBP_GROUP_MAX)
		return -EINVAL;
	uint64_t key = rule_key(src, dst);
	if (!rule_find(p, key))
		return -ENOENT;
	return rule_rebuild(p, p->mask + 1, key);
}

int uvx_gbp_rule_del(struct uvx_dp *dp, uint32_t vni, uint32_t src, uint32_t dst)
{
	LOCKED(dp, rule_del(dp, vni, src, dst));
}

static int set_group(struct uvx_dp *dp, int port, uint32_t group)
{
	if (port < 0 || port >= UVX_MAX_PORTS || !dp->ports[port].used)
		return -ENOENT;
	if (group > UVX_GBP_GROUP_MAX)
		return -EINVAL;
	dp->ports[port].group = (uint16_t)group;
	return 0;
}

int uvx_port_set_group(struct uvx_dp *dp, int port, uint32_t group)
{
	LOCKED(dp, set_group(dp, port, group));
}

/* --- Reading, under the read lock: the workers share it --------------- */

static uint64_t sum(const uint64_t *c, unsigned stride)
{
	uint64_t n = 0;
	for (unsigned k = 0; k < UVX_WORKERS; k++)
		n += __atomic_load_n(&c[k * stride], __ATOMIC_RELAXED);
	return n;
}

static int info(struct uvx_dp *dp, uint32_t vni, struct uvx_gbp_info *out)
{
	struct gbp_policy *p = policy_of(dp, vni);
	if (!p)
		return -ENOENT;
	out->on = (uint8_t)p->on;
	out->default_action = (uint8_t)p->dflt;
	out->rules = p->n;
	out->default_allowed = sum(&p->dflt_hits[0][UVX_GBP_ALLOW], 2);
	out->default_denied = sum(&p->dflt_hits[0][UVX_GBP_DENY], 2);
	return 0;
}

int uvx_gbp_info(struct uvx_dp *dp, uint32_t vni, struct uvx_gbp_info *out)
{
	READ_LOCKED(dp, int, info(dp, vni, out));
}

static int rules(struct uvx_dp *dp, uint32_t vni, struct uvx_gbp_rule_info *out, int max)
{
	struct gbp_policy *p = policy_of(dp, vni);
	if (!p)
		return -ENOENT;
	int n = 0;
	for (uint32_t i = 0; p->slot && i <= p->mask && n < max; i++) {
		const struct gbp_rule *r = &p->slot[i];
		if (!r->key)
			continue;
		out[n].src = (uint16_t)((r->key - 1) >> 16);
		out[n].dst = (uint16_t)(r->key - 1);
		out[n].action = (uint8_t)r->action;
		out[n].hits = sum(r->hits, 1);
		n++;
	}
	return n;
}

int uvx_gbp_rules(struct uvx_dp *dp, uint32_t vni, struct uvx_gbp_rule_info *out, int max)
{
	READ_LOCKED(dp, int, rules(dp, vni, out, max));
}
