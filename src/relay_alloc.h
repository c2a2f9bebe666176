/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

#ifndef RELAY_ALLOC_H
#define RELAY_ALLOC_H

#include <stddef.h>

/*
 * The relay's allocator (relay_alloc.c): malloc's interface, its small
 * blocks packed in an arena of the relay's own, larger ones glibc's.
 * What one of them allocated, only it frees.
 */
void	*ra_malloc(size_t);
void	*ra_calloc(size_t, size_t);
void	*ra_realloc(void *, size_t);
void	 ra_free(void *);
/*
 * n bytes for good, at the start of the arena (call before anything is
 * allocated): they share the page every relay writes the allocator's
 * state in, and they are anonymous memory.  NULL if there is no room.
 */
void	*ra_reserve(size_t);

#endif
