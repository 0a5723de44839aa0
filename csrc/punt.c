/* Python hooks: the match table, the slots and rings, and the calls the
 * agent's loop makes (uvx_hook_*).  See punt.h for the flow and who owns
 * a slot when; the worker's side of a verdict is in xmit.c and rcv.c. */
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "punt.h"
#include "stats.h"

/* Ring ---------------------------------------------------------------- */

static int ring_push(struct punt_ring *r, uint16_t i)
{
	uint32_t tail = r->tail;   /* ours */
	if (tail - __atomic_load_n(&r->head, __ATOMIC_ACQUIRE) == PUNT_RING)
		return -1;
	r->idx[tail % PUNT_RING] = i;
	__atomic_store_n(&r->tail, tail + 1, __ATOMIC_RELEASE);
	return 0;
}

static int ring_pop(struct punt_ring *r, uint16_t *i)
{
	uint32_t head = r->head;   /* ours */
	if (head == __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE))
		return -1;
	*i = r->idx[head % PUNT_RING];
	__atomic_store_n(&r->head, head + 1, __ATOMIC_RELEASE);
	return 0;
}

static uint8_t *slot_data(struct punt_side *s, unsigned i)
{
	return s->data + (size_t)i * PUNT_BYTES;
}

/* Lifecycle ------------------------------------------------------------ */

void punt_init(struct punt *p)
{
	p->on = 0;
	p->fd = -1;
	for (unsigned k = 0; k < UVX_WORKERS; k++)
		p->side[k].kick_fd = -1;
}

void punt_free(struct punt *p)
{
	if (!p->on)
		return;
	for (unsigned k = 0; k < UVX_WORKERS; k++) {
		munmap(p->side[k].data, (size_t)PUNT_SLOTS * PUNT_BYTES);
		close(p->side[k].kick_fd);
	}
	close(p->fd);
	p->on = 0;
}

/* Map the slots and open the eventfds, once (under the write lock, so no
 * worker is in a batch).  The mapping is reserved, not touched: a slot
 * costs memory once a frame that long used it. */
static int punt_start(struct uvx_dp *dp)
{
	struct punt *p = &dp->punt;
	if (p->on)
		return 0;
	p->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->fd < 0)
		return -errno;
	for (unsigned k = 0; k < UVX_WORKERS; k++) {
		struct punt_side *s = &p->side[k];
		s->data = mmap(NULL, (size_t)PUNT_SLOTS * PUNT_BYTES, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		s->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (s->data == MAP_FAILED || s->kick_fd < 0) {
			int e = s->data == MAP_FAILED ? -ENOMEM : -errno;
			for (unsigned j = 0; j <= k; j++) {
				if (p->side[j].data && p->side[j].data != MAP_FAILED)
					munmap(p->side[j].data, (size_t)PUNT_SLOTS * PUNT_BYTES);
				if (p->side[j].kick_fd >= 0)
					close(p->side[j].kick_fd);
				p->side[j].data = NULL;
				p->side[j].kick_fd = -1;
			}
			close(p->fd);
			p->fd = -1;
			return e;
		}
		s->nfree = UVX_HOOK_SLOTS;
		for (unsigned i = 0; i < UVX_HOOK_SLOTS; i++)
			s->free[i] = (uint16_t)(UVX_HOOK_SLOTS - 1 - i);
		for (unsigned i = UVX_HOOK_SLOTS; i < PUNT_SLOTS; i++)
			ring_push(&s->inject_free, (uint16_t)i);
		/* Threads already running wait for it from now on. */
		if (dp->running) {
			struct epoll_event ev = { .events = EPOLLIN, .data.u64 = PUNT_EPOLL_TOKEN };
			epoll_ctl(dp->epfd[k], EPOLL_CTL_ADD, s->kick_fd, &ev);
		}
	}
	p->on = 1;
	return 0;
}

static int vni_has_rule(const struct punt *p, uint32_t vni)
{
	for (unsigned i = 0; i < p->nrules; i++)
		if (p->rules[i].vni == vni)
			return 1;
	return 0;
}

void punt_vni_added(struct uvx_dp *dp, struct uvx_vni *v)
{
	v->hooked = vni_has_rule(&dp->punt, v->vni);
}

static int hook_add(struct uvx_dp *dp, uint32_t hook, uint32_t vni, uint16_t ethertype,
		    const uint8_t *mac, uint32_t dirs)
{
	struct punt *p = &dp->punt;
	if (vni > VXLAN_VNI_MAX || !dirs || (dirs & ~(uint32_t)(UVX_HOOK_FROM_PORT | UVX_HOOK_FROM_WIRE)))
		return -EINVAL;
	if (p->nrules == UVX_HOOK_RULES)
		return -ENOSPC;
	int r = punt_start(dp);
	if (r < 0)
		return r;
	struct punt_rule *rule = &p->rules[p->nrules++];
	*rule = (struct punt_rule){ .hook = hook, .vni = vni, .ethertype = ethertype,
				    .any_mac = mac == NULL, .dirs = (uint8_t)dirs };
	if (mac)
		memcpy(rule->mac, mac, 6);
	struct uvx_vni *v = vni_find(dp, vni);
	if (v)
		v->hooked = 1;
	return 0;
}

