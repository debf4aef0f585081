#!/usr/bin/env bash
# plot.sh [CHURN.md] [BULK.tsv] — PNG plots for docs/performance.md, made
# with gnuplot (Debian: gnuplot-nox; installed if missing and root):
#   docs/churn.png  sessions per second against concurrency, plain POP3
#                   with USER/PASS, one line per server and password scheme
#                   (the median, and the spread of the rounds as error
#                   bars), from the first table of a bench/churn.sh report
#                   (default: the newest bench/results/churn-*.md that has
#                   Dovecot in it)
#   docs/bulk.png   MB/s per bulk workload (transport, connections), one bar
#                   per server (the median, the spread as error bars), from
#                   a bench/bulk.sh medians file (default: the newest
#                   bench/results/bulk-*.tsv)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
say() { printf 'plot.sh: %s\n' "$*" >&2; }

if ! command -v gnuplot >/dev/null 2>&1; then
	[ "$(id -u)" -eq 0 ] || { say "gnuplot missing: apt-get install gnuplot-nox"; exit 1; }
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q gnuplot-nox >&2
fi

churn=${1:-$(grep -l 'Dovecot tuned' bench/results/churn-*.md 2>/dev/null | sort | tail -n 1 || true)}
bulk=${2:-$(ls bench/results/bulk-*.tsv 2>/dev/null | sort | tail -n 1 || true)}
tmp=$(mktemp -d /tmp/popbox-plot.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

if [ -n "$churn" ] && [ -f "$churn" ]; then
	# The first table: | passwords | transport | [login |] concurrency |
	# server | sessions/s | ...; a cell is "median" or "median (lo–hi)".
	awk -F' *\\| *' '
		/^\| passwords \| transport \|/ && !on {
			on = 1
			for (i = 2; i < NF; i++) col[$i] = i
			next }
		on && /^\|---/ { next }
		on && !/^\|/ { exit }
		on && $col["transport"] == "plain" && (!("login" in col) || $col["login"] == "USER/PASS") {
			v = $col["sessions/s"]
			gsub(/[()]/, " ", v); gsub(/–/, " ", v)
			n = split(v, f, " ")
			if (n < 3) { f[2] = f[1]; f[3] = f[1] }
			print $col["passwords"] "\t" $col["server"] "\t" $col["concurrency"] "\t" f[1] "\t" f[2] "\t" f[3] }' \
		"$churn" > "$tmp/churn.tsv"
	series=$(cut -f1,2 "$tmp/churn.tsv" | sort -u)
	plots=
	i=0
	while IFS=$'\t' read -r scheme server; do
		[ -n "$scheme" ] || continue
		awk -F'\t' -v s="$scheme" -v v="$server" '$1 == s && $2 == v { print $3, $4, $5, $6 }' \
			"$tmp/churn.tsv" | sort -n > "$tmp/c$i.dat"
		plots="$plots${plots:+, }'$tmp/c$i.dat' using 1:2:3:4 with yerrorlines lw 2 pt 7 title '$server, $scheme'"
		i=$((i + 1))
	done <<<"$series"
	if [ -n "$plots" ]; then
		gnuplot <<EOF
set terminal pngcairo size 800,500 noenhanced
set output '$top/docs/churn.png'
set title 'Session churn, plain POP3, USER/PASS: median, spread of rounds ($(basename "$churn"))' font ',10'
set xlabel 'concurrent sessions'
set ylabel 'sessions/s'
set logscale x 2
set xtics (1, 8, 64)
set xrange [0.8:80]
set yrange [0:*]
set key bottom right
set grid
plot $plots
EOF
		say "docs/churn.png from $churn"
	else
		say "no plain churn rows in $churn"
	fi
else
	say "no churn report: docs/churn.png not made"
fi

if [ -n "$bulk" ] && [ -f "$bulk" ]; then
	# Rows: transport conn server mb/s ... (columns 9 and 10: the spread of
	# mb/s, when the file has them); three columns per server: median, lo, hi.
	awk -F'\t' '!/^#/ { w = $1 ", " $2 " conn"; if (!(w in sw)) { sw[w] = 1; wo[++nw] = w }
		if (!($3 in ss)) { ss[$3] = 1; so[++ns] = $3 }
		v[w, $3] = $4; lo[w, $3] = (NF >= 10 ? $9 : $4); hi[w, $3] = (NF >= 10 ? $10 : $4) }
		END { printf "workload"; for (j = 1; j <= ns; j++) printf "\t\"%s\"\tlo\thi", so[j]; print ""
		      for (i = 1; i <= nw; i++) { printf "\"%s\"", wo[i]
			for (j = 1; j <= ns; j++) if ((wo[i], so[j]) in v) printf "\t%s\t%s\t%s", v[wo[i], so[j]], lo[wo[i], so[j]], hi[wo[i], so[j]]
				else printf "\t0\t0\t0"
			print "" } }' "$bulk" > "$tmp/bulk.dat"
	ncol=$(head -n 1 "$tmp/bulk.dat" | awk -F'\t' '{ print NF }')
	limits=$(sed -n 's/^# limits\t//p' "$bulk" | tr '\t' ' ')
	gnuplot <<EOF
set terminal pngcairo size 800,500 noenhanced
set output '$top/docs/bulk.png'
set title 'Bulk download (RETR of ~100 KB messages): median, spread of rounds, $(basename "$bulk")' font ',10'
set xlabel 'machine limits, MB/s: $limits' font ',9'
set ylabel 'MB/s (10^6 bytes)'
set style data histogram
set style histogram errorbars gap 1 lw 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set yrange [0:*]
set grid ytics
set key top left
plot for [c=2:$ncol:3] '$tmp/bulk.dat' using c:c+1:c+2:xtic(1) title columnheader(c)
EOF
	say "docs/bulk.png from $bulk"
else
	say "no bulk results: docs/bulk.png not made"
fi
