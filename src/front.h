/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#ifndef FRONT_H
#define FRONT_H

#include <event2/event.h>
#include <openssl/ssl.h>

/* front_tls.c: keeps a TLS session, pumping it to/from the socketpair end */
void	front_pump_start(struct event_base *, SSL *, int tcp, int pair);
/* front.c: live pumps, for the fd budget and logs */
void	front_pump_count(int delta);

/* Runs a front process on its channel to the parent (fd); never returns. */
void	front_main(int fd) __attribute__((__noreturn__));

#endif
