/* Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING. */

/*
 * Unit tests for src/json.c: RFC 8259 validation and compaction, UTF-8
 * validation, and the routing envelope of docs/protocol.md §4.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include "json.h"
#include "unit.h"

#define U(s)	((const unsigned char *)(s))
#define DEPTH_LIMIT	65536	/* JSON_MAX_DEPTH in json.c */

/* compacts in[0..len) and checks the result; want NULL means invalid */
static void
compact_check(const char *in, size_t len, const char *want, int line)
{
	unsigned char	*out;
	ssize_t		 r;
	char		 msg[256];

	/* exact-size heap buffer, so ASan sees any write past len */
	if ((out = malloc(len ? len : 1)) == NULL)
		abort();
	r = json_compact(U(in), len, out);
	if (want == NULL) {
		snprintf(msg, sizeof(msg), "line %d: accepted", line);
		CU_assertImplementation(r == -1, line, msg, __FILE__, "",
		    CU_FALSE);
	} else {
		snprintf(msg, sizeof(msg), "line %d: got %zd", line, r);
		CU_assertImplementation(r >= 0 &&
		    (size_t)r == strlen(want) &&
		    memcmp(out, want, r) == 0, line, msg, __FILE__, "",
		    CU_FALSE);
	}
	free(out);
}

#define GOOD(in, want)	compact_check((in), sizeof(in) - 1, (want), __LINE__)
#define SAME(in)	compact_check((in), sizeof(in) - 1, (in), __LINE__)
#define BAD(in)		compact_check((in), sizeof(in) - 1, NULL, __LINE__)

