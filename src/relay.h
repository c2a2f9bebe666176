/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#ifndef RELAY_H
#define RELAY_H

#include "msg.h"

/* Runs a relay process on its channel to the parent (fd 3); never returns. */
void	relay_main(void) __attribute__((__noreturn__));
/* What a relay takes from the parent: its table (docs/messages.md). */
extern const struct msg_rules	relay_from_parent;

#endif
