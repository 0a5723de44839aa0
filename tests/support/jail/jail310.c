/* jail310: run a command under a seccomp filter that answers as Linux 3.10.
 *
 *   jail310 [--log] -- CMD ARGS...
 *
 * Installs a classic-BPF seccomp filter, then execvp()s CMD; every child
 * inherits the filter.  What the filter refuses, and why each answer is the
 * one 3.10 gave (quotes are from v3.10's sources):
 *
 *  - A syscall number 3.10 did not have: ENOSYS, what 3.10's entry code
 *    returned for nr >= NR_syscalls.  x86_64's table ended at finit_module
 *    (313, Linux 3.8); sched_setattr (314) came in 3.14.  aarch64 (the
 *    asm-generic table) ended at finit_module (273).  Everything later
 *    (getrandom, memfd_create, seccomp, bpf, statx, rseq, clone3,
 *    close_range, pidfd_*, io_uring_*, openat2, futex_waitv, ...) fails.
 *    x32 numbers (nr | 0x40000000) and other ABIs (i386, arm32 compat) fail
 *    too: the jail models one 64-bit ABI.
 *  - setsockopt/getsockopt at SOL_SOCKET with an option >= 46: ENOPROTOOPT.
 *    3.10's last SOL_SOCKET option was SO_SELECT_ERR_QUEUE (45); SO_BUSY_POLL
 *    (46) is 3.11, SO_INCOMING_CPU (49) 3.19, SO_ATTACH_REUSEPORT_CBPF/EBPF
 *    (51/52) 4.5, SO_ZEROCOPY (60) 4.14.  sock_setsockopt()'s and
 *    sock_getsockopt()'s switch ends "default: ret = -ENOPROTOOPT".
 *    SO_REUSEPORT (15, 3.9) is allowed.
 *  - setsockopt/getsockopt at SOL_UDP with an option > UDP_ENCAP (100):
 *    ENOPROTOOPT.  UDP_NO_CHECK6_TX/RX (101/102) are 3.16, UDP_SEGMENT (103)
 *    4.18, UDP_GRO (104) 5.0; udp_lib_setsockopt()/udp_lib_getsockopt() end
 *    "default: ret = -ENOPROTOOPT".  On a non-UDP socket level 17 reaches
 *    ip_setsockopt(), which answers ENOPROTOOPT for any level but SOL_IP,
 *    so the rule is right whatever the socket.
 *  - setsockopt/getsockopt at SOL_TCP with an option >= 25: ENOPROTOOPT
 *    (TCP_TIMESTAMP, 24, was 3.9's last; TCP_NOTSENT_LOWAT, 25, is 3.12).
 *  - setsockopt/getsockopt at SOL_NETLINK with an option > 7: ENOPROTOOPT.
 *    3.10 knew up to NETLINK_TX_RING (7); NETLINK_LISTEN_ALL_NSID (8, 4.2),
 *    NETLINK_CAP_ACK (10, 4.3), NETLINK_EXT_ACK (11, 4.12) and
 *    NETLINK_GET_STRICT_CHK (12, 4.20) came later, and netlink_setsockopt()
 *    ended "default: err = -ENOPROTOOPT".  pyroute2 and iproute2 set these.
 *  - TUN ioctls 3.10 lacked: EINVAL, tun's "default: ret = -EINVAL" in
 *    __tun_chr_ioctl().  TUNSETVNETLE/TUNGETVNETLE (3.19), TUNSETVNETBE/
 *    TUNGETVNETBE (4.0), TUNSETSTEERINGEBPF/TUNSETFILTEREBPF (4.16),
 *    TUNSETCARRIER (5.0), TUNGETDEVNETNS (5.2).
 *  - TUNSETOFFLOAD with a bit 3.10 did not know (anything but CSUM, TSO4,
 *    TSO6, TSO_ECN, UFO, e.g. TUN_F_USO4/USO6 from 6.2): EINVAL.  3.10's
 *    set_offload() cleared the bits it knew and ended "if (arg) return
 *    -EINVAL;", and the argument is a register, so the filter can see it.
 *
 * A seccomp filter sees only the syscall number and its six register
 * arguments, never memory they point to; see README.md for what it cannot
 * show (TUNSETIFF flags, control messages, netlink attributes, ...).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/if_tun.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#define SOL_SOCKET_ 1      /* asm-generic; x86_64 and aarch64 agree */
#define SOL_TCP_ 6
#define SO_FIRST_NEW 46    /* SO_BUSY_POLL, 3.11 */
#define UDP_LAST_OLD 100   /* UDP_ENCAP */
#define TCP_FIRST_NEW 25   /* TCP_NOTSENT_LOWAT, 3.12 */
#define SOL_NETLINK_ 270
#define NETLINK_LAST_OLD 7 /* NETLINK_TX_RING */
/* TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO */
#define TUN_F_310 0x1fu

struct arch {
	const char *name;
	unsigned audit;      /* seccomp_data.arch of the native ABI */
	unsigned first_new;  /* first syscall number 3.10 did not have */
	unsigned x32_bit;    /* 0 if the arch has no x32-style alias ABI */
	unsigned nr_ioctl, nr_setsockopt, nr_getsockopt;
};