static void
test_compact_values(void)
{
	SAME("0");
	SAME("-0");
	SAME("1");
	SAME("-1");
	SAME("123456789012345678901234567890");
	SAME("1.5");
	SAME("-0.0e0");
	SAME("1e10");
	SAME("1E+10");
	SAME("1e-10");
	SAME("12.34E-056");
	SAME("true");
	SAME("false");
	SAME("null");
	SAME("\"\"");
	SAME("\"abc\"");
	SAME("[]");
	SAME("{}");
	SAME("[1,2,3]");
	SAME("{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"e\"}}");
	SAME("[[[[[]]]],{},[{}]]");
	SAME("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\uD83D\\uDE00\"");
	/* an escaped lone surrogate is allowed by the RFC 8259 grammar */
	SAME("\"\\ud800\"");
	SAME("\"\\udc00\\ud800\"");
	/* raw UTF-8 in strings */
	SAME("\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
	SAME("\"\x7f\"");
}

static void
test_compact_whitespace(void)
{
	GOOD(" 1 ", "1");
	GOOD("\t\n\r 1\t\n\r ", "1");
	GOOD("[ 1 , 2 ]", "[1,2]");
	GOOD("[\t1\n,\r2 ]", "[1,2]");
	GOOD(" { \"a\" : 1 , \"b\" :\n[ ] ,\"c\":{ } } ",
	    "{\"a\":1,\"b\":[],\"c\":{}}");
	/* whitespace inside strings is kept */
	BAD("[ \" a \\t b \" , \"\t\" ]");	/* raw tab in a string */
	GOOD("[ \" a  b \" , \" \" ]", "[\" a  b \",\" \"]");
	GOOD("{ \"k e y\" : \" v a l \" }", "{\"k e y\":\" v a l \"}");
	/* numbers untouched */
	GOOD("[ -0.5e+3 , 10 ]", "[-0.5e+3,10]");
	GOOD("\r\n{\r\n  \"x\": [\r\n    1.25E-7\r\n  ]\r\n}\r\n",
	    "{\"x\":[1.25E-7]}");
	GOOD("[ [ [ ] ] ]", "[[[]]]");
	GOOD("{ }", "{}");
	GOOD("[ ]", "[]");
}

static void
test_compact_in_place(void)
{
	static const char	 want[] = "{\"a\":[1,2],\"b\":\" x \"}";
	char			 buf[] =
	    " { \"a\" :  [ 1 ,\t2 ] , \"b\" : \" x \" } ";
	ssize_t			 r;

	r = json_compact(U(buf), strlen(buf), (unsigned char *)buf);
	CU_ASSERT_EQUAL(r, (ssize_t)strlen(want));
	CU_ASSERT(r >= 0 && memcmp(buf, want, strlen(want)) == 0);
}

static void
test_invalid_json(void)
{
	BAD("");
	BAD(" ");
	BAD(" \t\r\n");
	/* numbers */
	BAD("01");
	BAD("-01");
	BAD("00");
	BAD("+1");
	BAD(".5");
	BAD("1.");
	BAD("1.e5");
	BAD("-");
	BAD("-a");
	BAD("1e");
	BAD("1e+");
	BAD("1E-");
	BAD("0x10");
	BAD("NaN");
	BAD("Infinity");
	BAD("-Infinity");
	BAD("1 2");
	BAD("[01]");
	BAD("[1.]");
	BAD("[-]");
	/* literals */
	BAD("tru");
	BAD("True");
	BAD("nul");
	BAD("nulll");
	BAD("falsey");
	BAD("undefined");
	/* strings */
	BAD("'a'");
	BAD("\"abc");
	BAD("\"");
	BAD("\"\\");
	BAD("\"\\\"");
	BAD("\"a\nb\"");
	BAD("\"\x01\"");
	BAD("\"\x1f\"");
	BAD("\"\\x41\"");
	BAD("\"\\a\"");
	BAD("\"\\'\"");
	BAD("\"\\U0041\"");
	BAD("\"\\u12\"");
	BAD("\"\\u12");
	BAD("\"\\u123g\"");
	BAD("\"\\u\"");
	/* structure */
	BAD("[1,]");
	BAD("[,1]");
	BAD("[1,,2]");
	BAD("[1 2]");
	BAD("{\"a\":1,}");
	BAD("{\"a\"}");
	BAD("{\"a\":}");
	BAD("{\"a\" 1}");
	BAD("{,}");
	BAD("{1:2}");
	BAD("{a:1}");
	BAD("{'a':1}");
	BAD("{\"a\":1 \"b\":2}");
	BAD("[");
	BAD("]");
	BAD("{");
	BAD("}");
	BAD("[}");
	BAD("{]");
	BAD("[[]");
	BAD("[]]");
	BAD("{\"a\":[}]");
	BAD("{\"a\":{]}");
	BAD("[{\"a\":1]}");
	/* exactly one value */
	BAD("1 1");
	BAD("{}{}");
	BAD("[] []");
	BAD("\"a\"\"b\"");
	BAD("null,");
	BAD("[1] x");
	/* other whitespace */
	BAD("\f1");
	BAD("\v1");
	BAD("[1,\f2]");
	BAD("\xc2\xa0" "1");
	/* byte order mark */
	BAD("\xef\xbb\xbf" "1");
	BAD("\xef\xbb\xbf" "{}");
	/* embedded NUL outside a string */
	BAD("1\0");
	BAD("[1,\0 2]");
	BAD("\"a\0b\"");
	/* comments */
	BAD("[1 /* c */]");
	BAD("// c\n1");
}

static void
test_invalid_utf8_in_json(void)
{
	SAME("\"\xf0\x9f\x98\x80\"");	/* U+1F600 */
	SAME("\"\xf4\x8f\xbf\xbf\"");	/* U+10FFFF */
	SAME("\"\xed\x9f\xbf\"");	/* U+D7FF */
	SAME("\"\xee\x80\x80\"");	/* U+E000 */
	SAME("\"\xc2\x80\"");
	SAME("\"\xe0\xa0\x80\"");
	SAME("\"\xf0\x90\x80\x80\"");
	BAD("\"\xc0\x80\"");		/* overlong NUL */
	BAD("\"\xc1\xbf\"");
	BAD("\"\xe0\x80\x80\"");
	BAD("\"\xe0\x9f\xbf\"");
	BAD("\"\xf0\x80\x80\x80\"");
	BAD("\"\xf0\x8f\xbf\xbf\"");
	BAD("\"\xed\xa0\x80\"");	/* U+D800 */
	BAD("\"\xed\xbf\xbf\"");	/* U+DFFF */
	BAD("\"\xf4\x90\x80\x80\"");	/* U+110000 */
	BAD("\"\xf5\x80\x80\x80\"");
	BAD("\"\xff\"");
	BAD("\"\x80\"");
	BAD("\"\xbf\"");
	BAD("\"\xc3\"");
	BAD("\"\xe2\x82\"");
	BAD("\"\xf0\x9f\x98\"");
	BAD("\"\xc3\x28\"");
	BAD("\"\xe2\x28\xa1\"");
	BAD("\"\xf0\x9f\x28\x80\"");
	BAD("\"\xc3");
	BAD("\"\xf0\x9f\x98");
	BAD("\xc3\xa9");		/* raw non-ASCII outside a string */
	/* long ASCII runs around bad bytes, through the 8-byte path */
	SAME("\"0123456789abcdef0123456789abcdef\xc3\xa9" "0123456789\"");
	BAD("\"0123456789abcdef0123456789abcdef\xed\xa0\x80" "0123456789\"");
	BAD("\"0123456789abcdef0123456789\x01" "abcdef0123456789\"");
	SAME("\"0123456789abcdef0123\\\"456789abcdef0123\\\\456789\"");
}

static void
test_nesting_limit(void)
{
	size_t		 n;
	char		*buf;

	if ((buf = malloc(4 * DEPTH_LIMIT)) == NULL)
		abort();

	/* arrays, at the limit and one past */
	memset(buf, '[', DEPTH_LIMIT);
	memset(buf + DEPTH_LIMIT, ']', DEPTH_LIMIT);
	buf[2 * DEPTH_LIMIT] = '\0';
	compact_check(buf, 2 * DEPTH_LIMIT, buf, __LINE__);
	memset(buf, '[', DEPTH_LIMIT + 1);
	memset(buf + DEPTH_LIMIT + 1, ']', DEPTH_LIMIT + 1);
	compact_check(buf, 2 * (DEPTH_LIMIT + 1), NULL, __LINE__);

	/* objects and arrays mixed: {"":[{"":[...]}]} */
	for (n = 0; n < DEPTH_LIMIT / 2; n++)
		memcpy(buf + 5 * n, "{\"\":[", 5);
	for (n = 0; n < DEPTH_LIMIT / 2; n++)
		memcpy(buf + 5 * (DEPTH_LIMIT / 2) + 2 * n, "]}", 2);
	buf[5 * (DEPTH_LIMIT / 2) + DEPTH_LIMIT] = '\0';
	compact_check(buf, strlen(buf), buf, __LINE__);
	/* mismatched innermost close: ...[}} */
	buf[5 * (DEPTH_LIMIT / 2)] = '}';
	compact_check(buf, strlen(buf), NULL, __LINE__);

	/* deep but unterminated */
	memset(buf, '[', DEPTH_LIMIT);
	compact_check(buf, DEPTH_LIMIT, NULL, __LINE__);
	free(buf);
}

static void
test_utf8_valid(void)
{
	static const char	 big[] =
	    "0123456789abcdef0123456789abcdef0123456789abcdef";
	char			 buf[128];

	CU_ASSERT(utf8_valid(U(""), 0));
	/* an empty fragmented text message has no buffer (fuzz_ws, UBSan) */
	CU_ASSERT(utf8_valid(NULL, 0));
	CU_ASSERT(utf8_valid(U("hello"), 5));
	CU_ASSERT(utf8_valid(U("\0"), 1));
	CU_ASSERT(utf8_valid(U("\x7f"), 1));
	CU_ASSERT(utf8_valid(U("\xc2\x80"), 2));
	CU_ASSERT(utf8_valid(U("\xdf\xbf"), 2));
	CU_ASSERT(utf8_valid(U("\xe0\xa0\x80"), 3));
	CU_ASSERT(utf8_valid(U("\xed\x9f\xbf"), 3));
	CU_ASSERT(utf8_valid(U("\xee\x80\x80"), 3));
	CU_ASSERT(utf8_valid(U("\xef\xbf\xbf"), 3));
	CU_ASSERT(utf8_valid(U("\xf0\x90\x80\x80"), 4));
	CU_ASSERT(utf8_valid(U("\xf0\x9f\x98\x80"), 4));	/* emoji */
	CU_ASSERT(utf8_valid(U("\xf4\x8f\xbf\xbf"), 4));
	CU_ASSERT(utf8_valid(U("\xef\xbb\xbf"), 3));		/* BOM */

	CU_ASSERT(!utf8_valid(U("\x80"), 1));
	CU_ASSERT(!utf8_valid(U("\xbf"), 1));
	CU_ASSERT(!utf8_valid(U("\xc0\x80"), 2));		/* overlong */
	CU_ASSERT(!utf8_valid(U("\xc1\xbf"), 2));
	CU_ASSERT(!utf8_valid(U("\xe0\x80\x80"), 3));
	CU_ASSERT(!utf8_valid(U("\xe0\x9f\xbf"), 3));
	CU_ASSERT(!utf8_valid(U("\xf0\x80\x80\x80"), 4));
	CU_ASSERT(!utf8_valid(U("\xf0\x8f\xbf\xbf"), 4));
	CU_ASSERT(!utf8_valid(U("\xed\xa0\x80"), 3));		/* U+D800 */
	CU_ASSERT(!utf8_valid(U("\xed\xbf\xbf"), 3));		/* U+DFFF */
	CU_ASSERT(!utf8_valid(U("\xf4\x90\x80\x80"), 4));	/* > U+10FFFF */
	CU_ASSERT(!utf8_valid(U("\xf5\x80\x80\x80"), 4));
	CU_ASSERT(!utf8_valid(U("\xf8\x88\x80\x80\x80"), 5));
	CU_ASSERT(!utf8_valid(U("\xfe"), 1));
	CU_ASSERT(!utf8_valid(U("\xff"), 1));
	/* truncated sequences */
	CU_ASSERT(!utf8_valid(U("\xc3"), 1));
	CU_ASSERT(!utf8_valid(U("\xe2\x82"), 2));
	CU_ASSERT(!utf8_valid(U("\xf0\x9f\x98"), 3));
	CU_ASSERT(!utf8_valid(U("\xf0\x9f\x98\x80"), 3));	/* len cuts */
	CU_ASSERT(!utf8_valid(U("\xc3\x28"), 2));
	CU_ASSERT(!utf8_valid(U("\xe2\x28\xa1"), 3));
	CU_ASSERT(!utf8_valid(U("\xe2\x82\x28"), 3));
	CU_ASSERT(!utf8_valid(U("\xf0\x28\x8c\xbc"), 4));
	CU_ASSERT(!utf8_valid(U("\xf0\x9f\x98\x28"), 4));

	/* the 8-byte path: a bad byte at every offset of a long buffer */
	for (size_t i = 0; i < 48; i++) {
		memcpy(buf, big, 48);
		CU_ASSERT(utf8_valid(U(buf), 48));
		buf[i] = (char)0x80;
		CU_ASSERT(!utf8_valid(U(buf), 48));
		memcpy(buf, big, 48);
		if (i + 4 <= 48) {
			memcpy(buf + i, "\xf0\x9f\x98\x80", 4);
			CU_ASSERT(utf8_valid(U(buf), 48));
			CU_ASSERT(!utf8_valid(U(buf), i + 3));
		}
	}
}

/* envelopes */

static enum envelope_result
env_parse(const char *s, size_t len, struct envelope *env)
{
	unsigned char	*copy;
	enum envelope_result r;

	/* exact-size heap copy, so ASan sees any read past len */
	if ((copy = malloc(len ? len : 1)) == NULL)
		abort();
	memcpy(copy, s, len);
	r = envelope_parse(copy, len, env);
	/* spans must lie in the input; turn them into offsets into s */
	if (env->frame != NULL) {
		CU_ASSERT(env->frame >= copy &&
		    env->frame + env->frame_len <= copy + len);
		env->frame = U(s) + (env->frame - copy);
	}
	if (env->push_wake != NULL) {
		CU_ASSERT(env->push_wake >= copy &&
		    env->push_wake + env->push_wake_len <= copy + len);
		env->push_wake = U(s) + (env->push_wake - copy);
	}
	free(copy);
	return r;
}

#define ENV(s, e)	env_parse((s), sizeof(s) - 1, (e))

static int
span_is(const unsigned char *p, size_t len, const char *want)
{
	return p != NULL && len == strlen(want) && memcmp(p, want, len) == 0;
}

static void
test_envelope_ok(void)
{
	struct envelope	 e;

	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"client-a-0123abcd\","
	    "\"frame\":{\"x\":1}}", &e), ENVELOPE_OK);
	CU_ASSERT(e.has_conn_id);
	CU_ASSERT_STRING_EQUAL(e.conn_id, "client-a-0123abcd");
	CU_ASSERT_EQUAL(e.conn_id_len, 17);
	CU_ASSERT(!e.conn_id_too_long);
	CU_ASSERT(e.has_frame);
	CU_ASSERT(!e.frame_is_null);
	CU_ASSERT(span_is(e.frame, e.frame_len, "{\"x\":1}"));
	CU_ASSERT(!e.has_close_code);
	CU_ASSERT(!e.has_push_wake);

	/* a string frame is delivered with its quotes */
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\","
	    "\"frame\":\"hi \\\"there\\\"\"}", &e), ENVELOPE_OK);
	CU_ASSERT(span_is(e.frame, e.frame_len, "\"hi \\\"there\\\"\""));

	/* inner whitespace preserved verbatim, outer whitespace not */
	CU_ASSERT_EQUAL(ENV(" {\n \"frame\" :\t{ \"a\" : [ 1 ,\n2 ] }  ,"
	    " \"conn_id\" : \"c\" } \r\n", &e), ENVELOPE_OK);
	CU_ASSERT(span_is(e.frame, e.frame_len, "{ \"a\" : [ 1 ,\n2 ] }"));
	CU_ASSERT_STRING_EQUAL(e.conn_id, "c");

	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"frame\":null}", &e),
	    ENVELOPE_OK);
	CU_ASSERT(e.has_frame);
	CU_ASSERT(e.frame_is_null);
	CU_ASSERT(span_is(e.frame, e.frame_len, "null"));

	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"frame\":-1.5e3}", &e),
	    ENVELOPE_OK);
	CU_ASSERT(span_is(e.frame, e.frame_len, "-1.5e3"));
	CU_ASSERT(!e.frame_is_null);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"frame\":false}", &e),
	    ENVELOPE_OK);
	CU_ASSERT(span_is(e.frame, e.frame_len, "false"));
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"frame\":[ ]}", &e),
	    ENVELOPE_OK);
	CU_ASSERT(span_is(e.frame, e.frame_len, "[ ]"));

	/* close_code alone, with a frame, with a null frame, and zero */
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"close_code\":4000}", &e),
	    ENVELOPE_OK);
	CU_ASSERT(e.has_close_code);
	CU_ASSERT_EQUAL(e.close_code, 4000);
	CU_ASSERT(!e.has_frame);
	CU_ASSERT_EQUAL(ENV("{\"close_code\":1000,\"frame\":\"bye\","
	    "\"conn_id\":\"c\"}", &e), ENVELOPE_OK);
	CU_ASSERT_EQUAL(e.close_code, 1000);
	CU_ASSERT(span_is(e.frame, e.frame_len, "\"bye\""));
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"frame\":null,"
	    "\"close_code\":1000}", &e), ENVELOPE_OK);
	CU_ASSERT(e.frame_is_null);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"close_code\":0}", &e),
	    ENVELOPE_OK);
	CU_ASSERT(e.has_close_code);
	CU_ASSERT_EQUAL(e.close_code, 0);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"close_code\":65535}", &e),
	    ENVELOPE_OK);
	CU_ASSERT_EQUAL(e.close_code, 65535);

	/* unknown keys ignored, whatever their values */
	CU_ASSERT_EQUAL(ENV("{\"x\":[1,{\"conn_id\":5}],\"conn_id\":\"c\","
	    "\"y\":null,\"frame\":1,\"Frame\":{},\"conn_id \":7}", &e),
	    ENVELOPE_OK);
	CU_ASSERT_STRING_EQUAL(e.conn_id, "c");
	CU_ASSERT(span_is(e.frame, e.frame_len, "1"));

	/* push_wake without conn_id is a push request */
	CU_ASSERT_EQUAL(ENV("{\"push_wake\":{\"platform\":\"fcm\","
	    "\"token\":\"abc\"}}", &e), ENVELOPE_OK);
	CU_ASSERT(e.has_push_wake);
	CU_ASSERT(!e.has_conn_id);
	CU_ASSERT(span_is(e.push_wake, e.push_wake_len,
	    "{\"platform\":\"fcm\",\"token\":\"abc\"}"));
	CU_ASSERT_EQUAL(ENV("{\"push_wake\" : \"x\" }", &e), ENVELOPE_OK);
	CU_ASSERT(span_is(e.push_wake, e.push_wake_len, "\"x\""));
	/* and with an empty or a null conn_id (docs/protocol.md §6, issue 15) */
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"\",\"push_wake\":{\"a\":1}}", &e),
	    ENVELOPE_OK);
	CU_ASSERT(e.has_push_wake && !e.has_conn_id);
	CU_ASSERT(span_is(e.push_wake, e.push_wake_len, "{\"a\":1}"));
	CU_ASSERT_EQUAL(ENV("{\"push_wake\":{},\"conn_id\":null,"
	    "\"frame\":1,\"close_code\":\"x\"}", &e), ENVELOPE_OK);
	CU_ASSERT(e.has_push_wake && !e.has_conn_id);
	/* a conn_id that names a phone makes it a frame, push_wake ignored */
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"frame\":1,\"push_wake\":{}}",
	    &e), ENVELOPE_OK);
	CU_ASSERT(e.has_conn_id);
	/* without push_wake, an empty conn_id is one that names no phone */
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"\",\"frame\":1}", &e),
	    ENVELOPE_OK);
	CU_ASSERT(e.has_conn_id && e.conn_id_len == 0);
}

