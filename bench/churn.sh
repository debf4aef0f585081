#!/usr/bin/env bash
# churn.sh — whole POP3 sessions per second (issue 7, workload 1; issue 3's
# cost of privilege separation): popboxd beside tuned Dovecot, and beside
# an older popboxd build when asked, on the same users and messages.
#
#   bash bench/churn.sh                          (as root; from anywhere in the tree)
#   BENCH_BEFORE_REV=3598e53 bash bench/churn.sh (also that commit's popboxd)
#
# Each session (bench/tlsload churn): connect, USER/PASS (or STLS first,
# or AUTH PLAIN / AUTH SCRAM-SHA-256 instead: the extra rows below), STAT,
# UIDL, LIST, RETR of every message, QUIT; every reply checked (RETR's octets against
# LIST's size after un-stuffing, a UIDL for every message, QUIT's +OK).
# C workers, each with its own user (a maildrop is locked per session),
# for BENCH_SECONDS, BENCH_ROUNDS rounds with the servers in turn (the
# order rotates each round); every figure as its median and spread (min-max
# of up to 3 rounds, p25-p75 of more), and popboxd / Dovecot per workload
# (ratio of the medians, and the spread of the per-round ratios).  The load
# average before and after every run goes in the report: other work on a
# shared machine shows there.  No session deletes anything, so the
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
# The corpus (bench/corpus.py, seed 7): BENCH_CHURN_USERS users, each with
# BENCH_CHURN_MESSAGES messages of 3.2-4.9 KB (realistic headers, MIME
# parts, 8-bit bytes, lines starting with a dot, lone dots, the 20th
# message without a final newline; 12 read ones in cur/ with :2,S, the
# rest in new/; names without ,S=/,W=, as Postfix writes them, so each
# server sizes messages itself).  Every
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
#   BENCH_CHURN_EXTRA        more ways to connect and log in, each
#                            CONN[+LOGIN] (CONN: plain, tls or stls; LOGIN:
#                            user, auth-plain or scram; default user), run
#                            at BENCH_CHURN_EXTRA_CONCURRENCY ("8") with
#                            BENCH_CHURN_EXTRA_SCHEME passwords (PLAIN:
#                            SCRAM needs a password the server can derive
#                            keys from); default "stls plain+auth-plain
#                            plain+scram"; "" for none
#   BENCH_CHURN_DOVECOT      1 (default) runs tuned Dovecot too; 0 does not
#   BENCH_BEFORE_REV         a git revision: build its popboxd in a temp
#                            worktree and run it too, as "popboxd REV"
#   BENCH_BEFORE_POPBOXD     or a popboxd binary already built (label:
#                            BENCH_BEFORE_LABEL, default "popboxd before")
#   BENCH_BUILD              build dir (build/release)
#   BENCH_POPBOXD            the popboxd to measure (BENCH_BUILD/popboxd);
#                            label BENCH_POPBOXD_LABEL ("popboxd")
#   BENCH_NO_MAKE=1          build nothing: use the binaries as they are
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
EXTRAS=${BENCH_CHURN_EXTRA-stls plain+auth-plain plain+scram}
EXTRA_CONCS=${BENCH_CHURN_EXTRA_CONCURRENCY:-8}
EXTRA_SCHEME=${BENCH_CHURN_EXTRA_SCHEME:-PLAIN}
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
for c in $CONCS $TLS_CONCS $EXTRA_CONCS; do [ "$c" -gt "$maxc" ] && maxc=$c; done
NUSERS=${BENCH_CHURN_USERS:-64}
[ "$NUSERS" -ge "$maxc" ] || NUSERS=$maxc

if [ -z "${BENCH_POPBOXD:-}" ]; then
	[ "${BENCH_NO_MAKE:-0}" = 1 ] || make --no-print-directory "$build/popboxd" "$build/bench/tlsload" >&2
else
	[ "${BENCH_NO_MAKE:-0}" = 1 ] || make --no-print-directory "$build/bench/tlsload" >&2
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
CORPUS_LINE=$(/usr/bin/python3 "$top/bench/corpus.py" --root "$WORK/mail" --users "$NUSERS" \
	--messages "$NMSG" --size 3200-4900 --cur 12 --seed 7) || die "bench/corpus.py failed"