#if defined(__x86_64__)
static const struct arch ARCH = { "x86_64", AUDIT_ARCH_X86_64, 314, 0x40000000u,
				  16, 54, 55 };
#elif defined(__aarch64__)
static const struct arch ARCH = { "aarch64", AUDIT_ARCH_AARCH64, 274, 0,
				  29, 208, 209 };
#else
#error "jail310 knows the syscall tables of x86_64 and aarch64 only"
#endif

/* TUN ioctls newer than 3.10, refused with EINVAL. */
static const struct {
	unsigned cmd;
	const char *name;
} NEW_TUN_IOCTLS[] = {
	{ TUNSETVNETLE, "TUNSETVNETLE" },     { TUNGETVNETLE, "TUNGETVNETLE" },
	{ TUNSETVNETBE, "TUNSETVNETBE" },     { TUNGETVNETBE, "TUNGETVNETBE" },
	{ TUNSETSTEERINGEBPF, "TUNSETSTEERINGEBPF" },
	{ TUNSETFILTEREBPF, "TUNSETFILTEREBPF" },
	{ TUNSETCARRIER, "TUNSETCARRIER" },   { TUNGETDEVNETNS, "TUNGETDEVNETNS" },
};
#define N_TUN (sizeof(NEW_TUN_IOCTLS) / sizeof(NEW_TUN_IOCTLS[0]))

/* --- A tiny assembler with forward labels ------------------------------ */

enum label {
	NEXT = -1,  /* fall through: offset 0 */
	L_ALLOW, L_ENOSYS, L_ENOPROTOOPT, L_EINVAL,
	L_SOCKOPT, L_SOL_SOCKET, L_SOL_UDP, L_SOL_TCP, L_SOL_NETLINK, L_IOCTL, L_OFFLOAD,
	L_COUNT
};

#define MAXINS 96
static struct sock_filter prog[MAXINS];
static int jt_label[MAXINS], jf_label[MAXINS];
static int label_at[L_COUNT];
static int n_ins;

static void emit(unsigned short code, unsigned k, int jt, int jf)
{
	if (n_ins == MAXINS) {
		fputs("jail310: filter too long\n", stderr);
		exit(127);
	}
	prog[n_ins] = (struct sock_filter)BPF_STMT(code, k);
	jt_label[n_ins] = jt;
	jf_label[n_ins] = jf;
	n_ins++;
}

static void here(enum label l) { label_at[l] = n_ins; }

static void ld(size_t off) { emit(BPF_LD | BPF_W | BPF_ABS, (unsigned)off, NEXT, NEXT); }
static void ret(unsigned v) { emit(BPF_RET | BPF_K, v, NEXT, NEXT); }
static void jmp(unsigned short op, unsigned k, int jt, int jf)
{
	emit(BPF_JMP | op | BPF_K, k, jt, jf);
}

/* Low and high 32-bit halves of argument i (little-endian: both arches). */
#define ARG_LO(i) (offsetof(struct seccomp_data, args) + 8 * (i))
#define ARG_HI(i) (ARG_LO(i) + 4)

static void resolve(void)
{
	for (int i = 0; i < n_ins; i++) {
		if (BPF_CLASS(prog[i].code) != BPF_JMP)
			continue;
		int t = jt_label[i] == NEXT ? 0 : label_at[jt_label[i]] - (i + 1);
		int f = jf_label[i] == NEXT ? 0 : label_at[jf_label[i]] - (i + 1);
		if (t < 0 || t > 255 || f < 0 || f > 255) {
			fprintf(stderr, "jail310: bad jump at %d\n", i);
			exit(127);
		}
		prog[i].jt = (unsigned char)t;
		prog[i].jf = (unsigned char)f;
	}
}