/* The object and array walks the push process reads replies with. */
static void
test_walk(void)
{
	struct json_members	 m, a;
	const unsigned char	*v;
	char			 key[8], str[8];
	size_t			 klen, vlen;
	uint64_t		 n;
	static const char	 doc[] = " { \"a\" : [1, {\"b\":2}] ,"
	    "\"a_very_long_key\":\"x\\u00e9\", \"n\": 3599 } ";

	CU_ASSERT_EQUAL(json_object_begin(&m, U(doc), sizeof(doc) - 1), 0);
	CU_ASSERT_EQUAL(json_object_next(&m, key, sizeof(key), &klen, &v,
	    &vlen), 1);
	CU_ASSERT_STRING_EQUAL(key, "a");
	CU_ASSERT(span_is(v, vlen, "[1, {\"b\":2}]"));
	CU_ASSERT_EQUAL(json_array_begin(&a, v, vlen), 0);
	CU_ASSERT_EQUAL(json_array_next(&a, &v, &vlen), 1);
	CU_ASSERT(span_is(v, vlen, "1"));
	CU_ASSERT_EQUAL(json_array_next(&a, &v, &vlen), 1);
	CU_ASSERT(span_is(v, vlen, "{\"b\":2}"));
	CU_ASSERT_EQUAL(json_array_next(&a, &v, &vlen), 0);
	CU_ASSERT_EQUAL(json_object_next(&m, key, sizeof(key), &klen, &v,
	    &vlen), 1);
	CU_ASSERT_EQUAL(klen, (size_t)-1);	/* did not fit */
	CU_ASSERT_EQUAL(json_string_value(v, vlen, str, sizeof(str)), 3);
	CU_ASSERT_STRING_EQUAL(str, "x\xc3\xa9");
	CU_ASSERT_EQUAL(json_string_value(v, vlen, str, 3), (size_t)-1);
	CU_ASSERT_EQUAL(json_object_next(&m, key, sizeof(key), &klen, &v,
	    &vlen), 1);
	CU_ASSERT_EQUAL(json_uint_value(v, vlen, 86400, &n), 0);
	CU_ASSERT_EQUAL(n, 3599);
	CU_ASSERT_EQUAL(json_uint_value(v, vlen, 3598, &n), -1);
	CU_ASSERT_EQUAL(json_string_value(v, vlen, str, sizeof(str)),
	    (size_t)-1);
	CU_ASSERT_EQUAL(json_object_next(&m, key, sizeof(key), &klen, &v,
	    &vlen), 0);

	CU_ASSERT_EQUAL(json_object_begin(&m, U("[]"), 2), -1);
	CU_ASSERT_EQUAL(json_object_begin(&m, U("{}x"), 3), -1);
	CU_ASSERT_EQUAL(json_object_begin(&m, U("{\"a\":}"), 6), -1);
	CU_ASSERT_EQUAL(json_object_begin(&m, U("{\"a\":\"\xff\"}"), 8), -1);
	CU_ASSERT_EQUAL(json_object_begin(&m, U("{}"), 2), 0);
	CU_ASSERT_EQUAL(json_object_next(&m, key, sizeof(key), &klen, &v,
	    &vlen), 0);
	CU_ASSERT_EQUAL(json_array_begin(&a, U("{}"), 2), -1);
	CU_ASSERT_EQUAL(json_array_begin(&a, U(" [ ] "), 5), 0);
	CU_ASSERT_EQUAL(json_array_next(&a, &v, &vlen), 0);
	CU_ASSERT_EQUAL(json_uint_value(U("18446744073709551616"), 20,
	    UINT64_MAX, &n), -1);
	CU_ASSERT_EQUAL(json_uint_value(U("18446744073709551615"), 20,
	    UINT64_MAX, &n), 0);
	CU_ASSERT_EQUAL(json_uint_value(U("-1"), 2, 10, &n), -1);
	CU_ASSERT_EQUAL(json_uint_value(U(""), 0, 10, &n), -1);

	CU_ASSERT_EQUAL(json_escape("a\"\\\n\x1f\xc3\xa9", (char *)str,
	    sizeof(str)), (size_t)-1);
	{
		char	out[64];

		CU_ASSERT_EQUAL(json_escape("a\"\\\n\x1f\xc3\xa9", out,
		    sizeof(out)), 19);
		CU_ASSERT_STRING_EQUAL(out, "a\\\"\\\\\\u000a\\u001f\xc3\xa9");
	}
}

