/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#ifndef RELAY_H
#define RELAY_H

/* Runs a relay process on its channel to the parent (fd); never returns. */
void	relay_main(int fd) __attribute__((__noreturn__));

#endif
