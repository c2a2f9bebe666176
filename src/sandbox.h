/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#ifndef SANDBOX_H
#define SANDBOX_H

#include <sys/types.h>
#include <sys/resource.h>

#include <sched.h>
#include <signal.h>

#include "proto.h"
#include "pyrelayd.h"

/*
 * The only clone(2) the relay program allows: the zygote's fork of a
 * relay, which the parent then reaps (docs/sandbox.md).
 */
#define ZYGOTE_CLONE_FLAGS	(CLONE_PARENT | SIGCHLD)

/*
 * Parent, at start-up and on reload: checks that `user` exists, with a uid
 * and a group other than 0 (root), and that the `chroot` directory exists,
 * is a directory, is owned by root and is not writable by group or others.  Only meaningful when running as root; as
 * an ordinary user it returns 0 without checking.  On error it writes a
 * message naming the keyword ("user \"x\": no such user", "chroot
 * \"/x\": ...") to errbuf and returns -1.  On success fills uid/gid.
 */
int	sandbox_check(const struct config *, uid_t *uid, gid_t *gid,
	    char *errbuf, size_t errlen);

/*
 * Worker, after exec and after it has set up its event base, before it
 * touches any client byte: chroot(setup->chroot) + chdir("/"),
 * setgroups/setresgid/setresuid to setup->uid/gid (when setup->root),
 * rlimits (no new files beyond what the role needs, no processes, no core
 * dumps), PR_SET_NO_NEW_PRIVS, and the role's seccomp program from
 * setup->filter.  setup passed msg_setup_check() on receipt (its row in
 * the role's table), which bounds the program and its pid slot.  Steps
 * that need root are skipped when not root, and one log line says which.
 * fatal() on failure.
 * maxfds: RLIMIT_NOFILE to set (the role's connection bound plus slack).
 */
void	sandbox_enter(enum proc_role role, struct msg_setup *setup,
	    rlim_t maxfds);

/*
 * Loads a program sandbox_filter_build() made (from SETUP), this process's
 * pid put in its tgkill rule; PR_SET_NO_NEW_PRIVS must be set.  fatal() on
 * failure.  sandbox_enter's last step; the tests' fake workers call it.
 */
void	sandbox_load(const char *role, struct sandbox_prog *prog);

/*
 * The zygote, before it loads the relay program: SIGSYS from the
 * program's trap on tgkill turns a relay's own abort() into SIGABRT
 * (sandbox.c).  Relays inherit the handler.  Nothing in sanitizer builds,
 * whose program allows tgkill.
 */
void	sandbox_abort_trap(void);

/*
 * A relay right after the zygote forked it, before it reads anything:
 * its own process group, and RLIMIT_NPROC 0 for good (not in sanitizer
 * builds, as in sandbox_enter).  _exit(127) on failure.
 */
void	sandbox_forked(void);

/*
 * Parent, once at start: compiles the role's allow-list with libseccomp
 * (SCMP_ACT_KILL_PROCESS for anything else, and for a foreign ABI) into
 * prog, which every worker of that role gets in its SETUP.  fatal() on
 * failure.  Only pyrelayd links this (sandbox_filter.c, libseccomp).
 */
void	sandbox_filter_build(enum proc_role role, struct sandbox_prog *prog);

#endif