/* the push_wake of an envelope, read as the relay reads it */
static const char *
push_parse(const char *s, char *token, size_t size)
{
	struct envelope	 e;
	unsigned char	*copy;
	const char	*why;
	size_t		 len = strlen(s);

	if ((copy = malloc(len)) == NULL)
		abort();
	memcpy(copy, s, len);
	CU_ASSERT_EQUAL(envelope_parse(copy, len, &e), ENVELOPE_OK);
	CU_ASSERT(e.has_push_wake && !e.has_conn_id);
	memset(token, 'Z', size);
	why = push_wake_parse(e.push_wake, e.push_wake_len, token, size);
	free(copy);
	return why;
}

static void
test_push_wake(void)
{
	char	 tok[16];

	CU_ASSERT_PTR_NULL(push_parse("{\"push_wake\":{\"platform\":\"fcm\","
	    "\"token\":\"abc:DEF-1\"}}", tok, sizeof(tok)));
	CU_ASSERT_STRING_EQUAL(tok, "abc:DEF-1");
	/* order, whitespace, unknown keys, escapes, the last duplicate */
	CU_ASSERT_PTR_NULL(push_parse("{ \"push_wake\" : { \"token\" : "
	    "\"a\\u0062\\/c\" , \"x\":[{}], \"platform\":\"f\\u0063m\" } }",
	    tok, sizeof(tok)));
	CU_ASSERT_STRING_EQUAL(tok, "ab/c");
	CU_ASSERT_PTR_NULL(push_parse("{\"push_wake\":{\"token\":\"old\","
	    "\"platform\":\"apns\",\"token\":\"new\",\"platform\":\"fcm\"}}",
	    tok, sizeof(tok)));
	CU_ASSERT_STRING_EQUAL(tok, "new");
	/* the longest that fits: size - 1 bytes */
	CU_ASSERT_PTR_NULL(push_parse("{\"push_wake\":{\"platform\":\"fcm\","
	    "\"token\":\"0123456789abcde\"}}", tok, sizeof(tok)));
	CU_ASSERT_STRING_EQUAL(tok, "0123456789abcde");

	CU_ASSERT_STRING_EQUAL(push_parse("{\"push_wake\":{\"platform\":"
	    "\"fcm\",\"token\":\"0123456789abcdef\"}}", tok, sizeof(tok)),
	    "bad token");
	CU_ASSERT_STRING_EQUAL(push_parse("{\"push_wake\":{\"platform\":"
	    "\"fcm\",\"token\":\"\"}}", tok, sizeof(tok)), "bad token");
	CU_ASSERT_STRING_EQUAL(push_parse("{\"push_wake\":{\"platform\":"
	    "\"fcm\",\"token\":7}}", tok, sizeof(tok)), "bad token");
	CU_ASSERT_STRING_EQUAL(push_parse("{\"push_wake\":{\"platform\":"
	    "\"fcm\",\"token\":\"a\",\"token\":null}}", tok, sizeof(tok)),
	    "bad token");
	CU_ASSERT_STRING_EQUAL(push_parse("{\"push_wake\":{\"platform\":"
	    "\"fcm\"}}", tok, sizeof(tok)), "no token");
	/* a NUL cannot be in a C string */
	CU_ASSERT_STRING_EQUAL(push_parse("{\"push_wake\":{\"platform\":"
	    "\"fcm\",\"token\":\"a\\u0000b\"}}", tok, sizeof(tok)),
	    "bad token");
	CU_ASSERT_STRING_EQUAL(push_parse("{\"push_wake\":{\"token\":\"a\"}}",
	    tok, sizeof(tok)), "platform not fcm");
	CU_ASSERT_STRING_EQUAL(push_parse("{\"push_wake\":{\"platform\":"
	    "\"FCM\",\"token\":\"a\"}}", tok, sizeof(tok)), "platform not fcm");
	CU_ASSERT_STRING_EQUAL(push_parse("{\"push_wake\":{\"platform\":"
	    "\"fcm \",\"token\":\"a\"}}", tok, sizeof(tok)), "platform not fcm");
	CU_ASSERT_STRING_EQUAL(push_parse("{\"push_wake\":{\"platform\":"
	    "\"fcmfcmfcm\",\"token\":\"a\"}}", tok, sizeof(tok)),
	    "platform not fcm");
	CU_ASSERT_STRING_EQUAL(push_parse("{\"push_wake\":{\"platform\":"
	    "[\"fcm\"],\"token\":\"a\"}}", tok, sizeof(tok)), "platform not fcm");
	CU_ASSERT_STRING_EQUAL(push_parse("{\"push_wake\":{}}", tok,
	    sizeof(tok)), "platform not fcm");
	CU_ASSERT_STRING_EQUAL(push_parse("{\"push_wake\":\"fcm\"}", tok,
	    sizeof(tok)), "not an object");
	CU_ASSERT_STRING_EQUAL(push_parse("{\"push_wake\":[{\"platform\":"
	    "\"fcm\",\"token\":\"a\"}]}", tok, sizeof(tok)), "not an object");
	CU_ASSERT_STRING_EQUAL(push_parse("{\"push_wake\":null}", tok,
	    sizeof(tok)), "not an object");
}

