#!/bin/sh
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
#
# The relay's hot code is together at the head of its text (src/relay-hot.ld,
# docs/relay-executable.md "Hot code together"): every forked relay maps
# the code it runs again, one fault per 64 KiB it touches.  Checked on
# what the build made:
#  1. pyrelayd-relay has the section .text.relay_hot, in a normal build of
#     at most 192 KiB (three windows of the kernel's fault-around);
#  2. the functions a relay runs on its way are in it: ours, and, when
#     glibc is linked in (the static PIE of a normal build), the system
#     calls, the log's formatting, and every variant of the string
#     functions glibc defines in the relay.
# Run by make check (TOP_BUILDDIR set); exits 1 naming what is elsewhere.

b=${TOP_BUILDDIR:-.}
NM=${NM:-nm}
READELF=${READELF:-readelf}
relay=$b/pyrelayd-relay
status=0

fail() {
	echo "FAIL: $*"
	status=1
}

[ -f "$relay" ] || { echo "FAIL: $relay: not built"; exit 1; }

# the section's start and size, in hex
set -- $("$READELF" -SW "$relay" | awk '
	{ for (i = 1; i < NF; i++) if ($i == ".text.relay_hot") {
		print $(i + 2), $(i + 4); exit } }')
[ $# -eq 2 ] || { echo "FAIL: $relay has no .text.relay_hot"; exit 1; }
start=$((0x$1))
size=$((0x$2))

ours='relay_forked relay_out relay_attach rloop_run msg_recv msg_flush
ws_feed io_conn_write zygote_relay_start relay_core_attach_phone log_info'
glibc='sendmmsg recvmsg sendmsg send recv epoll_ctl writev close
shutdown getrandom clock_gettime __vfprintf_internal _itoa_word
__stack_chk_fail sigprocmask'

if "$READELF" -d "$relay" | grep -q NEEDED; then
	# sanitizer builds: glibc is a shared library, the code is larger
	names=$ours
else
	[ "$size" -le $((192 * 1024)) ] ||
		fail ".text.relay_hot is $size bytes, more than 192 KiB"
	# every variant of the string functions the relay holds
	variants=$("$NM" "$relay" | awk '$2 ~ /^[tTiW]$/ &&
	    $3 ~ /^__(memset|memmove|memcpy|strlen|strchrnul|memchr)_(sse2|avx|evex)/ {
		print $3 }' | sort -u)
	# blind: glibc's names for them changed
	[ $(echo "$variants" | wc -w) -ge 4 ] ||
		fail "blind: no variant of glibc's string functions found"
	names="$ours $glibc $variants"
fi
checked=0
for n in $names; do
	a=$("$NM" "$relay" | awk -v n="$n" '$3 == n && $2 ~ /^[tTiW]$/ {
		print $1; exit }')
	if [ -z "$a" ]; then
		fail "$n: not defined in $relay"
		continue
	fi
	a=$((0x$a))
	checked=$((checked + 1))
	[ "$a" -ge "$start" ] && [ "$a" -lt $((start + size)) ] ||
		fail "$n is outside .text.relay_hot"
done

[ $status -eq 0 ] && echo "ok: pyrelayd-relay: $checked functions a relay" \
    "runs in .text.relay_hot ($size bytes)"
exit $status
