#!/usr/bin/env bash
# check-hardening.sh BUILD_DIR | FILE... — proves that the release binaries
# were really built hardened, by reading the ELF files themselves (readelf),
# not by trusting the Makefile's flags.  With a directory it checks
# BUILD_DIR/popboxd, BUILD_DIR/popbox and BUILD_DIR/popbox-deliver; with
# files, those files.
#
# Each binary must have:
#   pie        ELF type DYN (a position-independent executable)
#   relro      a GNU_RELRO segment ...
#   bind-now   ... and BIND_NOW (DT_FLAGS BIND_NOW or DT_FLAGS_1 NOW):
#              together, full RELRO (the GOT is read-only after start-up)
#   nx-stack   a GNU_STACK segment without E (no executable stack)
#   ssp        __stack_chk_fail imported (-fstack-protector-strong)
#   fortify    at least one __*_chk function imported (_FORTIFY_SOURCE);
#              the binary cannot tell level 2 from 3, the Makefile sets 3
#
# Prints one table row per binary and check; exits 1 if any check failed,
# 2 on a usage error or an unreadable file.
set -u
export LC_ALL=C

usage() { echo "usage: $0 BUILD_DIR | FILE..." >&2; exit 2; }
[ $# -ge 1 ] || usage
command -v readelf >/dev/null || {
	echo "check-hardening: readelf not found (apt-get install binutils)" >&2
	exit 2
}

if [ $# -eq 1 ] && [ -d "$1" ]; then
	bins=("$1/popboxd" "$1/popbox" "$1/popbox-deliver")
	[ -e tools/popbox-fetch.c ] && bins+=("$1/popbox-fetch")
else
	bins=("$@")
fi

failed=0
row() { printf '%-24s %-9s %-6s %s\n' "$1" "$2" "$3" "$4"; }
pass() { row "$bin" "$1" ok "$2"; }
fail() { row "$bin" "$1" FAIL "$2"; failed=$((failed + 1)); }

for bin in "${bins[@]}"; do
	if [ ! -f "$bin" ] || ! readelf -hW "$bin" >/dev/null 2>&1; then
		echo "check-hardening: $bin: not a readable ELF file (run make first?)" >&2
		exit 2
	fi
done

row binary check result detail
for bin in "${bins[@]}"; do
	header=$(readelf -hW "$bin" 2>/dev/null)
	segments=$(readelf -lW "$bin" 2>/dev/null)
	dynamic=$(readelf -dW "$bin" 2>/dev/null)
	# Undefined (imported) dynamic symbols, names only, without @VERSION.
	imports=$(readelf --dyn-syms -W "$bin" 2>/dev/null |
		awk '$7 == "UND" && $8 != "" { sub(/@.*/, "", $8); print $8 }')

	if grep -Eq '^ *Type: +DYN' <<<"$header"; then
		pass pie "ELF type DYN"
	else
		fail pie "ELF type $(awk '/^ *Type:/ { print $2 }' <<<"$header"), want DYN: link with -pie"
	fi

	if grep -Eq '^ *GNU_RELRO ' <<<"$segments"; then
		pass relro "GNU_RELRO segment"
	else
		fail relro "no GNU_RELRO segment: link with -Wl,-z,relro"
	fi

	if grep -Eq '\((FLAGS)\) +.*\bBIND_NOW\b|\((FLAGS_1)\) +Flags:.*\bNOW\b' <<<"$dynamic"; then
		pass bind-now "BIND_NOW (full RELRO with the above)"
	else
		fail bind-now "no DT_FLAGS BIND_NOW / DT_FLAGS_1 NOW (partial RELRO at best): link with -Wl,-z,now"
	fi

	# The flags ("RW ", "RWE", "R E") sit between the sizes and the
	# alignment, and may contain a space.
	stack=$(awk '$1 == "GNU_STACK" { f = ""; for (i = 7; i < NF; i++) f = f $i; print f }' <<<"$segments")
	if [ -z "$stack" ]; then
		fail nx-stack "no GNU_STACK segment: the stack may be executable"
	elif [[ $stack == *E* ]]; then
		fail nx-stack "GNU_STACK flags $stack: executable stack (-Wl,-z,noexecstack)"
	else
		pass nx-stack "GNU_STACK $stack, not executable"
	fi

	if grep -qx '__stack_chk_fail' <<<"$imports"; then
		pass ssp "__stack_chk_fail imported"
	else
		fail ssp "__stack_chk_fail not imported: compile with -fstack-protector-strong"
	fi

	chk=$(grep -E '^__[A-Za-z0-9_]+_chk$' <<<"$imports" | grep -vx '__stack_chk_fail' | sort)
	if [ -n "$chk" ]; then
		pass fortify "$(wc -l <<<"$chk") *_chk imported, e.g. $(head -3 <<<"$chk" | paste -sd' ')"
	else
		fail fortify "no __*_chk function imported: compile with -O2 -D_FORTIFY_SOURCE=3"
	fi

	# popbox-deliver starts once per message: loading OpenSSL would double
	# its cost (docs/performance.md, Delivery), so nothing may pull it in.
	if [ "$(basename "$bin")" = popbox-deliver ]; then
		needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | paste -sd' ')
		if grep -Eq 'libcrypto|libssl|libevent|libcrypt\.' <<<"$needed"; then
			fail libs "loads $needed: an object pulls in OpenSSL, libevent or libcrypt"
		else
			pass libs "loads only $needed"
		fi
	fi
done

if [ "$failed" -gt 0 ]; then
	echo "check-hardening: $failed check(s) FAILED" >&2
	exit 1
fi
echo "check-hardening: all checks passed"
