#!/usr/bin/env bash
# churn.sh — whole POP3 sessions per second (issue 7, workload 1; issue 3's
# cost of privilege separation): popboxd beside tuned Dovecot, and beside
# an older popboxd build when asked, on the same users and messages.
#
#   bash bench/churn.sh                          (as root; from anywhere in the tree)
#   BENCH_BEFORE_REV=3598e53 bash bench/churn.sh (also that commit's popboxd)
#
# Each session (bench/tlsload churn): connect, USER/PASS, STAT, UIDL, LIST,
# RETR of every message, QUIT; every reply checked (RETR's octets against
# LIST's size after un-stuffing, a UIDL for every message, QUIT's +OK).
# C workers, each with its own user (a maildrop is locked per session),
# for BENCH_SECONDS, BENCH_ROUNDS rounds with the servers in turn (the
# order rotates each round); medians.  No session deletes anything, so the
# maildrops are the same in every round.
#
# Server CPU per session: user+system time of all the server's processes
# from /proc/PID/stat, children that exited included (each live process's
# cutime/cstime: Dovecot's master reaps its pop3 processes), after minus
# before, divided by the sessions (those that finished in time and those
# drained after it).  The load generator's CPU is its own getrusage; "other
# CPU" is the rest of the machine's busy time during the run (/proc/stat,
# both cores, softirq included): work that was not ours, and the kernel's
# loopback networking that no process is charged for.
#
# The corpus: BENCH_CHURN_USERS users, each with BENCH_CHURN_MESSAGES
# messages of about 4 KB (realistic headers, a few lines starting with a
# dot, one line that is a lone dot, one message without a final newline;
# 12 read ones in cur/ with :2,S, the rest in new/; names without ,S=/,W=,
# as Postfix writes them, so each server sizes messages itself).  Every
# server gets its own copy of the Maildirs and of the passwd-file.
# Passwords: {PLAIN}, and {SHA512-CRYPT} (5,000 rounds, what
# `openssl passwd -6` makes) when BENCH_CHURN_SCHEMES says so.
#
# Knobs (environment):
#   BENCH_CHURN_CONCURRENCY  workers per run ("1 8 64")
#   BENCH_SECONDS            seconds per run (10)
#   BENCH_ROUNDS             rounds (3)
#   BENCH_CHURN_USERS        users (64; at least the largest concurrency)
#   BENCH_CHURN_MESSAGES     messages per user (20)
#   BENCH_CHURN_SCHEMES      "PLAIN SHA512-CRYPT" (either or both)
#   BENCH_CHURN_TLS          "plain tls" (default), "plain" or "tls":
#                            plain POP3 and/or implicit TLS (a full
#                            handshake per session, ECDSA P-256)
#   BENCH_CHURN_TLS_CONCURRENCY  workers per TLS run ("8")
#   BENCH_CHURN_DOVECOT      1 (default) runs tuned Dovecot too; 0 does not
#   BENCH_BEFORE_REV         a git revision: build its popboxd in a temp
#                            worktree and run it too, as "popboxd REV"
#   BENCH_BEFORE_POPBOXD     or a popboxd binary already built (label:
#                            BENCH_BEFORE_LABEL, default "popboxd before")
#   BENCH_BUILD              build dir (build/release)
#   BENCH_POPBOXD            the popboxd to measure (BENCH_BUILD/popboxd);
#                            label BENCH_POPBOXD_LABEL ("popboxd")
#   BENCH_KEEP=1             keep the temp dir (logs, configs)
# Everything listens on 127.0.0.1 on ports free at run time; nothing
# outside a temp dir is written except bench/results/.  Every wait is
# bounded; on exit only the processes this script started are stopped.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
build=${BENCH_BUILD:-build/release}
SECS=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
CONCS=${BENCH_CHURN_CONCURRENCY:-1 8 64}
NMSG=${BENCH_CHURN_MESSAGES:-20}
SCHEMES=${BENCH_CHURN_SCHEMES:-PLAIN SHA512-CRYPT}
TRANSPORTS=${BENCH_CHURN_TLS:-plain tls}
TLS_CONCS=${BENCH_CHURN_TLS_CONCURRENCY:-8}
WITH_DOVECOT=${BENCH_CHURN_DOVECOT:-1}
PASSWORD=bench-$RANDOM$RANDOM
TLSLOAD=$top/$build/bench/tlsload
POPBOXD=${BENCH_POPBOXD:-$top/$build/popboxd}
POPBOXD_LABEL=${BENCH_POPBOXD_LABEL:-popboxd}
CLK_TCK=$(getconf CLK_TCK)