static void
test_envelope_malformed(void)
{
	struct envelope	 e;

	/* not JSON */
	CU_ASSERT_EQUAL(ENV("", &e), ENVELOPE_NOT_JSON);
	CU_ASSERT_EQUAL(ENV("  ", &e), ENVELOPE_NOT_JSON);
	CU_ASSERT_EQUAL(ENV("hello", &e), ENVELOPE_NOT_JSON);
	CU_ASSERT_EQUAL(ENV("{", &e), ENVELOPE_NOT_JSON);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"frame\":1", &e),
	    ENVELOPE_NOT_JSON);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"frame\":1,}", &e),
	    ENVELOPE_NOT_JSON);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"frame\":01}", &e),
	    ENVELOPE_NOT_JSON);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"frame\":[1,]}", &e),
	    ENVELOPE_NOT_JSON);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"frame\":1}x", &e),
	    ENVELOPE_NOT_JSON);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"frame\":1}{}", &e),
	    ENVELOPE_NOT_JSON);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\" \"frame\":1}", &e),
	    ENVELOPE_NOT_JSON);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\" \"c\"}", &e), ENVELOPE_NOT_JSON);
	CU_ASSERT_EQUAL(ENV("{conn_id:\"c\"}", &e), ENVELOPE_NOT_JSON);
	CU_ASSERT_EQUAL(ENV("{,}", &e), ENVELOPE_NOT_JSON);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\xc0\x80\",\"frame\":1}", &e),
	    ENVELOPE_NOT_JSON);
	CU_ASSERT_EQUAL(ENV("\xef\xbb\xbf{\"conn_id\":\"c\",\"frame\":1}",
	    &e), ENVELOPE_NOT_JSON);
	/* invalid JSON wins over every other problem */
	CU_ASSERT_EQUAL(ENV("[1,", &e), ENVELOPE_NOT_JSON);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":5,\"frame\":}", &e),
	    ENVELOPE_NOT_JSON);
	CU_ASSERT_EQUAL(ENV("{\"close_code\":1.0,", &e), ENVELOPE_NOT_JSON);

	/* not an object */
	CU_ASSERT_EQUAL(ENV("[]", &e), ENVELOPE_NOT_OBJECT);
	CU_ASSERT_EQUAL(ENV("[{\"conn_id\":\"c\",\"frame\":1}]", &e),
	    ENVELOPE_NOT_OBJECT);
	CU_ASSERT_EQUAL(ENV("\"conn_id\"", &e), ENVELOPE_NOT_OBJECT);
	CU_ASSERT_EQUAL(ENV(" 42 ", &e), ENVELOPE_NOT_OBJECT);
	CU_ASSERT_EQUAL(ENV("null", &e), ENVELOPE_NOT_OBJECT);
	CU_ASSERT_EQUAL(ENV("true", &e), ENVELOPE_NOT_OBJECT);

	/* conn_id not a string */
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":5,\"frame\":1}", &e),
	    ENVELOPE_BAD_CONN_ID);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":null,\"frame\":1}", &e),
	    ENVELOPE_BAD_CONN_ID);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":{\"id\":\"c\"},\"frame\":1}", &e),
	    ENVELOPE_BAD_CONN_ID);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":[\"c\"],\"frame\":1}", &e),
	    ENVELOPE_BAD_CONN_ID);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":true}", &e), ENVELOPE_BAD_CONN_ID);
	/* it outranks a bad close_code */
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":1,\"close_code\":-1}", &e),
	    ENVELOPE_BAD_CONN_ID);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":7,\"push_wake\":{}}", &e),
	    ENVELOPE_BAD_CONN_ID);

	/* close_code not an integer 0..65535 without fraction or exponent */
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"close_code\":1.0}", &e),
	    ENVELOPE_BAD_CLOSE_CODE);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"close_code\":1000.0}", &e),
	    ENVELOPE_BAD_CLOSE_CODE);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"close_code\":1e3}", &e),
	    ENVELOPE_BAD_CLOSE_CODE);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"close_code\":1E3}", &e),
	    ENVELOPE_BAD_CLOSE_CODE);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"close_code\":-1}", &e),
	    ENVELOPE_BAD_CLOSE_CODE);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"close_code\":-0}", &e),
	    ENVELOPE_BAD_CLOSE_CODE);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"close_code\":65536}", &e),
	    ENVELOPE_BAD_CLOSE_CODE);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"close_code\":"
	    "99999999999999999999999}", &e), ENVELOPE_BAD_CLOSE_CODE);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"close_code\":\"1000\"}", &e),
	    ENVELOPE_BAD_CLOSE_CODE);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"close_code\":true}", &e),
	    ENVELOPE_BAD_CLOSE_CODE);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"close_code\":null}", &e),
	    ENVELOPE_BAD_CLOSE_CODE);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"close_code\":[1000]}", &e),
	    ENVELOPE_BAD_CLOSE_CODE);
	CU_ASSERT_EQUAL(ENV("{\"frame\":1,\"close_code\":1e3}", &e),
	    ENVELOPE_BAD_CLOSE_CODE);	/* outranks no conn_id */

	/* no conn_id (and no push_wake) */
	CU_ASSERT_EQUAL(ENV("{}", &e), ENVELOPE_NO_CONN_ID);
	CU_ASSERT_EQUAL(ENV("{\"frame\":1}", &e), ENVELOPE_NO_CONN_ID);
	CU_ASSERT_EQUAL(ENV("{\"frame\":1,\"close_code\":1000}", &e),
	    ENVELOPE_NO_CONN_ID);
	CU_ASSERT_EQUAL(ENV("{\"connid\":\"c\",\"frame\":1}", &e),
	    ENVELOPE_NO_CONN_ID);
	CU_ASSERT_EQUAL(ENV("{\"CONN_ID\":\"c\",\"frame\":1}", &e),
	    ENVELOPE_NO_CONN_ID);
	/* a nested conn_id does not count */
	CU_ASSERT_EQUAL(ENV("{\"frame\":{\"conn_id\":\"c\"}}", &e),
	    ENVELOPE_NO_CONN_ID);
	CU_ASSERT(!e.has_conn_id);
	CU_ASSERT_EQUAL(ENV("{\"x\":{\"conn_id\":\"c\",\"frame\":1}}", &e),
	    ENVELOPE_NO_CONN_ID);
	CU_ASSERT_EQUAL(ENV("{\"x\":[{\"push_wake\":{}}]}", &e),
	    ENVELOPE_NO_CONN_ID);
	CU_ASSERT(!e.has_push_wake);

	/* no frame and no close_code */
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\"}", &e), ENVELOPE_NO_FRAME);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"x\":1}", &e),
	    ENVELOPE_NO_FRAME);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"push_wake\":{}}", &e),
	    ENVELOPE_NO_FRAME);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"x\":{\"frame\":1}}", &e),
	    ENVELOPE_NO_FRAME);

	CU_ASSERT_STRING_EQUAL(envelope_strerror(ENVELOPE_NOT_JSON),
	    "not json");
	CU_ASSERT_STRING_EQUAL(envelope_strerror(ENVELOPE_NOT_OBJECT),
	    "not an object");
	CU_ASSERT_STRING_EQUAL(envelope_strerror(ENVELOPE_OK), "ok");
	CU_ASSERT_PTR_NOT_NULL(envelope_strerror(ENVELOPE_BAD_CONN_ID));
	CU_ASSERT_PTR_NOT_NULL(envelope_strerror(ENVELOPE_BAD_CLOSE_CODE));
	CU_ASSERT_PTR_NOT_NULL(envelope_strerror(ENVELOPE_NO_CONN_ID));
	CU_ASSERT_PTR_NOT_NULL(envelope_strerror(ENVELOPE_NO_FRAME));
	CU_ASSERT_PTR_NOT_NULL(envelope_strerror((enum envelope_result)99));
}

