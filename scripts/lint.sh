#!/usr/bin/env bash
# lint.sh — static analysis of lib/*.c popboxd/*.c fetch/*.c tools/*.c: clang-tidy
# with the checks in .clang-tidy, then cppcheck.  Prints every finding and
# exits 1 if there is any (0 if clean, 2 if a tool is missing).
#
# A false positive is silenced on its line only, with the reason, in a
# comment on the line before:
#   /* why ...
#      NOLINTNEXTLINE(check-name) */          for clang-tidy
#   /* cppcheck-suppress id ; why */          for cppcheck
# JOBS=N sets the parallelism (default: the number of CPUs).
set -u
cd "$(dirname "$0")/.."
export LC_ALL=C

tidy=$(command -v clang-tidy-14 || command -v clang-tidy) || {
	echo "lint: clang-tidy not found (scripts/install-deps.sh)" >&2; exit 2; }
command -v cppcheck >/dev/null || {
	echo "lint: cppcheck not found (scripts/install-deps.sh)" >&2; exit 2; }

jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
shopt -s nullglob
sources=(lib/*.c popboxd/*.c fetch/*.c tools/*.c)
# The compile flags of the Makefile that matter to the parser.
read -r -a cflags <<<"-Ilib -Ipopboxd -Ifetch -D_GNU_SOURCE -std=c17 -pthread \
	$(pkg-config --cflags libevent libssl 2>/dev/null)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0

# clang-tidy: one process per file, $jobs at a time; each file's output is
# kept apart and printed whole, so parallel runs do not interleave.
export tidy tmp
printf '%s\n' "${sources[@]}" |
	xargs -P "$jobs" -I{} bash -c '
		f=$1; shift
		out=$tmp/$(printf %s "$f" | tr / _)
		"$tidy" -quiet "$f" -- "$@" >"$out" 2>&1 || echo "$f" >>"$tmp/tidy-failed"
	' _ {} "${cflags[@]}"
if [ -s "$tmp/tidy-failed" ]; then
	for f in $(sort "$tmp/tidy-failed"); do
		grep -v -E '^[0-9]+ (warnings?|errors?) (generated|treated as errors)\.?$' \
			"$tmp/$(printf %s "$f" | tr / _)"
	done
	echo "lint: clang-tidy: findings in $(wc -l <"$tmp/tidy-failed") file(s)" >&2
	status=1
else
	echo "lint: clang-tidy: ${#sources[@]} files clean"
fi

# cppcheck: the configuration the build uses (_GNU_SOURCE), C11 rules.
if cppcheck -q -j "$jobs" --enable=warning,portability,performance \
	--inline-suppr --error-exitcode=1 -I lib -I popboxd -I fetch -D_GNU_SOURCE \
	--std=c11 --template='{file}:{line}:{column}: {severity}: {message} [{id}]' \
	"${sources[@]}"; then
	echo "lint: cppcheck: ${#sources[@]} files clean"
else
	echo "lint: cppcheck: findings above" >&2
	status=1
fi
exit $status
