/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The relay zygote (docs/pool.md, "The zygote"): pyrelayd-relay as the
 * spawner exec'd it.  It takes the relay's SETUP, enters the relay
 * sandbox once, and then forks a relay for every MSG_FORK the parent
 * sends, on the channel end that rides with it.  So every relay shares
 * one seccomp program (the kernel compiles one, not one per server-id)
 * and none pays an exec and glibc's start-up.  clone(CLONE_PARENT) makes
 * each relay the parent's child, which reaps it as before.  The zygote
 * holds no connection and no secret: its channel, stdio, and the relay
 * ends for the moment of a fork.
 *
 * What a fork copies but must differ per relay is made fresh in the child
 * before it reads anything: the stack protector's canary.  The relay's
 * random numbers come from getrandom(2) (xrandom_buf), which keeps no
 * state in the process to copy.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/syscall.h>

#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "msg.h"
#include "proc.h"
#include "proto.h"
#include "pyrelayd.h"
#include "relay.h"
#include "relay_alloc.h"
#include "relay_io.h"
#include "sandbox.h"
#include "ws.h"
#include "zygote_mm.h"

#define ZYGOTE_MMAP_THRESHOLD	(128 * 1024)

static struct msg_chan	 zchan;
/* SETUP without its program: what each relay starts from */
static struct msg_setup	 zsetup;
/* the whole SETUP, its program included, until the sandbox is entered */
static struct msg_setup	*zsetup_full;

/*
 * A new canary for the stack protector (glibc keeps it in the thread's
 * TCB on x86_64, in __stack_chk_guard on arm64), its low byte zero as
 * glibc makes it, so that a string read cannot run through it.  Only
 * from a function that never returns and has no protected frame below
 * it: zygote_child.
 */
#if defined(__aarch64__)
extern uintptr_t	__stack_chk_guard;
#endif

static inline void
zygote_canary(void)
{
	uintptr_t	c;

	xrandom_buf(&c, sizeof(c));
	c &= ~(uintptr_t)0xff;
#if defined(__x86_64__)
	__asm__ volatile("movq %0, %%fs:0x28" : : "r"(c) : "memory");
#elif defined(__aarch64__)
	__stack_chk_guard = c;
#else
#error "the stack protector's canary: where does this architecture keep it?"
#endif
}

/*
 * The relay's first frame, at the top of the stack (zygote_mm.c): the
 * canary changes before any protected function runs here; this one is
 * not protected, as it holds the old value on entry, and it never
 * returns.  Global, for the jump to it.
 */
__attribute__((__noreturn__, __noinline__, __no_stack_protector__, __used__))
void	zygote_relay_start(int);
void
zygote_relay_start(int fd)
{
	zygote_canary();
	/* its lines and its HELLO name it, not the zygote */
	log_newpid();
	sandbox_forked();
	/* the zygote's channel is not the relay's */
	close(zchan.fd);
	relay_forked(fd, &zsetup, &zchan.peer, zygote_mm_msg());
}

/*
 * Just forked, on the zygote's frames: the relay starts again from the
 * top of the stack, so that its first frames are in the page the zygote
 * wrote its own in (its hot page, zygote_mm.c), not in one more.  No
 * frame below is ever returned to.
 */
__attribute__((__noreturn__))
static void
zygote_child(int fd)
{
#if !defined(PYRELAYD_SANITIZERS) && defined(__x86_64__)
	__asm__ volatile("mov %0, %%rsp\n\t"
	    "xor %%ebp, %%ebp\n\t"
	    "call zygote_relay_start\n\t"
	    "ud2"
	    : : "r"(zygote_mm_stack_top()), "D"(fd) : "memory");
	__builtin_unreachable();
#elif !defined(PYRELAYD_SANITIZERS) && defined(__aarch64__)
	__asm__ volatile("mov sp, %0\n\t"
	    "mov x29, #0\n\t"
	    "mov w0, %w1\n\t"
	    "bl zygote_relay_start\n\t"
	    "brk #0"
	    : : "r"(zygote_mm_stack_top()), "r"(fd) : "memory", "x0");
	__builtin_unreachable();
#else
	/* sanitizer builds: their runtime knows the stack the process began on */
	zygote_relay_start(fd);
#endif
}

/*
 * MSG_FORK: a relay on the channel end that came with it; SPAWNED answers,
 * in the batch arg (zygote_serve).
 */
