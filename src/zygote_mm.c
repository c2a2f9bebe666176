/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The zygote's address space, made cheap to copy (docs/relay-executable.md,
 * "The relay's pages").  Every relay is a fork of it: each mapping it has
 * costs every relay page tables (a page per 2 MiB of address space used,
 * and per 1 GiB and 512 GiB above that), and each page it writes after the
 * fork a copy.  The static PIE image and its .bss sit together; the
 * stack, the vDSO and the argument strings the kernel placed elsewhere
 * would cost page-table pages more in every relay.  (There is no heap: the
 * zygote starts with brk refused, and glibc maps its blocks beside the
 * image, SPAWN_NO_BRK in proto.h.)  So, once, before the sandbox:
 *
 *   - the vDSO moves into .lbss (mremap; glibc's pointers to its
 *     functions follow, written with their RELRO page made writable
 *     for the moment), where the image's page tables already are;
 *   - the process title moves into .lbss (PR_SET_MM_MAP: the kernel reads
 *     /proc/PID/cmdline from there), next to the relay allocator's state;
 *   - the zygote leaves [stack] for the stack in .lbss its relays start
 *     on too, and unmaps it;
 *   - glibc's rseq area is unregistered: the kernel would write it after
 *     every fork, a copied page in zygote and relay alike.
 *
 * Each step that cannot be taken leaves that mapping where it is: the
 * relays then cost more, and work the same.  Sanitizer builds take none
 * (their runtime scans the stack it knows, and all of the data).
 */
#include "config.h"

#include <sys/types.h>
#include <sys/mman.h>
#include <sys/auxv.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <linux/prctl.h>

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#ifdef HAVE_SYS_RSEQ_H
#include <sys/rseq.h>
#endif

#include "msg.h"
#include "proc.h"
#include "proto.h"
#include "pyrelayd.h"
#include "relay_alloc.h"
#include "relay_io.h"
#include "zygote_mm.h"

#define ZMM_PAGE	4096
#define ZMM_STACK_PAGES	63		/* under the hot page: 252 KiB */
#define ZMM_HOT_FRAMES	3600		/* the frames in the hot page */
#define ZMM_TITLE	104		/* "pyrelayd: relay <64> (binary, 16 phones)" */
#define ZMM_VDSO_ROOM	(64 * 1024)	/* [vvar], [vvar_vclock], [vdso]: 32 KiB on 6.18 */

/*
 * The stack and the message buffer, zygote's and relay's: each relay
 * writes the first frames of its stack and the messages it reads, and
 * the zygote writes its own frames and its requests between two forks,
 * which leaves each relay the copy it forked with.  Both in one page,
 * the hot page: frames grow down from its offset 3600 (a relay that
 * logs a line goes 3.5 KiB deep, vsnprintf's frames most of it), above
 * them the start of the message buffer, which holds an ASSIGN (456
 * bytes) or a CONN_ATTACH without early bytes (394).  Deeper frames go
 * to the pages below, and below them all is the vDSO, moved to the top of
 * the room under the stack (read-only and executable: an overflow faults
 * there instead of writing over .bss), or where it could not be moved, a
 * page made inaccessible.  One mapping fewer than a guard page of its own
 * between the vDSO's room and the stack, in the zygote and every relay.
 * The title is in the page every relay writes its allocator's state in
 * (relay_alloc.c).
 */
struct zmm_hot {
	unsigned char	vdso[ZMM_VDSO_ROOM];
	unsigned char	stack[ZMM_STACK_PAGES * ZMM_PAGE + ZMM_HOT_FRAMES];
	struct msg	msg;
};

static struct zmm_hot	zhot __attribute__((__aligned__(ZMM_PAGE)))
    RELAY_LARGE_BSS;
#ifndef PYRELAYD_SANITIZERS
#ifdef HAVE_GLIBC_VDSO_POINTERS
/*
 * glibc's own, in a static link only: weak, so that a dynamic program
 * linking this file (a unit test) finds them missing and moves nothing.
 */
extern void	*_dl_vdso_clock_gettime64 __attribute__((__weak__));
extern void	*_dl_vdso_gettimeofday __attribute__((__weak__));
extern void	*_dl_vdso_time __attribute__((__weak__));
extern void	*_dl_vdso_getcpu __attribute__((__weak__));
extern void	*_dl_vdso_clock_getres_time64 __attribute__((__weak__));
#endif
/*
 * glibc's pointers into [stack] (the auxiliary vector, argv, the stack's
 * end: getauxval() and debuggers read them), in a static link only.
 */