static void build(void)
{
	ld(offsetof(struct seccomp_data, arch));
	jmp(BPF_JEQ, ARCH.audit, NEXT, L_ENOSYS);
	ld(offsetof(struct seccomp_data, nr));
	if (ARCH.x32_bit)
		jmp(BPF_JSET, ARCH.x32_bit, L_ENOSYS, NEXT);
	jmp(BPF_JGE, ARCH.first_new, L_ENOSYS, NEXT);
	jmp(BPF_JEQ, ARCH.nr_setsockopt, L_SOCKOPT, NEXT);
	jmp(BPF_JEQ, ARCH.nr_getsockopt, L_SOCKOPT, NEXT);
	jmp(BPF_JEQ, ARCH.nr_ioctl, L_IOCTL, L_ALLOW);

	/* level and optname are ints: the kernel reads the low 32 bits. */
	here(L_SOCKOPT);
	ld(ARG_LO(1));
	jmp(BPF_JEQ, SOL_SOCKET_, L_SOL_SOCKET, NEXT);
	jmp(BPF_JEQ, SOL_UDP, L_SOL_UDP, NEXT);
	jmp(BPF_JEQ, SOL_TCP_, L_SOL_TCP, NEXT);
	jmp(BPF_JEQ, SOL_NETLINK_, L_SOL_NETLINK, L_ALLOW);
	here(L_SOL_SOCKET);
	ld(ARG_LO(2));
	jmp(BPF_JGE, SO_FIRST_NEW, L_ENOPROTOOPT, L_ALLOW);
	here(L_SOL_UDP);
	ld(ARG_LO(2));
	jmp(BPF_JGT, UDP_LAST_OLD, L_ENOPROTOOPT, L_ALLOW);
	here(L_SOL_TCP);
	ld(ARG_LO(2));
	jmp(BPF_JGE, TCP_FIRST_NEW, L_ENOPROTOOPT, L_ALLOW);
	here(L_SOL_NETLINK);
	ld(ARG_LO(2));
	jmp(BPF_JGT, NETLINK_LAST_OLD, L_ENOPROTOOPT, L_ALLOW);

	/* The request is an unsigned int.  The filter cannot see which file
	 * the fd is, so these numbers are refused on any fd; they are TUN's
	 * (and macvtap's, which copies them) alone. */
	here(L_IOCTL);
	ld(ARG_LO(1));
	jmp(BPF_JEQ, TUNSETOFFLOAD, L_OFFLOAD, NEXT);
	for (size_t i = 0; i < N_TUN; i++)
		jmp(BPF_JEQ, NEW_TUN_IOCTLS[i].cmd, L_EINVAL, i + 1 < N_TUN ? NEXT : L_ALLOW);
	/* set_offload() took an unsigned long: all 64 bits count. */
	here(L_OFFLOAD);
	ld(ARG_HI(2));
	jmp(BPF_JEQ, 0, NEXT, L_EINVAL);
	ld(ARG_LO(2));
	jmp(BPF_JSET, ~TUN_F_310, L_EINVAL, L_ALLOW);

	here(L_ALLOW);
	ret(SECCOMP_RET_ALLOW);
	here(L_ENOSYS);
	ret(SECCOMP_RET_ERRNO | ENOSYS);
	here(L_ENOPROTOOPT);
	ret(SECCOMP_RET_ERRNO | ENOPROTOOPT);
	here(L_EINVAL);
	ret(SECCOMP_RET_ERRNO | EINVAL);
	resolve();
}

static void print_rules(void)
{
	fprintf(stderr,
		"jail310: answering as Linux 3.10 (%s), %d BPF instructions\n"
		"jail310: ENOSYS for syscall numbers >= %u (added after 3.10), other ABIs%s\n"
		"jail310: ENOPROTOOPT for SOL_UDP options > %d (UDP_NO_CHECK6_*, UDP_SEGMENT, UDP_GRO)\n"
		"jail310: ENOPROTOOPT for SOL_SOCKET options >= %d (SO_BUSY_POLL, SO_INCOMING_CPU, "
		"SO_ATTACH_REUSEPORT_CBPF/EBPF, SO_ZEROCOPY, ...)\n"
		"jail310: ENOPROTOOPT for SOL_TCP options >= %d (TCP_NOTSENT_LOWAT, ...)\n"
		"jail310: ENOPROTOOPT for SOL_NETLINK options > %d (NETLINK_EXT_ACK, "
		"NETLINK_GET_STRICT_CHK, ...)\n"
		"jail310: EINVAL for TUNSETOFFLOAD with bits outside 0x%x (e.g. TUN_F_USO4/USO6)\n",
		ARCH.name, n_ins, ARCH.first_new, ARCH.x32_bit ? " and x32" : "",
		UDP_LAST_OLD, SO_FIRST_NEW, TCP_FIRST_NEW, NETLINK_LAST_OLD, TUN_F_310);
	for (size_t i = 0; i < N_TUN; i++)
		fprintf(stderr, "jail310: EINVAL for ioctl %s\n", NEW_TUN_IOCTLS[i].name);
	fputs("jail310: not modelled (in memory): TUNSETIFF flags, control messages, "
	      "netlink attributes, /proc and /sys files\n", stderr);
}

int main(int argc, char **argv)
{
	int i = 1, log = 0;
	for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (strcmp(argv[i], "--log") == 0) {
			log = 1;
		} else {
			fprintf(stderr, "usage: jail310 [--log] -- CMD ARGS...\n");
			return 127;
		}
	}
	if (i + 1 >= argc) {
		fprintf(stderr, "usage: jail310 [--log] -- CMD ARGS...\n");
		return 127;
	}
	build();
	if (log)
		print_rules();

	struct sock_fprog fprog = { .len = (unsigned short)n_ins, .filter = prog };
	/* prctl(PR_SET_SECCOMP), not seccomp(2): the latter is 3.17, and a
	 * jail inside a jail must still install.  Without CAP_SYS_ADMIN the
	 * kernel insists on no_new_privs; with it (root), leave it off so
	 * setuid and file-capability binaries keep working as on a real 3.10. */
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) != 0) {
		if (errno != EACCES ||
		    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
		    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) != 0) {
			perror("jail310: installing the seccomp filter");
			return 127;
		}
	}
	execvp(argv[i + 1], &argv[i + 1]);
	fprintf(stderr, "jail310: %s: %s\n", argv[i + 1], strerror(errno));
	return 127;
}
