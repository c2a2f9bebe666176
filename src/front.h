/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#ifndef FRONT_H
#define FRONT_H

#include <event2/event.h>
#include <openssl/ssl.h>

#include "msg.h"

/* front_tls.c: keeps a TLS session, pumping it to/from the socketpair end */
void	front_pump_start(struct event_base *, SSL *, int tcp, int pair);
/* front.c: live pumps, for the fd budget and logs */
void	front_pump_count(int delta);

/* Runs a front process on its channel to the parent (fd 3); never returns. */
void	front_main(void) __attribute__((__noreturn__));
/* What a front takes from the parent: its table (docs/messages.md). */
extern const struct msg_rules	front_from_parent;

#endif