extern void	*_dl_auxv __attribute__((__weak__));
extern char	**_dl_argv __attribute__((__weak__));
extern char	**__libc_argv __attribute__((__weak__));
extern void	*__libc_stack_end __attribute__((__weak__));
static unsigned long	zauxv_vec[2 * 64];
#endif

struct zmm_range {
	unsigned long	lo, hi;
};
#define ZMM_VDSO_MAPS	4
static struct zmm_range	zstack_old;
/* the hot page holds the frames and an ASSIGN */
typedef char zmm_hot_fits[(offsetof(struct zmm_hot, msg.body) +
    sizeof(struct msg_assign) - 1) /
    ZMM_PAGE == offsetof(struct zmm_hot, msg) / ZMM_PAGE ? 1 : -1];
static struct zmm_range	zvdso_old[ZMM_VDSO_MAPS];
static int		nvdso_old;
static int		title_moved;
static char		*ztitle;		/* ZMM_TITLE bytes, in the arena */
static long		 vdso_delta;	/* where the vDSO moved, from where it was; 0: it did not */
static void		(*zcontinue)(void);

/*
 * /proc/self/maps, whole and NUL-terminated, in a buffer of its own (there
 * is no /proc after chroot); NULL if it cannot be read.  With read(2): a
 * FILE would be one more of glibc's blocks below the image, and a hole
 * once freed (zmm_find_glibc).
 */
