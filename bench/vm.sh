#!/usr/bin/env bash
# VM comparison: a QEMU guest (virtio-net, MTU 65520 by DHCP and host_mtu) on slipway
# (`serve --qemu SOCKET`) and on passt (`passt --socket SOCKET`), both speaking QEMU's
# `-netdev stream` protocol. Each round boots one guest per backend (the order alternates per
# round); the guest runs iperf3 against a server on the sandbox host namespace's 127.0.0.1,
# guest→host and host→guest (-R). See bench/README.md ("VM comparison").
#
#   bench/vm.sh                        3 rounds, 5 s per iperf3 run (about 2 min on 2 cores)
#   bench/run.sh --vm [ARGS]           the same (run.sh hands over to this script)
#   bench/vm.sh --rounds 5 --duration 10
#   QUICK=1 bench/vm.sh  (or --quick)  1 round, 2 s per run: a smoke test
#   bench/vm.sh --backends slipway     a subset (slipway, passt)
#   bench/vm.sh --tests up,down,up4,down4   also 4 streams each way
#
# Environment: ROUNDS, DURATION, VM_TESTS (comma-separated: up down up4 down4), VM_MTU (65520),
# QUICK=1, SLIPWAY (binary; default $CARGO_TARGET_DIR/release/slipway, built when missing),
# RESULTS_DIR (default bench/results), KEEP_LOGS=1 (keep the guests' serial logs and the backends'
# logs there), SLIPWAY_E2E_KVM (as in tests/e2e: 1 or auto to use KVM; default TCG).
# PROFILE=perf or PROFILE=strace: during each boot's first test (guest→host unless --tests says
# otherwise), attach `perf record $PERF_ARGS` (default `-g`) or `strace -c -f` to the backend for
# PROFILE_SECONDS (default: DURATION - 1, at least 1) and keep the result in RESULTS_DIR as
# profile-BACKEND-rROUND.perf.data / .strace.txt. strace slows the backend: its run's throughput
# and CPU figures are not comparable; perf's overhead is small but not zero.
#
# The guest is the e2e one (tests/e2e/build-guest.sh: Debian kernel, busybox, iperf3), booted as
# tests/e2e/lib.sh's e2e_boot_guest does (1 vCPU, 256 MiB, script passed through fw_cfg).
#
# Network safety: every process (backends, QEMU, iperf3) runs inside namespaces this script
# creates: H (loopback, plus a veth to a dead-end namespace X with 192.0.2.0/28 addresses, because
# passt copies the guest's address and gateway from an interface with a default route) and X. The
# guests only reach H's 127.0.0.1 through each backend's host-loopback mapping; nothing routes out
# of these namespaces and no name is resolved. Processes are stopped by PID and the namespaces
# deleted on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
tool="$here/benchtool.py"
cmdline="${VM_CMDLINE:-bench/vm.sh${*:+ $*}}"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
VM_TESTS=${VM_TESTS:-up,down}
VM_MTU=${VM_MTU:-65520}
QUICK=${QUICK:-}
PROFILE=${PROFILE:-}
PERF_ARGS=${PERF_ARGS:--g}
BACKENDS_ARG=${BACKENDS:-slipway,passt}
KEEP_LOGS=${KEEP_LOGS:-}
out=${RESULTS_DIR:-$here/results}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --backends) BACKENDS_ARG=$2; shift 2 ;;
        --tests) VM_TESTS=$2; shift 2 ;;
        --vm) shift ;; # when handed over from run.sh
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -n "$QUICK" ]; then
    ROUNDS=1 DURATION=2
    cmdline="QUICK=1 $cmdline"
fi
IFS=, read -r -a BACKENDS <<<"$BACKENDS_ARG"
for b in "${BACKENDS[@]}"; do
    case $b in slipway|passt) ;; *) echo "unknown backend: $b (slipway, passt)" >&2; exit 2 ;; esac
done
IFS=, read -r -a TESTS <<<"$VM_TESTS"
case $PROFILE in
    ''|perf|strace) ;;
    *) echo "unknown PROFILE=$PROFILE (perf, strace)" >&2; exit 2 ;;
esac
PROFILE_SECONDS=${PROFILE_SECONDS:-$((DURATION > 2 ? DURATION - 1 : 1))}
for t in "${TESTS[@]}"; do
    case $t in up|down|up4|down4) ;; *) echo "unknown test: $t (up, down, up4, down4)" >&2; exit 2 ;; esac
