/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * The names clients choose, checked alike wherever they arrive: in a
 * front's parser (http.c), in the parent and in a relay (from their
 * channels, proto.c), on the control socket (control.c).  Apart from the
 * parsers, so that a process that must never parse a request head (the
 * parent, a relay) can check a name without linking one.
 */
#ifndef VALID_H
#define VALID_H

#include <stddef.h>

/* 1..64 bytes of [A-Za-z0-9._-] (docs/protocol.md §2) */
int	server_id_valid(const char *s, size_t len);

/* An ACME HTTP-01 token: 1..128 bytes of base64url [A-Za-z0-9_-] (RFC 8555 §8.3) */
int	acme_token_valid(const char *s);

#endif