CORPUS_BYTES=$(kv bytes <<<" $CORPUS_LINE")
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

# tlsload's flags for a way to connect and log in: CONN[+LOGIN].
tr_flags() { # TR
	local conn=${1%%+*} login=user
	case $1 in *+*) login=${1#*+} ;; esac
	case $conn in
	plain) ;;
	tls) echo --tls ;;
	stls) echo --stls ;;
	*) die "unknown connection $conn in $1" ;;
	esac
	case $login in
	user) ;;
	auth-plain) echo --auth plain ;;
	scram) echo --auth scram ;;
	*) die "unknown login $login in $1" ;;
	esac
}

# churn_run LABEL KIND ROOT PORT SCHEME TRANSPORT CONC ROUND: appends to
# churn.tsv: scheme transport conc label round rate server_us client_us
# errors p50 p99 other_cpu_pct sessions total messages added_crlf
# load_before load_after
churn_run() {
	local label=$1 kind=$2 root=$3 port=$4 scheme=$5 tr=$6 conc=$7 round=$8
	local c0 c1 b0 b1 out line flags=() la0 la1
	read -ra flags <<<"$(tr_flags "$tr" | tr '\n' ' ')"
	# Dovecot sends a CRLF after a message that lacks a final newline
	# and leaves it out of LIST's size: accepted for it, and counted.
	[ "$kind" = dovecot ] && flags+=(--allow-added-crlf)
	out=$WORK/run-${label// /_}-$scheme-$tr-$conc-$round.out
	sleep 0.5
	la0=$(loadavg)
	b0=$(busy_ticks)
	c0=$(cpu_ticks "$root")
	timeout $((SECS + 60)) "$TLSLOAD" churn -c "$conc" -t "$SECS" --timeout 20 \
		-p "$PASSWORD" "${flags[@]}" 127.0.0.1 "$port" </dev/null >"$out" 2>&1 || true
	c1=$(cpu_ticks "$root")
	b1=$(busy_ticks)
	la1=$(loadavg)
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
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scheme" "$tr" \
		"$conc" "$label" "$round" "$rate" "$srv" "$cli" "$errs" "$p50" "$p99" \
		"$other" "$sessions" "$total" "$msgs" "$added" "$la0" "$la1" >> "$RES/churn.tsv"
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
	plan=()
	for tr in $TRANSPORTS; do
		concs=$CONCS
		[ "$tr" = tls ] && concs=$TLS_CONCS
		for conc in $concs; do plan+=("$tr $conc"); done
	done
	if [ "$scheme" = "$EXTRA_SCHEME" ]; then
		for tr in $EXTRAS; do
			for conc in $EXTRA_CONCS; do plan+=("$tr $conc"); done
		done
	fi
	for step in "${plan[@]}"; do
		read -r tr conc <<<"$step"
		for ((r = 1; r <= ROUNDS; r++)); do
			for ((k = 0; k < ${#LABELS[@]}; k++)); do
				j=$(((k + r - 1) % ${#LABELS[@]}))
				if [ "${tr%%+*}" = tls ]; then port=${tlss[$j]}; else port=${plains[$j]}; fi
				churn_run "${LABELS[$j]}" "${kinds[$j]}" "${pids[$j]}" "$port" \
					"$scheme" "$tr" "$conc" "$r"
			done
		done
	done
	for ((k = 0; k < ${#LABELS[@]}; k++)); do
		stop_server "${kinds[$k]}" "${pids[$k]}"
	done
done
T_END=$(date +%s)

# ---------------------------------------------------------------- report

# Medians and spread per (scheme, transport, concurrency, server), each
# figure on its own.  medians.tsv: scheme tr conc label runs, then median,
# lo, hi of: rate srv cli p50 p99 (columns 6-20).
sort -t$'\t' -k1,1 -k2,2 -k3,3n -k4,4 -k5,5n "$RES/churn.tsv" |
	awk -F'\t' -v OFS='\t' '{ print $1, $2, $3, $4, $6, $7, $8, $10, $11 }' |
	spread 4 > "$RES/medians.tsv"

# Readable names of a transport token CONN[+LOGIN]: "CONN<TAB>LOGIN".
AWK_TR='
function tr_conn(t,   c) { c = t; sub(/\+.*/, "", c)
	return c == "tls" ? "implicit TLS" : c == "stls" ? "STLS" : "plain" }
function tr_login(t,   l) { l = (t ~ /\+/) ? t : "+user"; sub(/^[^+]*\+/, "", l)
	return l == "auth-plain" ? "AUTH PLAIN" : l == "scram" ? "AUTH SCRAM-SHA-256" : "USER/PASS" }
'

# ratio_rows A B: popboxd-like A ÷ B per (scheme, tr, conc): the ratio of
# the medians, and the spread of the per-round ratios (rounds where both
# ran), for sessions/s and server CPU per session.
ratio_rows() { # A B
	awk -F'\t' -v A="$1" -v B="$2" "$AWK_CELL$AWK_TR"'
	function sortv(n,   i, j, t) { for (i = 2; i <= n; i++) { t = x[i]
		for (j = i - 1; j >= 1 && x[j] > t; j--) x[j + 1] = x[j]; x[j + 1] = t } }
	function spr(list,   n, i, m, parts) {
		n = split(list, parts, " "); if (n == 0) return ""
		for (i = 1; i <= n; i++) x[i] = parts[i] + 0
		sortv(n)
		if (n <= 3) return sprintf("%.2f–%.2f", x[1], x[n])
		return sprintf("%.2f–%.2f", x[int(0.25 * (n - 1) + 0.5) + 1], x[int(0.75 * (n - 1) + 0.5) + 1])
	}
	NR == FNR { k = $1 "\t" $2 "\t" $3
		if ($4 == A) { ra[k] = $6; ca[k] = $9 } else if ($4 == B) { rb[k] = $6; cb[k] = $9 }
		if (!(k in seen)) { seen[k] = 1; order[++n] = k }
		next }
	{ k = $1 "\t" $2 "\t" $3 "\t" $5
	  if ($4 == A) { rra[k] = $6; rca[k] = $7 } else if ($4 == B) { rrb[k] = $6; rcb[k] = $7 } }
	END {
		for (k in rra) if ((k in rrb) && rrb[k] > 0 && rcb[k] > 0 && rca[k] != "-" && rcb[k] != "-") {
			split(k, f, "\t"); g = f[1] "\t" f[2] "\t" f[3]
			lr[g] = lr[g] " " rra[k] / rrb[k]; lc[g] = lc[g] " " rca[k] / rcb[k]
		}
		for (i = 1; i <= n; i++) { k = order[i]
			if (!(k in ra) || !(k in rb) || rb[k] == 0 || cb[k] == 0) continue
			split(k, f, "\t")
			printf "| %s | %s | %s | %s | %s ÷ %s | %.2f (%s) | %.2f (%s) |\n", f[1], tr_conn(f[2]), tr_login(f[2]), f[3],
				A, B, ra[k] / rb[k], spr(lr[k]), ca[k] / cb[k], spr(lc[k])
		}
	}' "$RES/medians.tsv" "$RES/churn.tsv"
}

report() {
	local la_first la_last
	la_first=$(head -n 1 "$RES/churn.tsv" | cut -f17)
	la_last=$(tail -n 1 "$RES/churn.tsv" | cut -f18)
	echo "## Session churn: popboxd beside Dovecot ($(date -u +%Y-%m-%d))"
	echo
	echo "Machine: $MACHINE."
	echo
	echo "Each session: connect, log in, STAT, UIDL, LIST, RETR of all $NMSG messages"
	echo "(bench/corpus.py, seed 7: ${CORPUS_LINE#corpus: }; about $((CORPUS_BYTES / NUSERS / NMSG)) bytes each), QUIT; every"
	echo "reply checked.  $NUSERS users, each worker its own.  Each run $SECS s, $ROUNDS rounds,"
	echo "servers in turn.  Every figure: the median of the rounds, and in brackets"
	echo "the spread ($(awk "$AWK_CELL"'BEGIN { print spread_name('"$ROUNDS"') }') of the rounds; none when they agree at the"
	echo "precision shown).  Server CPU: user+system of all its processes (exited"
	echo "children included) per session.  Client: the load generator's own CPU, on"
	echo "the same $(nproc) cores.  Other CPU: the machine's busy time that was neither,"
	echo "in % of all cores, highest of the rounds.  Load average (1/5/15 min) before"
	echo "the first run $la_first, after the last $la_last; every run's below.  Other work"
	echo "on the machine (builds, tests) disturbs the rates more than the CPU per"
	echo "session: compare servers on server CPU per session first."
	echo "Servers: ${LABELS[*]}.  Took $((T_END - T_START)) s."
	echo
	echo "| passwords | transport | login | concurrency | server | sessions/s | server CPU (µs/session) | client CPU (µs/session) | p50 (ms) | p99 (ms) | errors | other CPU (%) |"
	echo "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
	awk -F'\t' "$AWK_CELL$AWK_TR"'
		NR == FNR { k = $1 "\t" $2 "\t" $3 "\t" $4; e[k] += $9; if ($12 > o[k]) o[k] = $12; next }
		{ k = $1 "\t" $2 "\t" $3 "\t" $4
		  printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %d |\n",
			$1, tr_conn($2), tr_login($2), $3, $4, cell($6, $7, $8, 1), cell($9, $10, $11, 0),
			cell($12, $13, $14, 0), cell($15, $16, $17, 2), cell($18, $19, $20, 2), e[k], o[k] }' \
		"$RES/churn.tsv" "$RES/medians.tsv"
	echo
	# Ratios: an older build against this one's popboxd (the cost of
	# what changed), and this popboxd against Dovecot.
	local pairs=()
	[ "${#LABELS[@]}" -gt 1 ] && [ "${BINS[0]}" != dovecot ] && [ "${LABELS[0]}" != "$POPBOXD_LABEL" ] &&
		pairs+=("$POPBOXD_LABEL|${LABELS[0]}")
	[ "$WITH_DOVECOT" = 1 ] && pairs+=("$POPBOXD_LABEL|Dovecot tuned")
	if [ "${#pairs[@]}" -gt 0 ]; then
		echo "Ratios (A ÷ B) per workload: of the medians, and in brackets the spread"
		echo "of the per-round ratios (round r of A ÷ round r of B), for sessions per"
		echo "second (above 1: A does more) and server CPU per session (below 1: A"
		echo "needs less)."
		echo
		echo "| passwords | transport | login | concurrency | A ÷ B | sessions/s | server CPU per session |"
		echo "|---|---|---|---:|---|---:|---:|"
		local pair
		for pair in "${pairs[@]}"; do ratio_rows "${pair%%|*}" "${pair#*|}"; done
		echo
	fi
	echo "<details><summary>Every run</summary>"
	echo
	echo "| passwords | transport | login | concurrency | server | round | sessions/s | server CPU (µs/session) | client CPU (µs/session) | errors | p50 (ms) | p99 (ms) | other CPU (%) | sessions in time | sessions in all | load avg before → after |"
	echo "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
	sort -t$'\t' -k1,1 -k2,2 -k3,3n -k4,4 -k5,5n "$RES/churn.tsv" | awk -F'\t' "$AWK_TR"'{
		printf "| %s | %s | %s | %s → %s |\n", $1 " | " tr_conn($2) " | " tr_login($2) " | " $3 " | " $4 " | " $5 " | " $6, $7 " | " $8 " | " $9 " | " $10 " | " $11 " | " $12, $13 " | " $14, $17, $18 }'
	echo
	echo "</details>"
	awk -F'\t' '$16 > 0 { a[$4] += $16; m[$4] += $15 }
		END { for (s in a) printf "\n%s: %d of %d messages retrieved were 2 octets longer than LIST said (a CRLF added after a message without a final newline, not counted in its size); accepted (--allow-added-crlf), not counted as errors.\n", s, a[s], m[s] }' "$RES/churn.tsv"
}

mkdir -p "$top/bench/results"
outfile=$top/bench/results/churn-$(date -u +%Y%m%d-%H%M%S).md
report | tee "$outfile"
say "written to $outfile"