done

if [ "$(id -u)" != 0 ]; then
    echo "bench/vm.sh needs root (network namespaces); run it with sudo" >&2
    exit 2
fi

# ---- dependencies -------------------------------------------------------------------------------
# scripts/install-deps.sh installs QEMU, passt, iperf3, busybox and unpacks the guest kernel
# (idempotent: one line when everything is there).
need_deps=
for c in qemu-system-x86_64 passt iperf3 busybox python3 ip; do
    command -v "$c" >/dev/null 2>&1 || need_deps=1
done
[ -n "$(find "$repo/.build/e2e/kernel/current/boot" -maxdepth 1 -name 'vmlinuz-*' 2>/dev/null)" ] || need_deps=1
if [ -n "$need_deps" ]; then
    "$repo/scripts/install-deps.sh" >&2
fi
SLIPWAY=${SLIPWAY:-${CARGO_TARGET_DIR:-$repo/target}/release/slipway}
if [[ " ${BACKENDS[*]} " == *" slipway "* ]] && [ ! -x "$SLIPWAY" ]; then
    echo "building slipway (release) into ${CARGO_TARGET_DIR:-$repo/target}" >&2
    (cd "$repo" && cargo build --release -p slipway >&2)
fi

# The e2e harness: kernel command line, guest MAC, e2e_guest_build (builds or reuses
# .build/e2e/initramfs.cpio.gz), e2e_qemu_accel. Its traps are replaced by ours below.
# shellcheck source=tests/e2e/lib.sh
. "$repo/tests/e2e/lib.sh"
trap - EXIT INT TERM
E2E_WORK=$(mktemp -d /tmp/slipway-vmbench.XXXXXX) # only for the KVM probe's files
e2e_guest_build
ACCEL=$(e2e_qemu_accel)

# ---- sandbox ------------------------------------------------------------------------------------
P="svm$$"
NS_H="$P-H"
NS_X="$P-X"
# Where the guest reaches H's 127.0.0.1: slipway's host-loopback alias; passt maps its gateway
# (H's default route, 192.0.2.2) to the loopback.
declare -A TARGET=([slipway]=192.168.127.254 [passt]=192.0.2.2)
work=$E2E_WORK
# passt drops to nobody before it binds its socket: it needs a directory it can write, reached
# through ours.
chmod 711 "$work"
mkdir -p "$work/passt"
chmod 1777 "$work/passt"
results="$work/results.jsonl"
: >"$results"
pids=()
created=()
notes=()
clk_tck=$(getconf CLK_TCK)

cleanup() {
    set +e
    # Only PIDs that are still this shell's unreaped children: one already waited for may since
    # belong to someone else.
    local live
    live=$(jobs -p)
    for pid in "${pids[@]+"${pids[@]}"}"; do
        grep -qx "$pid" <<<"$live" && kill "$pid" 2>/dev/null
    done
    for pid in "${pids[@]+"${pids[@]}"}"; do
        grep -qx "$pid" <<<"$live" && wait "$pid" 2>/dev/null
    done
    for ns in "${created[@]+"${created[@]}"}"; do
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'echo "bench/vm.sh: line $LINENO failed: $BASH_COMMAND" >&2' ERR

addns() { ip netns add "$1"; created+=("$1"); ip -n "$1" link set lo up; }
addns "$NS_H"
addns "$NS_X"
ip link add svh0 netns "$NS_H" type veth peer name svx0 netns "$NS_X"
ip -n "$NS_H" addr add 192.0.2.1/28 dev svh0
ip -n "$NS_X" addr add 192.0.2.2/28 dev svx0
ip -n "$NS_H" link set svh0 up
ip -n "$NS_X" link set svx0 up
ip -n "$NS_H" route add default via 192.0.2.2

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
wait_listen() { # wait_listen ADDR PORT: a TCP listener in H
    local i
    for i in $(seq 100); do
        [ -n "$(ip netns exec "$NS_H" ss -Hltn "src $1:$2")" ] && return 0
        sleep 0.05
    done
    echo "server on $1:$2 did not start" >&2
    return 1
}
wait_path() { # wait_path PATH PID: until PATH exists, or PID exits
    local i
    for i in $(seq 100); do
        [ -e "$1" ] && return 0
        alive "$2" || return 1
        sleep 0.05
    done
    return 1
}
window_s() { # window_s NS0 NS1: seconds between two date +%s%N stamps, or "-"
    if [ -n "$1" ] && [ -n "$2" ]; then
        awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'
    else
        echo -
    fi
}
cpu_ticks() { # utime+stime of a process (all its threads) in clock ticks, or "-"
    local s f
    if [ -z "${1:-}" ] || ! s=$(cat "/proc/$1/stat" 2>/dev/null); then
        echo -
        return
    fi
    read -r -a f <<<"${s##*) }"
    echo $((f[11] + f[12]))
}

# ---- the guest's script -------------------------------------------------------------------------
# Runs after DHCP (tests/e2e/guest/init). Prints "BENCH-START T" / "BENCH-END T rc=N" around each
# iperf3 run (the host samples the backend's CPU time when it sees them on the serial console),
# then the run's JSON, each line prefixed "BENCH-JSON T ", so that a stray console line cannot
# break it.
guest_script() { # guest_script TARGET FILE
    {
        echo "TARGET=$1 DURATION=$DURATION TESTS='${TESTS[*]}'"
        cat <<'EOF'
echo "E2E-RESULT if_mtu=$(cat /sys/class/net/eth0/mtu)"
for t in $TESTS; do
    case $t in up) a= ;; down) a=-R ;; up4) a="-P 4" ;; down4) a="-R -P 4" ;; esac
    echo "BENCH-START $t"
    iperf3 -c "$TARGET" -p 5201 -t "$DURATION" -J --get-server-output --connect-timeout 5000 $a \
        >/tmp/iperf.json 2>/tmp/iperf.err
    echo "BENCH-END $t rc=$?"
    sed "s/^/BENCH-JSON $t /" /tmp/iperf.json
    sed "s/^/BENCH-ERR $t /" /tmp/iperf.err
    sleep 0.5
