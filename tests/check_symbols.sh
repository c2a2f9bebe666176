#!/bin/sh
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
#
# The never-rules, checked on what the build made (docs/build.md):
#  1. the relay executable holds no TLS and no parser of a request head or
#     a PROXY header: no OpenSSL symbol, none of libtls.a or libfront.a;
#  2. the parent's objects (libparent.a) call no parser of network input:
#     nothing libfront.a or libws.a defines (http_parse_head, proxy_parse,
#     ws_feed, envelope_parse, json_compact, ...);
#  3. the parent does none of the push process's network work (its HTTPS
#     client, the JWT grant, the reading of Google's replies): of
#     libpush.a it calls only the key file's reader and the settings'
#     checks (push_key.c) and the token's hash its log lines show, and
#     nothing of libevent's HTTP or OpenSSL bufferevents; the relay
#     executable holds nothing of libpush.a (rule 1).
# Each rule is also tried where it must find something (pyrelayd holds
# the fronts' parsers and OpenSSL; a front's objects call the parsers), so
# that a blind check (no nm, wrong names) fails instead of passing.
# Run by make check (TOP_BUILDDIR set); exits 1 naming what broke a rule.

b=${TOP_BUILDDIR:-.}
NM=${NM:-nm}
status=0

# by name, whether the library defines the symbol or not
tls='SSL_|TLS_|TLSv1|EVP_|OPENSSL_|ossl_|tls_'
http='http_parse|http_upgrade_status|http_ws_accept'
forbidden_in_relay="^($tls|$http|proxy_|evhttp)"
ws='ws_|json_|envelope_parse|push_wake_parse|utf8_valid'
forbidden_in_parent="^(http_parse|http_upgrade_status|proxy_parse|$ws)"
# what libparent.a may call of libpush.a (docs/build.md, rule 3)
push_for_parent='push_key_load push_url_parse push_project_valid push_ca_check
push_token_hash'
forbidden_push_in_parent='^(evhttp_|evhttp$|bufferevent_)'

# The names in nm's output, without a version (SSL_new@OPENSSL_3.0.0).
bare_names() {
	awk 'NF >= 2 { n = $NF; sub(/@.*/, "", n); print n }' | sort -u
}

# Every symbol name in a file, defined or referenced.
names() {
	"$NM" "$@" 2>/dev/null | bare_names
}

# Global symbols the libraries define.
defined() {
	"$NM" -g --defined-only "$@" 2>/dev/null | bare_names
}

# Symbols the objects of a library reference but do not define.
referenced() {
	"$NM" -u "$@" 2>/dev/null | bare_names
}

fail() {
	echo "FAIL: $*"
	status=1
}

# forbid WHAT LIST PATTERN LIBRARY...: fails naming the names of the file
# LIST that match PATTERN or that a LIBRARY defines.
forbid() {
	what=$1 list=$2 pattern=$3
	shift 3
	defined "$@" >"$tmp/defined"
	[ -s "$tmp/defined" ] || fail "$what: blind, $* define nothing"
	bad=$( { grep -E "$pattern" "$list"; \
	    comm -12 "$list" "$tmp/defined"; } | sort -u)
	[ -z "$bad" ] || fail "$what:" $bad
}

# find WHAT LIST NAME...: fails unless the file LIST holds every NAME.
find_all() {
	what=$1 list=$2
	shift 2
	for n in "$@"; do
		grep -qx "$n" "$list" || fail "$what is blind: no $n in $list"
	done
}

for f in "$b/pyrelayd-relay" "$b/pyrelayd" "$b/libparent.a" \
    "$b/libfront.a" "$b/libtls.a" "$b/libws.a" "$b/libpush.a"; do
	[ -f "$f" ] || { echo "FAIL: $f: not built"; exit 1; }
done
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

# 1. the relay; the same look finds them in pyrelayd, which has fronts
names "$b/pyrelayd-relay" >"$tmp/relay"
forbid "pyrelayd-relay holds TLS, parser or push code" "$tmp/relay" \
    "$forbidden_in_relay" "$b/libtls.a" "$b/libfront.a" "$b/libpush.a"
names "$b/pyrelayd" >"$tmp/pyrelayd"
find_all "rule 1" "$tmp/pyrelayd" SSL_new http_parse_head

# 2. the parent's objects; the same look finds the front's calls
referenced "$b/libparent.a" >"$tmp/parent"
forbid "libparent.a calls a parser of network input" "$tmp/parent" \
    "$forbidden_in_parent" "$b/libfront.a" "$b/libws.a"
referenced "$b/libfront.a" >"$tmp/front"
find_all "rule 2" "$tmp/front" http_parse_more proxy_parse

# 3. the parent and the push process's code; the same look finds the
# push process's own calls of its client and readers
printf '%s\n' $push_for_parent | sort >"$tmp/push_ok"
defined "$b/libpush.a" | comm -23 - "$tmp/push_ok" >"$tmp/push_only"
[ -s "$tmp/push_only" ] || fail "rule 3 is blind: libpush.a defines nothing"
bad=$( { grep -E "$forbidden_push_in_parent" "$tmp/parent"; \
    comm -12 "$tmp/parent" "$tmp/push_only"; } | sort -u)
[ -z "$bad" ] || fail "libparent.a does the push process's work:" $bad
find_all "rule 3" "$tmp/parent" push_key_load
referenced "$b/libpush.a" >"$tmp/push"
find_all "rule 3" "$tmp/push" push_post push_fcm_reply push_token_reply \
    push_grant_body evhttp_make_request bufferevent_openssl_socket_new

[ $status -eq 0 ] && echo "ok: pyrelayd-relay: no TLS, no request parser," \
    "no push code; libparent.a: no parser of network input, none of the" \
    "push process's network work"
exit $status