int uvx_hook_add(struct uvx_dp *dp, uint32_t hook, uint32_t vni, uint16_t ethertype,
		 const uint8_t *mac, uint32_t dirs)
{
	LOCKED(dp, hook_add(dp, hook, vni, ethertype, mac, dirs));
}

static int hook_del(struct uvx_dp *dp, uint32_t hook)
{
	struct punt *p = &dp->punt;
	unsigned kept = 0;
	for (unsigned i = 0; i < p->nrules; i++)
		if (p->rules[i].hook != hook)
			p->rules[kept++] = p->rules[i];
	int removed = (int)(p->nrules - kept);
	p->nrules = kept;
	for (unsigned i = 0; i < UVX_MAX_VNIS; i++)
		if (dp->vnis[i])
			punt_vni_added(dp, dp->vnis[i]);
	return removed;
}

int uvx_hook_del(struct uvx_dp *dp, uint32_t hook)
{
	LOCKED(dp, hook_del(dp, hook));
}

int uvx_hook_fd(struct uvx_dp *dp)
{
	return dp->punt.on ? dp->punt.fd : -ENOENT;
}

uint64_t uvx_hook_punted(struct uvx_dp *dp)
{
	uint64_t n = 0;
	for (unsigned k = 0; k < UVX_WORKERS; k++)
		n += __atomic_load_n(&dp->punt.side[k].punted, __ATOMIC_RELAXED);
	return n;
}

/* The packet path ----------------------------------------------------- */

static const struct punt_rule *punt_match(const struct punt *p, uint32_t vni, unsigned dir,
					  const uint8_t *frame)
{
	/* The frame passed vxlan_check_inner: ETH_HLEN bytes at least. */
	uint16_t type = (uint16_t)(frame[12] << 8 | frame[13]);
	for (unsigned i = 0; i < p->nrules; i++) {
		const struct punt_rule *r = &p->rules[i];
		if (r->vni != vni || !(r->dirs & dir))
			continue;
		if (r->ethertype && r->ethertype != type)
			continue;
		if (!r->any_mac && memcmp(r->mac, frame, 6) && memcmp(r->mac, frame + 6, 6))
			continue;
		return r;
	}
	return NULL;
}

int punt_frame(struct uvx_dp *dp, struct uvx_worker *w, struct uvx_vni *v,
	       int32_t port, uint32_t remote_ip, unsigned dir,
	       const uint8_t *frame, size_t len, const struct vnet_hdr *vh)
{
	struct punt *p = &dp->punt;
	const struct punt_rule *r = punt_match(p, v->vni, dir, frame);
	if (!r)
		return 0;
	struct punt_side *s = &p->side[w->id];
	/* Full: dropped, not passed.  A hook may be a policy (which ARP to
	 * answer, which flow to let through), and passing what it had no
	 * time to see would let a flood of matching frames around it. */
	if (!s->nfree || len > PUNT_BYTES) {
		drop(dp, v, port, len > PUNT_BYTES ? UVX_DROP_TOO_BIG : UVX_DROP_HOOK_QUEUE_FULL);
		return 1;
	}
	uint16_t i = s->free[--s->nfree];
	struct punt_meta *m = &s->meta[i];
	*m = (struct punt_meta){ .hook = r->hook, .vni = v->vni, .port = port,
				 .remote_ip = remote_ip, .gbp_src = w->gbp_src,
				 .len = (uint32_t)len, .dir = (uint8_t)dir };
	if (vh)
		m->vh = *vh;
	memcpy(slot_data(s, i), frame, len);
	ring_push(&s->up, i);           /* never full: it has room for every slot */
	bump(&s->punted, 1);
	s->notify = 1;
	return 1;
}

void punt_notify(struct uvx_dp *dp, struct uvx_worker *w)
{
	struct punt_side *s = &dp->punt.side[w->id];
	if (!s->notify)
		return;
	s->notify = 0;
	uint64_t one = 1;
	(void)!write(dp->punt.fd, &one, sizeof(one));
}

unsigned punt_pop(struct uvx_dp *dp, unsigned wid, struct punt_job *jobs, unsigned max)
{
	struct punt_side *s = &dp->punt.side[wid];
	if (!dp->punt.on)
		return 0;
	uint64_t v;
	(void)!read(s->kick_fd, &v, sizeof(v));
	unsigned n = 0;
	uint16_t i;
	while (n < max && ring_pop(&s->down, &i) == 0) {
		if (i >= PUNT_SLOTS)
			continue;                        /* never pushed so; be safe */
		jobs[n++] = (struct punt_job){ i, &s->meta[i], slot_data(s, i) };
	}
	return n;
}

