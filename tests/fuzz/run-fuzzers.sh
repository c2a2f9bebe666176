#!/bin/sh
# Copyright (c) 2026 The pyrelayd authors.  ISC license, see COPYING.
#
# Builds the libFuzzer harnesses of tests/fuzz with clang and runs each one
# for a while on its seed corpus, tests/fuzz/corpus/<name>/.  A finding
# fails the run: a crash or a failed check (abort), a leak, an ASan or UBSan
# report, an input that takes over 25 s or 2 GiB, any other non-zero exit.
# CI runs it (.ci/run); README "Tests".
#
#   tests/fuzz/run-fuzzers.sh [-t seconds] [-b builddir] [name ...]
#
# -t  seconds per harness (default 60)
# -b  build directory; configured here (CC=clang ./configure
#     --enable-fuzzing) unless it has a Makefile.  Default: a temporary
#     one, removed at the end unless something was found.
# name  harnesses without "fuzz_" (default: every tests/fuzz/fuzz_*.c).
#
# The source tree must not be configured in place (`make distclean`
# there).  Inputs the fuzzers add to the seeds go to a scratch corpus in
# the build directory, never into the source tree; a finding is kept in
# <builddir>/fuzz-findings/<name>/ and shown with the log's tail.
set -u

src=$(cd "$(dirname "$0")/../.." && pwd) || exit 1
secs=60
build=
while getopts t:b: opt; do
	case $opt in
	t) secs=$OPTARG ;;
	b) build=$OPTARG ;;
	*) echo "usage: $0 [-t seconds] [-b builddir] [name ...]" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
case $secs in
''|*[!0-9]*) echo "$0: -t wants a number of seconds" >&2; exit 2 ;;
esac

names=$*
if [ -z "$names" ]; then
	for f in "$src"/tests/fuzz/fuzz_*.c; do
		n=${f##*/fuzz_}
		names="$names ${n%.c}"
	done
fi

if ! command -v clang >/dev/null 2>&1; then
	echo "$0: no clang (apt-get install clang libclang-rt-14-dev)" >&2
	exit 1
fi
if [ -f "$src/config.status" ]; then
	echo "$0: $src is configured in place; run make distclean there" >&2
	exit 1
fi

tmp=
if [ -z "$build" ]; then
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/pyrelayd-fuzz.XXXXXX") || exit 1
	build=$tmp
fi
mkdir -p "$build" && build=$(cd "$build" && pwd) || exit 1

if [ ! -f "$build/Makefile" ]; then
	if [ ! -x "$src/configure" ]; then
		(cd "$src" && autoreconf -fi) || exit 1
	fi
	echo "=== configure (CC=clang --enable-fuzzing) in $build"
	(cd "$build" && CC=clang "$src/configure" --enable-fuzzing \
	    >configure.out 2>&1) || { tail -30 "$build/configure.out"; exit 1; }
fi
targets=
for n in $names; do
	targets="$targets tests/fuzz/fuzz_$n"
done
echo "=== make$targets"
# shellcheck disable=SC2086
make -C "$build" -j2 $targets >"$build/make.out" 2>&1 ||
	{ tail -40 "$build/make.out"; exit 1; }

# UBSan reports are fatal (the harnesses are not built with
# -fno-sanitize-recover); leaks are reported by libFuzzer itself.
UBSAN_OPTIONS=${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}halt_on_error=1:print_stacktrace=1
export UBSAN_OPTIONS

status=0
for n in $names; do
	bin=$build/tests/fuzz/fuzz_$n
	work=$build/fuzz-corpus/$n
	found=$build/fuzz-findings/$n
	log=$build/fuzz-$n.log
	rm -rf "$work" "$found"
	mkdir -p "$work" "$found"
	set -- -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 \
	    -print_final_stats=1 -artifact_prefix="$found/"
	[ -f "$src/tests/fuzz/$n.dict" ] && set -- "$@" -dict="$src/tests/fuzz/$n.dict"
	set -- "$@" "$work"
	[ -d "$src/tests/fuzz/corpus/$n" ] && set -- "$@" "$src/tests/fuzz/corpus/$n"
	echo "=== fuzz_$n, ${secs}s"
	"$bin" "$@" >"$log" 2>&1
	rc=$?
	if [ "$rc" -ne 0 ] || grep -qE \
	    'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:' "$log"; then
		echo "FAIL: fuzz_$n (exit $rc), log $log"
		tail -60 "$log"
		ls -l "$found"
		status=1
	else
		echo "ok: fuzz_$n: $(grep -E '^stat::number_of_executed_units' "$log" |
		    sed 's/.*: *//') runs, $(find "$work" -type f | wc -l) new inputs"
	fi
done
if [ -n "$tmp" ]; then
	if [ "$status" -eq 0 ]; then
		rm -rf "$tmp"
	else
		echo "kept $tmp for the findings"
	fi
fi
exit $status
