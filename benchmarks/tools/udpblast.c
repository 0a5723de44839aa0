/* udpblast: send 64-byte UDP datagrams to one address:port at a paced rate.
 *
 *   udpblast ADDR PORT PPS SECONDS [BATCH]
 *
 * PPS 0 means as fast as the path takes them (for finding a path's limit).
 * Datagrams go out in sendmmsg batches of BATCH (32); between batches the
 * sender sleeps until the next batch is due, so it uses little CPU and is
 * not what limits the path it measures.  When it falls behind (a slow path
 * pushing back) it sends full batches without sleeping until it catches up.
 * Each payload starts with a 64-bit sequence number.  Prints one JSON line:
 * {"sent": N, "seconds": S, "target_pps": P, "errors": E, "batch": B}.
 * Errors (ECONNREFUSED from an earlier ICMP, ENOBUFS) are counted, not fatal.
 *
 * Built by uvxlan bench at run time: gcc -O2 -o udpblast udpblast.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAYLOAD 64
#define MAX_BATCH 256

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until(double t)
{
	struct timespec ts;
	ts.tv_sec = (time_t)t;
	ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

int main(int argc, char **argv)
{
	if (argc < 5 || argc > 6) {
		fprintf(stderr, "usage: udpblast ADDR PORT PPS SECONDS [BATCH]\n");
		return 2;
	}
	struct sockaddr_in dst = {.sin_family = AF_INET};
	if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) {
		fprintf(stderr, "udpblast: bad address %s\n", argv[1]);
		return 2;
	}
	dst.sin_port = htons((uint16_t)atoi(argv[2]));
	double pps = atof(argv[3]), seconds = atof(argv[4]);
	int batch = argc == 6 ? atoi(argv[5]) : 32;
	if (pps < 0 || seconds <= 0 || batch < 1 || batch > MAX_BATCH) {
		fprintf(stderr, "udpblast: PPS >= 0 (0: unpaced), SECONDS > 0, BATCH 1..%d\n",
			MAX_BATCH);
		return 2;
	}

	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0) {
		perror("udpblast: socket");
		return 1;
	}
	int sndbuf = 4 << 20;
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);   /* wake on time, not 50 us late */

	static unsigned char payload[MAX_BATCH][PAYLOAD];
	static struct iovec iov[MAX_BATCH];
	static struct mmsghdr msgs[MAX_BATCH];
	for (int i = 0; i < batch; i++) {
		iov[i].iov_base = payload[i];
		iov[i].iov_len = PAYLOAD;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}

	uint64_t sent = 0, errors = 0;
	double start = now_s(), end = start + seconds, t;
	while ((t = now_s()) < end) {
		uint64_t due = pps > 0 ? (uint64_t)((t - start) * pps) : UINT64_MAX;
		if (due < sent + (uint64_t)batch) {
			double next = start + (double)(sent + (uint64_t)batch) / pps;
			sleep_until(next < end ? next : end);
			continue;
		}
		for (int i = 0; i < batch; i++) {
			uint64_t seq = sent + (uint64_t)i;
			memcpy(payload[i], &seq, sizeof(seq));
		}
		int n = sendmmsg(fd, msgs, (unsigned int)batch, 0);
		if (n < 0) {
			errors++;
			if (errno != ECONNREFUSED && errno != ENOBUFS && errno != EAGAIN &&
			    errno != EINTR) {
				perror("udpblast: sendmmsg");
				return 1;
			}
			continue;
		}
		sent += (uint64_t)n;
	}
	printf("{\"sent\": %llu, \"seconds\": %.6f, \"target_pps\": %.0f, \"errors\": %llu,"
	       " \"batch\": %d}\n", (unsigned long long)sent, now_s() - start, pps,
	       (unsigned long long)errors, batch);
	return 0;
}
