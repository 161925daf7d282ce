#!/usr/bin/env bash
# Run the end-to-end suite: install what it needs, build the guest, run each test, and close with
# one line "e2e: N passed, N failed" summing the tests' own counts. Exits non-zero if any check
# failed or any test script failed to finish. Run as root (CI does).
#
#     tests/e2e/run.sh                 # every test below
#     tests/e2e/run.sh guest-smoke     # only the named ones
#
# NAME+no-peek-off runs NAME with SLIPWAY_TEST_NO_TCP_PEEK_OFF=1: slipway's TCP peek path of
# kernels without TCP SO_PEEK_OFF (before 6.9), on this kernel.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/../.." && pwd)

all_tests=(harness-selftest guest-smoke test-netns test-ipv6 test-qemu test-qemu-forward test-multi-guest test-hostile-link test-forward test-guest-api test-api test-gvproxy test-slirp4netns test-run test-cni test-many-connections test-bulk test-lossy-link test-netns+no-peek-off test-many-connections+no-peek-off test-bulk+no-peek-off)
if [ "$#" -gt 0 ]; then tests=("$@"); else tests=("${all_tests[@]}"); fi

"$repo_root/scripts/install-deps.sh"
"$here/build-guest.sh" >/dev/null

passed=0
failed=0
for t in "${tests[@]}"; do
    run=()
    case $t in
    *+no-peek-off) run=(env SLIPWAY_TEST_NO_TCP_PEEK_OFF=1) ;;
    esac
    script="$here/${t%+no-peek-off}.sh"
    [ -x "$script" ] || {
        echo "e2e: no test $t ($script)" >&2
        failed=$((failed + 1))
        continue
    }
    echo "=== $t"
    out=$(mktemp)
    start=$(date +%s)
    rc=0
    p=0
    f=0
    # Each test's own closing line is shown as "[name] e2e: ...", so that the suite's total below
    # is the only "N passed, N failed" line of the run.
    "${run[@]}" "$script" 2>&1 | tee "$out" | sed -u -E "s/^(e2e: [0-9]+ passed, [0-9]+ failed)\$/[$t] \1/" ||
        rc=$?
    line=$(grep -E '^e2e: [0-9]+ passed, [0-9]+ failed$' "$out" | tail -n1 || true)
    rm -f "$out"
    if [ -n "$line" ]; then
        read -r p f <<<"$(sed -E 's/^e2e: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/' <<<"$line")"
        passed=$((passed + p))
        failed=$((failed + f))
    fi
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
        echo "e2e: $t exited with status $rc" >&2
        failed=$((failed + 1))
    fi
    echo "=== $t: $(($(date +%s) - start)) s"
done

echo "e2e: $passed passed, $failed failed"
[ "$failed" = 0 ]