static void
zygote_fork(void *arg, struct msg *m)
{
	struct msg_batch	*b = arg;
	struct msg_spawned	 rep;

	memset(&rep, 0, sizeof(rep));
	rep.pid = -1;
	if (m->fd_lost)
		rep.error = EMFILE;
	else {
		/*
		 * A fork with no stack of its own: the child goes on with a
		 * copy of this one, and leaves it at once (zygote_child).
		 */
		if ((rep.pid = (pid_t)syscall(SYS_clone, ZYGOTE_CLONE_FLAGS,
		    NULL, NULL, NULL, 0)) == 0)
			zygote_child(m->fd);
		if (rep.pid == -1)
			rep.error = errno;
		close(m->fd);
	}
	msg_batch_add(&zchan, b, MSG_SPAWNED, m->hdr.id, &rep, sizeof(rep),
	    -1);
}

/*
 * The parent's requests until it is gone, or has renewed us (EOF): every
 * FORK waiting is forked before the answers go, together (a pool refill
 * asks for its relays at once: parent_pool.c), so that the parent is
 * woken once for them, not once a relay.  SIGTERM is taken only in the
 * wait (ppoll), so that every relay forked has been answered for: one
 * whose pid the parent never heard would outlive its stop.  The relays
 * start with it blocked, until their loop takes it in its own wait.
 */
static void
zygote_serve(void)
{
	struct msg		*m = zygote_mm_msg();
	struct msg_batch	 b;
	struct pollfd		 pfd;
	sigset_t		 term, waitmask;
	int			 rv;

	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &term, &waitmask) == -1)
		fatal("zygote: sigprocmask");
	sigdelset(&waitmask, SIGTERM);
	for (;;) {
		msg_batch_init(&b);
		while ((rv = msg_recv(&zchan, m)) == 1)
			msg_handle(m, &b);
		msg_batch_send(&zchan, &b);
		proc_flush_wait(&zchan);
		if (rv == -1)
			exit(0);
		if (rv == -2)
			fatalx("zygote: bad message from parent: %s",
			    zchan.errstr);
		pfd.fd = zchan.fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		if (ppoll(&pfd, 1, NULL, &waitmask) == -1 && errno != EINTR)
			fatal("zygote: ppoll");
	}
}

/*
 * SIGTERM (the parent stopping): the zygote holds nothing to finish once
 * it has answered every FORK (zygote_serve takes SIGTERM only in its
 * wait).  A relay inherits this with SIGTERM blocked, until its loop
 * takes SIGTERM over (rloop_init).
 */
static void
zygote_sigterm(int sig)
{
	_exit(0);
}

/* What the zygote takes from the parent (docs/messages.md). */
static const struct msg_rule zygote_rows[] = {
	MSG_RULE(SETUP, MSG_FD_NONE, NULL),
	MSG_RULE(FORK, MSG_FD_REQUIRED, zygote_fork),
	MSG_RULE(VERBOSE, MSG_FD_NONE, proc_verbose),
};
const struct msg_rules zygote_from_parent =
    MSG_RULES(ROLE_PARENT, ROLE_ZYGOTE, zygote_rows);

/* Off [stack] (zygote_mm.c): the sandbox, HELLO, then the requests. */
static void
zygote_run(void)
{
	sandbox_enter(ROLE_ZYGOTE, zsetup_full, RELAY_MAXFDS);
	/*
	 * Set up: glibc's blocks from here on (a relay's over the arena's
	 * largest) come from a heap again, not a mapping each (SPAWN_NO_BRK,
	 * spawn.c); 128 KiB is glibc's default threshold.
	 */
	(void)mallopt(M_MMAP_THRESHOLD, ZYGOTE_MMAP_THRESHOLD);
	zygote_mm_fill();
	proc_title("zygote");
	log_debug("event=zygote_ready");
	msg_hello(&zchan, ROLE_ZYGOTE);
	/* the SPAWNEDs of a round: one packet (msg.h MSG_PACK) */
	zchan.pack_out = 1;
	proc_flush_wait(&zchan);
	/*
	 * From here on the zygote's own lines (few: only its errors) read
	 * relay[pid] too, so that no relay writes the log's state.
	 */
	log_forked(proc_role_name(ROLE_RELAY));
	zygote_serve();
}

void
zygote_main(void)
{
	proc_start(&zchan, &zygote_from_parent);
	signal(SIGTERM, zygote_sigterm);
	zsetup_full = msg_wait(&zchan, zygote_mm_msg(), MSG_SETUP, "zygote");
	log_setverbose(zsetup_full->verbose);
	memcpy(&zsetup, zsetup_full, MSG_SETUP_MIN);
	zsetup.filter.len = 0;
	/* its own process group: a relay's kill(0, SIGABRT) is its own */
	if (setpgid(0, 0) == -1)
		fatal("zygote: setpgid");
	/* before the chroot: it reads /proc/self */
	zygote_mm_prepare();
	/* a relay's objects in its own arena: the codec's buffers too */
	ws_set_allocator(ra_realloc, ra_free);
	zygote_mm_leave_stack(zygote_run);
}
