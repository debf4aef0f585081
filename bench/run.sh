#!/usr/bin/env bash
# run.sh BUILD — what `make bench` runs (docs/performance.md):
#   1. the big-maildrop bench (bench/maildrop.sh: maildrop_open on 100,000
#      messages, warm and cold page cache);
#   2. the TLS bench beside Dovecot (bench/tls.sh: memory per idle
#      connection, full handshakes per second; needs root, installs
#      Debian's dovecot-pop3d if missing; about 15 minutes).
# BENCH_ONLY=maildrop or BENCH_ONLY=tls runs one of them; the BENCH_*
# knobs of each script pass through.  The full side-by-side harness
# against Dovecot (issue 7) grows from bench/tls.sh and bench/tlsload.c.
set -euo pipefail
build=${1:-build/release}
only=${BENCH_ONLY:-all}
if [ "$only" != tls ]; then
	make --no-print-directory "$build/bench/maildrop-bench"
	bench/maildrop.sh "${BENCH_MESSAGES:-100000}"
fi
if [ "$only" != maildrop ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "run.sh: the TLS bench needs root (it runs Dovecot and drops popboxd to nobody): skipped" >&2
	else
		BENCH_BUILD=$build bash bench/tls.sh
	fi
fi
