#!/usr/bin/env bash
# The whole test suite: unit and core tests, end-to-end tests against real peers (a Linux guest
# in QEMU, network namespaces, dnsmasq, iperf3), and a short fuzz run. Needs root (network
# namespaces, TAP devices). Installs what it needs from Debian's packages.
#
#   ./scripts/test.sh            everything
#   SKIP_E2E=1 ./scripts/test.sh unit and core tests only
#   FUZZ_SECONDS=N               seconds per fuzz target (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

passed=0
failed=0
failures=()
step() {
    local name=$1
    shift
    echo "=== $name"
    local t0=$SECONDS
    if "$@"; then
        passed=$((passed + 1))
        echo "=== $name: ok ($((SECONDS - t0)) s)"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "=== $name: FAILED ($((SECONDS - t0)) s)"
    fi
}

if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh needs root (network namespaces and TAP devices); run it as root" >&2
    exit 2
fi

./scripts/install-deps.sh
cargo build --release --locked
cargo test --workspace --locked --no-run
# Unit and core tests run in a network namespace that holds only loopback: tests that open
# sockets use 127.0.0.0/8 or namespaces they create, and could not dial out even if wrong.
step "cargo test" unshare --net sh -c 'ip link set lo up && CARGO_NET_OFFLINE=true cargo test --workspace --locked'
if [ -z "${SKIP_E2E:-}" ]; then
    step "end-to-end" tests/e2e/run.sh
fi
if [ -z "${SKIP_FUZZ:-}" ] && [ -x scripts/fuzz-smoke.sh ]; then
    step "fuzz smoke" env FUZZ_SECONDS="${FUZZ_SECONDS:-15}" scripts/fuzz-smoke.sh
fi

echo
for f in "${failures[@]+"${failures[@]}"}"; do echo "failed: $f"; done
echo "suite: $passed passed, $failed failed"
[ "$failed" = 0 ]
