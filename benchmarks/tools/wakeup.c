/* wakeup: what one thread wake-up costs on this machine.
 *
 *   wakeup CPU_A CPU_B ROUNDS
 *
 * Two threads, pinned to CPU_A and CPU_B (-1: unpinned), pass a token back
 * and forth through two eventfds, each blocking in read() until the other
 * writes: every pass is one wake-up of a sleeping thread, as when a
 * datapath thread is woken by a packet.  Prints one JSON line:
 * {"cpu_a": A, "cpu_b": B, "rounds": N, "wakeup_us": mean µs per wake-up}
 * (half a round trip).  Same CPU, that is a context switch; across CPUs
 * on a VM it includes waking the other, idle, virtual CPU.
 *
 * Built by benchmarks/limits.py at run time: gcc -O2 -pthread
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define WARMUP 100   /* rounds not timed: thread start-up, first faults */

static int to_b, to_a;
static long rounds;
static int cpu_b;

static int pin(int cpu)
{
	if (cpu < 0)
		return 0;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static int pass(int from, int to)
{
	uint64_t v;
	if (read(from, &v, sizeof(v)) != sizeof(v))
		return -1;
	return write(to, &v, sizeof(v)) == sizeof(v) ? 0 : -1;
}

/* May this process run on cpu (-1: any)? */
static int usable(int cpu)
{
	cpu_set_t set;
	if (cpu < 0)
		return 1;
	return cpu < CPU_SETSIZE && sched_getaffinity(0, sizeof(set), &set) == 0 &&
	       CPU_ISSET(cpu, &set);
}

static void *thread_b(void *arg)
{
	(void)arg;
	pin(cpu_b);    /* checked usable before the thread started */
	for (long i = 0; i < WARMUP + rounds; i++) {
		if (pass(to_b, to_a) < 0) {
			/* main would wait for us forever */
			perror("wakeup: thread b");
			_exit(1);
		}
	}
	return NULL;
}

/* A whole number from argv, or exit 2 with the usage. */
static long number(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0') {
		fprintf(stderr, "usage: wakeup CPU_A CPU_B ROUNDS (CPU -1: unpinned)\n");
		exit(2);
	}
	return v;
}

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: wakeup CPU_A CPU_B ROUNDS (CPU -1: unpinned)\n");
		return 2;
	}
	long a = number(argv[1]), b_cpu = number(argv[2]);
	rounds = number(argv[3]);
	if (a < -1 || a > CPU_SETSIZE || b_cpu < -1 || b_cpu > CPU_SETSIZE) {
		fprintf(stderr, "wakeup: ROUNDS must be positive and the CPUs usable here\n");
		return 2;
	}
	int cpu_a = (int)a;
	cpu_b = (int)b_cpu;
	to_b = eventfd(0, EFD_CLOEXEC);
	to_a = eventfd(0, EFD_CLOEXEC);
	if (rounds < 1 || !usable(cpu_a) || !usable(cpu_b)) {
		fprintf(stderr, "wakeup: ROUNDS must be positive and the CPUs usable here\n");
		return 2;
	}
	if (to_b < 0 || to_a < 0 || pin(cpu_a) != 0) {
		perror("wakeup");
		return 1;
	}
	pthread_t b;
	if (pthread_create(&b, NULL, thread_b, NULL) != 0) {
		fprintf(stderr, "wakeup: cannot start a thread\n");
		return 1;
	}
	uint64_t one = 1;
	double t0 = 0;
	for (long i = 0; i < WARMUP + rounds; i++) {
		if (i == WARMUP)
			t0 = now_us();
		uint64_t v;
		if (write(to_b, &one, sizeof(one)) != sizeof(one) ||
		    read(to_a, &v, sizeof(v)) != sizeof(v)) {
			perror("wakeup");
			return 1;
		}
	}
	double t1 = now_us();
	pthread_join(b, NULL);
	printf("{\"cpu_a\": %d, \"cpu_b\": %d, \"rounds\": %ld, \"wakeup_us\": %.2f}\n",
	       cpu_a, cpu_b, rounds, (t1 - t0) / (double)rounds / 2.0);
	return 0;
}
