/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#ifndef ZYGOTE_MM_H
#define ZYGOTE_MM_H

struct msg;

/*
 * The zygote's address space, made cheap for every relay to copy
 * (zygote_mm.c).  prepare: before the sandbox (it reads /proc), moves the
 * vDSO and the process title into .lbss, unregisters rseq, guards the
 * stack in .lbss.  leave_stack: runs fn on that stack, [stack] unmapped,
 * when the title could move (else on [stack]); never returns.
 * stack_top: where a relay's stack starts (its first frames share a page
 * with the title and the message buffer); msg: that buffer, where the
 * zygote and each relay receive the parent's messages.
 */
void		 zygote_mm_prepare(void);
/*
 * Once set up, before the first fork: the holes glibc's freed blocks left
 * below the image filled, so that its blocks are one mapping.
 */
void		 zygote_mm_fill(void);
void		 zygote_mm_leave_stack(void (*fn)(void))
		    __attribute__((__noreturn__));
void		*zygote_mm_stack_top(void);
struct msg	*zygote_mm_msg(void);

#endif