say() { printf 'churn.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (popboxd and Dovecot drop privileges)"

maxc=0
for c in $CONCS $TLS_CONCS; do [ "$c" -gt "$maxc" ] && maxc=$c; done
NUSERS=${BENCH_CHURN_USERS:-64}
[ "$NUSERS" -ge "$maxc" ] || NUSERS=$maxc

if [ -z "${BENCH_POPBOXD:-}" ]; then
	make --no-print-directory "$build/popboxd" "$build/bench/tlsload" >&2
else
	make --no-print-directory "$build/bench/tlsload" >&2
fi
# shellcheck source=bench/dovecot.sh
. "$top/bench/dovecot.sh"
. "$top/bench/common.sh"
[ "$WITH_DOVECOT" = 1 ] && dovecot_install

ulimit -Sn "$(ulimit -Hn)"

# ---------------------------------------------------------------- clean-up

WORK=$(mktemp -d /tmp/popbox-churn.XXXXXX)
chmod 755 "$WORK"
STARTED=()         # "kind:pid" of every server we started and not stopped
WORKTREE=

forget() { # PID
	local e keep=()
	for e in "${STARTED[@]}"; do [ "${e#*:}" = "$1" ] || keep+=("$e"); done
	STARTED=("${keep[@]}")
}


stop_popboxd() { stop_popboxd_tree "$1"; forget "$1"; }

cleanup() {
	local e
	trap - EXIT INT TERM
	for e in "${STARTED[@]}"; do
		case $e in
		popboxd:*) stop_popboxd "${e#*:}" ;;
		dovecot:*) dovecot_stop "${e#*:}" ;;
		esac
	done
	STARTED=()
	if [ -n "$WORKTREE" ]; then
		git -C "$top" worktree remove --force "$WORKTREE" 2>/dev/null || true
	fi
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		say "kept $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT TERM

# ---------------------------------------------------------------- servers to run

LABELS=("$POPBOXD_LABEL")
BINS=("$POPBOXD")
if [ -n "${BENCH_BEFORE_REV:-}" ]; then
	rev=$(git -C "$top" rev-parse --short "$BENCH_BEFORE_REV") ||
		die "unknown revision $BENCH_BEFORE_REV"
	WORKTREE=$WORK/before-src
	say "building popboxd $rev in a temp worktree"
	git -C "$top" worktree add --detach "$WORKTREE" "$rev" >/dev/null 2>&1 ||
		die "git worktree add $rev failed"
	make --no-print-directory -C "$WORKTREE" -j"$(nproc)" build/release/popboxd >"$WORK/before-build.log" 2>&1 ||
		{ tail -n 20 "$WORK/before-build.log" >&2; die "building $rev failed"; }
	LABELS=("popboxd $rev" "${LABELS[@]}")
	BINS=("$WORKTREE/build/release/popboxd" "${BINS[@]}")
elif [ -n "${BENCH_BEFORE_POPBOXD:-}" ]; then
	[ -x "$BENCH_BEFORE_POPBOXD" ] || die "no popboxd at $BENCH_BEFORE_POPBOXD"
	LABELS=("${BENCH_BEFORE_LABEL:-popboxd before}" "${LABELS[@]}")
	BINS=("$BENCH_BEFORE_POPBOXD" "${BINS[@]}")
fi
[ "$WITH_DOVECOT" = 1 ] && { LABELS+=("Dovecot tuned"); BINS+=(dovecot); }

