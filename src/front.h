/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#ifndef FRONT_H
#define FRONT_H

/* Runs a front process on its channel to the parent (fd); never returns. */
void	front_main(int fd) __attribute__((__noreturn__));

#endif
