#!/usr/bin/env bash
# Side-by-side benchmark of slipway (also as slipway-nopoll: with --busy-poll 0, and as slipway-s4:
# behind slirp4netns's command line),
# slirp4netns, pasta and a veth pair (the kernel limit), each
# attaching one network namespace to a sandbox "host" namespace. See bench/README.md.
#
#   bench/run.sh                       3 rounds, 5 s per iperf3 run (under ~10 min on 2 cores)
#   bench/run.sh --rounds 5            more rounds
#   QUICK=1 bench/run.sh  (or --quick) 1 round, 2 s per run: a smoke test
#   bench/run.sh --backends slipway,veth
#   bench/run.sh --tests rr,cr         only some tests (up down up4 down4 rr cr cr_pin fwd_down fwd_up fwd_cr)
#   SLIPWAY_BASE=/other/slipway bench/run.sh --backends slipway,slipway-base,slirp4netns
#                                      A/B: slipway-base is the slipway row run with another binary
#                                      (and SLIPWAY_BASE_ARGS, e.g. "--busy-poll 50", added to it)
#   bench/run.sh --vm [ARGS]           the VM comparison instead: QEMU guests on slipway and passt
#                                      (bench/vm.sh, which takes the same --rounds/--quick/...)
#
# Environment: ROUNDS, DURATION (s per iperf3 run), RR_N (round trips per latency run),
# CR_SECONDS (s per connection-rate run), TESTS (like --tests), QUICK=1, SLIPWAY (binary path; default
# $CARGO_TARGET_DIR/release/slipway, built with cargo build --release when missing),
# RESULTS_DIR (default bench/results), KEEP_LOGS=1 (always keep the backends' logs there).
#
# Network safety: every process runs inside namespaces this script creates. The host side is the
# namespace H (loopback, plus a veth to a dead-end namespace X with 192.0.2.0/28 addresses because
# pasta needs an interface with a default route, plus a veth to the baseline guest namespace with
# 192.0.2.16/28). Port forwards listen on H's 127.0.0.1 only and end in the guest namespaces.
# Nothing routes out of these namespaces and no name is ever resolved. Processes
# are stopped by PID and namespaces deleted on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
tool="$here/benchtool.py"
cmdline="bench/run.sh${*:+ $*}"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
RR_N=${RR_N:-20000}
CR_SECONDS=${CR_SECONDS:-3}
QUICK=${QUICK:-}
BACKENDS_ARG=${BACKENDS:-slipway,slipway-nopoll,slipway-s4,slirp4netns,pasta,veth}
ALL_TESTS="up down up4 down4 rr cr cr_pin fwd_down fwd_up fwd_cr"
TESTS_ARG=${TESTS:-${ALL_TESTS// /,}}
KEEP_LOGS=${KEEP_LOGS:-}
out=${RESULTS_DIR:-$here/results}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
for a in "$@"; do
    if [ "$a" = --vm ]; then VM_CMDLINE=$cmdline exec "$here/vm.sh" "$@"; fi
done
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --backends) BACKENDS_ARG=$2; shift 2 ;;
        --tests) TESTS_ARG=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -n "$QUICK" ]; then
    ROUNDS=1 DURATION=2 RR_N=5000 CR_SECONDS=2
    cmdline="QUICK=1 $cmdline"
fi
IFS=, read -r -a BACKENDS <<<"$BACKENDS_ARG"
for b in "${BACKENDS[@]}"; do
    case $b in slipway|slipway-base|slipway-nopoll|slipway-s4|slirp4netns|pasta|veth) ;; *) echo "unknown backend: $b" >&2; exit 2 ;; esac
done
IFS=, read -r -a TESTS_RUN <<<"$TESTS_ARG"
for t in "${TESTS_RUN[@]}"; do
    [[ " $ALL_TESTS " == *" $t "* ]] || { echo "unknown test: $t (one of: $ALL_TESTS)" >&2; exit 2; }
done
if [[ " ${BACKENDS[*]} " == *" slipway-base "* ]] && [ ! -x "${SLIPWAY_BASE:-}" ]; then
    echo "backend slipway-base needs SLIPWAY_BASE=/path/to/another/slipway binary" >&2
    exit 2