static char *
zmm_maps(void)
{
	static char	 buf[16384];
	ssize_t		 r;
	size_t		 len = 0;
	int		 fd;

	if ((fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC)) == -1)
		return NULL;
	while (len < sizeof(buf) - 1 &&
	    (r = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += (size_t)r;
	close(fd);
	buf[len] = '\0';
	return buf;
}

/* [stack] and the vDSO's mappings. */
static void
zmm_read_maps(void)
{
	char		*p, *nl, *name, *maps;
	struct zmm_range r;

	if ((maps = zmm_maps()) == NULL)
		return;
	for (p = maps; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
		*nl = '\0';
		if (sscanf(p, "%lx-%lx", &r.lo, &r.hi) == 2 &&
		    (name = strchr(p, '[')) != NULL) {
			if (strncmp(name, "[stack]", 7) == 0)
				zstack_old = r;
			else if ((strncmp(name, "[vvar", 5) == 0 ||
			    strncmp(name, "[vdso]", 6) == 0) &&
			    nvdso_old < ZMM_VDSO_MAPS)
				zvdso_old[nvdso_old++] = r;
		}
	}
}

#ifndef PYRELAYD_SANITIZERS
static struct zmm_range	zrelro;

/* The executable's RELRO range, page-aligned as glibc protected it. */
static int
zmm_find_relro(struct dl_phdr_info *info, size_t size, void *arg)
{
	size_t	i;

	(void)size;
	(void)arg;
	for (i = 0; i < info->dlpi_phnum; i++)
		if (info->dlpi_phdr[i].p_type == PT_GNU_RELRO) {
			zrelro.lo = (info->dlpi_addr +
			    info->dlpi_phdr[i].p_vaddr) & ~(ZMM_PAGE - 1UL);
			zrelro.hi = (info->dlpi_addr +
			    info->dlpi_phdr[i].p_vaddr +
			    info->dlpi_phdr[i].p_memsz) & ~(ZMM_PAGE - 1UL);
		}
	return 1;	/* the first object is the executable */
}

/*
 * Writes v to *slot, one of glibc's pointers.  A static PIE keeps some
 * in RELRO, read-only once the program started: the page is made
 * writable for the write only, so that the zygote and its relays keep
 * RELRO (the kernel merges the mapping back whole).
 */
static void
zmm_poke(void **slot, void *v)
{
	unsigned long	a = (unsigned long)slot, pg = a & ~(ZMM_PAGE - 1UL);

	if (zrelro.hi == 0)
		(void)dl_iterate_phdr(zmm_find_relro, NULL);
	if (a < zrelro.lo || a >= zrelro.hi) {
		*slot = v;
		return;
	}
	if (mprotect((void *)pg, ZMM_PAGE, PROT_READ | PROT_WRITE) == -1)
		fatal("zygote: mprotect of RELRO");
	*slot = v;
	if (mprotect((void *)pg, ZMM_PAGE, PROT_READ) == -1)
		fatal("zygote: mprotect of RELRO");
}

#endif

#if !defined(PYRELAYD_SANITIZERS) && defined(HAVE_GLIBC_VDSO_POINTERS)
/*
 * The vDSO's mappings, moved together (its code finds its data at fixed
 * offsets from itself) to the top of zhot.vdso, under the stack; glibc's
 * pointers to its functions move with them.
 */
static void
zmm_move_vdso(void)
{
	void		**fn[] = {
		&_dl_vdso_clock_gettime64, &_dl_vdso_gettimeofday,
		&_dl_vdso_time, &_dl_vdso_getcpu,
		&_dl_vdso_clock_getres_time64,
	};
	unsigned long	 lo = ~0UL, hi = 0, to;
	long		 delta;
	size_t		 i;
	int		 j;

	for (i = 0; i < sizeof(fn) / sizeof(fn[0]); i++)
		if (fn[i] == NULL)
			return;
	for (j = 0; j < nvdso_old; j++) {
		if (zvdso_old[j].lo < lo)
			lo = zvdso_old[j].lo;
		if (zvdso_old[j].hi > hi)
			hi = zvdso_old[j].hi;
	}
	if (nvdso_old == 0 || hi - lo > sizeof(zhot.vdso))
		return;
	to = (unsigned long)zhot.vdso + sizeof(zhot.vdso) - (hi - lo);
	delta = (long)(to - lo);
	for (j = 0; j < nvdso_old; j++) {
		if (mremap((void *)zvdso_old[j].lo,
		    zvdso_old[j].hi - zvdso_old[j].lo,
		    zvdso_old[j].hi - zvdso_old[j].lo,
		    MREMAP_MAYMOVE | MREMAP_FIXED,
		    (void *)(zvdso_old[j].lo + delta)) == MAP_FAILED) {
			/* the first one failing changes nothing yet */
			if (j == 0)
				return;
			fatal("zygote: mremap of the vDSO");
		}
	}
	for (i = 0; i < sizeof(fn) / sizeof(fn[0]); i++)
		if (*fn[i] != NULL)
			zmm_poke(fn[i], (char *)*fn[i] + delta);
	vdso_delta = delta;
}
#endif

#ifndef PYRELAYD_SANITIZERS
/*
 * An auxiliary vector entry, for when [stack] is gone: the vDSO where it
 * moved, the strings and random bytes that were on [stack] in zauxv.
 */
static unsigned long
zmm_auxv_value(unsigned long type, unsigned long v)
{
	static char	 zauxv[256];
	static size_t	 used;
	size_t		 n;

	if (type == AT_SYSINFO_EHDR && v != 0)
		return v + (unsigned long)vdso_delta;
	if (type != AT_EXECFN && type != AT_PLATFORM &&
	    type != AT_BASE_PLATFORM && type != AT_RANDOM)
		return v;
	if (v < zstack_old.lo || v >= zstack_old.hi)
		return v;
	n = type == AT_RANDOM ? 16 : strnlen((char *)v, zstack_old.hi - v) + 1;
	if (n > sizeof(zauxv) - used)
		return 0;
	memcpy(zauxv + used, (void *)v, n);
	used += n;
	return (unsigned long)(zauxv + used - n);
}

/*
 * The process title in ztitle: the kernel reads /proc/PID/cmdline
 * from [arg_start, arg_end), and up to the first NUL when the last byte
 * is not one (as after setproctitle).  It must be anonymous memory.
 * PR_SET_MM_MAP needs no privilege, but every field, read from
 * /proc/self/stat.
 */
static int
zmm_move_title(void)
{
	static char		*argv[] = { (char *)"pyrelayd", NULL };
	struct prctl_mm_map	 m;
	unsigned long long	 v[53];
	unsigned long		*auxv = zauxv_vec;
	char			 buf[1024], *p, *tok, *save;
	FILE			*f;
	size_t			 na, i;
	int			 n;

	if ((ztitle = ra_reserve(ZMM_TITLE)) == NULL ||
	    (f = fopen("/proc/self/stat", "re")) == NULL)
		return -1;
	p = fgets(buf, sizeof(buf), f);
	fclose(f);
	if (p == NULL || (p = strrchr(buf, ')')) == NULL)
		return -1;
	/* fields from the third (the state) on: v[3] is field 3 */
	memset(v, 0, sizeof(v));
	for (n = 3, tok = strtok_r(p + 1, " ", &save); tok != NULL && n < 53;
	    n++, tok = strtok_r(NULL, " ", &save))
		v[n] = strtoull(tok, NULL, 10);
	if (n < 52)
		return -1;
	memset(&m, 0, sizeof(m));
	m.start_code = v[26];
	m.end_code = v[27];
	/* [stack] goes: where the stack now starts (a debugger reads there) */
	m.start_stack = (unsigned long)&zhot.msg;
	m.start_data = v[45];
	m.end_data = v[46];
	m.start_brk = v[47];
	/*
	 * Under SPAWN_NO_BRK (proto.h) brk fails, and glibc's idea of the
	 * break is the call's error value, -ENOMEM: the break is where the
	 * kernel began it.
	 */
	m.brk = (unsigned long)sbrk(0);
	if (m.brk < m.start_brk || m.brk >= (unsigned long)-4095)
		m.brk = m.start_brk;
	m.arg_start = (unsigned long)ztitle;
	m.arg_end = m.env_start = m.env_end =
	    (unsigned long)ztitle + ZMM_TITLE;
	m.exe_fd = (uint32_t)-1;
	/*
	 * The auxiliary vector /proc/PID/auxv shows, where a debugger finds
	 * the vDSO and the executable's name: the kernel's copy, with the
	 * vDSO where it is now, and what pointed into [stack] copied out.
	 */
	if ((f = fopen("/proc/self/auxv", "re")) != NULL) {
		na = fread(auxv, sizeof(auxv[0]),
		    sizeof(zauxv_vec) / sizeof(zauxv_vec[0]), f);
		fclose(f);
		for (i = 0; i + 1 < na && auxv[i] != AT_NULL; i += 2)
			auxv[i + 1] = zmm_auxv_value(auxv[i], auxv[i + 1]);
		if (i + 1 < na) {
			m.auxv = (__u64 *)auxv;
			m.auxv_size = (uint32_t)((i + 2) * sizeof(auxv[0]));
		}
	}
	memset(ztitle, 0, ZMM_TITLE);
	ztitle[ZMM_TITLE - 1] = ' ';
	if (prctl(PR_SET_MM, PR_SET_MM_MAP, &m, sizeof(m), 0) == -1)
		return -1;
	proc_title_buffer(ztitle, ZMM_TITLE - 1);
	/* glibc's own view, now that [stack] will go */
	if (&_dl_auxv != NULL && m.auxv != NULL)
		zmm_poke(&_dl_auxv, zauxv_vec);
	if (&_dl_argv != NULL)
		zmm_poke((void **)&_dl_argv, argv);
	if (&__libc_argv != NULL)
		zmm_poke((void **)&__libc_argv, argv);
	if (&__libc_stack_end != NULL)
		zmm_poke(&__libc_stack_end, &zhot.msg);
	return 0;
}
#endif

#ifndef PYRELAYD_SANITIZERS
/*
 * glibc's blocks, each a mapping of its own below the image (SPAWN_NO_BRK
 * in proto.h), leave holes where it freed some (the FILEs that read
 * /proc, the time zone's): each hole splits them into one more mapping,
 * which every relay copies (a vm_area_struct and its anon_vma links, about
 * 360 bytes of the kernel's).  zmm_glibc_lo is the lowest of them right
 * under the image once the zygote has read /proc; zygote_mm_fill() fills
 * the holes from a little below it up to the image with untouched pages,
 * which cost nothing until written, and the kernel merges the mappings
 * into one.
 */
extern const char	__ehdr_start[];
static unsigned long	zmm_glibc_lo;
#define ZMM_FILL_BELOW	(64 * 1024)	/* blocks made after the look */

static void
zmm_find_glibc(void)
{
	unsigned long	 lo, hi, below = (unsigned long)__ehdr_start, best;
	char		*buf, *p, *nl, *perm;

	if ((buf = zmm_maps()) == NULL)
		return;
	/* down from the image: anonymous read-write, each within 1 MiB */
	do {
		best = 0;
		for (p = buf; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
			*nl = '\0';
			perm = strchr(p, ' ');
			if (sscanf(p, "%lx-%lx", &lo, &hi) == 2 && hi <= below &&
			    below - hi <= (1UL << 20) && lo > best &&
			    perm != NULL &&
			    strncmp(perm, " rw-p 00000000 00:00 0", 22) == 0 &&
			    strspn(perm + 22, " ") == strlen(perm + 22))
				best = lo;
			*nl = '\n';
		}
		if (best != 0)
			below = zmm_glibc_lo = best;
	} while (best != 0);
}

#if defined(HAVE_SYS_RSEQ_H) && defined(RSEQ_SIG)
/*
 * glibc's rseq area unregistered: the kernel writes it (the CPU the
 * thread runs on) whenever the thread comes back from being scheduled,
 * in the zygote and in every relay, a copied page each where it is not
 * on a page the process writes anyway.  The kernel wants the length it
 * was registered with: glibc 2.35 and 2.36 say __rseq_size 20 but
 * register the whole struct rseq, 32 bytes (strace: rseq(..., 0x20, 0,
 * ...)); so the one, then the other.
 */
static void
zmm_rseq_off(void)
{
	void	*area = (char *)__builtin_thread_pointer() + __rseq_offset;

	if (__rseq_size == 0)
		return;
	if (syscall(SYS_rseq, area, __rseq_size, RSEQ_FLAG_UNREGISTER,
	    RSEQ_SIG) == 0)
		return;
	if (__rseq_size != sizeof(struct rseq) && syscall(SYS_rseq, area,
	    sizeof(struct rseq), RSEQ_FLAG_UNREGISTER, RSEQ_SIG) == 0)
		return;
	log_debug("event=zygote_rseq_kept error=\"%s\"", strerror(errno));
}
#endif

void
zygote_mm_fill(void)
{
	unsigned long	a, top = (unsigned long)__ehdr_start;

	if (zmm_glibc_lo == 0 || zmm_glibc_lo < ZMM_FILL_BELOW)
		return;
	for (a = zmm_glibc_lo - ZMM_FILL_BELOW; a < top; a += ZMM_PAGE)
		(void)mmap((void *)a, ZMM_PAGE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
}
#else
void
zygote_mm_fill(void)
{
}
#endif

/*
 * The vDSO's data pages ([vvar], [vvar_vclock]) are mappings of raw page
 * frames, whose entries a fork copies when the zygote has them: read the
 * clock once here, and no relay takes a fault for them at its first
 * clock_gettime (docs/relay-executable.md, "Hot code together").  The
 * vDSO's code is not such a mapping; each relay still faults it once.
 */
#ifndef PYRELAYD_SANITIZERS
static void
zmm_touch_vvar(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
}
#endif

void
zygote_mm_prepare(void)
{
#ifndef PYRELAYD_SANITIZERS
	zmm_read_maps();
#ifdef HAVE_GLIBC_VDSO_POINTERS
	zmm_move_vdso();
#endif
	title_moved = zmm_move_title() == 0;
	if (title_moved) {
		/* glibc's names of the program pointed into [stack] */
		program_invocation_name = "pyrelayd";
		program_invocation_short_name = "pyrelayd";
	}
#if defined(HAVE_SYS_RSEQ_H) && defined(RSEQ_SIG)
	zmm_rseq_off();
#endif
	zmm_touch_vvar();
	/* under the stack, the vDSO; else a page no one may touch */
	if (vdso_delta == 0 && mprotect(zhot.vdso + sizeof(zhot.vdso) - ZMM_PAGE,
	    ZMM_PAGE, PROT_NONE) == -1)
		fatal("zygote: mprotect");
	zmm_find_glibc();
#endif
}

/* On the hot stack: [stack] is no longer used by anyone. */
static void
zmm_off_stack(void)
{
	if (zstack_old.hi > zstack_old.lo)
		(void)munmap((void *)zstack_old.lo,
		    zstack_old.hi - zstack_old.lo);
	zcontinue();
	_exit(1);
}

void
zygote_mm_leave_stack(void (*fn)(void))
{
#ifndef PYRELAYD_SANITIZERS
	static ucontext_t	here, there;

	/* argv and the environment's strings live on in [stack] until the title moved */
	if (title_moved && zstack_old.hi > zstack_old.lo) {
		zcontinue = fn;
		if (getcontext(&there) == -1)
			fatal("zygote: getcontext");
		/* the stack ends where the message buffer begins */
		there.uc_stack.ss_sp = zhot.stack;
		there.uc_stack.ss_size = sizeof(zhot.stack);
		there.uc_link = NULL;
		makecontext(&there, zmm_off_stack, 0);
		if (swapcontext(&here, &there) == -1)
			fatal("zygote: swapcontext");
	}
#endif
	fn();
	_exit(1);
}

void *
zygote_mm_stack_top(void)
{
	return &zhot.msg;
}

struct msg *
zygote_mm_msg(void)
{
	return &zhot.msg;
}
