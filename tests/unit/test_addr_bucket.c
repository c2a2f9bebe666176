/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Unit tests of src/addr_bucket.c: the admission bucket of a client
 * address is the IPv4 address, the IPv6 /64, and for an IPv4-mapped IPv6
 * address the IPv4 address it maps.
 */
#include "config.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "addr_bucket.h"
#include "unit.h"

/* text -> sockaddr_storage, with a port and (IPv6) flow and scope set */
static struct sockaddr_storage
sa(const char *text, unsigned int port)
{
	struct sockaddr_storage	 ss;
	struct sockaddr_in	*sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0x5a, sizeof(ss));
	if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		return ss;
	}
	memset(&ss, 0x5a, sizeof(ss));
	if (inet_pton(AF_INET6, text, &sin6->sin6_addr) != 1)
		abort();
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	sin6->sin6_flowinfo = htonl(port);
	sin6->sin6_scope_id = port;
	return ss;
}

static struct addr_bucket
bucket(const char *text, unsigned int port)
{
	struct sockaddr_storage	ss = sa(text, port);
	struct addr_bucket	b;

	memset(&b, 0xa5, sizeof(b));
	addr_bucket_of(&ss, &b);
	return b;
}

static int
same(const char *a, const char *b)
{
	struct addr_bucket	ba = bucket(a, 1000), bb = bucket(b, 2000);

	/* the whole key, not only what cmp looks at: it is a tree key */
	return addr_bucket_cmp(&ba, &bb) == 0 &&
	    memcmp(&ba, &bb, sizeof(ba)) == 0;
}

static const char *
str(const char *text)
{
	static char		buf[64];
	struct addr_bucket	b = bucket(text, 1);

	return addr_bucket_str(&b, buf, sizeof(buf));
}

static void
test_ipv4_per_address(void)
{
	CU_ASSERT(same("192.0.2.7", "192.0.2.7"));
	CU_ASSERT(!same("192.0.2.7", "192.0.2.8"));
	CU_ASSERT(!same("127.0.0.1", "127.0.0.2"));
	CU_ASSERT(!same("10.0.0.1", "11.0.0.1"));
	CU_ASSERT_STRING_EQUAL(str("192.0.2.7"), "192.0.2.7/32");
}

static void
test_ipv6_per_64(void)
{
	/* one /64: any interface id, any port */
	CU_ASSERT(same("2001:db8:1:2::1", "2001:db8:1:2::2"));
	CU_ASSERT(same("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"));
	CU_ASSERT(same("2001:db8:1:2:a:b:c:d", "2001:db8:1:2::"));
	CU_ASSERT(same("::1", "::2"));
	/* the next /64, and a change in any bit of the prefix */
	CU_ASSERT(!same("2001:db8:1:2::1", "2001:db8:1:3::1"));
	/* bit 64 is past the prefix, bit 63 is its last */
	CU_ASSERT(same("2001:db8:1:2::", "2001:db8:1:2:8000::"));
	CU_ASSERT(!same("2001:db8:1:2::", "2001:db8:1:3::"));
	CU_ASSERT(!same("2001:db8::1", "2001:db9::1"));
	CU_ASSERT(!same("2001:db8:0:0:1::", "2001:db8:0:1::"));
	CU_ASSERT_STRING_EQUAL(str("2001:db8:1:2:a:b:c:d"),
	    "2001:db8:1:2::/64");
	CU_ASSERT_STRING_EQUAL(str("::1"), "::/64");
}

static void
test_mapped_is_ipv4(void)
{
	struct addr_bucket	b = bucket("::ffff:192.0.2.7", 1);

	CU_ASSERT_EQUAL(b.family, AF_INET);
	CU_ASSERT(same("::ffff:192.0.2.7", "192.0.2.7"));
	/* so two mapped addresses are two buckets, not one /64 */
	CU_ASSERT(!same("::ffff:192.0.2.7", "::ffff:192.0.2.8"));
	CU_ASSERT(!same("::ffff:192.0.2.7", "192.0.2.8"));
	CU_ASSERT_STRING_EQUAL(str("::ffff:192.0.2.7"), "192.0.2.7/32");
	/* the IPv4-compatible form (::a.b.c.d) is an IPv6 address */
	CU_ASSERT_EQUAL(bucket("::192.0.2.7", 1).family, AF_INET6);
}

static void
test_families_apart(void)
{
	struct sockaddr_storage	ss;
	struct addr_bucket	b;
	char			buf[16];

	/* 0.0.0.0 and :: have the same zero bytes, not the same bucket */
	CU_ASSERT(!same("0.0.0.0", "::"));
	memset(&ss, 0x77, sizeof(ss));
	ss.ss_family = AF_UNIX;
	memset(&b, 0xa5, sizeof(b));
	addr_bucket_of(&ss, &b);
	CU_ASSERT_EQUAL(b.family, 0);
	CU_ASSERT(memcmp(b.addr, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16) == 0);
	CU_ASSERT_STRING_EQUAL(addr_bucket_str(&b, buf, sizeof(buf)), "-");
	/* cut, but terminated */
	b = bucket("2001:db8:1:2::1", 1);
	CU_ASSERT_EQUAL(strlen(addr_bucket_str(&b, buf, 8)), 7);
}

static CU_TestInfo addr_bucket_tests[] = {
	{ "IPv4: one bucket per address", test_ipv4_per_address },
	{ "IPv6: one bucket per /64", test_ipv6_per_64 },
	{ "IPv4-mapped IPv6 is its IPv4 address", test_mapped_is_ipv4 },
	{ "families apart", test_families_apart },
	CU_TEST_INFO_NULL
};

static CU_SuiteInfo suites[] = {
	{ "addr_bucket", NULL, NULL, NULL, NULL, addr_bucket_tests },
	CU_SUITE_INFO_NULL
};

int
main(void)
{
	return unit_run(suites);
}