fi

if [ "$(id -u)" != 0 ]; then
    echo "bench/run.sh needs root (network namespaces, TAP devices); run it with sudo" >&2
    exit 2
fi

# ---- dependencies -------------------------------------------------------------------------------
missing=()
for pair in iperf3:iperf3 slirp4netns:slirp4netns pasta:passt python3:python3 ss:iproute2 ip:iproute2; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
SLIPWAY=${SLIPWAY:-${CARGO_TARGET_DIR:-$repo/target}/release/slipway}
if [[ " ${BACKENDS[*]} " == *" slipway"* ]]; then
    if [ ! -x "$SLIPWAY" ]; then
        echo "building slipway (release) into ${CARGO_TARGET_DIR:-$repo/target}" >&2
        (cd "$repo" && cargo build --release -p slipway >&2)
    fi
fi
# The echo server and the latency / connection-rate clients (bench/tool), compiled so that the
# figures are the stacks' and not an interpreter's.
BENCHTOOL=${BENCHTOOL:-${CARGO_TARGET_DIR:-$repo/target}/release/slipway-benchtool}
if [ ! -x "$BENCHTOOL" ]; then
    echo "building slipway-benchtool (release) into ${CARGO_TARGET_DIR:-$repo/target}" >&2
    (cd "$repo" && cargo build --release -p slipway-benchtool >&2)
fi
# The latency runs pin client, stack and server to this CPU (the issue's method): the figure is
# then the CPU work of one round trip, not the machine's wake-up latency.
PIN_CPU=${PIN_CPU:-0}
ALL_CPUS=0-$(($(nproc) - 1))

# ---- sandbox ------------------------------------------------------------------------------------
P="sbench$$"
NS_H="$P-H"
NS_X="$P-X"
# slipway-s4: slipway through a symlink named slirp4netns, with slirp4netns's exact flags (what a
# rootlesskit or podman user who swaps the binary gets).
declare -A NS=([slipway]="$P-g-slipway" [slipway-base]="$P-g-base" [slipway-nopoll]="$P-g-nopoll" [slipway-s4]="$P-g-s4" [slirp4netns]="$P-g-slirp" [pasta]="$P-g-pasta" [veth]="$P-g-veth")
# Where each guest reaches the host's 127.0.0.1 (veth: the server binds the veth address instead).
declare -A TARGET=([slipway]=192.168.127.254 [slipway-base]=192.168.127.254 [slipway-nopoll]=192.168.127.254 [slipway-s4]=10.0.2.2 [slirp4netns]=10.0.2.2 [pasta]=192.0.2.2 [veth]=192.0.2.17)
declare -A SERVER=([slipway]=127.0.0.1 [slipway-base]=127.0.0.1 [slipway-nopoll]=127.0.0.1 [slipway-s4]=127.0.0.1 [slirp4netns]=127.0.0.1 [pasta]=127.0.0.1 [veth]=192.0.2.17)
# Port forwards, host -> guest: the address and ports a client in H connects to, forwarded to the
# guest's iperf3 server (port 5201) and echo server (port 7000), both bound to the guest's 0.0.0.0.
# Each backend forwards its own H ports (they all live in H). veth has no forward: its client
# connects straight to the guest's veth address, the kernel reference.
declare -A FWD_HOST=([slipway]=127.0.0.1 [slipway-base]=127.0.0.1 [slipway-nopoll]=127.0.0.1 [slipway-s4]=127.0.0.1 [slirp4netns]=127.0.0.1 [pasta]=127.0.0.1 [veth]=192.0.2.18)
declare -A FWD_IPERF=([slipway]=15201 [slipway-base]=15206 [slipway-nopoll]=15205 [slipway-s4]=15204 [slirp4netns]=15202 [pasta]=15203 [veth]=5201)
declare -A FWD_ECHO=([slipway]=17001 [slipway-base]=17006 [slipway-nopoll]=17005 [slipway-s4]=17004 [slirp4netns]=17002 [pasta]=17003 [veth]=7000)
# The guest address each forward ends at (slirp4netns: the --configure default; pasta: the guest
# copies H's 192.0.2.1, but a loopback client is spliced to the namespace's own loopback).
declare -A FWD_GUEST=([slipway]=192.168.127.2 [slipway-base]=192.168.127.2 [slipway-nopoll]=192.168.127.2 [slipway-s4]=10.0.2.100 [slirp4netns]=10.0.2.100 [pasta]=127.0.0.1 [veth]=192.0.2.18)
declare -A FWD_BAD=()
declare -A BPID=()
work=$(mktemp -d /tmp/slipway-bench.XXXXXX)
results="$work/results.jsonl"
: >"$results"
pids=()
created=()
notes=()
clk_tck=$(getconf CLK_TCK)