done
EOF
    } >"$2"
}

# ---- profiling (PROFILE=perf|strace) ------------------------------------------------------------
start_profile() { # start_profile BACKEND ROUND PID: attach to the backend for PROFILE_SECONDS
    local f="$out/profile-$1-r$2"
    mkdir -p "$out"
    case $PROFILE in
        perf)
            # shellcheck disable=SC2086 # PERF_ARGS is a list of options
            bg "$f.perf.log" perf record $PERF_ARGS -o "$f.perf.data" -p "$3" -- sleep "$PROFILE_SECONDS" ;;
        strace)
            bg "$f.strace.log" timeout -s INT "$PROFILE_SECONDS" strace -c -f -o "$f.strace.txt" -p "$3" ;;
    esac
    echo "  profiling $1 (pid $3) with $PROFILE for $PROFILE_SECONDS s into $f.*" >&2
}

# ---- one guest boot -----------------------------------------------------------------------------
# boot_guest BACKEND ROUND: start the backend in H, boot QEMU (in H) on its socket, sample the
# backend's and QEMU's CPU time at each BENCH-START/END marker, then parse the runs.
boot_guest() {
    local b=$1 r=$2 sock bpid qpid spid log="$work/guest-$1-r$2.log" script="$work/guest-$1.sh"
    local netdev t start lease_s="" total_s rc=0 qrc seen guest_timeout=$((60 + ${#TESTS[@]} * (DURATION + 20)))
    local ppid=""
    local -A bcpu0=() bcpu1=() qcpu0=() qcpu1=() wall0=() wall1=()
    guest_script "${TARGET[$b]}" "$script"
    bg "$work/iperf-server-$b-r$r.log" ip netns exec "$NS_H" iperf3 -s -B 127.0.0.1 -p 5201
    spid=$lastpid
    wait_listen 127.0.0.1 5201
    case $b in
        slipway)
            sock="$work/slipway-r$r.sock"
            bg "$work/slipway-r$r.log" env NO_COLOR=1 ip netns exec "$NS_H" "$SLIPWAY" serve \
                --qemu "$sock" --mtu "$VM_MTU" --dns-upstream 127.0.0.1 --egress-allow 127.0.0.1/32 ;;
        passt)
            # -f: foreground (the PID stays passt's); -1: exit when the guest goes; -4: H has no
            # IPv6 route; --dns: the gateway (nothing listens on H's port 53; the guest resolves
            # nothing), never the machine's resolver; -t/-u none: no forwards into the guest.
            sock="$work/passt/passt-r$r.sock"
            bg "$work/passt-r$r.log" ip netns exec "$NS_H" passt -f -1 -4 --socket "$sock" \
                --mtu "$VM_MTU" --dns 192.0.2.2 --no-dhcp-search -t none -u none ;;
    esac
    bpid=$lastpid
    if ! wait_path "$sock" "$bpid"; then
        echo "$b did not create $sock" >&2
        sed 's/^/  /' "$work/$b-r$r.log" >&2
        echo "{\"backend\":\"$b\",\"round\":$r,\"test\":\"boot\",\"error\":\"backend did not start\"}" >>"$results"
        stop "$bpid"; stop "$spid"
        return
    fi
    echo "  $b ready (pid $bpid, $(cat "/proc/$bpid/comm"))" >&2
    netdev="stream,id=n0,server=off,addr.type=unix,addr.path=$sock"
    : >"$log"
    start=$(date +%s%N)
    # As e2e_boot_guest: -nodefaults, kernel + initramfs, the script through fw_cfg, no option ROM;
    # plus host_mtu, so virtio-net offers the large MTU as QEMU users configure it.
    bg "$log.qemu" ip netns exec "$NS_H" qemu-system-x86_64 -nodefaults -no-user-config \
        -accel "$ACCEL" -m 256 -smp 1 -display none -serial "file:$log" -no-reboot \
        -kernel "$E2E_KERNEL" -initrd "$E2E_INITRD" -append "$E2E_KERNEL_CMDLINE" \
        -fw_cfg "name=opt/slipway/script,file=$script" \
        -fw_cfg "name=opt/slipway/timeout,string=$guest_timeout" \
        -netdev "$netdev" \
        -device "virtio-net-pci,netdev=n0,mac=$E2E_GUEST_MAC,romfile=,host_mtu=$VM_MTU"
    qpid=$lastpid
    while alive "$qpid"; do
        seen=$(grep -ao '^\(BENCH-START\|BENCH-END\|E2E-LEASE\) *[a-z0-9]*' "$log" || true)
        if [ -z "$lease_s" ] && [[ $seen == *E2E-LEASE* ]]; then
            lease_s=$(( ($(date +%s%N) - start) / 10000000 ))
        fi
        for t in "${TESTS[@]}"; do
            if [ -z "${bcpu0[$t]:-}" ] && grep -qx "BENCH-START $t" <<<"$seen"; then
                bcpu0[$t]=$(cpu_ticks "$bpid") qcpu0[$t]=$(cpu_ticks "$qpid") wall0[$t]=$(date +%s%N)
                if [ -n "$PROFILE" ] && [ -z "$ppid" ]; then
                    start_profile "$b" "$r" "$bpid"
                    ppid=$lastpid
                fi
            fi
            if [ -z "${bcpu1[$t]:-}" ] && grep -qx "BENCH-END $t" <<<"$seen"; then
                bcpu1[$t]=$(cpu_ticks "$bpid") qcpu1[$t]=$(cpu_ticks "$qpid") wall1[$t]=$(date +%s%N)
            fi
        done
        if [ $(( ($(date +%s%N) - start) / 1000000000 )) -ge $((guest_timeout + 30)) ]; then
            echo "$b round $r: guest still running after $((guest_timeout + 30)) s; stopping QEMU (pid $qpid)" >&2
            stop "$qpid"
            rc=124
        fi
        sleep 0.05
    done
    qrc=0
    wait "$qpid" 2>/dev/null || qrc=$?
    [ "$rc" = 124 ] || rc=$qrc
    total_s=$(( ($(date +%s%N) - start) / 10000000 ))
    [ -n "$ppid" ] && { wait "$ppid" 2>/dev/null || true; }
    stop "$bpid"
    stop "$spid"
    sed -i 's/\r$//' "$log"
    # One record for the boot (lease, MTU), then one per iperf3 run.
    python3 - "$log" "$b" "$r" "$rc" "$lease_s" "$total_s" "$VM_MTU" >>"$results" <<'EOF'
import json, sys
log, b, r, rc, lease, total, want_mtu = sys.argv[1:]
rec = {"backend": b, "round": int(r), "test": "boot", "qemu_rc": int(rc),
       "total_s": int(total) / 100}
if lease:
    rec["lease_s"] = int(lease) / 100
done = False
for line in open(log, errors="replace"):
    line = line.rstrip("\n")
    if line.startswith("E2E-LEASE "):
        rec["lease"] = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    elif line.startswith("E2E-RESULT if_mtu="):
        rec["if_mtu"] = line.split("=", 1)[1]
    elif line.startswith("E2E-DONE "):
        done = True
problems = []
if "lease" not in rec:
    problems.append("no DHCP lease")
elif rec["lease"].get("mtu") != want_mtu:
    problems.append(f"lease MTU {rec['lease'].get('mtu')}, want {want_mtu}")
if "lease" in rec and rec.get("if_mtu") != want_mtu:
    problems.append(f"eth0 MTU {rec.get('if_mtu')}, want {want_mtu}")
if not done:
    problems.append(f"no E2E-DONE (QEMU status {rc})")
if problems:
    rec["error"] = "; ".join(problems)
print(json.dumps(rec))
EOF
    for t in "${TESTS[@]}"; do
        { grep -a "^BENCH-JSON $t " "$log" || true; } | sed "s/^BENCH-JSON $t //" >"$work/iperf-$t.json"
        python3 "$tool" iperf "$work/iperf-$t.json" "$b" "$r" "$t" "${bcpu0[$t]:--}" "${bcpu1[$t]:--}" \
            "$clk_tck" "${qcpu0[$t]:--}" "${qcpu1[$t]:--}" \
            "$(window_s "${wall0[$t]:-}" "${wall1[$t]:-}")" >>"$results"
        if grep -q "BENCH-ERR $t " "$log"; then
            echo "  $b $t: $(grep -a "^BENCH-ERR $t " "$log" | tail -1 | cut -d' ' -f3-)" >&2
        fi
    done
    keep_logs_if_wrong "$b" "$r" "$log"
}

# Keep a boot's serial console and backend log when something looked wrong (or KEEP_LOGS=1).
keep_logs_if_wrong() { # BACKEND ROUND LOG
    local b=$1 r=$2 log=$3 blog="$work/$1-r$2.log"
    if grep -q "\"backend\": \"$b\", \"round\": $r, .*\"error\"\|\"backend\": \"$b\", \"round\": $r, .*\"zero_seconds\": [1-9]" "$results" \
        || grep -Eq 'WARN|ERROR|panic' "$blog" 2>/dev/null || [ -n "$KEEP_LOGS" ]; then
        mkdir -p "$out/vm-logs"
        cp "$log" "$out/vm-logs/guest-$b-r$r.log"
        sed 's/\x1b\[[0-9;]*m//g' "$blog" | grep -v 'Failed to send .* to syslog' >"$out/vm-logs/$b-r$r.log" || true
        echo "  kept the logs of $b round $r in $out/vm-logs/" >&2
    fi
}

print_boot() { # the last records of one boot, as progress lines
    python3 -c 'import json,sys
recs=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
b, r = sys.argv[2], int(sys.argv[3])
for d in recs:
    if d["backend"] != b or d["round"] != r: continue
    if d["test"] == "boot":
        s = "lease after %s s, MTU %s/%s, boot to power-off %.1f s" % (d.get("lease_s", "-"),
            d.get("lease", {}).get("mtu", "-"), d.get("if_mtu", "-"), d["total_s"])
        if d.get("error"): s += ", ERROR " + d["error"]
    elif d.get("error") and "bps" not in d: s = "ERROR " + d["error"]
    else:
        s = "%.2f Gbit/s, zero seconds %d%s%s" % (d["bps"]/1e9, d["zero_seconds"],
            (", %.3f CPU s/GB" % d["cpu_s_per_gb"]) if "cpu_s_per_gb" in d else "",
            (", QEMU %.0f%% of a CPU" % (100 * d["qemu_cpu_share"])) if "qemu_cpu_share" in d else "")
    print("  %-8s %-5s %s" % (b, d["test"], s))' "$results" "$1" "$2" >&2
}

# ---- measurements -------------------------------------------------------------------------------
t_start=$SECONDS
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
n=${#BACKENDS[@]}
echo "VM comparison: ${BACKENDS[*]}; $ROUNDS round(s), tests ${TESTS[*]}, $DURATION s each, accel $ACCEL, MTU $VM_MTU" >&2
for r in $(seq "$ROUNDS"); do
    order=()
    for i in $(seq 0 $((n - 1))); do order+=("${BACKENDS[$(((i + r - 1) % n))]}"); done
    echo "round $r/$ROUNDS (order: ${order[*]})" >&2
    for b in "${order[@]}"; do
        boot_guest "$b" "$r"
        print_boot "$b" "$r"
    done
done
echo "measurements took $((SECONDS - t_start)) s" >&2
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p "$out"
cp "$results" "$out/vm-latest.jsonl"

# ---- report -------------------------------------------------------------------------------------
if awk -v a="${load_start%% *}" 'BEGIN { exit !(a > 0.5) }'; then
    notes+=("The machine was not idle when the measurements started (1-min load average ${load_start%% *}): other processes competed for the CPUs, so absolute figures are low and noisy; ratios within a round are more trustworthy.")
fi
notes+=("Guest: QEMU $ACCEL, 1 vCPU, 256 MiB, virtio-net-pci with host_mtu=$VM_MTU on -netdev stream (unix socket); MTU $VM_MTU by DHCP option 26. Under TCG the guest's CPU (one emulated vCPU) is the bottleneck, not the backend: compare the ratio, not the absolute Gbit/s. 'QEMU CPU share' is QEMU's utime+stime divided by the wall time between the host seeing the BENCH-START and BENCH-END markers on the serial console (1.00 = one host CPU busy; above 1: QEMU's vCPU thread plus its I/O thread).")
notes+=("Host side: one sandbox namespace H; the iperf3 server binds 127.0.0.1 there, reached at 192.168.127.254 (slipway's host-loopback alias) and 192.0.2.2 (passt: its gateway, copied from H's default route via a veth to a dead-end namespace, mapped to H's loopback). A fresh backend process and a fresh iperf3 server for every boot.")
notes+=("slipway: serve --qemu SOCKET --mtu $VM_MTU --dns-upstream 127.0.0.1 --egress-allow 127.0.0.1/32. passt: passt -f -1 -4 --socket SOCKET --mtu $VM_MTU --dns 192.0.2.2 --no-dhcp-search -t none -u none (drops to nobody, as by default).")
notes+=("QEMU, the backend and the host's iperf3 server share $(nproc) CPUs.")

info="$work/info.json"
slipway_ver="$("$SLIPWAY" --version 2>/dev/null || echo '?') (git $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$repo" diff --quiet HEAD -- crates 2>/dev/null || echo '+uncommitted changes'))"
export I_DATE; I_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
export I_KERNEL; I_KERNEL=$(uname -r)
export I_CPU; I_CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
export I_NPROC; I_NPROC=$(nproc)
export I_LOAD="load average (1/5/15 min) before the measurements: $load_start; after: $load_end; measurements took $((SECONDS - t_start)) s"
export I_PASST; I_PASST="passt $(dpkg-query -W -f '${Version}' passt 2>/dev/null || echo '?')"
export I_QEMU; I_QEMU="$(qemu-system-x86_64 --version | sed -n 1p) ($ACCEL)"
export I_GUEST; I_GUEST="Debian kernel $(basename "$(readlink -f "$E2E_BUILD_DIR/vmlinuz")" | sed 's/^vmlinuz-//'), busybox $(busybox | sed -n 1p | cut -d' ' -f2), the host's iperf3 (tests/e2e/build-guest.sh)"
export I_IPERF; I_IPERF=$(iperf3 --version | sed -n 1p)
export I_CMD="$cmdline" I_ROUNDS="$ROUNDS" I_DUR="$DURATION" I_SLIPWAY="$slipway_ver" \
    I_BACKENDS="${BACKENDS[*]}" I_TESTS="${TESTS[*]}" I_MTU="$VM_MTU"
notes_file="$work/notes.txt"
printf '%s\n' "${notes[@]}" >"$notes_file"
python3 - "$notes_file" >"$info" <<'EOF'
import json, os, sys
e = os.environ
print(json.dumps({
    "date": e["I_DATE"], "command": e["I_CMD"], "rounds": int(e["I_ROUNDS"]),
    "duration": e["I_DUR"], "mtu": e["I_MTU"], "tests": e["I_TESTS"].split(),
    "kernel": e["I_KERNEL"], "cpu": e["I_CPU"], "nproc": e["I_NPROC"], "load": e["I_LOAD"],
    "slipway": e["I_SLIPWAY"], "passt": e["I_PASST"], "qemu": e["I_QEMU"], "guest": e["I_GUEST"],
    "iperf3": e["I_IPERF"], "backends": e["I_BACKENDS"].split(),
    "notes": [l.rstrip("\n") for l in open(sys.argv[1]) if l.strip()],
}))
EOF
python3 "$tool" vm-report "$results" "$info" | tee "$out/vm-latest.md"
