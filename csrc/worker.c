/* The worker threads: one blocks in epoll_wait on the TAPs and runs the
 * transmit path (xmit.c), the other on the VXLAN socket and runs the
 * receive path (rcv.c).  Each has its own batch state (struct uvx_worker)
 * and counter set; see dp.h for who locks what.  Python starts and stops
 * them; without them, its event loop calls uvx_tap_rx and uvx_udp_rx. */
#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "dp.h"

#define WAKE_TOKEN UINT64_MAX
#define TIMER_TOKEN (UINT64_MAX - 1)   /* held frames due (fault_api.c) */

static void *worker_main(void *arg)
{
	struct uvx_worker *w = arg;
	struct uvx_dp *dp = w->dp;
	struct epoll_event ev[64];

	while (!__atomic_load_n(&dp->stopping, __ATOMIC_ACQUIRE)) {
		int n = epoll_wait(dp->epfd[w->id], ev, 64, -1);
		for (int i = 0; i < n; i++) {
			if (ev[i].data.u64 == WAKE_TOKEN)
				continue;
			if (ev[i].data.u64 == TIMER_TOKEN) {
				uvx_fault_tick(dp);
				continue;
			}
			if (ev[i].data.u64 == PUNT_EPOLL_TOKEN) {
				/* Verdicts from a Python hook (punt.h). */
				if (w->id == W_RX)
					rcv_hook_run(dp);
				else
					xmit_hook_run(dp);
				continue;
			}
			if (w->id == W_RX) {
				uvx_udp_rx(dp);
				continue;
			}
			int port = (int)ev[i].data.u64;
			if (uvx_tap_rx(dp, port) < 0) {
				/* A TAP whose interface is gone stays readable
				 * and fails every read: stop watching it. */
				pthread_rwlock_rdlock(&dp->cfg_lock);
				if (port < UVX_MAX_PORTS && dp->ports[port].used)
					epoll_ctl(dp->epfd[W_TX], EPOLL_CTL_DEL,
						  dp->ports[port].fd, NULL);
				pthread_rwlock_unlock(&dp->cfg_lock);
			}
		}
	}
	return NULL;
}

static int start_threads(struct uvx_dp *dp)
{
	if (dp->running)
		return -EALREADY;
	if (dp->udp_fd < 0)
		return -EBADF;
	dp->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (dp->wake_fd < 0)
		return -errno;
	struct epoll_event wake = { .events = EPOLLIN, .data.u64 = WAKE_TOKEN };
	for (unsigned k = 0; k < UVX_WORKERS; k++) {
		dp->epfd[k] = epoll_create1(EPOLL_CLOEXEC);
		if (dp->epfd[k] < 0 ||
		    epoll_ctl(dp->epfd[k], EPOLL_CTL_ADD, dp->wake_fd, &wake) < 0)
			goto fail;
	}
	/* Fault injection's frames held for later wake the TX thread. */
	dp->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	dp->timer_at = UINT64_MAX;
	struct epoll_event tev = { .events = EPOLLIN, .data.u64 = TIMER_TOKEN };
	if (dp->timer_fd < 0 || epoll_ctl(dp->epfd[W_TX], EPOLL_CTL_ADD, dp->timer_fd, &tev) < 0)
		goto fail;
	struct epoll_event hook = { .events = EPOLLIN, .data.u64 = PUNT_EPOLL_TOKEN };
	for (unsigned k = 0; dp->punt.on && k < UVX_WORKERS; k++)
		if (epoll_ctl(dp->epfd[k], EPOLL_CTL_ADD, dp->punt.side[k].kick_fd, &hook) < 0)
			goto fail;
	struct epoll_event uev = { .events = EPOLLIN, .data.u64 = 0 };
	if (epoll_ctl(dp->epfd[W_RX], EPOLL_CTL_ADD, dp->udp_fd, &uev) < 0)
		goto fail;
	for (int i = 0; i < UVX_MAX_PORTS; i++) {
		if (!dp->ports[i].used)
			continue;
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)i };
		if (epoll_ctl(dp->epfd[W_TX], EPOLL_CTL_ADD, dp->ports[i].fd, &ev) < 0)
			goto fail;
	}
	dp->stopping = 0;
	for (unsigned k = 0; k < UVX_WORKERS; k++) {
		if (pthread_create(&dp->thread[k], NULL, worker_main, &dp->w[k]) != 0) {
			/* Stop the one that did start before giving up. */
			dp->stopping = 1;
			uint64_t one = 1;
			(void)!write(dp->wake_fd, &one, sizeof(one));
			for (unsigned j = 0; j < k; j++)
				pthread_join(dp->thread[j], NULL);
			errno = EAGAIN;
			goto fail;
		}
	}
	dp->running = 1;
	return 0;
fail:;
	int e = -errno;
	for (unsigned k = 0; k < UVX_WORKERS; k++) {
		if (dp->epfd[k] >= 0)
			close(dp->epfd[k]);
		dp->epfd[k] = -1;
	}
	close(dp->wake_fd);
	dp->wake_fd = -1;
	if (dp->timer_fd >= 0)
		close(dp->timer_fd);
	dp->timer_fd = -1;
	return e;
}

int uvx_dp_start_threads(struct uvx_dp *dp)
{
	LOCKED(dp, start_threads(dp));
}

int uvx_dp_stop_threads(struct uvx_dp *dp)
{
	/* Not under the write lock: the threads take the read lock to
	 * finish their batch, and joining them while holding it would
	 * deadlock. */
	if (!dp->running)
		return 0;
	__atomic_store_n(&dp->stopping, 1, __ATOMIC_RELEASE);
	uint64_t one = 1;
	(void)!write(dp->wake_fd, &one, sizeof(one));
	for (unsigned k = 0; k < UVX_WORKERS; k++)
		pthread_join(dp->thread[k], NULL);
	for (unsigned k = 0; k < UVX_WORKERS; k++) {
		close(dp->epfd[k]);
		dp->epfd[k] = -1;
	}
	close(dp->wake_fd);
	dp->wake_fd = -1;
	close(dp->timer_fd);
	dp->timer_fd = -1;
	dp->running = 0;
	return 0;
}

/* Verdicts and injections posted (uvx_hook_verdict, uvx_hook_inject) go
 * on: with threads, each worker is woken to run its own (they use its
 * batch state and counters); without, the caller is the loop that runs the
 * packet path, and runs them here. */
int uvx_hook_kick(struct uvx_dp *dp)
{
	if (!dp->punt.on)
		return 0;
	if (dp->running) {
		uint64_t one = 1;
		for (unsigned k = 0; k < UVX_WORKERS; k++)
			if (punt_pending(&dp->punt.side[k]))
				(void)!write(dp->punt.side[k].kick_fd, &one, sizeof(one));
		return 0;
	}
	xmit_hook_run(dp);
	rcv_hook_run(dp);
	return 0;
}