cleanup() {
    set +e
    for pid in "${pids[@]+"${pids[@]}"}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${pids[@]+"${pids[@]}"}"; do
        wait "$pid" 2>/dev/null
    done
    for ns in "${created[@]+"${created[@]}"}"; do
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

addns() { ip netns add "$1"; created+=("$1"); ip -n "$1" link set lo up;
    # Plenty of ephemeral ports and TIME_WAIT reuse for the connection-rate runs, and a cap on
    # TIME_WAIT sockets: every run connects to one server address and port, so after ~27,000
    # connections in a minute connect() scans a port space full of TIME_WAIT and the rate
    # collapses to ~100/s for every backend alike (seen on a 2-vCPU VM). Past the cap the kernel
    # closes instead of keeping TIME_WAIT; the handshake and FIN exchange are unchanged.
    ip netns exec "$1" sysctl -qw net.ipv4.ip_local_port_range="10000 65000" net.ipv4.tcp_tw_reuse=1 \
        net.ipv4.tcp_max_tw_buckets=4096; }

addns "$NS_H"
addns "$NS_X"
# pasta copies the addresses and default route of its own namespace: H gets one through a dead-end
# namespace X (no forwarding, no other interface).
ip link add sbh0 netns "$NS_H" type veth peer name sbx0 netns "$NS_X"
ip -n "$NS_H" addr add 192.0.2.1/28 dev sbh0
ip -n "$NS_X" addr add 192.0.2.2/28 dev sbx0
ip -n "$NS_H" link set sbh0 up
ip -n "$NS_X" link set sbx0 up
ip -n "$NS_H" route add default via 192.0.2.2
for b in "${BACKENDS[@]}"; do addns "${NS[$b]}"; done

bg() { # bg LOGFILE CMD... : start in background, remember the PID
    "${@:2}" >"$1" 2>&1 &
    pids+=($!)
    lastpid=$!
}
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
stop() { # stop PID: SIGTERM, wait up to 3 s, then SIGKILL
    local pid=$1 i
    alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    kill "$pid" 2>/dev/null || true
    for i in $(seq 30); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}
wait_listen() { # wait_listen ADDR PORT
    local i
    for i in $(seq 100); do
        [ -n "$(ip netns exec "$NS_H" ss -Hltn "src $1:$2")" ] && return 0
        sleep 0.05
    done
    echo "server on $1:$2 did not start" >&2
    return 1
}
wait_listen_ns() { # wait_listen_ns NS PORT: a TCP listener on PORT (any address) in NS
    local i
    for i in $(seq 100); do
        [ -n "$(ip netns exec "$1" ss -Hltn "sport = :$2")" ] && return 0
        sleep 0.05
    done
    echo "server on port $2 in $1 did not start" >&2
    return 1
}
cpu_ticks() { # utime+stime of a process in clock ticks, or "-"
    local s f
    if [ -z "${1:-}" ] || ! s=$(cat "/proc/$1/stat" 2>/dev/null); then
        echo -
        return
    fi
    # Fields after "(comm) ": state is the 1st, utime the 12th, stime the 13th.
    read -r -a f <<<"${s##*) }"
    echo $((f[11] + f[12]))
}

# Echo servers for latency and connection rate.
bg "$work/echo-lo.log" ip netns exec "$NS_H" "$BENCHTOOL" serve 127.0.0.1 7000
ECHO_PID=$lastpid
wait_listen 127.0.0.1 7000
if [[ " ${BACKENDS[*]} " == *" veth "* ]]; then
    ip link add sbv0 netns "$NS_H" type veth peer name sbg0 netns "${NS[veth]}"
    ip -n "$NS_H" addr add 192.0.2.17/28 dev sbv0
    ip -n "${NS[veth]}" addr add 192.0.2.18/28 dev sbg0
    ip -n "$NS_H" link set sbv0 up
    ip -n "${NS[veth]}" link set sbg0 up
    bg "$work/echo-veth.log" ip netns exec "$NS_H" "$BENCHTOOL" serve 192.0.2.17 7000
    ECHO_VETH_PID=$lastpid
    wait_listen 192.0.2.17 7000
fi

# ---- backends (all run inside H; `ip netns exec` execs, so $! is the backend itself) ----------
for b in "${BACKENDS[@]}"; do
    g=/run/netns/${NS[$b]}
    case $b in
        slipway)
            bg "$work/slipway.log" env NO_COLOR=1 ip netns exec "$NS_H" "$SLIPWAY" serve --netns "$g" \
                --mtu 65520 --dns-upstream 127.0.0.1 --egress-allow 127.0.0.1/32 \
                -p "127.0.0.1:${FWD_IPERF[slipway]}:5201" -p "127.0.0.1:${FWD_ECHO[slipway]}:7000"
            BPID[$b]=$lastpid ;;
        slipway-base)
            # The slipway row's command line with another binary (A/B of a change, one run).
            # shellcheck disable=SC2086 # SLIPWAY_BASE_ARGS: extra flags, split on spaces
            bg "$work/slipway-base.log" env NO_COLOR=1 ip netns exec "$NS_H" "$SLIPWAY_BASE" serve \
                ${SLIPWAY_BASE_ARGS:-} --netns "$g" --mtu 65520 --dns-upstream 127.0.0.1 --egress-allow 127.0.0.1/32 \
                -p "127.0.0.1:${FWD_IPERF[$b]}:5201" -p "127.0.0.1:${FWD_ECHO[$b]}:7000"
            BPID[$b]=$lastpid ;;
        slipway-nopoll)
            # The same with --busy-poll 0: what busy polling (on by default, 50 µs) buys and costs.
            bg "$work/slipway-nopoll.log" env NO_COLOR=1 ip netns exec "$NS_H" "$SLIPWAY" serve \
                --netns "$g" --busy-poll 0 \
                --mtu 65520 --dns-upstream 127.0.0.1 --egress-allow 127.0.0.1/32 \
                -p "127.0.0.1:${FWD_IPERF[$b]}:5201" -p "127.0.0.1:${FWD_ECHO[$b]}:7000"
            BPID[$b]=$lastpid ;;
        slipway-s4)
            mkdir -p "$work/s4" && ln -sf "$SLIPWAY" "$work/s4/slirp4netns"
            bg "$work/slipway-s4.log" env NO_COLOR=1 SLIPWAY_EGRESS_ALLOW=127.0.0.1/32 \
                ip netns exec "$NS_H" "$work/s4/slirp4netns" --configure --mtu=65520 \
                --disable-dns --api-socket "$work/slipway-s4.sock" --netns-type=path "$g" tap0
            BPID[$b]=$lastpid ;;
        slirp4netns)
            # Its forwards are added through the API socket once it runs (add_hostfwd below).
            bg "$work/slirp4netns.log" ip netns exec "$NS_H" slirp4netns --configure --mtu=65520 \
                --disable-dns --api-socket "$work/slirp4netns.sock" --netns-type=path "$g" tap0
            BPID[$b]=$lastpid ;;
        pasta)
            # -f: stay in the foreground (so the PID is pasta's); --runas 0: Debian's pasta cannot
            # join the target namespace after dropping to nobody; -t: the two TCP forwards, bound to
            # H's 127.0.0.1 only; nothing else is forwarded.
            bg "$work/pasta.log" ip netns exec "$NS_H" pasta -f --runas 0 --config-net -I tap0 \
                --mtu 65520 -4 -t "127.0.0.1/${FWD_IPERF[pasta]}:5201" \
                -t "127.0.0.1/${FWD_ECHO[pasta]}:7000" -u none -T none -U none --netns "$g"
            BPID[$b]=$lastpid ;;
        veth) BPID[$b]="" ;;
    esac
