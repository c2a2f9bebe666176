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
#include <sys/mman.h>
#include <sys/syscall.h>

#include <errno.h>
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
#include "relay_io.h"
#include "sandbox.h"

/*
 * A relay's stack, from its first instruction: in .lbss, so that a relay
 * writes only the pages it reaches and has no frame of the zygote's below
 * its own (none of which could then check the old canary).  A page below
 * it is made inaccessible: an overflow faults instead of writing over
 * .bss.
 */
#ifndef PYRELAYD_SANITIZERS
#define ZYGOTE_STACK	(256 * 1024)
static unsigned char	 zstack[ZYGOTE_STACK + 4096]
    __attribute__((__aligned__(4096))) RELAY_LARGE_BSS;
#endif

static struct msg	 zmsg RELAY_LARGE_BSS;
static struct msg_chan	 zchan;
/* SETUP without its program: what each relay starts from */
static struct msg_setup	 zsetup;

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
 * The relay, on zstack: its first frame.  The canary changes before any
 * protected function runs here; this one is not protected, as it holds
 * the old value on entry, and it never returns.
 */
__attribute__((__noreturn__, __noinline__, __no_stack_protector__))
static int
zygote_child(void *arg)
{
	int	fd = (int)(intptr_t)arg;

	zygote_canary();
	sandbox_forked();
	/* the zygote's channel is not the relay's */
	close(zchan.fd);
	log_forked(proc_role_name(ROLE_RELAY));
	relay_forked(fd, &zsetup);
}

/* MSG_FORK: a relay on the channel end that came with it; SPAWNED answers. */
static void
zygote_fork(void *arg, struct msg *m)
{
	struct msg_spawned	rep;

	memset(&rep, 0, sizeof(rep));
	rep.pid = -1;
	if (m->fd_lost)
		rep.error = EMFILE;
	else {
#ifndef PYRELAYD_SANITIZERS
		rep.pid = clone(zygote_child, zstack + sizeof(zstack),
		    ZYGOTE_CLONE_FLAGS, (void *)(intptr_t)m->fd);
#else
		/*
		 * LeakSanitizer scans a process's stack from its stack
		 * pointer to the top of the stack it started on, and all of
		 * its data (a guard page there is fatal): a relay stays on
		 * the zygote's stack in these builds.
		 */
		if ((rep.pid = (pid_t)syscall(SYS_clone, ZYGOTE_CLONE_FLAGS,
		    NULL, NULL, NULL, 0)) == 0)
			zygote_child((void *)(intptr_t)m->fd);
#endif
		if (rep.pid == -1)
			rep.error = errno;
		close(m->fd);
	}
	msg_compose(&zchan, MSG_SPAWNED, m->hdr.id, &rep, sizeof(rep), -1);
	proc_flush_wait(&zchan);
}

/*
 * SIGTERM (the parent stopping): the zygote holds nothing to finish.  A
 * relay has this too until its event loop takes SIGTERM over.
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

void
zygote_main(void)
{
	struct msg_setup	*setup;

	proc_start(&zchan, &zygote_from_parent);
	signal(SIGTERM, zygote_sigterm);
	setup = msg_wait(&zchan, &zmsg, MSG_SETUP, "zygote");
	log_setverbose(setup->verbose);
	memcpy(&zsetup, setup, MSG_SETUP_MIN);
	zsetup.filter.len = 0;
#ifndef PYRELAYD_SANITIZERS
	/* the guard page under the relays' stack */
	if (mprotect(zstack, 4096, PROT_NONE) == -1)
		fatal("zygote: mprotect");
#endif
	/* its own process group: a relay's kill(0, SIGABRT) is its own */
	if (setpgid(0, 0) == -1)
		fatal("zygote: setpgid");
	sandbox_enter(ROLE_ZYGOTE, setup, RELAY_MAXFDS);
	setproctitle("zygote");
	log_debug("event=zygote_ready");
	msg_hello(&zchan, ROLE_ZYGOTE);
	proc_flush_wait(&zchan);
	/* until the parent is gone, or has renewed us (EOF) */
	proc_serve(&zchan, &zmsg, NULL);
}
