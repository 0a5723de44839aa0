/* udpsink: receive and count udpblast's UDP datagrams on ADDR:PORT.
 *
 *   udpsink ADDR PORT MAX_SECONDS IDLE_MS
 *
 * Drains the socket with recvmmsg (64 at a time, 8 MB receive buffer) and
 * prints "ready" on stderr once bound.  Stops IDLE_MS after the last datagram
 * (once one has arrived) or after MAX_SECONDS.  Each datagram starts with
 * udpblast's 64-bit sequence number; a bitmap of the numbers seen makes the
 * count one of distinct datagrams, so loss = sent - received is real counting
 * even if the path duplicates.  Prints one JSON line:
 * {"received": N, "duplicates": D, "reordered": O, "foreign": F,
 *  "max_seq": M, "bytes": B, "seconds": first-to-last, "rcvbuf_errors": R}
 * where reordered counts datagrams older than one already seen, foreign those
 * too short or with an absurd sequence number, max_seq is -1 if none arrived,
 * and R counts the datagrams that reached this socket but found it full,
 * i.e. losses of the receiver rather than of the path: the socket's own drop
 * count (SO_MEMINFO, Linux 4.6), so other sockets' losses never count here;
 * on an older kernel, the growth of Udp RcvbufErrors in /proc/net/snmp of
 * this network namespace.
 *
 * Built by uvxlan bench at run time: gcc -O2 -o udpsink udpsink.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/sock_diag.h>

#ifndef SO_MEMINFO
#define SO_MEMINFO 55
#endif

#define BATCH 64
#define BUFSZ 2048
#define MAX_SEQ (1ULL << 31) /* 256 MB of bitmap at most; minutes at Mpps */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Udp RcvbufErrors of this namespace, or -1. */
static long long rcvbuf_errors(void)
{
	FILE *f = fopen("/proc/net/snmp", "r");
	char head[1024], vals[1024];
	long long result = -1;
	if (!f)
		return -1;
	while (fgets(head, sizeof(head), f)) {
		if (strncmp(head, "Udp:", 4) != 0)
			continue;
		if (!fgets(vals, sizeof(vals), f))
			break;
		char *hs, *vs, *h = strtok_r(head, " \n", &hs), *v = strtok_r(vals, " \n", &vs);
		while (h && v) {
			if (strcmp(h, "RcvbufErrors") == 0) {
				result = atoll(v);
				break;
			}
			h = strtok_r(NULL, " \n", &hs);
			v = strtok_r(NULL, " \n", &vs);
		}
		break;
	}
	fclose(f);
	return result;
}

/* Datagrams this socket dropped for want of room, or -1 (kernel < 4.6). */
static long long socket_drops(int fd)
{
	uint32_t mem[SK_MEMINFO_VARS] = { 0 };
	socklen_t len = sizeof(mem);
	if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) < 0 ||
	    len <= SK_MEMINFO_DROPS * sizeof(uint32_t))
		return -1;
	return mem[SK_MEMINFO_DROPS];
}

/* Bitmap of sequence numbers seen, grown on demand (zeroed). */
static uint64_t *seen;
static uint64_t seen_words;

static int mark(uint64_t seq)
{
	uint64_t word = seq / 64;
	if (word >= seen_words) {
		uint64_t n = seen_words ? seen_words : 1 << 14;
		while (n <= word)
			n *= 2;
		uint64_t *grown = realloc(seen, n * sizeof(*seen));
		if (!grown) {
			perror("udpsink: realloc");
			exit(1);
		}
		memset(grown + seen_words, 0, (n - seen_words) * sizeof(*seen));
		seen = grown;
		seen_words = n;
	}
	uint64_t bit = 1ULL << (seq % 64);
	int was = (seen[word] & bit) != 0;
	seen[word] |= bit;
	return was;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: udpsink ADDR PORT MAX_SECONDS IDLE_MS\n");
		return 2;
	}
	struct sockaddr_in addr = {.sin_family = AF_INET};
	if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
		fprintf(stderr, "udpsink: bad address %s\n", argv[1]);
		return 2;
	}
	addr.sin_port = htons((uint16_t)atoi(argv[2]));
	double max_s = atof(argv[3]), idle_s = atof(argv[4]) / 1000.0;

	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0) {
		perror("udpsink: socket");
		return 1;
	}
	int rcvbuf = 8 << 20;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	struct timeval tv = {.tv_sec = 0, .tv_usec = 50000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		perror("udpsink: bind");
		return 1;
	}

	static unsigned char bufs[BATCH][BUFSZ];
	static struct iovec iov[BATCH];
	static struct mmsghdr msgs[BATCH];
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = BUFSZ;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}

	long long drops0 = rcvbuf_errors();
	fprintf(stderr, "ready\n");
	fflush(stderr);

	uint64_t received = 0, dups = 0, reordered = 0, foreign = 0, bytes = 0;
	int64_t max_seq = -1;
	double start = now_s(), first = 0, last = 0;
	for (;;) {
		double t = now_s();
		if (t - start > max_s || ((received || foreign) && t - last > idle_s))
			break;
		int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				continue;
			perror("udpsink: recvmmsg");
			return 1;
		}
		last = now_s();
		if (!received && !foreign)
			first = last;
		for (int i = 0; i < n; i++) {
			uint64_t seq;
			bytes += msgs[i].msg_len;
			if (msgs[i].msg_len < sizeof(seq)) {
				foreign++;
				continue;
			}
			memcpy(&seq, bufs[i], sizeof(seq));
			if (seq >= MAX_SEQ) {
				foreign++;
				continue;
			}
			if (mark(seq)) {
				dups++;
				continue;
			}
			received++;
			if ((int64_t)seq < max_seq)
				reordered++;
			else
				max_seq = (int64_t)seq;
		}
	}
	long long drops1 = rcvbuf_errors();
	long long own = socket_drops(fd);
	printf("{\"received\": %llu, \"duplicates\": %llu, \"reordered\": %llu, \"foreign\": %llu,"
	       " \"max_seq\": %lld, \"bytes\": %llu, \"seconds\": %.6f, \"rcvbuf_errors\": %lld}\n",
	       (unsigned long long)received, (unsigned long long)dups,
	       (unsigned long long)reordered, (unsigned long long)foreign, (long long)max_seq,
	       (unsigned long long)bytes, last - first,
	       own >= 0 ? own : drops0 < 0 || drops1 < 0 ? -1 : drops1 - drops0);
	free(seen);
	return 0;
}
