#!/usr/bin/env bash
# run.sh BUILD — what `make bench` runs.  Today: the big-maildrop bench
# (maildrop_open on 100,000 messages, warm and cold page cache).  The
# side-by-side benchmark against Dovecot is issue 7.
set -euo pipefail
build=${1:-build/release}
make --no-print-directory "$build/bench/maildrop-bench"
bench/maildrop.sh "${BENCH_MESSAGES:-100000}"