static void
test_envelope_duplicates(void)
{
	struct envelope	 e;

	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"a\",\"frame\":1,\"conn_id\":\"b\","
	    "\"frame\":[2]}", &e), ENVELOPE_OK);
	CU_ASSERT_STRING_EQUAL(e.conn_id, "b");
	CU_ASSERT_EQUAL(e.conn_id_len, 1);
	CU_ASSERT(span_is(e.frame, e.frame_len, "[2]"));

	/* the last one wins, also over a bad earlier one and vice versa */
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":5,\"conn_id\":\"c\",\"frame\":1}",
	    &e), ENVELOPE_OK);
	CU_ASSERT_STRING_EQUAL(e.conn_id, "c");
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"conn_id\":5,\"frame\":1}",
	    &e), ENVELOPE_BAD_CONN_ID);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"close_code\":1e3,"
	    "\"close_code\":1001}", &e), ENVELOPE_OK);
	CU_ASSERT_EQUAL(e.close_code, 1001);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"close_code\":1001,"
	    "\"close_code\":\"x\"}", &e), ENVELOPE_BAD_CLOSE_CODE);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"frame\":null,"
	    "\"frame\":\"x\"}", &e), ENVELOPE_OK);
	CU_ASSERT(!e.frame_is_null);
	CU_ASSERT(span_is(e.frame, e.frame_len, "\"x\""));
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"c\",\"frame\":\"x\","
	    "\"frame\":null}", &e), ENVELOPE_OK);
	CU_ASSERT(e.frame_is_null);
	CU_ASSERT_EQUAL(ENV("{\"push_wake\":1,\"push_wake\":2}", &e),
	    ENVELOPE_OK);
	CU_ASSERT(span_is(e.push_wake, e.push_wake_len, "2"));
}