done
# The `env NO_COLOR=1` wrapper execs too, so the PID stays the backend's.
for b in "${BACKENDS[@]}"; do
    ok=
    for i in $(seq 100); do
        if ip netns exec "${NS[$b]}" timeout 3 "$BENCHTOOL" rr "${TARGET[$b]}" 7000 10 >/dev/null 2>&1; then
            ok=1; break
        fi
        if [ -n "${BPID[$b]}" ] && ! alive "${BPID[$b]}"; then break; fi
        sleep 0.1
    done
    if [ -z "$ok" ]; then
        echo "$b: guest cannot reach the host's echo server at ${TARGET[$b]}:7000" >&2
        if [ -f "$work/$b.log" ]; then sed 's/^/  /' "$work/$b.log" >&2; fi
        exit 1
    fi
    if [ -n "${BPID[$b]}" ]; then
        echo "$b ready (pid ${BPID[$b]}, $(cat /proc/"${BPID[$b]}"/comm))" >&2
    else
        echo "$b ready" >&2
    fi
done

# ---- port forwards (host -> guest) ------------------------------------------------------------
# An echo server in every guest; slirp4netns gets its forwards over its API socket. A backend whose
# forward does not answer is not measured through it (its fwd_* runs are recorded as errors).
for b in "${BACKENDS[@]}"; do
    bg "$work/echo-guest-$b.log" ip netns exec "${NS[$b]}" "$BENCHTOOL" serve 0.0.0.0 7000
    wait_listen_ns "${NS[$b]}" 7000
    if [ "$b" = slirp4netns ] || [ "$b" = slipway-s4 ]; then
        for pair in "${FWD_IPERF[$b]}:5201" "${FWD_ECHO[$b]}:7000"; do
            if ! reply=$(python3 "$tool" slirp-api "$work/$b.sock" \
                "{\"execute\":\"add_hostfwd\",\"arguments\":{\"proto\":\"tcp\",\"host_addr\":\"127.0.0.1\",\"host_port\":${pair%%:*},\"guest_addr\":\"${FWD_GUEST[$b]}\",\"guest_port\":${pair#*:}}}" 2>&1); then
                FWD_BAD[$b]="add_hostfwd 127.0.0.1:${pair%%:*} -> ${FWD_GUEST[$b]}:${pair#*:}: $reply"
            fi
        done
    fi
    ok=
    if [ -z "${FWD_BAD[$b]:-}" ]; then
        for i in $(seq 50); do
            if ip netns exec "$NS_H" timeout 3 "$BENCHTOOL" rr "${FWD_HOST[$b]}" "${FWD_ECHO[$b]}" 10 >/dev/null 2>&1; then
                ok=1; break
            fi
            sleep 0.1
        done
        [ -n "$ok" ] || FWD_BAD[$b]="${FWD_HOST[$b]}:${FWD_ECHO[$b]} in H does not reach the guest's echo server"
    fi
    if [ -n "$ok" ]; then
        echo "$b forward ready (H ${FWD_HOST[$b]}:${FWD_IPERF[$b]},${FWD_ECHO[$b]} -> guest ${FWD_GUEST[$b]}:5201,7000)" >&2
    else
        echo "$b: forward not usable: ${FWD_BAD[$b]}" >&2
    fi
