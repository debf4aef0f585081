#!/usr/bin/env bash
# run-unit-tests.sh DIR — runs every unit test program in DIR (cmocka), prints
# one summary line "N passed, N failed" and fails if any test program failed.
set -u
dir=$1
pass=0; fail=0; failed=()
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for t in "$dir"/test-*; do
	[ -x "$t" ] || continue
	out=$("$t" 2>&1); rc=$?
	n_ok=$(printf '%s\n' "$out" | grep -c '^\[       OK \]')
	n_bad=$(printf '%s\n' "$out" | grep -c '^\[  FAILED  \]')
	pass=$((pass + n_ok))
	if [ $rc -ne 0 ]; then
		printf '%s\n' "$out"
		fail=$((fail + (n_bad > 0 ? n_bad : 1)))
		failed+=("$(basename "$t")")
	fi
done
echo "unit: $pass passed, $fail failed"
[ $fail -eq 0 ] || { echo "failed: ${failed[*]}"; exit 1; }
