#!/usr/bin/env bash
# run.sh BUILD — what `make bench` runs (docs/performance.md):
#   1. the big-maildrop bench (bench/maildrop.sh: maildrop_open on 100,000
#      messages, warm and cold page cache);
#   2. the session churn bench beside Dovecot (bench/churn.sh: whole POP3
#      sessions per second, server CPU per session; root; about 10 minutes);
#   3. the TLS bench beside Dovecot (bench/tls.sh: memory per idle
#      connection, full handshakes per second; root; about 12 minutes);
#   4. the bulk download bench beside Dovecot (bench/bulk.sh: RETR of
#      200 MB in 100 KB messages, plain and TLS, 1 and 4 connections, MB/s
#      and server CPU per MB, the machine's AES-GCM and loopback limits;
#      root; about 3 minutes);
#   5. the big-maildrop login bench beside Dovecot (bench/bigdrop.sh:
#      login-to-STAT, UIDL and LIST on 100,000 messages, first and second
#      login, page cache warm and cold; root; about 5 minutes);
#   6. the delivery bench beside Dovecot (bench/deliver.sh: messages per
#      second and CPU per message through popbox-deliver against
#      dovecot-lda, and LMTP against Dovecot's LMTP, 4 KB and 100 KB
#      messages, 1 and 4 at once; root; about 4 minutes; installs
#      dovecot-lmtpd if missing);
#   7. the fetching bench (bench/fetch.sh: 2,000 messages downloaded and
#      deleted through 20 ms of latency each way, popbox-fetch beside mpop
#      and fetchmail, plain and TLS; root; about 20 minutes, most of it
#      fetchmail's; installs fetchmail if missing).
# Then bench/plot.sh redraws docs/churn.png and docs/bulk.png from the
# newest results (when gnuplot is there or can be installed).
# BENCH_ONLY=maildrop, churn, tls, bulk, bigdrop, deliver or fetch runs one of them; the BENCH_* knobs of
# each script pass through (BENCH_BEFORE_REV=3598e53 makes churn.sh run
# that commit's popboxd too; BENCH_POPBOXD=PATH measures that popboxd
# binary instead of this tree's; BENCH_NO_MAKE=1 builds nothing and uses
# the binaries as they are).  Every workload's Maildirs come from
# bench/corpus.py (one generator, seeded: the same messages every run).  The churn and TLS benches need root (they
# run Dovecot, and popboxd drops privileges) and install Debian's
# dovecot-pop3d if it is missing.
set -euo pipefail
build=${1:-build/release}
only=${BENCH_ONLY:-all}
case $only in
all | maildrop | churn | tls | bulk | bigdrop | deliver | fetch) ;;
*) echo "run.sh: BENCH_ONLY is maildrop, churn, tls, bulk, bigdrop, deliver or fetch, not $only" >&2; exit 2 ;;
esac
if [ "$only" = all ] || [ "$only" = maildrop ]; then
	make --no-print-directory "$build/bench/maildrop-bench"
	bench/maildrop.sh "${BENCH_MESSAGES:-100000}"
fi
for b in churn tls bulk bigdrop deliver fetch; do
	[ "$only" = all ] || [ "$only" = "$b" ] || continue
	if [ "$(id -u)" -ne 0 ]; then
		echo "run.sh: the $b bench needs root (it runs Dovecot, and popboxd drops privileges): skipped" >&2
	else
		BENCH_BUILD=$build bash "bench/$b.sh"
	fi
done
case $only in
all | churn | bulk)
	if [ "$(id -u)" -eq 0 ] || command -v gnuplot >/dev/null 2>&1; then
		bash bench/plot.sh || echo "run.sh: plot.sh failed (plots not redrawn)" >&2
	fi ;;
esac