done

# ---- measurements -------------------------------------------------------------------------------
run_iperf() { # run_iperf BACKEND ROUND TEST
    local b=$1 r=$2 t=$3 args=() spid before after
    case $t in up) ;; down) args=(-R) ;; up4) args=(-P 4) ;; down4) args=(-R -P 4) ;; esac
    bg "$work/iperf-server.log" ip netns exec "$NS_H" iperf3 -s -1 -B "${SERVER[$b]}" -p 5201
    spid=$lastpid
    wait_listen "${SERVER[$b]}" 5201
    before=$(cpu_ticks "${BPID[$b]}")
    timeout $((DURATION + 20)) ip netns exec "${NS[$b]}" iperf3 -c "${TARGET[$b]}" -p 5201 \
        -t "$DURATION" -J --get-server-output --connect-timeout 5000 "${args[@]}" \
        >"$work/iperf.json" 2>"$work/iperf.err" || true
    after=$(cpu_ticks "${BPID[$b]}")
    for i in $(seq 30); do alive "$spid" || break; sleep 0.1; done
    stop "$spid"
    python3 "$tool" iperf "$work/iperf.json" "$b" "$r" "$t" "$before" "$after" "$clk_tck" >>"$results"
}
# Through a port forward: the iperf3 server in the guest, the client in H on the forwarded port;
# fwd_down = host->guest (the client sends), fwd_up = guest->host (-R).
run_fwd_iperf() { # run_fwd_iperf BACKEND ROUND TEST(fwd_down|fwd_up)
    local b=$1 r=$2 t=$3 args=() spid before after
    if [ "$t" = fwd_up ]; then args=(-R); fi
    bg "$work/iperf-server.log" ip netns exec "${NS[$b]}" iperf3 -s -1 -p 5201
    spid=$lastpid
    wait_listen_ns "${NS[$b]}" 5201
    before=$(cpu_ticks "${BPID[$b]}")
    timeout $((DURATION + 20)) ip netns exec "$NS_H" iperf3 -c "${FWD_HOST[$b]}" -p "${FWD_IPERF[$b]}" \
        -t "$DURATION" -J --get-server-output --connect-timeout 5000 "${args[@]}" \
        >"$work/iperf.json" 2>"$work/iperf.err" || true
    after=$(cpu_ticks "${BPID[$b]}")
    for i in $(seq 30); do alive "$spid" || break; sleep 0.1; done
    stop "$spid"
    python3 "$tool" iperf "$work/iperf.json" "$b" "$r" "$t" "$before" "$after" "$clk_tck" >>"$results"
}
pin() { # pin CPUS PID...: every thread of each process (empty PIDs are skipped)
    local cpus=$1 pid
    shift
    for pid in "$@"; do
        [ -n "$pid" ] && taskset -a -p -c "$cpus" "$pid" >/dev/null 2>&1 || true
    done
}
run_peer() { # run_peer BACKEND ROUND TEST(rr|cr|cr_pin|fwd_cr)
    local b=$1 r=$2 t=$3 out arg ns=${NS[$1]} addr=${TARGET[$1]} port=7000 kind=$3 cpus=$ALL_CPUS
    local server=$ECHO_PID pinned=
    if [ "$b" = veth ]; then server=${ECHO_VETH_PID:-}; fi
    if [ "$t" = rr ]; then arg=$RR_N; else arg=$CR_SECONDS; fi
    if [ "$t" = fwd_cr ]; then ns=$NS_H addr=${FWD_HOST[$b]} port=${FWD_ECHO[$b]} kind=cr; fi
    # cr_pin: the connection rate with everything on one CPU, like the latency runs — the CPU
    # work of a connection through each stack, without the VM's cross-CPU wake-ups.
    if [ "$t" = cr_pin ]; then kind=cr; fi
    if [ "$t" = rr ] || [ "$t" = cr_pin ]; then pinned=1 cpus=$PIN_CPU; pin "$PIN_CPU" "${BPID[$b]}" "$server"; fi
    if out=$(timeout 120 ip netns exec "$ns" taskset -c "$cpus" "$BENCHTOOL" "$kind" "$addr" "$port" "$arg" 2>"$work/peer.err") \
        && [ "${out:0:1}" = "{" ]; then
        echo "{\"backend\":\"$b\",\"round\":$r,\"test\":\"$t\",${out#\{}" >>"$results"
    else
        err=$(tail -1 "$work/peer.err" | tr -d "\"\\\\")
        echo "{\"backend\":\"$b\",\"round\":$r,\"test\":\"$t\",\"error\":\"${err:-timeout}\"}" >>"$results"
    fi
    if [ -n "$pinned" ]; then pin "$ALL_CPUS" "${BPID[$b]}" "$server"; fi
}

