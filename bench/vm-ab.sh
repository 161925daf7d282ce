#!/usr/bin/env bash
# Interleaved A/B of backend CPU per GB on the VM benchmark, for a busy shared machine:
# one bench/vm.sh run (one boot, one backend) per item per pass, items in the given order each
# pass, each run started only after the machine was idle for 2 s (at most 2 min of waiting), and
# the idle CPUs during the run printed next to its result. Runs with little idle time (under
# about 0.5 CPUs, QEMU keeps one busy) competed with other work and are not comparable.
#
#   bench/vm-ab.sh TAG ITEM...      ITEM: a slipway binary, or "passt"
#   PASSES=4 TESTS=up,down bench/vm-ab.sh before target/slipway-old target/release/slipway passt
#
# Output: one line per run on stdout; each run's report and records in /tmp/vm-ab/TAG-NAME-pPASS.
# Needs root, as bench/vm.sh (same network safety: everything in namespaces vm.sh creates).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tag=${1:?usage: bench/vm-ab.sh TAG ITEM...}
shift
out=${AB_DIR:-/tmp/vm-ab}
mkdir -p "$out"
idle() { awk '/^cpu /{print $5}' /proc/stat; }
wait_idle() {
    local i a b
    for i in $(seq 60); do
        a=$(idle); sleep 2; b=$(idle)
        # USER_HZ ticks: 2 s of two idle CPUs = 400.
        [ $((b - a)) -ge $((170 * $(nproc))) ] && return 0
    done
    return 1
}
for pass in $(seq "${PASSES:-2}"); do
    for item in "$@"; do
        if [ "$item" = passt ]; then
            name=passt args=(--backends passt) bin=
        else
            name=$(basename "$item") args=(--backends slipway) bin=$item
        fi
        d="$out/$tag-$name-p$pass"
        wait_idle || echo "(machine not idle)"
        a=$(idle) t0=$(date +%s%N)
        RESULTS_DIR=$d env ${bin:+SLIPWAY="$bin"} "$here/vm.sh" --rounds 1 --duration "${DURATION:-8}" \
            --tests "${TESTS:-up}" "${args[@]}" >/dev/null 2>"$d.err" || true
        b=$(idle) t1=$(date +%s%N)
        res=$(grep -E '  (slipway|passt) +(up|down)' "$d.err" | sed 's/zero seconds 0, //; s/ of a CPU//' |
            tr -s ' ' | tr '\n' ';' || true)
        echo "$name p$pass idle=$(awk -v i=$((b - a)) -v t=$((t1 - t0)) 'BEGIN { printf "%.2f", i / 100 / (t / 1e9) }') $res"
    done
done
