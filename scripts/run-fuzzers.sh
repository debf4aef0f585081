#!/usr/bin/env bash
# run-fuzzers.sh SECONDS BIN... — runs each libFuzzer harness for SECONDS on
# its seed corpus (tests/fuzz/corpus/NAME, copied so the repo stays clean).
set -eu
secs=$1; shift
work=build/fuzz/work
for bin in "$@"; do
	name=$(basename "$bin")
	mkdir -p "$work/$name"
	if [ -d "tests/fuzz/corpus/$name" ]; then
		cp -n tests/fuzz/corpus/"$name"/* "$work/$name"/ 2>/dev/null || true
	fi
	echo "fuzz: $name for ${secs}s"
	"$bin" -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=0 "$work/$name" 2> "$work/$name.log" || {
		tail -n 60 "$work/$name.log"; echo "fuzz: $name FAILED"; exit 1; }
	grep -E '^(#[0-9]+ +DONE|Done)' "$work/$name.log" | tail -n 1 || true
done