t_start=$SECONDS
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
n=${#BACKENDS[@]}
for r in $(seq "$ROUNDS"); do
    order=()
    for i in $(seq 0 $((n - 1))); do order+=("${BACKENDS[$(((i + r - 1) % n))]}"); done
    echo "round $r/$ROUNDS (order: ${order[*]})" >&2
    for t in "${TESTS_RUN[@]}"; do
        for b in "${order[@]}"; do
            if [ -n "${BPID[$b]}" ] && ! alive "${BPID[$b]}"; then
                echo "{\"backend\":\"$b\",\"round\":$r,\"test\":\"$t\",\"error\":\"backend process exited\"}" >>"$results"
                continue
            fi
            if [[ $t == fwd_* ]] && [ -n "${FWD_BAD[$b]:-}" ]; then
                err=$(tr -d "\"\\\\" <<<"forward not usable: ${FWD_BAD[$b]}" | tr '\n' ' ')
                echo "{\"backend\":\"$b\",\"round\":$r,\"test\":\"$t\",\"error\":\"$err\"}" >>"$results"
                continue
            fi
            case $t in
                rr|cr|cr_pin|fwd_cr) run_peer "$b" "$r" "$t" ;;
                fwd_down|fwd_up) run_fwd_iperf "$b" "$r" "$t" ;;
                *) run_iperf "$b" "$r" "$t" ;;
            esac
            tail -1 "$results" | python3 -c 'import json,sys