# ---------------------------------------------------------------- the corpus

say "making $NUSERS users with $NMSG messages each in $WORK"
mkdir -p "$WORK/mail" "$WORK/tls"
awk -v users="$NUSERS" -v nmsg="$NMSG" -v root="$WORK/mail" '
BEGIN {
	srand(7)
	nw = split("the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were their one all we can her has there been if more when will would who so no time about report server mailbox message delivery queue account retrieve protocol network client session password backup archive weekly monthly invoice meeting agenda project budget review draft attached please thanks regards schedule update release notes change request", W, " ")
	for (u = 0; u < users; u++) {
		user = sprintf("u%05d", u)
		md = root "/" user "/Maildir"
		system("mkdir -p " md "/new " md "/cur " md "/tmp")
		for (j = 1; j <= nmsg; j++) {
			target = 3200 + (j * 797 + u * 131) % 1700
			t = 1700000000 + j * 3607 + u
			ss = sprintf("%02d", (j * 7) % 60)
			msg = "Return-Path: <sender" j "@lists.example.net>\n"
			msg = msg "Delivered-To: " user "@example.org\n"
			msg = msg "Received: from mx" (j % 3 + 1) ".example.net (mx" (j % 3 + 1) ".example.net [192.0.2." (j + 10) "])\n"
			msg = msg "\tby mail.example.org (Postfix) with ESMTPS id 4Q" sprintf("%08X", t) "\n"
			msg = msg "\tfor <" user "@example.org>; Tue, 14 Nov 2023 22:13:" ss " +0000 (UTC)\n"
			msg = msg "Received: from [10.0.0." j "] (unknown [198.51.100." j "])\n"
			msg = msg "\tby mx" (j % 3 + 1) ".example.net (Postfix) with ESMTPSA id " sprintf("%08X", t * 3) ";\n"
			msg = msg "\tTue, 14 Nov 2023 22:13:" ss " +0000 (UTC)\n"
			msg = msg "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.net;\n"
			msg = msg "\ts=sel2023; t=" t "; h=from:to:subject:date:message-id;\n"
			msg = msg "\tbh=" b64(44) ";\n"
			msg = msg "\tb=" b64(70) "\n\t " b64(70) "\n\t " b64(70) "\n\t " b64(52) "\n"
			msg = msg "From: \"Sender " j "\" <sender" j "@lists.example.net>\n"
			msg = msg "To: " user "@example.org\n"
			msg = msg "Subject: Weekly report " j " for " user "\n"
			msg = msg "Date: Tue, 14 Nov 2023 22:13:" ss " +0000\n"
			msg = msg "Message-ID: <" t "." j "." user "@lists.example.net>\n"
			msg = msg "MIME-Version: 1.0\n"
			msg = msg "Content-Type: text/plain; charset=utf-8; format=flowed\n"
			msg = msg "Content-Transfer-Encoding: 8bit\n"
			msg = msg "\n"
			line = 0
			while (length(msg) < target) {
				line++
				if (j % 3 == 0 && line == 5) { msg = msg ".signature follows the dot-stuffing rule\n"; continue }
				if (j % 4 == 1 && line == 9) { msg = msg "..two dots at the start of this line\n"; continue }
				if (j % 5 == 2 && line == 12) { msg = msg ".\n"; continue }
				if (line % 11 == 0) { msg = msg "\n"; continue }
				s = ""
				while (length(s) < 60 + (line * 7) % 12)
					s = s (s == "" ? "" : " ") W[int(rand() * nw) + 1]
				msg = msg s "\n"
			}
			# One message ends without a newline.
			if (j == 7)
				msg = msg "-- \nno newline at the end of this message"
			name = t ".V803I" sprintf("%x", 4096 + u * 64 + j) "M" (100000 + j * 37 + u) ".bench.example.org"
			if (j <= 12)
				file = md "/cur/" name ":2,S"
			else
				file = md "/new/" name
			printf "%s", msg > file
			close(file)
		}
	}
}
function b64(n,   s, k, A) {
	A = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	s = ""
	for (k = 0; k < n; k++)
		s = s substr(A, int(rand() * 64) + 1, 1)
	return s
}'
# Directory times an hour back, as in a maildrop nothing was delivered to
# lately (popboxd trusts its cache only for directories not touched in
# the last seconds).
find "$WORK/mail" -mindepth 3 -maxdepth 3 -type d -exec touch -d '-1 hour' {} +
CORPUS_BYTES=$(find "$WORK/mail" -type f -exec cat {} + | wc -c)
say "corpus: $((NUSERS * NMSG)) messages, $((CORPUS_BYTES / NUSERS / NMSG)) bytes on average"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
	-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
	-keyout "$WORK/tls/ecdsa.key" -out "$WORK/tls/ecdsa.pem" 2>/dev/null