static void
test_envelope_escapes(void)
{
	struct envelope	 e;
	char		 buf[512];
	int		 n;

	/* keys are compared after decoding */
	CU_ASSERT_EQUAL(ENV("{\"conn\\u005fid\":\"c\",\"fr\\u0061me\":1}",
	    &e), ENVELOPE_OK);
	CU_ASSERT_STRING_EQUAL(e.conn_id, "c");
	CU_ASSERT(span_is(e.frame, e.frame_len, "1"));
	CU_ASSERT_EQUAL(ENV("{\"\\u0063\\u006F\\u006e\\u006e_id\":\"c\","
	    "\"close\\u005Fcode\":1000}", &e), ENVELOPE_OK);
	CU_ASSERT_EQUAL(e.close_code, 1000);
	CU_ASSERT_EQUAL(ENV("{\"push\\u005fwake\":{}}", &e), ENVELOPE_OK);
	CU_ASSERT(e.has_push_wake);
	/* ... exactly: a NUL or anything more is another key */
	CU_ASSERT_EQUAL(ENV("{\"conn_id\\u0000\":\"c\",\"frame\":1}", &e),
	    ENVELOPE_NO_CONN_ID);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\\n\":\"c\",\"frame\":1}", &e),
	    ENVELOPE_NO_CONN_ID);
	CU_ASSERT_EQUAL(ENV("{\"a_very_long_key_that_is_not_ours\":1,"
	    "\"conn_id\":\"c\",\"frame\":1}", &e), ENVELOPE_OK);

	/* conn_id escapes are decoded */
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"client\\u002da\\/b\\\\\\\"\\t\","
	    "\"frame\":1}", &e), ENVELOPE_OK);
	CU_ASSERT_STRING_EQUAL(e.conn_id, "client-a/b\\\"\t");
	CU_ASSERT_EQUAL(e.conn_id_len, 13);
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"\\b\\f\\n\\r\",\"frame\":1}", &e),
	    ENVELOPE_OK);
	CU_ASSERT_STRING_EQUAL(e.conn_id, "\b\f\n\r");
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"\\u00e9\\u20AC\\ud83d\\ude00"
	    "\xc3\xa9\",\"frame\":1}", &e), ENVELOPE_OK);
	CU_ASSERT_STRING_EQUAL(e.conn_id,
	    "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xc3\xa9");
	CU_ASSERT_EQUAL(e.conn_id_len, 11);
	/* lone surrogates decode to U+FFFD */
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"\\ud800x\\udc00\",\"frame\":1}",
	    &e), ENVELOPE_OK);
	CU_ASSERT_STRING_EQUAL(e.conn_id, "\xef\xbf\xbdx\xef\xbf\xbd");
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"\\ud800\",\"frame\":1}", &e),
	    ENVELOPE_OK);
	CU_ASSERT_STRING_EQUAL(e.conn_id, "\xef\xbf\xbd");
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"\",\"frame\":1}", &e),
	    ENVELOPE_OK);
	CU_ASSERT(e.has_conn_id);
	CU_ASSERT_EQUAL(e.conn_id_len, 0);
	/* a NUL cannot be in a C string: it matches no phone */
	CU_ASSERT_EQUAL(ENV("{\"conn_id\":\"client-a-0123abcd\\u0000x\","
	    "\"frame\":1}", &e), ENVELOPE_OK);
	CU_ASSERT(e.conn_id_too_long);
	CU_ASSERT_STRING_EQUAL(e.conn_id, "");

	/* 127 bytes fit, 128 do not; a later fitting one clears the flag */
	n = snprintf(buf, sizeof(buf), "{\"conn_id\":\"%0127d\",\"frame\":1}",
	    0);
	CU_ASSERT_EQUAL(env_parse(buf, n, &e), ENVELOPE_OK);
	CU_ASSERT(!e.conn_id_too_long);
	CU_ASSERT_EQUAL(e.conn_id_len, 127);
	n = snprintf(buf, sizeof(buf), "{\"conn_id\":\"%0128d\",\"frame\":1}",
	    0);
	CU_ASSERT_EQUAL(env_parse(buf, n, &e), ENVELOPE_OK);
	CU_ASSERT(e.has_conn_id);
	CU_ASSERT(e.conn_id_too_long);
	CU_ASSERT_STRING_EQUAL(e.conn_id, "");
	n = snprintf(buf, sizeof(buf), "{\"conn_id\":\"%0300d\"}", 0);
	CU_ASSERT_EQUAL(env_parse(buf, n, &e), ENVELOPE_NO_FRAME);
	CU_ASSERT(e.conn_id_too_long);
	n = snprintf(buf, sizeof(buf), "{\"conn_id\":\"%0128d\","
	    "\"conn_id\":\"c\",\"frame\":1}", 0);
	CU_ASSERT_EQUAL(env_parse(buf, n, &e), ENVELOPE_OK);
	CU_ASSERT(!e.conn_id_too_long);
	CU_ASSERT_STRING_EQUAL(e.conn_id, "c");
	/* escapes count by their decoded size: 42 * 3 = 126 bytes fit */
	n = snprintf(buf, sizeof(buf), "{\"conn_id\":\"");
	for (int i = 0; i < 42; i++)
		n += snprintf(buf + n, sizeof(buf) - n, "\\u20ac");
	n += snprintf(buf + n, sizeof(buf) - n, "\",\"frame\":1}");
	CU_ASSERT_EQUAL(env_parse(buf, n, &e), ENVELOPE_OK);
	CU_ASSERT(!e.conn_id_too_long);
	CU_ASSERT_EQUAL(e.conn_id_len, 126);
	n = snprintf(buf, sizeof(buf), "{\"conn_id\":\"x");
	for (int i = 0; i < 42; i++)
		n += snprintf(buf + n, sizeof(buf) - n, "\\u20ac");
	n += snprintf(buf + n, sizeof(buf) - n, "\",\"frame\":1}");
	CU_ASSERT_EQUAL(env_parse(buf, n, &e), ENVELOPE_OK);
	CU_ASSERT(!e.conn_id_too_long);
	CU_ASSERT_EQUAL(e.conn_id_len, 127);
	/* 128 bytes and the NUL do not fit */
	n = snprintf(buf, sizeof(buf), "{\"conn_id\":\"xy");
	for (int i = 0; i < 42; i++)
		n += snprintf(buf + n, sizeof(buf) - n, "\\u20ac");
	n += snprintf(buf + n, sizeof(buf) - n, "\",\"frame\":1}");
	CU_ASSERT_EQUAL(env_parse(buf, n, &e), ENVELOPE_OK);
	CU_ASSERT(e.conn_id_too_long);
}