d=json.loads(sys.stdin.read())
if "error" in d: s="ERROR "+d["error"]
elif "bps" in d: s="%.2f Gbit/s, zero seconds %d%s" % (d["bps"]/1e9, d["zero_seconds"], (", %.3f CPU s/GB" % d["cpu_s_per_gb"]) if "cpu_s_per_gb" in d else "")
elif "p50_us" in d: s="p50 %.1f us, p99 %.1f us" % (d["p50_us"], d["p99_us"])
else: s="%.0f conn/s (%d errors)" % (d["conn_per_s"], d["errors"])
print("  %-11s %-5s %s" % (d["backend"], d["test"], s))' >&2
        done
    done
done
echo "measurements took $((SECONDS - t_start)) s" >&2
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- stop backends, collect logs, report --------------------------------------------------------
declare -A DIED=()
for b in "${BACKENDS[@]}"; do
    if [ -n "${BPID[$b]}" ]; then
        alive "${BPID[$b]}" || DIED[$b]=1
        stop "${BPID[$b]}"
    fi
done
sleep 0.2
if awk -v a="${load_start%% *}" 'BEGIN { exit !(a > 0.5) }'; then
    notes+=("The machine was not idle when the measurements started (1-min load average ${load_start%% *}): other processes competed for the CPUs, so absolute figures are low and noisy; ratios within a round are more trustworthy.")
fi
for b in "${!DIED[@]}"; do notes+=("$b exited before the end of the run (see its log)"); done
notes+=("Host side: one sandbox namespace H; servers bind 127.0.0.1 there, reached at 192.168.127.254 (slipway), 10.0.2.2 (slirp4netns), 192.0.2.2 (pasta: the gateway copied from H's veth route, mapped to H's loopback); veth baseline server binds 192.0.2.17 on a veth pair between H and the guest namespace.")
notes+=("slipway-s4 is the same slipway binary started through a symlink named slirp4netns with the slirp4netns row's command line (--configure --mtu=65520 --disable-dns --api-socket, forwards added with add_hostfwd): what a rootlesskit or podman user gets by swapping the binary.")
notes+=("Port forwards (TCP forward rows): the iperf3 server and an echo server run in the guest namespace, the client in H connects to a forwarded port on H's 127.0.0.1: slipway -p 127.0.0.1:P:5201 (to 192.168.127.2), slirp4netns add_hostfwd on its API socket (to 10.0.2.100), pasta -t 127.0.0.1/P:5201 (a loopback client is spliced to the namespace's own loopback with splice(2), pasta's local bypass, not through tap0); veth: the client connects straight to the guest's 192.0.2.18. 'host→guest' is the direction of the data.")
notes+=("All processes (iperf3 client and server, the backend) share $(nproc) CPUs, so user-mode backends compete with iperf3 for CPU; veth has no such third process.")
notes+=("Latency and connection rate use a compiled client and a single-threaded epoll echo server (bench/tool, slipway-benchtool; netperf is not in Debian main). The latency runs pin the client, the echo server and every thread of the backend process to CPU $PIN_CPU (taskset), so the p50 is the CPU work of a round trip through each stack rather than the machine's wake-up latency. The connection-rate runs are not pinned, except the 'pinned' row (cr_pin), pinned the same way: its rate is the CPU work of a connection through each stack, the unpinned row adds the machine's cross-CPU wake-ups.")