chmod 644 "$WORK/tls/"*

# passwd-file for a scheme: PLAIN or SHA512-CRYPT (a salt per user).
make_passwd() { # SCHEME FILE
	local i
	for ((i = 0; i < NUSERS; i++)); do
		if [ "$1" = PLAIN ]; then
			printf 'u%05d:{PLAIN}%s::::::\n' "$i" "$PASSWORD"
		else
			printf 'u%05d:{SHA512-CRYPT}%s::::::\n' "$i" \
				"$(openssl passwd -6 -salt "bench$i" "$PASSWORD")"
		fi
	done > "$2"
	chmod 600 "$2"
}

# ---------------------------------------------------------------- helpers

FREE_PORT=


# Busy ticks of the whole machine (all but idle and iowait).
busy_ticks() {
	awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}



# start_popboxd NAME BIN MAILDIR PASSWD: sets SRV_PID, SRV_PLAIN, SRV_TLS.
start_popboxd() {
	local name=$1 bin=$2 dir=$WORK/$1 keys
	mkdir -p "$dir"
	free_port; SRV_PLAIN=$FREE_PORT
	free_port; SRV_TLS=$FREE_PORT
	cat > "$dir/popboxd.conf" <<EOF
# popboxd for bench/churn.sh
listen = 127.0.0.1:$SRV_PLAIN
tls_listen = 127.0.0.1:$SRV_TLS
tls_cert_file = $WORK/tls/ecdsa.pem
tls_key_file = $WORK/tls/ecdsa.key
passdb_file = $4
mail_location = $3/%u/Maildir
mail_user = nobody
EOF
	keys=$("$bin" -t -c "$dir/popboxd.conf" 2>&1) || { echo "$keys" >&2; die "$name: bad config"; }
	# Settings of the privilege-separated builds: every worker connects
	# from 127.0.0.1, so no per-address cap.
	if grep -q '^max_connections_per_address = ' <<<"$keys"; then
		echo "max_connections_per_address = 0" >> "$dir/popboxd.conf"
	fi
	local ok=1
	run_popboxd "$bin" "$dir/popboxd.conf" "$4" "$keys" || ok=0
	STARTED+=("popboxd:$SRV_PID")
	[ $ok = 1 ] || die "$name did not start"
}

start_dovecot() { # NAME MAILROOT PASSWD
	local dir=$WORK/$1
	mkdir -p "$dir"
	free_port; SRV_PLAIN=$FREE_PORT
	free_port; SRV_TLS=$FREE_PORT
	chown dovecot "$3"
	dovecot_write_conf "$dir" tuned $((NUSERS + 100)) "$3" "$2" \
		"$WORK/tls/ecdsa.pem" "$WORK/tls/ecdsa.key" "$SRV_PLAIN" "$SRV_TLS"
	dovecot_start "$dir" || die "dovecot did not start"
	SRV_PID=$DOVECOT_PID
	STARTED+=("dovecot:$SRV_PID")
}

stop_server() { # KIND PID
	if [ "$1" = dovecot ]; then dovecot_stop "$2"; forget "$2"; else stop_popboxd "$2"; fi
}


# ---------------------------------------------------------------- machine

