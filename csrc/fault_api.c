/* Fault injection from Python (uvx.h's uvx_fault_*): the table set under
 * the write lock and read under the read lock, and the timer that wakes
 * the TX thread when a held frame is due (xmit.c sends it).
 *
 * Faults are a lab tool: off until set, in this memory only (an agent
 * that stops forgets them; nothing is written to the store or a file). */
#include <errno.h>
#include <sys/random.h>
#include <sys/timerfd.h>

#include "dp.h"
#include "fault.h"

/* The timer wakes the TX thread when the first held frame is due; set
 * only when that time changes. */
void fault_arm(struct uvx_dp *dp)
{
	struct fault_table *t = dp->fault;
	if (!t || dp->timer_fd < 0)
		return;
	uint64_t next = fault_heap_next(&t->heap);
	if (next == dp->timer_at)
		return;
	struct itimerspec its = { 0 };
	if (next != UINT64_MAX) {
		/* 0 would disarm it: an overdue frame fires at once anyway. */
		uint64_t at = next ? next : 1;
		its.it_value.tv_sec = (time_t)(at / 1000000000u);
		its.it_value.tv_nsec = (long)(at % 1000000000u);
	}
	if (timerfd_settime(dp->timer_fd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
		dp->timer_at = next;
}

static int fault_set(struct uvx_dp *dp, const struct uvx_fault *f)
{
	if (fault_rule_holds(f) && !dp->running)
		return -EOPNOTSUPP;     /* held frames need the TX thread's timer */
	if (!dp->fault) {
		uint64_t seed = 0;
		if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != sizeof(seed))
			seed = mono_ns();
		size_t frame_max = dp->cfg.underlay_mtu - IPV4_HLEN - VXLAN_ENCAP_LEN;
		dp->fault = fault_table_new(frame_max, seed);
		if (!dp->fault)
			return -ENOMEM;
	}
	return fault_table_set(dp->fault, f);
}

int uvx_fault_set(struct uvx_dp *dp, const struct uvx_fault *f)
{
	LOCKED(dp, fault_set(dp, f));
}

static int fault_clear(struct uvx_dp *dp, uint32_t peer_ip, uint32_t vni)
{
	if (!dp->fault)
		return -ENOENT;
	int r = fault_table_clear(dp->fault, peer_ip, vni, mono_ns());
	fault_arm(dp);
	return r;
}

int uvx_fault_clear(struct uvx_dp *dp, uint32_t peer_ip, uint32_t vni)
{
	LOCKED(dp, fault_clear(dp, peer_ip, vni));
}

static uint64_t load(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

static int fault_list(struct uvx_dp *dp, struct uvx_fault *out,
		      struct uvx_fault_counters *ctr, int max)
{
	struct fault_table *t = dp->fault;
	int n = 0;
	for (uint32_t i = 0; t && i < t->hi && n < max; i++) {
		const struct fault_entry *e = &t->e[i];
		if (!e->used)
			continue;
		out[n] = e->f;
		/* The TX thread counts while we read: one field at a time. */
		const uint64_t *src = &e->ctr.matched;
		uint64_t *dst = &ctr[n].matched;
		for (size_t k = 0; k < sizeof(e->ctr) / sizeof(uint64_t); k++)
			dst[k] = load(&src[k]);
		n++;
	}
	return n;
}

int uvx_fault_list(struct uvx_dp *dp, struct uvx_fault *out,
		   struct uvx_fault_counters *ctr, int max)
{
	READ_LOCKED(dp, int, fault_list(dp, out, ctr, max));
}
