/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Unit tests of src/relay_alloc.c, the relay's allocator: blocks that do
 * not overlap and are aligned, freed blocks reused for their size (so that
 * a relay's memory does not grow with the connections it has seen),
 * calloc's zeroes on a reused block, realloc within and out of the arena,
 * and glibc's blocks once the arena is used up.  The arena is one per
 * process: the suites run in this order, the last one using it up.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "relay_alloc.h"
#include "relay_io.h"
#include "unit.h"

#define NBLOCKS	64

static void
test_reserve_first(void)
{
	unsigned char	*r, *p;

	/* the title's room, before anything is allocated */
	r = ra_reserve(104);
	CU_ASSERT_PTR_NOT_NULL_FATAL(r);
	CU_ASSERT_EQUAL((uintptr_t)r % 16, 0);
	memset(r, 'r', 104);
	p = ra_malloc(32);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	CU_ASSERT(p >= r + 104 || p + 32 <= r);
	ra_free(p);
}

static void
test_blocks_apart(void)
{
	static const size_t	 sizes[] = { 1, 15, 16, 17, 100, 240, 1000,
	    2032, 4000, 4080 };
	unsigned char		*p[sizeof(sizes) / sizeof(sizes[0])];
	size_t			 i, j;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		p[i] = ra_malloc(sizes[i]);
		CU_ASSERT_PTR_NOT_NULL_FATAL(p[i]);
		CU_ASSERT_EQUAL((uintptr_t)p[i] % 16, 0);
		memset(p[i], (int)i + 1, sizes[i]);
	}
	/* each kept its bytes: none overlaps another */
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		for (j = 0; j < sizes[i]; j++)
			if (p[i][j] != (unsigned char)(i + 1))
				break;
		CU_ASSERT_EQUAL(j, sizes[i]);
	}
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		ra_free(p[i]);
	ra_free(NULL);
}

static void
test_reuse(void)
{
	void	*a[NBLOCKS], *b[NBLOCKS];
	int	 i, j, found;

	/* a freed block comes back for its size, not for another */
	a[0] = ra_malloc(100);
	ra_free(a[0]);
	b[0] = ra_malloc(20);
	CU_ASSERT_PTR_NOT_EQUAL(b[0], a[0]);
	b[1] = ra_malloc(100);
	CU_ASSERT_PTR_EQUAL(b[1], a[0]);
	ra_free(b[0]);
	ra_free(b[1]);

	/* connections come and go: the same blocks serve, nothing grows */
	for (i = 0; i < NBLOCKS; i++)
		a[i] = ra_malloc(300);
	for (i = 0; i < NBLOCKS; i++)
		ra_free(a[i]);
	for (i = 0; i < NBLOCKS; i++)
		b[i] = ra_malloc(300);
	for (i = 0; i < NBLOCKS; i++) {
		for (found = 0, j = 0; j < NBLOCKS; j++)
			found |= b[i] == a[j];
		CU_ASSERT(found);
	}
	for (i = 0; i < NBLOCKS; i++)
		ra_free(b[i]);
}

static void
test_calloc(void)
{
	unsigned char	*p, *q;
	size_t		 i;

	p = ra_malloc(200);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	memset(p, 0xff, 200);
	ra_free(p);
	/* the same block, its old bytes gone */
	q = ra_calloc(4, 50);
	CU_ASSERT_PTR_EQUAL(q, p);
	for (i = 0; i < 200 && q[i] == 0; i++)
		;
	CU_ASSERT_EQUAL(i, 200);
	ra_free(q);
	CU_ASSERT_PTR_NULL(ra_calloc(SIZE_MAX / 2, 3));
}

static void
test_realloc(void)
{
	unsigned char	*p, *q, *big;
	size_t		 i;

	p = ra_realloc(NULL, 40);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	memset(p, 'a', 40);
	/* room in its block (48 bytes, 16 of them the header): in place */
	CU_ASSERT_PTR_EQUAL(ra_realloc(p, 10), p);
	q = ra_realloc(p, 1000);
	CU_ASSERT_PTR_NOT_NULL_FATAL(q);
	for (i = 0; i < 10 && q[i] == 'a'; i++)
		;
	CU_ASSERT_EQUAL(i, 10);
	/* past the largest block: glibc's, the bytes carried over */
	memset(q, 'b', 1000);
	big = ra_realloc(q, 100000);
	CU_ASSERT_PTR_NOT_NULL_FATAL(big);
	for (i = 0; i < 1000 && big[i] == 'b'; i++)
		;
	CU_ASSERT_EQUAL(i, 1000);
	memset(big, 'c', 100000);
	big = ra_realloc(big, 200000);
	CU_ASSERT_PTR_NOT_NULL_FATAL(big);
	CU_ASSERT_EQUAL(big[99999], 'c');
	/* glibc's block, freed by glibc (the sanitizer build checks it) */
	ra_free(big);
	/* the 1000-byte block went back to its free list */
	CU_ASSERT_PTR_EQUAL(ra_malloc(1000), q);
	ra_free(q);
}

/*
 * libevent's events, of which a relay has three per connection and four
 * of its own, take blocks their size and a header's: 144 bytes, not the
 * next half step's 192 (a third page in a relay with a binary and a
 * phone).
 */
/*
 * A relay's connection in a block of its size (relay_alloc.c): with the
 * relay's own object, an idle relay's binary and phone fit its first page.
 */
static void
test_conns_packed(void)
{
	unsigned char	*a, *b;
	size_t		 n = sizeof(struct conn);

	CU_ASSERT(n + 16 <= 896);
	a = ra_malloc(n);
	b = ra_malloc(n);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	CU_ASSERT_PTR_NOT_NULL_FATAL(b);
	/* fresh blocks, one after the other in the arena, no wider */
	CU_ASSERT_EQUAL(b - a, 896);
	ra_free(a);
	ra_free(b);
}

static void
test_arena_used_up(void)
{
	enum { N = 200 };
	unsigned char	*p[N];
	int		 i;

	/* 200 blocks of 4 KiB: more than the 256 KiB arena holds */
	for (i = 0; i < N; i++) {
		p[i] = ra_malloc(4000);
		CU_ASSERT_PTR_NOT_NULL_FATAL(p[i]);
		memset(p[i], i, 4000);
	}
	for (i = 0; i < N; i++)
		CU_ASSERT_EQUAL(p[i][3999], (unsigned char)i);
	/* freed, each to whoever gave it */
	for (i = 0; i < N; i++)
		ra_free(p[i]);
	/* no room left to reserve */
	CU_ASSERT_PTR_NULL(ra_reserve(256 * 1024));
}

static CU_TestInfo relay_alloc_tests[] = {
	{ "reserve before any block", test_reserve_first },
	{ "blocks aligned and apart", test_blocks_apart },
	{ "freed blocks reused for their size", test_reuse },
	{ "calloc zeroes a reused block", test_calloc },
	{ "realloc in place, within and out of the arena", test_realloc },
	{ "connections in blocks of their size", test_conns_packed },
	{ "glibc's blocks once the arena is used up", test_arena_used_up },
	CU_TEST_INFO_NULL
};

static CU_SuiteInfo suites[] = {
	{ "relay_alloc", NULL, NULL, NULL, NULL, relay_alloc_tests },
	CU_SUITE_INFO_NULL
};

int
main(void)
{
	return unit_run(suites);
}
