/* The fuzz targets' datapath: set up once, reset before each run, and
 * everything it wrote read back and checked after each run.  See
 * fuzz_dp.h for what is in it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../bytes.h"
#include "../csum.h"
#include "fuzz_dp.h"

static void die(const char *what, int err)
{
	fprintf(stderr, "fuzz harness: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(2);
}

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz: rule broken: %s\n", what);
		abort();
	}
}

static void ok_or_die(int r, const char *what)
{
	if (r < 0)
		die(what, r);
}

static uint32_t lo_addr(unsigned host)
{
	return htonl(0x7f000000u | host);   /* 127.0.0.host */
}

static void mac_of(uint8_t mac[6], unsigned n)
{
	const uint8_t m[6] = { 2, 0, 0, 0, 0, (uint8_t)n };
	memcpy(mac, m, 6);
}

/* A UDP socket bound to 127.0.0.host on a port the kernel picks. */
static int udp_bound(unsigned host, uint16_t *port)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET };
	sa.sin_addr.s_addr = lo_addr(host);
	socklen_t sl = sizeof(sa);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl) < 0)
		die("a loopback UDP socket", errno);
	*port = ntohs(sa.sin_port);
	return fd;
}

/* A port: one end of a datagram socketpair, so each write is one frame
 * the harness reads whole from the other end. */
static void port_pair(int *ours, int *theirs)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair", errno);
	int big = 1 << 20;   /* a few 64 KB frames queued */
	for (int i = 0; i < 2; i++)
		setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	*ours = sv[0];
	*theirs = sv[1];
}