mkdir -p "$out"
info="$work/info.json"
slipway_ver="$("$SLIPWAY" --version 2>/dev/null || echo '?') (git $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$repo" diff --quiet HEAD -- crates 2>/dev/null || echo '+uncommitted changes'))"
if [ -n "${SLIPWAY_BASE:-}" ] && [[ " ${BACKENDS[*]} " == *" slipway-base "* ]]; then
    notes+=("slipway-base is the slipway row's command line run with another binary, $SLIPWAY_BASE ($("$SLIPWAY_BASE" --version 2>/dev/null || echo '?'))${SLIPWAY_BASE_ARGS:+ with $SLIPWAY_BASE_ARGS}: an A/B comparison of a change inside one run.")
fi
I_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
I_KERNEL=$(uname -r)
I_CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
I_NPROC=$(nproc)
I_LOAD="load average (1/5/15 min) before the measurements: $load_start; after: $load_end; measurements took $((SECONDS - t_start)) s"
I_SLIRP=$(slirp4netns --version | tr '\n' ' ' | sed 's/ *$//')
I_PASTA="passt $(dpkg-query -W -f '${Version}' passt 2>/dev/null || echo '?')"
I_IPERF=$(iperf3 --version | head -1)
I_PY=$(python3 --version)
export I_DATE I_KERNEL I_CPU I_NPROC I_LOAD I_SLIRP I_PASTA I_IPERF I_PY
export I_CMD="$cmdline" I_ROUNDS="$ROUNDS" I_DUR="$DURATION" I_RR="$RR_N" I_CR="$CR_SECONDS" \
    I_SLIPWAY="$slipway_ver" I_BACKENDS="${BACKENDS[*]}"
notes_file="$work/notes.txt"
printf '%s\n' "${notes[@]}" >"$notes_file"
python3 - "$notes_file" >"$info" <<'EOF'
import json, os, sys
e = os.environ
print(json.dumps({
    "date": e["I_DATE"], "command": e["I_CMD"], "rounds": int(e["I_ROUNDS"]),
    "duration": e["I_DUR"], "rr_n": e["I_RR"], "cr_seconds": e["I_CR"],
    "kernel": e["I_KERNEL"], "cpu": e["I_CPU"], "nproc": e["I_NPROC"], "load": e["I_LOAD"],
    "slipway": e["I_SLIPWAY"], "slirp4netns": e["I_SLIRP"], "pasta": e["I_PASTA"],
    "iperf3": e["I_IPERF"], "python3": e["I_PY"], "backends": e["I_BACKENDS"].split(),
    "notes": [l.rstrip("\n") for l in open(sys.argv[1]) if l.strip()],
}))
EOF
python3 "$tool" report "$results" "$info" | tee "$out/latest.md"
cp "$results" "$out/latest.jsonl"

# Keep slipway's log when something looks wrong: a failed run, a stall, a warning, an early exit.
if [ -f "$work/slipway.log" ]; then
    sed 's/\x1b\[[0-9;]*m//g' "$work/slipway.log" >"$work/slipway.clean.log"
    if grep -q '"backend":"slipway".*"error"' "$results" \
        || grep -q '"backend":"slipway".*"zero_seconds":[1-9]' "$results" \
        || grep -Eq 'WARN|ERROR|panic' "$work/slipway.clean.log" || [ -n "${DIED[slipway]:-}" ] \
        || [ -n "$KEEP_LOGS" ]; then
        cp "$work/slipway.clean.log" "$out/slipway.log"
        echo "slipway log kept in $out/slipway.log" >&2
    fi
fi
for b in slirp4netns pasta; do
    if { [ -n "${DIED[$b]:-}" ] || [ -n "$KEEP_LOGS" ]; } && [ -f "$work/$b.log" ]; then
        grep -v 'Failed to send .* to syslog' "$work/$b.log" >"$out/$b.log" || true
    fi
done