static void
test_envelope_deep(void)
{
	struct envelope	 e;
	static const char head[] = "{\"conn_id\":\"c\",\"frame\":";
	size_t		 hl = sizeof(head) - 1, n;
	char		*buf;

	if ((buf = malloc(hl + 2 * DEPTH_LIMIT + 1)) == NULL)
		abort();
	/* the envelope object counts as one level */
	n = DEPTH_LIMIT - 1;
	memcpy(buf, head, hl);
	memset(buf + hl, '[', n);
	memset(buf + hl + n, ']', n);
	buf[hl + 2 * n] = '}';
	CU_ASSERT_EQUAL(env_parse(buf, hl + 2 * n + 1, &e), ENVELOPE_OK);
	CU_ASSERT_EQUAL(e.frame_len, 2 * n);
	n = DEPTH_LIMIT;
	memset(buf + hl, '[', n);
	memset(buf + hl + n, ']', n);
	buf[hl + 2 * n] = '}';
	CU_ASSERT_EQUAL(env_parse(buf, hl + 2 * n + 1, &e),
	    ENVELOPE_NOT_JSON);
	/* and a non-object one past the limit is not JSON either */
	memset(buf, '[', DEPTH_LIMIT + 1);
	memset(buf + DEPTH_LIMIT + 1, ']', DEPTH_LIMIT + 1);
	CU_ASSERT_EQUAL(env_parse(buf, 2 * (DEPTH_LIMIT + 1), &e),
	    ENVELOPE_NOT_JSON);
	CU_ASSERT_EQUAL(env_parse(buf + 1, 2 * DEPTH_LIMIT, &e),
	    ENVELOPE_NOT_OBJECT);
	free(buf);
}

/*
 * One byte that matters at every offset of a long string, where the
 * string scan and the UTF-8 check read sixteen or eight bytes at a time:
 * each is found wherever it falls, and a string with none passes.
 */
static void
test_long_strings(void)
{
	static const struct {
		const char	*bytes;
		size_t		 len;
		int		 ok;
	} at[] = {
		{ "\\\"", 2, 1 },	/* an escaped quote does not end it */
		{ "\\n", 2, 1 },
		{ "\\u00e9", 6, 1 },
		{ "\xc3\xa9", 2, 1 },	/* é */
		{ "\xf0\x9f\x98\x80", 4, 1 },
		{ "\x7f", 1, 1 },		/* DEL is no control character here */
		{ "\x1f", 1, 0 },		/* a raw control character */
		{ "\x80", 1, 0 },		/* a stray continuation byte */
		{ "\xc0\xaf", 2, 0 },	/* overlong */
		{ "\\x", 2, 0 },		/* a bad escape */
		{ "\"", 1, 0 },		/* ends the string early */
	};
	unsigned char	buf[128], out[128];
	size_t		i, off, len;

	for (i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		for (off = 0; off < 48; off++) {
			len = 0;
			buf[len++] = '"';
			memset(buf + len, 'x', off);
			len += off;
			memcpy(buf + len, at[i].bytes, at[i].len);
			len += at[i].len;
			memset(buf + len, 'y', 40);
			len += 40;
			buf[len++] = '"';
			CU_ASSERT_EQUAL(json_compact(buf, len, out) ==
			    (ssize_t)len, at[i].ok);
			if (json_compact(buf, len, out) == (ssize_t)len)
				CU_ASSERT(memcmp(buf, out, len) == 0);
			/* the raw bytes alone: UTF-8 or not */
			if (at[i].bytes[0] != '\\' && at[i].bytes[0] != '"' &&
			    at[i].bytes[0] != '\x1f')
				CU_ASSERT_EQUAL(utf8_valid(buf, len), at[i].ok);
		}
	}
}

static CU_TestInfo json_tests[] = {
	{ "compact values", test_compact_values },
	{ "compact whitespace", test_compact_whitespace },
	{ "compact in place", test_compact_in_place },
	{ "invalid json", test_invalid_json },
	{ "invalid utf-8 in json", test_invalid_utf8_in_json },
	{ "nesting limit", test_nesting_limit },
	{ "utf8_valid", test_utf8_valid },
	{ "long strings, a byte at every offset", test_long_strings },
	CU_TEST_INFO_NULL
};

static CU_TestInfo envelope_tests[] = {
	{ "well-formed", test_envelope_ok },
	{ "malformed", test_envelope_malformed },
	{ "duplicate keys", test_envelope_duplicates },
	{ "escapes", test_envelope_escapes },
	{ "nesting limit", test_envelope_deep },
	{ "push_wake", test_push_wake },
	{ "object and array walks", test_walk },
	CU_TEST_INFO_NULL
};

static CU_SuiteInfo suites[] = {
	{ "json", NULL, NULL, NULL, NULL, json_tests },
	{ "envelope", NULL, NULL, NULL, NULL, envelope_tests },
	CU_SUITE_INFO_NULL
};

int
main(void)
{
	return unit_run(suites);
}
