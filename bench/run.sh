#!/usr/bin/env bash
# run.sh BUILD — what `make bench` runs (docs/performance.md):
#   1. the big-maildrop bench (bench/maildrop.sh: maildrop_open on 100,000
#      messages, warm and cold page cache);
#   2. the session churn bench beside Dovecot (bench/churn.sh: whole POP3
#      sessions per second, server CPU per session; root; about 10 minutes);
#   3. the TLS bench beside Dovecot (bench/tls.sh: memory per idle
#      connection, full handshakes per second; root; about 12 minutes).
# BENCH_ONLY=maildrop, churn or tls runs one of them; the BENCH_* knobs of
# each script pass through (BENCH_BEFORE_REV=3598e53 makes churn.sh run
# that commit's popboxd too).  The churn and TLS benches need root (they
# run Dovecot, and popboxd drops privileges) and install Debian's
# dovecot-pop3d if it is missing.
set -euo pipefail
build=${1:-build/release}
only=${BENCH_ONLY:-all}
case $only in
all | maildrop | churn | tls) ;;
*) echo "run.sh: BENCH_ONLY is maildrop, churn or tls, not $only" >&2; exit 2 ;;
esac
if [ "$only" = all ] || [ "$only" = maildrop ]; then
	make --no-print-directory "$build/bench/maildrop-bench"
	bench/maildrop.sh "${BENCH_MESSAGES:-100000}"
fi
for b in churn tls; do
	[ "$only" = all ] || [ "$only" = "$b" ] || continue
	if [ "$(id -u)" -ne 0 ]; then
		echo "run.sh: the $b bench needs root (it runs Dovecot, and popboxd drops privileges): skipped" >&2
	else
		BENCH_BUILD=$build bash "bench/$b.sh"
	fi
done
