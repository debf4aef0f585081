#!/usr/bin/env bash
# maildrop.sh [N] — times maildrop_open() on an N-message Maildir (default
# 100000) with build/release/bench/maildrop-bench (build it first:
# `make build/release/bench/maildrop-bench`; this script builds nothing).
# Runs: names with ,W= (warm and cold page cache) and without (warm, cold).
# Cold needs root and a writable /proc/sys/vm/drop_caches; if that is not
# permitted the bench says so and the "cold" figures are really warm.
# Prints a table of milliseconds per case.  Temp dirs under /tmp, removed.
set -eu
n=${1:-100000}
bin=build/release/bench/maildrop-bench
[ -x "$bin" ] || { echo "maildrop.sh: $bin missing; make $bin" >&2; exit 1; }
work=$(mktemp -d /tmp/popbox-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cold=--drop-caches
[ -w /proc/sys/vm/drop_caches ] ||
	echo "note: cannot drop the page cache here: the cold rows are warm" >&2
run() { # label, flags...
	local label=$1; shift
	rm -rf "$work/md"
	"$bin" "$@" "$work/md" "$n" | awk -v l="$label" '{ printf "%-22s %-9s %9s ms\n", l, $1, $2 }'
}
echo "maildrop_open() to listing, $n messages of ~4 KB"
printf '%-22s %-9s %12s\n' "names / page cache" "case" "time"
run ",W= warm"
run ",W= cold" $cold
run "no ,W= warm" --no-wire-field
run "no ,W= cold" --no-wire-field $cold