void fuzz_dp_setup(struct fuzz_dp *f)
{
	memset(f, 0, sizeof(*f));
	struct uvx_config cfg = {
		.local_ip = lo_addr(1),
		.dst_port = 4789,
		.src_port_min = 49152,
		.src_port_max = 65535,
		.ageing_ms = 300000,
		.learn_limit = 12,      /* small, so the cap and a full pool are reached */
		.fdb_capacity = 24,
		.batch = UVX_BATCH_MAX,
		.accept_reserved = 0,
		.udp_csum = 1,
		.rx_linger_us = 0,
		/* A real underlay's: bigger frames and segments are dropped and
		 * answered with ICMP (pmtud.c), smaller ones segmented. */
		.underlay_mtu = 1500,
	};
	int err = 0;
	f->dp = uvx_dp_new(&cfg, &err);
	if (!f->dp)
		die("uvx_dp_new", err);
	struct uvx_dp *dp = f->dp;

	/* The raw socket needs CAP_NET_RAW; without it every send without
	 * the pool fails and is counted (udp_error), which still runs. */
	int tx = uvx_tx_socket_open(cfg.local_ip);
	if (tx < 0)
		fprintf(stderr, "fuzz harness: no raw socket (%s): raw sends fail\n",
			strerror(-tx));
	ok_or_die(uvx_dp_set_sockets(dp, -1, tx), "uvx_dp_set_sockets");
	for (unsigned i = 0; i < FZ_POOL; i++)
		f->pool_fd[i] = udp_bound(1, &f->pool_port[i]);

	const uint32_t vnis[] = { FZ_VNI_A, FZ_VNI_B, FZ_VNI_C };
	for (unsigned i = 0; i < 3; i++)
		ok_or_die(uvx_vni_add(dp, vnis[i]), "uvx_vni_add");

	const uint32_t port_vni[FZ_PORTS] = { FZ_VNI_A, FZ_VNI_A, FZ_VNI_A, FZ_VNI_B };
	const int port_vnet[FZ_PORTS] = { 1, 0, 1, 0 };
	for (unsigned i = 0; i < FZ_PORTS; i++) {
		int fd;
		port_pair(&fd, &f->peer[i]);
		f->vnet[i] = port_vnet[i];
		f->port[i] = uvx_port_add(dp, fd, port_vni[i],
					  port_vnet[i] ? UVX_PORT_VNET_HDR : 0);
		ok_or_die(f->port[i], "uvx_port_add");
	}

	/* The VTEPs: VNI 100 floods to 0 and 1, VNI 300 to 2. */
	const uint32_t vtep_vni[FZ_VTEPS] = { FZ_VNI_A, FZ_VNI_A, FZ_VNI_C };
	uint16_t vtep_port[FZ_VTEPS];
	for (unsigned i = 0; i < FZ_VTEPS; i++) {
		f->sink[i] = udp_bound(2 + i, &vtep_port[i]);
		/* A small queue: a few datagrams kept to check, the rest
		 * dropped by the kernel rather than read. */
		int small = 16384;
		setsockopt(f->sink[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
		ok_or_die(uvx_remote_add(dp, vtep_vni[i], lo_addr(2 + i), vtep_port[i]),
			  "uvx_remote_add");
		f->sender[i] = (struct sockaddr_in){ .sin_family = AF_INET,
						     .sin_port = htons(40000) };
		f->sender[i].sin_addr.s_addr = lo_addr(2 + i);
	}
	/* Only members speak: each VTEP is admitted where it floods; VNI 200
	 * takes anyone (Linux's behaviour), so every sender reaches port 3,
	 * and the stranger below is refused in VNI 100 and 300. */
	for (unsigned i = 0; i < FZ_VTEPS; i++)
		ok_or_die(uvx_peer_add(dp, vtep_vni[i], lo_addr(2 + i)), "uvx_peer_add");
	ok_or_die(uvx_vni_set_admit(dp, FZ_VNI_B, UVX_ADMIT_ANY), "uvx_vni_set_admit");
	f->sender[FZ_SENDERS - 1] = f->sender[0];
	f->sender[FZ_SENDERS - 1].sin_addr.s_addr = lo_addr(9);   /* the stranger */

	uint8_t mac[6];
	const unsigned port_mac[FZ_PORTS] = { FZ_MAC_PORT0, FZ_MAC_PORT1, FZ_MAC_PORT2,
					      FZ_MAC_PORT3 };
	for (unsigned i = 0; i < FZ_PORTS; i++) {
		mac_of(mac, port_mac[i]);
		ok_or_die(uvx_fdb_add(dp, port_vni[i], mac, f->port[i], 0, 0), "uvx_fdb_add");
	}
	mac_of(mac, FZ_MAC_VTEP0);
	ok_or_die(uvx_fdb_add(dp, FZ_VNI_A, mac, -1, lo_addr(2), vtep_port[0]), "uvx_fdb_add");
	mac_of(mac, FZ_MAC_VTEP1);
	ok_or_die(uvx_fdb_add(dp, FZ_VNI_A, mac, -1, lo_addr(3), vtep_port[1]), "uvx_fdb_add");

	/* ARP: 10.0.0.N is at 02:00:00:00:00:0N in VNI 100, 10.1.0.6 in 200. */
	ok_or_die(uvx_vni_set_arp(dp, FZ_VNI_A, UVX_ARP_ANSWER), "uvx_vni_set_arp");
	ok_or_die(uvx_vni_set_arp(dp, FZ_VNI_B, UVX_ARP_ANSWER_ONLY), "uvx_vni_set_arp");
	for (unsigned n = 1; n <= 5; n++) {
		mac_of(mac, n);
		ok_or_die(uvx_arp_add(dp, FZ_VNI_A, htonl(0x0a000000u | n), mac), "uvx_arp_add");
	}
	mac_of(mac, FZ_MAC_PORT3);
	ok_or_die(uvx_arp_add(dp, FZ_VNI_B, htonl(0x0a010006u), mac), "uvx_arp_add");

	/* A live capture at every point, with outer headers: its hooks read
	 * every frame the switch sees (fuzz_dp_drain checks the records).  A
	 * few slots, so a batch also fills them and counts misses. */
	const struct uvx_capture_filter cap = {
		.points = UVX_CAP_TAP_RX | UVX_CAP_TAP_TX | UVX_CAP_WIRE_RX | UVX_CAP_WIRE_TX,
		.match = UVX_CAP_F_OUTER, .snaplen = FZ_CAPTURE_SNAP, .slots = 16,
	};
	ok_or_die(uvx_capture_start(dp, &cap), "uvx_capture_start");
	/* Group policy in VNI 100 (VNI 300 reads GBP bits as reserved):
	 * ports 0 and 1 in groups 10 and 20, port 2 in none; 10 -> 20 and
	 * 7 -> 10 denied, the rest allowed. */
	ok_or_die(uvx_vni_set_gbp(dp, FZ_VNI_A, 1), "uvx_vni_set_gbp");
	ok_or_die(uvx_port_set_group(dp, f->port[0], FZ_GROUP_PORT0), "uvx_port_set_group");
	ok_or_die(uvx_port_set_group(dp, f->port[1], FZ_GROUP_PORT1), "uvx_port_set_group");
	ok_or_die(uvx_gbp_rule_set(dp, FZ_VNI_A, FZ_GROUP_PORT0, FZ_GROUP_PORT1, UVX_GBP_DENY),
		  "uvx_gbp_rule_set");
	ok_or_die(uvx_gbp_rule_set(dp, FZ_VNI_A, 7, FZ_GROUP_PORT0, UVX_GBP_DENY),
		  "uvx_gbp_rule_set");
	/* Python hooks (punt.c): IPv6 in VNI 100 (super-frames too) and
	 * broadcast in VNI 200 (ARP, answered after the verdict) are punted;
	 * fuzz_dp_drain gives their verdicts. */
	ok_or_die(uvx_hook_add(dp, 1, FZ_VNI_A, ETH_P_IPV6, NULL,
			       UVX_HOOK_FROM_PORT | UVX_HOOK_FROM_WIRE), "uvx_hook_add");
	static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	ok_or_die(uvx_hook_add(dp, 2, FZ_VNI_B, 0, bcast,
			       UVX_HOOK_FROM_PORT | UVX_HOOK_FROM_WIRE), "uvx_hook_add");
}

/* The verdicts for what was punted, by turns: pass, a rewrite (the frame
 * cut to half, its bytes reversed after the Ethernet header), drop, and
 * an injection of the frame to and from its port; then run them. */
static void fuzz_hooks(struct fuzz_dp *f)
{
	static struct uvx_punt p[2 * UVX_HOOK_SLOTS];
	static uint8_t buf[UVX_FRAME_MAX];
	int n = uvx_hook_take(f->dp, p, 2 * UVX_HOOK_SLOTS);
	for (int i = 0; i < n; i++) {
		check(p[i].len >= ETH_HLEN && p[i].len <= UVX_FRAME_MAX, "a punted frame's size");
		switch (i % 4) {
		case 0:
			ok_or_die(uvx_hook_verdict(f->dp, p[i].token, UVX_HOOK_PASS, NULL, 0),
				  "uvx_hook_verdict");
			break;
		case 1: {
			size_t len = p[i].len / 2 < ETH_HLEN ? ETH_HLEN : p[i].len / 2;
			memcpy(buf, p[i].data, ETH_HLEN);
			for (size_t k = ETH_HLEN; k < len; k++)
				buf[k] = p[i].data[len - 1 - k + ETH_HLEN];
			ok_or_die(uvx_hook_verdict(f->dp, p[i].token, UVX_HOOK_PASS, buf, len),
				  "uvx_hook_verdict");
			break;
		}
		case 2:
			ok_or_die(uvx_hook_verdict(f->dp, p[i].token, UVX_HOOK_DROP, NULL, 0),
				  "uvx_hook_verdict");
			break;
		default:
			if (p[i].port >= 0) {
				(void)uvx_hook_inject(f->dp, p[i].port, UVX_HOOK_TO_PORT,
						      p[i].data, p[i].len);
				(void)uvx_hook_inject(f->dp, p[i].port, UVX_HOOK_FROM_PORT,
						      p[i].data, p[i].len);
			}
			ok_or_die(uvx_hook_verdict(f->dp, p[i].token, UVX_HOOK_PASS, NULL, 0),
				  "uvx_hook_verdict");
		}
	}
	uvx_hook_kick(f->dp);
	check(uvx_hook_take(f->dp, p, 1) == 0, "a frame back from a hook is never punted again");
}

void fuzz_dp_reset(struct fuzz_dp *f, unsigned send_mode)
{
	/* Every learned entry is older than "now" minus the ageing time. */
	uvx_fdb_age(f->dp, UINT64_MAX / 2);
	unsigned n = send_mode ? FZ_POOL : 0;
	uvx_dp_set_pool(f->dp, f->pool_fd, f->pool_port, n, send_mode >= 2, 0);
	(void)uvx_dp_take_events(f->dp);
}

/* A TCP segment (Ethernet, then IPv4 or IPv6 without extension headers)
 * whose checksum verifies: what a frame marked DATA_VALID must be. */
static int tcp_csum_ok(const uint8_t *fr, size_t len)
{
	if (len < ETH_HLEN + 40)
		return 0;
	const uint8_t *ip = fr + ETH_HLEN;
	uint16_t proto = rd16(fr + 12);
	size_t l4, end;
	uint64_t ph;
	if (proto == ETH_P_IPV4 && (ip[0] >> 4) == 4 && ip[9] == PROTO_TCP) {
		l4 = ETH_HLEN + (size_t)(ip[0] & 15) * 4;
		end = ETH_HLEN + rd16(ip + 2);
		if (l4 + 20 > end || end > len)
			return 0;
		ph = csum_pseudo4(ip + 12, ip + 16, PROTO_TCP, (uint32_t)(end - l4));
	} else if (proto == ETH_P_IPV6 && (ip[0] >> 4) == 6 && ip[6] == PROTO_TCP) {
		l4 = ETH_HLEN + 40;
		end = l4 + rd16(ip + 4);
		if (l4 + 20 > end || end > len)
			return 0;
		ph = csum_pseudo6(ip + 8, ip + 24, PROTO_TCP, (uint32_t)(end - l4));
	} else {
		return 0;
	}
	return csum_fold16(csum_add(fr + l4, end - l4, ph)) == 0xffff;
}

static uint8_t got[VNET_HLEN + UVX_FRAME_MAX + 1];

/* The rules for what reaches a container:
 *  - a frame has at least an Ethernet header and fits a TAP write;
 *  - with a virtio-net header: a checksum to complete lies within the
 *    frame; a super-frame has an MSS and is one we would accept back
 *    (tso_parse); from the wire, DATA_VALID only on a TCP segment whose
 *    checksum verifies (the container's kernel will not look again). */
static void check_port_frame(const struct fuzz_dp *f, int vnet, const uint8_t *buf,
			     size_t n)
{
	check(n <= VNET_HLEN + UVX_FRAME_MAX, "a frame fits a TAP write");
	if (!vnet) {
		check(n >= ETH_HLEN, "a frame has an Ethernet header");
		return;
	}
	check(n >= VNET_HLEN + ETH_HLEN, "a virtio-net frame has both headers");
	struct vnet_hdr vh;
	memcpy(&vh, buf, VNET_HLEN);
	const uint8_t *fr = buf + VNET_HLEN;
	size_t len = n - VNET_HLEN;
	if (vh.flags & VNET_F_NEEDS_CSUM)
		check((size_t)vh.csum_start + vh.csum_offset + 2 <= len,
		      "the checksum to complete lies within the frame");
	if (f->from_wire && (vh.flags & VNET_F_DATA_VALID))
		check(tcp_csum_ok(fr, len), "DATA_VALID only on a verified TCP segment");
	if (vh.gso_type != VNET_GSO_NONE) {
		struct tso_info ti;
		check(vh.gso_size > 0 && vh.hdr_len <= len, "a super-frame has an MSS");
		check(tso_parse(fr, len, &vh, &ti) == UVX_PASS,
		      "a super-frame we hand out is one we would take");
	}
}

/* What reaches a VTEP: a VXLAN datagram of a VNI that VTEP is in. */
static void check_sent(unsigned vtep, const uint8_t *buf, size_t n)
{
	uint32_t vni = 0, gbp = 0;
	size_t off = 0;
	int r = vxlan_parse_gbp(buf, n, 0, &vni, &off, &gbp);
	if (r != UVX_PASS) {
		fprintf(stderr, "fuzz: VTEP %u got %zu bytes (%s):", vtep, n,
			uvx_drop_reason_name(r));
		for (size_t i = 0; i < n && i < 24; i++)
			fprintf(stderr, " %02x", buf[i]);
		fprintf(stderr, "\n");
	}
	check(r == UVX_PASS, "we send valid VXLAN");
	check(vtep == 2 ? vni == FZ_VNI_C : vni == FZ_VNI_A,
	      "a VTEP gets only its own VNIs' frames");
	/* GBP in VNI 100 only, and only a sending port's group. */
	check(gbp == 0 || (vni == FZ_VNI_A && (gbp == (VXLAN_GBP_G | FZ_GROUP_PORT0) ||
					       gbp == (VXLAN_GBP_G | FZ_GROUP_PORT1))),
	      "the G flag goes with a port's group, where the VNI speaks GBP");
}

/* The capture's records: whole pcap records, each within the snap length
 * and its frame's length, filling exactly what the drain returned. */
static void check_captured(struct uvx_dp *dp)
{
	static uint8_t buf[1 << 16];
	int n;
	while ((n = uvx_capture_drain(dp, buf, sizeof(buf))) > 0) {
		size_t at = 0;
		while (at < (size_t)n) {
			uint32_t rec[UVX_CAPTURE_REC_HLEN / 4];
			check(at + sizeof(rec) <= (size_t)n, "a whole record header");
			memcpy(rec, buf + at, sizeof(rec));
			check(rec[2] <= FZ_CAPTURE_SNAP && rec[2] <= rec[3] && rec[1] < 1000000000u,
			      "a record within the snap length and its frame");
			check(rec[4] < 4 && (rec[5] == FZ_VNI_A || rec[5] == FZ_VNI_B ||
					     rec[5] == FZ_VNI_C) &&
			      ((int32_t)rec[6] == -1 || (int32_t)rec[6] < FZ_PORTS),
			      "a record names its point, one of our VNIs and a port or none");
			at += sizeof(rec) + rec[2];
		}
		check(at == (size_t)n, "records fill the drain exactly");
	}
	check(n == 0, "the capture runs");
}

void fuzz_dp_drain(struct fuzz_dp *f)
{
	check_captured(f->dp);
	fuzz_hooks(f);
	for (unsigned i = 0; i < FZ_PORTS; i++) {
		ssize_t n;
		while ((n = recv(f->peer[i], got, sizeof(got), MSG_DONTWAIT | MSG_TRUNC)) >= 0) {
			check((size_t)n <= sizeof(got), "a frame fits a TAP write");
			check_port_frame(f, f->vnet[i], got, (size_t)n);
		}
	}
	for (unsigned i = 0; i < FZ_VTEPS; i++) {
		ssize_t n;
		while ((n = recv(f->sink[i], got, sizeof(got), MSG_DONTWAIT)) >= 0)
			check_sent(i, got, (size_t)n);
	}
}

void fuzz_fix_frame(uint8_t *fr, size_t len, unsigned fix)
{
	if (len < ETH_HLEN + 40)
		return;
	uint8_t *ip = fr + ETH_HLEN;
	uint16_t proto = rd16(fr + 12);
	size_t l4, end;
	uint8_t l4proto;
	uint64_t ph;
	if (proto == ETH_P_IPV4) {
		size_t ihl = (size_t)(ip[0] & 15) * 4;
		if (ihl < 20 || ETH_HLEN + ihl + 8 > len)
			return;
		if (fix & FZ_FIX_IP) {
			wr16(ip + 2, (uint16_t)(len - ETH_HLEN > 65535 ? 65535 : len - ETH_HLEN));
			ip[10] = ip[11] = 0;
			csum_store(ip + 10, csum_final(csum_add(ip, ihl, 0)));
		}
		l4 = ETH_HLEN + ihl;
		end = ETH_HLEN + rd16(ip + 2);
		l4proto = ip[9];
		if (end > len || end < l4 + 8)
			return;
		ph = csum_pseudo4(ip + 12, ip + 16, l4proto, (uint32_t)(end - l4));
	} else if (proto == ETH_P_IPV6) {
		if (fix & FZ_FIX_IP)
			wr16(ip + 4, (uint16_t)(len - ETH_HLEN - 40 > 65535 ? 65535
						: len - ETH_HLEN - 40));
		l4 = ETH_HLEN + 40;
		end = l4 + rd16(ip + 4);
		l4proto = ip[6];
		if (end > len || end < l4 + 8)
			return;
		ph = csum_pseudo6(ip + 8, ip + 24, l4proto, (uint32_t)(end - l4));
	} else {
		return;
	}
	size_t coff;
	if (l4proto == PROTO_TCP && end >= l4 + 20)
		coff = 16;
	else if (l4proto == PROTO_UDP)
		coff = 6;
	else
		return;
	if (fix & FZ_FIX_PARTIAL) {
		csum_store(fr + l4 + coff, csum_fold16(ph));
	} else if (fix & FZ_FIX_L4) {
		fr[l4 + coff] = fr[l4 + coff + 1] = 0;
		csum_store(fr + l4 + coff, csum_final(csum_add(fr + l4, end - l4, ph)));
	}
}

uint8_t *fuzz_frame_alloc(const uint8_t *data, size_t len)
{
	uint8_t *b = malloc(UVX_HEADROOM + len + (len == 0));
	if (!b)
		die("malloc", ENOMEM);
	memcpy(b + UVX_HEADROOM, data, len);
	return b + UVX_HEADROOM;
}

void fuzz_frame_free(uint8_t *frame)
{
	free(frame - UVX_HEADROOM);
}