void punt_recycle(struct uvx_dp *dp, unsigned wid, const struct punt_job *jobs, unsigned n)
{
	struct punt_side *s = &dp->punt.side[wid];
	for (unsigned k = 0; k < n; k++) {
		if (jobs[k].slot < UVX_HOOK_SLOTS)
			s->free[s->nfree++] = jobs[k].slot;
		else
			ring_push(&s->inject_free, jobs[k].slot);
	}
}

/* The loop's side ------------------------------------------------------ */

int punt_pending(struct punt_side *s)
{
	return s->down.tail != __atomic_load_n(&s->down.head, __ATOMIC_ACQUIRE);
}

int uvx_hook_take(struct uvx_dp *dp, struct uvx_punt *out, int max)
{
	struct punt *p = &dp->punt;
	if (!p->on || max <= 0)
		return 0;
	/* Reset first: a frame punted after the rings were read writes
	 * again, so the loop is never left asleep with frames waiting. */
	uint64_t v;
	(void)!read(p->fd, &v, sizeof(v));
	int n = 0;
	for (unsigned k = 0; k < UVX_WORKERS && n < max; k++) {
		struct punt_side *s = &p->side[k];
		uint16_t i;
		while (n < max && ring_pop(&s->up, &i) == 0) {
			struct punt_meta *m = &s->meta[i];
			out[n++] = (struct uvx_punt){
				.token = (uint32_t)k << 16 | i, .hook = m->hook, .vni = m->vni,
				.port = m->port, .remote_ip = m->remote_ip, .dir = m->dir,
				.len = m->len, .data = slot_data(s, i),
			};
		}
	}
	return n;
}

int uvx_hook_verdict(struct uvx_dp *dp, uint32_t token, int verdict,
		     const uint8_t *data, size_t len)
{
	unsigned k = token >> 16, i = token & 0xffff;
	if (!dp->punt.on || k >= UVX_WORKERS || i >= UVX_HOOK_SLOTS)
		return -EINVAL;
	if (verdict != UVX_HOOK_PASS && verdict != UVX_HOOK_DROP)
		return -EINVAL;
	if (data && (len < ETH_HLEN || len > PUNT_BYTES))
		return -EMSGSIZE;
	struct punt_side *s = &dp->punt.side[k];
	struct punt_meta *m = &s->meta[i];
	if (data) {
		memcpy(slot_data(s, i), data, len);
		m->len = (uint32_t)len;
		/* Rewritten: its checksums are no longer what the port's kernel
		 * vouched for.  A plain frame goes on as one without offloads
		 * (a receiving kernel checks it); a super-frame keeps its GSO
		 * fields (segmenting it writes each segment's checksums). */
		m->vh.flags &= (uint8_t)~VNET_F_DATA_VALID;
		if (m->vh.gso_type == VNET_GSO_NONE)
			m->vh = (struct vnet_hdr){ 0 };
	}
	m->verdict = (uint8_t)verdict;
	m->injected = 0;
	return ring_push(&s->down, (uint16_t)i) == 0 ? 0 : -EBUSY;
}

int uvx_hook_inject(struct uvx_dp *dp, int32_t port, int dir, const uint8_t *data,
		    size_t len)
{
	if (!dp->punt.on)
		return -ENOENT;
	if (dir != UVX_HOOK_FROM_PORT && dir != UVX_HOOK_TO_PORT)
		return -EINVAL;
	if (len < ETH_HLEN || len > PUNT_BYTES)
		return -EMSGSIZE;
	if (port < 0 || port >= UVX_MAX_PORTS)
		return -ENOENT;
	pthread_rwlock_rdlock(&dp->cfg_lock);
	int used = dp->ports[port].used;
	uint32_t vni = dp->ports[port].vni;
	pthread_rwlock_unlock(&dp->cfg_lock);
	if (!used)
		return -ENOENT;
	/* From a port: the transmit worker's path; to one: the receive
	 * worker's, which writes to ports. */
	struct punt_side *s = &dp->punt.side[dir == UVX_HOOK_FROM_PORT ? W_TX : W_RX];
	uint16_t i;
	if (ring_pop(&s->inject_free, &i) < 0)
		return -EAGAIN;
	s->meta[i] = (struct punt_meta){ .vni = vni, .port = port, .len = (uint32_t)len,
					 .dir = (uint8_t)dir, .injected = 1 };
	memcpy(slot_data(s, i), data, len);
	return ring_push(&s->down, i) == 0 ? 0 : -EBUSY;
}
