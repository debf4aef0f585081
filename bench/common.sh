#!/usr/bin/env bash
# common.sh — shell helpers shared by bench/churn.sh and bench/tls.sh
# (sourced after bench/dovecot.sh, whose proc_tree they use):
#   cpu_ticks ROOT     user+system clock ticks of ROOT and its descendants,
#                      reaped children included
#   popboxd_up LOG     true once popboxd's master and all its children
#                      have logged event=started
#   settle ROOT        waits (at most 10 s) until ROOT's process count stops
#                      moving (Dovecot's process_min_avail forks)
#   machine_line       one line naming the machine and the versions measured
#   free_port          a free loopback port not handed out before, in FREE_PORT
#                      (below the ephemeral range; calls the script's die)
#   kv KEY             the value of KEY=value in the text on stdin
#   wait_stop PID [S]  SIGTERM, wait S seconds (30), SIGKILL; reaps it
#   stop_popboxd_tree PID  stops a popboxd master, then any child of it left
#   run_popboxd BIN CONF PASSWD KEYS  starts a popboxd (see below)
#   loadavg            the 1-, 5- and 15-minute load averages, "a/b/c"
#   spread K           summary of a TSV on stdin (see below)
#   AWK_CELL           awk functions for report cells: cell(median, lo, hi,
#                      decimals) prints "median (lo–hi)", or the median
#                      alone when lo = hi; spread_name(n) says what lo–hi is

cpu_ticks() { # ROOT
	proc_tree "$1" | sed 's|.*|/proc/&/stat|' | xargs cat 2>/dev/null |
		awk '{ sub(/^.*\) /, ""); t += $12 + $13 + $14 + $15 }
		     END { print t + 0 }' || true
}

popboxd_up() { # LOG
	local line w
	line=$(grep -m 1 'event=started' "$1" 2>/dev/null) || return 1
	case $line in *role=master*) ;; *) return 0 ;; esac
	w=$(sed -n 's/.*role=master workers=\([0-9]*\).*/\1/p' <<<"$line")
	[ "$(grep -c 'event=started role=auth' "$1")" -ge 1 ] &&
		[ "$(grep -c 'event=started role=login' "$1")" -ge "${w:-1}" ] &&
		[ "$(grep -c 'event=started role=mail' "$1")" -ge "${w:-1}" ]
}

settle() { # ROOT
	local last=-1 now i
	sleep 1
	for i in $(seq 1 10); do
		now=$(proc_tree "$1" | wc -l)
		[ "$now" = "$last" ] && return 0
		last=$now
		sleep 1
	done
}

machine_line() {
	local cpu
	cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
	printf '%s\n' "$(nproc) cores ($cpu), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r), $(openssl version | awk '{ print $1, $2 }'), libevent $(pkg-config --modversion libevent 2>/dev/null), Dovecot $(dovecot_version 2>/dev/null || echo none), popbox $(git -C "$top" describe --always --dirty 2>/dev/null || echo '?')${BENCH_POPBOXD:+; popboxd measured: ${BENCH_POPBOXD_LABEL:+$BENCH_POPBOXD_LABEL, }$BENCH_POPBOXD}"
}

read -r PORT_LO _ < /proc/sys/net/ipv4/ip_local_port_range
USED_PORTS=" "
free_port() {
	local p
	for _ in $(seq 1 200); do
		p=$((10000 + RANDOM % (PORT_LO - 10000)))
		case $USED_PORTS in *" $p "*) continue ;; esac
		if [ -z "$(ss -Htan "( sport = :$p or dport = :$p )" 2>/dev/null)" ]; then
			USED_PORTS="$USED_PORTS$p "
			FREE_PORT=$p
			return 0
		fi
	done
	die "no free port found"
}

kv() { # KEY
	sed -n "s/.*[ ]$1=\\([^ ]*\\).*/\\1/p" | head -n 1
}

wait_stop() { # PID [SECONDS]
	local pid=$1
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 $((${2:-30} * 10))); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

stop_popboxd_tree() { # PID
	local kids p
	kids=$(proc_tree "$1" | tail -n +2)
	wait_stop "$1"
	for p in $kids; do
		if { tr '\0' ' ' < "/proc/$p/cmdline"; } 2>/dev/null | grep -q popboxd; then
			kill -KILL "$p" 2>/dev/null || true
		fi
	done
}

# run_popboxd BIN CONF PASSWD KEYS: gives PASSWD to the user that reads it
# (auth_user in KEYS, the output of `popboxd -t`, in builds with an auth
# process; else nobody, the mail_user a single-process build drops to),
# starts BIN on CONF in the background (log: popboxd.log beside CONF), sets
# SRV_PID, and waits until all its processes have started; false (the log
# printed) if it did not.
run_popboxd() {
	local reader log
	log=$(dirname "$2")/popboxd.log
	reader=$(sed -n 's/^auth_user *= *//p' <<<"$4")
	chown "${reader:-nobody}" "$3"
	"$1" -c "$2" </dev/null >/dev/null 2>>"$log" &
	SRV_PID=$!
	for _ in $(seq 1 150); do
		popboxd_up "$log" && return 0
		kill -0 "$SRV_PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$log" >&2
	return 1
}

loadavg() {
	awk '{ print $1 "/" $2 "/" $3 }' /proc/loadavg
}

# spread K: rows of a TSV on stdin grouped by their first K columns (groups
# in the order they first appear); for every later column, over the
# group's rows: the median, then the spread: min and max of up to 3
# values, the 25th and 75th percentiles (nearest rank) of more.  "-" and
# empty cells are left out.  Prints per group: the K key columns, the row
# count, then "median lo hi" for each later column ("- - -" when none).
spread() { # K
	awk -F'\t' -v OFS='\t' -v k="$1" '
	function sortv(n,   i, j, t) {
		for (i = 2; i <= n; i++) {
			t = a[i]
			for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]
			a[j + 1] = t
		}
	}
	{
		key = $1
		for (i = 2; i <= k; i++) key = key OFS $i
		if (!(key in cnt)) { order[++nk] = key; cnt[key] = 0 }
		cnt[key]++
		if (NF > nf) nf = NF
		for (i = k + 1; i <= NF; i++)
			if ($i != "-" && $i != "") { n = ++nv[key, i]; v[key, i, n] = $i + 0 }
	}
	END {
		for (o = 1; o <= nk; o++) {
			key = order[o]; line = key OFS cnt[key]
			for (i = k + 1; i <= nf; i++) {
				n = nv[key, i] + 0
				if (n == 0) { line = line OFS "-" OFS "-" OFS "-"; continue }
				for (j = 1; j <= n; j++) a[j] = v[key, i, j]
				sortv(n)
				med = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
				if (n <= 3) { lo = a[1]; hi = a[n] }
				else { lo = a[int(0.25 * (n - 1) + 0.5) + 1]; hi = a[int(0.75 * (n - 1) + 0.5) + 1] }
				line = line OFS med OFS lo OFS hi
			}
			print line
		}
	}'
}

# shellcheck disable=SC2016
AWK_CELL='
function cell(m, lo, hi, d,   f) {
	if (m == "-" || m == "") return "-"
	f = "%." d "f"
	if (sprintf(f, lo) == sprintf(f, hi)) return sprintf(f, m)
	return sprintf(f " (" f "–" f ")", m, lo, hi)
}
function spread_name(n) { return n > 3 ? "p25–p75" : "min–max" }
'