MACHINE=$(machine_line)
say "machine: $MACHINE"
RES=$WORK/results
mkdir -p "$RES"
: > "$RES/churn.tsv"

# ---------------------------------------------------------------- runs

# churn_run LABEL KIND ROOT PORT SCHEME TRANSPORT CONC ROUND: appends to
# churn.tsv: scheme transport conc label round rate server_us client_us
# errors p50 p99 other_cpu_pct sessions total messages added_crlf
churn_run() {
	local label=$1 kind=$2 root=$3 port=$4 scheme=$5 tr=$6 conc=$7 round=$8
	local c0 c1 b0 b1 out line flags=()
	[ "$tr" = tls ] && flags=(--tls)
	# Dovecot sends a CRLF after a message that lacks a final newline
	# and leaves it out of LIST's size: accepted for it, and counted.
	[ "$kind" = dovecot ] && flags+=(--allow-added-crlf)
	out=$WORK/run-${label// /_}-$scheme-$tr-$conc-$round.out
	sleep 0.5
	b0=$(busy_ticks)
	c0=$(cpu_ticks "$root")
	timeout $((SECS + 60)) "$TLSLOAD" churn -c "$conc" -t "$SECS" --timeout 20 \
		-p "$PASSWORD" "${flags[@]}" 127.0.0.1 "$port" </dev/null >"$out" 2>&1 || true
	c1=$(cpu_ticks "$root")
	b1=$(busy_ticks)
	line=$(grep '^tlsload: churn ' "$out" || true)
	if [ -z "$line" ]; then
		cat "$out" >&2
		say "$label: no result"
		return 0
	fi
	local total rate cli clis errs p50 p99 srv other sessions added msgs
	sessions=$(kv sessions <<<"$line"); total=$(kv total <<<"$line")
	added=$(kv added_crlf <<<"$line"); msgs=$(kv messages <<<"$line")
	rate=$(kv rate <<<"$line"); cli=$(kv client_cpu_us_per_session <<<"$line")
	clis=$(kv client_cpu_s <<<"$line"); errs=$(kv errors <<<"$line")
	p50=$(kv p50_ms <<<"$line"); p99=$(kv p99_ms <<<"$line")
	srv=$(awk -v a="$c0" -v b="$c1" -v n="$total" -v hz="$CLK_TCK" \
		'BEGIN { if (n > 0) printf "%.1f", (b - a) * 1e6 / hz / n; else print "-" }')
	# The machine's busy time that was neither the server nor the load
	# generator, as a share of both cores over the run.
	other=$(awk -v a="$b0" -v b="$b1" -v s0="$c0" -v s1="$c1" -v cl="$clis" \
		-v hz="$CLK_TCK" -v secs="$SECS" -v n="$(nproc)" \
		'BEGIN { o = ((b - a) - (s1 - s0)) / hz - cl; if (o < 0) o = 0
			 printf "%.0f", 100 * o / (secs * n) }')
	say "$scheme $tr c=$conc round $round $label: $rate sessions/s, server $srv us/session, client $cli us/session, p50 $p50 ms, p99 $p99 ms, errors $errs, other CPU $other %"
	[ "$errs" = 0 ] || grep '^tlsload: failure' "$out" | sed "s/^/churn.sh:   /" >&2 || true
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scheme" "$tr" \
		"$conc" "$label" "$round" "$rate" "$srv" "$cli" "$errs" "$p50" "$p99" \
		"$other" "$sessions" "$total" "$msgs" "$added" >> "$RES/churn.tsv"
}

T_START=$(date +%s)
for scheme in $SCHEMES; do
	case $scheme in PLAIN | SHA512-CRYPT) ;; *) die "BENCH_CHURN_SCHEMES: PLAIN or SHA512-CRYPT, not $scheme" ;; esac
	kinds=() pids=() plains=() tlss=()
	for ((k = 0; k < ${#LABELS[@]}; k++)); do
		# A fresh copy of the corpus and the passwd-file for each server.
		sdir=$WORK/srv$k-$scheme
		mkdir -p "$sdir"
		cp -a "$WORK/mail" "$sdir/mail"
		chown -R nobody:nogroup "$sdir/mail"
		make_passwd "$scheme" "$sdir/passwd"
		if [ "${BINS[$k]}" = dovecot ]; then
			start_dovecot "dovecot-$scheme" "$sdir/mail" "$sdir/passwd"
			kinds+=(dovecot)
		else
			start_popboxd "popboxd$k-$scheme" "${BINS[$k]}" "$sdir/mail" "$sdir/passwd"
			kinds+=(popboxd)
		fi
		pids+=("$SRV_PID"); plains+=("$SRV_PLAIN"); tlss+=("$SRV_TLS")
	done
	for p in "${pids[@]}"; do settle "$p"; done
	# Warm-up: every user logs in once on every server (popboxd writes its
	# popbox.cache, Dovecot its indexes), outside the measurement.
	for ((k = 0; k < ${#LABELS[@]}; k++)); do
		wflags=()
		[ "${kinds[$k]}" = dovecot ] && wflags=(--allow-added-crlf)
		"$TLSLOAD" churn -c "$NUSERS" -t 2 --timeout 20 -p "$PASSWORD" "${wflags[@]}" \
			127.0.0.1 "${plains[$k]}" </dev/null >"$WORK/warmup-$k-$scheme.out" 2>&1 || {
			cat "$WORK/warmup-$k-$scheme.out" >&2
			say "warning: the warm-up of ${LABELS[$k]} ($scheme) had errors"
		}
	done
	for tr in $TRANSPORTS; do
		concs=$CONCS
		[ "$tr" = tls ] && concs=$TLS_CONCS
		for conc in $concs; do
			for ((r = 1; r <= ROUNDS; r++)); do
				for ((k = 0; k < ${#LABELS[@]}; k++)); do
					j=$(((k + r - 1) % ${#LABELS[@]}))
					if [ "$tr" = tls ]; then port=${tlss[$j]}; else port=${plains[$j]}; fi
					churn_run "${LABELS[$j]}" "${kinds[$j]}" "${pids[$j]}" "$port" \
						"$scheme" "$tr" "$conc" "$r"
				done
			done
		done
	done
	for ((k = 0; k < ${#LABELS[@]}; k++)); do
		stop_server "${kinds[$k]}" "${pids[$k]}"
	done
done
T_END=$(date +%s)

# ---------------------------------------------------------------- report

# Medians per (scheme, transport, concurrency, server), by rate; the other
# columns are the median run's.  medians.tsv: scheme tr conc label rate
# srv cli errs(sum) p50 p99 other(max) runs
sort -t$'\t' -k1,1 -k2,2 -k3,3n -k4,4 -k6,6n "$RES/churn.tsv" | awk -F'\t' -v OFS='\t' '
	function flush() {
		if (n == 0) return
		m = int((n + 1) / 2)
		print k1, k2, k3, k4, rate[m], srv[m], cli[m], errs, p50[m], p99[m], omax, n
		n = 0; errs = 0; omax = 0
	}
	{
		key = $1 "\t" $2 "\t" $3 "\t" $4
		if (key != last) { flush(); last = key; k1 = $1; k2 = $2; k3 = $3; k4 = $4 }
		n++; rate[n] = $6; srv[n] = $7; cli[n] = $8; p50[n] = $10; p99[n] = $11
		errs += $9; if ($12 > omax) omax = $12
	}
	END { flush() }' > "$RES/medians.tsv"

report() {
	echo "## Session churn: popboxd beside Dovecot ($(date -u +%Y-%m-%d))"
	echo
	echo "Machine: $MACHINE."
	echo
	echo "Each session: connect, USER/PASS, STAT, UIDL, LIST, RETR of all $NMSG messages"
	echo "(about $((CORPUS_BYTES / NUSERS / NMSG)) bytes each), QUIT; every reply checked.  $NUSERS users, each"
	echo "worker its own.  Each run $SECS s; median of $ROUNDS rounds by rate, servers in"
	echo "turn.  Server CPU: user+system of all its processes (exited children"
	echo "included) per session.  Client: the load generator's own CPU, on the same"
	echo "$(nproc) cores.  Other CPU: the machine's busy time that was neither, in % of"
	echo "all cores, highest of the rounds.  Servers: ${LABELS[*]}."
	echo "Took $((T_END - T_START)) s."
	echo
	echo "| passwords | transport | concurrency | server | sessions/s | server CPU (µs/session) | client CPU (µs/session) | p50 (ms) | p99 (ms) | errors | other CPU (%) |"
	echo "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
	awk -F'\t' '{ printf "| %s | %s | %s | %s | %.1f | %.0f | %.0f | %.2f | %.2f | %d | %d |\n",
		$1, $2, $3, $4, $5, $6, $7, $9, $10, $8, $11 }' "$RES/medians.tsv"
	echo
	# Ratios: an older build against this one's popboxd (the cost of
	# what changed), and this popboxd against Dovecot.
	local pairs=()
	[ "${#LABELS[@]}" -gt 1 ] && [ "${BINS[0]}" != dovecot ] && [ "${LABELS[0]}" != "$POPBOXD_LABEL" ] &&
		pairs+=("$POPBOXD_LABEL|${LABELS[0]}")
	[ "$WITH_DOVECOT" = 1 ] && pairs+=("$POPBOXD_LABEL|Dovecot tuned")
	if [ "${#pairs[@]}" -gt 0 ]; then
		echo "Ratios of the medians (A ÷ B): sessions per second, and server CPU per"
		echo "session (below 1: A needs less)."
		echo
		echo "| passwords | transport | concurrency | A ÷ B | sessions/s | server CPU per session |"
		echo "|---|---|---:|---|---:|---:|"
		printf '%s\n' "${pairs[@]}" | awk -F'\t' '
			NR == FNR { split($0, ab, "|"); A[++np] = ab[1]; B[np] = ab[2]; next }
			{ key = $1 "\t" $2 "\t" $3; r[key "\t" $4] = $5; c[key "\t" $4] = $6
			  if (!(key in seen)) { seen[key] = 1; order[++n] = key } }
			END {
				for (i = 1; i <= n; i++) for (j = 1; j <= np; j++) {
					k = order[i]; a = k "\t" A[j]; b = k "\t" B[j]
					if (!(a in r) || !(b in r) || r[b] == 0 || c[b] == 0) continue
					split(k, f, "\t")
					printf "| %s | %s | %s | %s ÷ %s | %.3f | %.3f |\n", f[1], f[2], f[3],
						A[j], B[j], r[a] / r[b], c[a] / c[b]
				}
			}' - "$RES/medians.tsv"
		echo
	fi
	echo "<details><summary>Every run</summary>"
	echo
	echo "| passwords | transport | concurrency | server | round | sessions/s | server CPU (µs/session) | client CPU (µs/session) | errors | p50 (ms) | p99 (ms) | other CPU (%) | sessions in time | sessions in all |"
	echo "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	sort -t$'\t' -k1,1 -k2,2 -k3,3n -k4,4 -k5,5n "$RES/churn.tsv" | awk -F'\t' '{
		printf "| %s |\n", $1 " | " $2 " | " $3 " | " $4 " | " $5 " | " $6 " | " $7 " | " $8 " | " $9 " | " $10 " | " $11 " | " $12 " | " $13 " | " $14 }'
	echo
	echo "</details>"
	awk -F'\t' '$16 > 0 { a[$4] += $16; m[$4] += $15 }
		END { for (s in a) printf "\n%s: %d of %d messages retrieved were 2 octets longer than LIST said (a CRLF added after the message without a final newline, not counted in its size); accepted (--allow-added-crlf), not counted as errors.\n", s, a[s], m[s] }' "$RES/churn.tsv"
}

mkdir -p "$top/bench/results"
outfile=$top/bench/results/churn-$(date -u +%Y%m%d-%H%M%S).md
report | tee "$outfile"
say "written to $outfile"
