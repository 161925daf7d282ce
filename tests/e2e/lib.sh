# shellcheck shell=bash disable=SC2034 # globals here are set for the test scripts that source this
# Harness for slipway's end-to-end tests: a real Linux guest in QEMU, real network namespaces.
# Source it from a bash test script (set -euo pipefail is set here too).
#
# Isolation (read this first)
# ---------------------------
# Every e2e test runs inside a fresh network namespace that has only `lo`:
#
#     e2e_enter_isolated_netns "$@"     # first line of a test after sourcing this file
#
# re-executes the calling script under `unshare --net` (as root), brings `lo` up, and checks that
# no other link exists. Every server the guest may reach (HTTP, DNS, iperf3) listens on that
# namespace's 127.0.0.1, and the network stack under test (passt today, slipway later) runs in it
# too, reaching those servers through its host-loopback mapping (the gateway address). Nothing in
# the namespace has a route off the machine, so even a wrong address cannot leave it.
#
# Some stacks refuse to start without a "host" interface that has a default route (passt copies
# the guest's addresses from it). `e2e_uplink_create` adds one inside the isolated namespace: a
# veth pair whose both ends stay in the namespace, with documentation addresses (192.0.2.1/24,
# 2001:db8::1/64) and default routes to 192.0.2.254 / 2001:db8::fe on it. Traffic routed there
# reaches the peer veth, which is also in the namespace and answers nothing, except for
# 192.0.2.2 / 2001:db8::2, addresses of the namespace itself: a ping target for stacks that relay
# guest pings to the host (passt does; it does not answer pings to its gateway address).
#
# In the isolated namespace net.ipv4.ping_group_range is opened to all groups, so that stacks
# running unprivileged (passt drops to nobody) can use ICMP echo sockets.
#
# Processes started with the helpers below are stopped by PID when the script exits (EXIT, INT,
# TERM traps), namespaces made by e2e_netns_create are deleted. Logs go to $E2E_WORK (kept after
# the run: .build/e2e/runs/NAME-PID/, the last 5 runs of each test; files over 32 MiB only from failing runs).
#
# Functions (arguments in CAPS; [..] optional). Those that start a server set global variables
# rather than print, because they must run in the calling shell to keep the PID.
#
#   e2e_enter_isolated_netns "$@"          re-exec in a loopback-only netns (see above)
#   e2e_uplink_create                      fake default-route link inside the isolated netns;
#                                          addresses in E2E_UPLINK_{ADDR,GATEWAY,ECHO}{4,6}
#   e2e_netns_create NAME                  `ip netns add e2e-<pid>-NAME`, lo up; sets
#                                          E2E_NETNS=<full name>; deleted on exit
#   e2e_on_exit CMD [ARG...]               run CMD at exit (last registered runs first)
#   e2e_spawn NAME CMD [ARG...]            run CMD in the background, output to
#                                          $E2E_WORK/NAME.log; sets E2E_PID; stopped on exit
#   e2e_stop_pid PID                       SIGTERM, wait up to 5 s, then SIGKILL
#   e2e_free_port                          prints a free TCP port on 127.0.0.1
#   e2e_pick_port [COUNT=1]                COUNT consecutive free ports not picked before by
#                                          this script; sets E2E_PORT (the first one)
#   e2e_check_cmd NAME CMD [ARG...]        run CMD (output to $E2E_WORK/NAME.out); ok if it
#                                          exits 0, else not ok with the output's last lines
#   e2e_wait_tcp PORT [TIMEOUT_S=10]       wait until 127.0.0.1:PORT accepts TCP
#   e2e_wait_udp PORT [TIMEOUT_S=10]       wait until a UDP socket is bound on PORT
#   e2e_wait_path PATH [TIMEOUT_S=10]      wait until PATH exists (e.g. a unix socket)
#   e2e_random_file PATH SIZE_MIB          writes SIZE_MIB MiB of random bytes; prints sha256
#   e2e_http_server_start DIR [PORT=0] [BIND=127.0.0.1]
#                                          GET files from DIR, PUT/POST answers "<sha256> <len>";
#                                          on BIND (a loopback address: 127.0.0.1 or ::1; log
#                                          http.log, or http6.log for ::1); sets E2E_HTTP_PORT,
#                                          E2E_HTTP_PID
#   e2e_dnsmasq_start PORT RECORD...       dnsmasq on 127.0.0.1:PORT, no upstream, no hosts file;
#                                          RECORD is NAME=ADDR[,ADDR6] (a --host-record: A/AAAA
#                                          for that exact name, NODATA for a missing type) or a
#                                          raw --option (e.g. --address=/wild.test/127.0.0.1);
#                                          other names under .test get NXDOMAIN;
#                                          sets E2E_DNSMASQ_PID
#   e2e_iperf3_server_start PORT           iperf3 -s on 127.0.0.1:PORT; sets E2E_IPERF3_PID
#   e2e_qemu_accel                         prints tcg, or kvm when SLIPWAY_E2E_KVM=1
#                                          (SLIPWAY_E2E_KVM=auto: probe a 15 s boot on KVM once;
#                                          nested KVM here hangs after "Booting from ROM")
#   e2e_guest_build                        builds/reuses the initramfs; sets E2E_KERNEL, E2E_INITRD
#   e2e_boot_guest NETDEV SCRIPT LOG [TIMEOUT_S=180]
#       Boots the guest with `-netdev NETDEV` (must contain id=ID) plugged into
#       `virtio-net-pci,netdev=ID,mac=$E2E_GUEST_MAC`, runs SCRIPT (busybox sh, with
#       tests/e2e/guest/guest-lib.sh sourced) after DHCP, and writes the serial console to LOG
#       (\r stripped after exit). NETDEV "" boots without a NIC. Extra QEMU arguments: the array
#       E2E_QEMU_EXTRA_ARGS. Sets E2E_BOOT_LEASE_S (seconds from QEMU start to the guest's
#       E2E-LEASE line, "" if none) and E2E_BOOT_TOTAL_S. Returns 0 when the guest printed
#       "E2E-DONE rc=0", 1 for another rc, 124 on timeout (QEMU killed), 125 if QEMU exited
#       without E2E-DONE. The guest kills SCRIPT itself 30 s before TIMEOUT_S (half of it when
#       TIMEOUT_S <= 60) and prints "E2E-FAIL script-timeout". Extra kernel parameters:
#       E2E_KERNEL_ARGS (no dots if /init must see them). SCRIPT and LOG paths must not contain
#       commas (QEMU option syntax). Guest: 256 MiB, 1 vCPU, accelerator from e2e_qemu_accel.
#
#   Reading the guest's markers from LOG (guest prints E2E-PASS NAME / E2E-FAIL NAME REASON /
#   E2E-RESULT NAME=VALUE / E2E-LEASE key=value...):
#   e2e_marker_passed LOG NAME             0 if "E2E-PASS NAME" is there and no "E2E-FAIL NAME"
#   e2e_marker_result LOG NAME             prints VALUE of the last "E2E-RESULT NAME=VALUE"
#                                          (nothing, status 0, when there is none)
#   e2e_marker_lease LOG KEY               prints KEY's value from the E2E-LEASE line (or nothing)
#   e2e_marker_failures LOG                prints every E2E-FAIL line; 0 if there were any
#
#   Host-side verdicts, counted for the closing line:
#   e2e_ok NAME / e2e_not_ok NAME REASON   print "ok NAME" / "not ok NAME: REASON"
#   e2e_expect_guest_pass LOG NAME...      e2e_ok or e2e_not_ok for each guest marker NAME
#   e2e_summary                            prints "e2e: N passed, N failed"; returns 1 if any failed;
#                                          a passing run drops its files over 32 MiB
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_ROOT=$(cd "$E2E_DIR/../.." && pwd)
E2E_BUILD_DIR="${SLIPWAY_E2E_BUILD_DIR:-$E2E_ROOT/.build/e2e}"
E2E_GUEST_MAC="${E2E_GUEST_MAC:-52:54:00:e2:e0:01}"
E2E_QEMU_EXTRA_ARGS=()
# no_timer_check, mitigations=off, tsc=reliable: each saves a fraction of a second under TCG
# (IO-APIC timer probe, alternatives patching, TSC refinement). Parameters with a dot never
# reach /init; the guest reads its script from fw_cfg instead.
E2E_KERNEL_CMDLINE="console=ttyS0 quiet panic=-1 no_timer_check mitigations=off tsc=reliable"
E2E_PASSED=0
E2E_FAILED=0
E2E_CLEANUPS=()

e2e_log() { echo "e2e: $*" >&2; }
e2e_die() {
    echo "e2e: error: $*" >&2
    exit 1
}

e2e_now() { date +%s.%N; }
# Seconds between two e2e_now stamps, two decimals.
e2e_elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# ---------------------------------------------------------------- cleanup

e2e_on_exit() {
    local q
    printf -v q '%q ' "$@"
    E2E_CLEANUPS+=("$q")
}

_e2e_run_cleanups() {
    local rc=$? i
    trap - EXIT INT TERM
    for ((i = ${#E2E_CLEANUPS[@]} - 1; i >= 0; i--)); do
        eval "${E2E_CLEANUPS[$i]}" || true
    done
    E2E_CLEANUPS=()
    return "$rc"
}
trap _e2e_run_cleanups EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

e2e_stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# Cleanup for our own background children: stops PID only while it is still one of this shell's
# jobs, so a PID that exited (and may since have been reused) is never signalled.
_e2e_stop_child() {
    if jobs -p | grep -qx "$1"; then
        e2e_stop_pid "$1"
    fi
}

e2e_spawn() {
    local name=$1
    shift
    "$@" >"$E2E_WORK/$name.log" 2>&1 &
    E2E_PID=$!
    e2e_on_exit _e2e_stop_child "$E2E_PID"
}

# ---------------------------------------------------------------- namespaces

e2e_enter_isolated_netns() {
    if [ "${E2E_ISOLATED:-0}" != 1 ]; then
        [ "$(id -u)" = 0 ] || e2e_die "e2e tests need root (network namespaces, veth); run them as root"
        command -v unshare >/dev/null || e2e_die "unshare missing: run scripts/install-deps.sh"
        trap - EXIT INT TERM
        E2E_ISOLATED=1 exec unshare --net -- "$BASH" "$0" "$@"
    fi
    ip link set lo up
    # Unprivileged ICMP echo ("ping") sockets for everyone, as on most distributions: stacks that
    # drop root (passt runs as nobody) or never had it answer guest pings with them.
    sysctl -qw net.ipv4.ping_group_range="0 2147483647"
    local links
    links=$(ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')
    [ "$links" = "lo " ] || e2e_die "isolated namespace has links other than lo: $links"
    local name old
    name=$(basename "$0" .sh)
    E2E_WORK="${E2E_WORK:-$E2E_BUILD_DIR/runs/$name-$$}"
    mkdir -p "$E2E_WORK"
    # Keep the logs of the last 5 runs of this test.
    while read -r old; do
        [ -n "$old" ] && rm -rf "$old"
    done < <(find "$E2E_BUILD_DIR/runs" -mindepth 1 -maxdepth 1 -type d -name "$name-*" \
        -printf '%T@ %p\n' | sort -rn | tail -n +6 | cut -d' ' -f2-)
    e2e_log "isolated network namespace (only lo); logs in $E2E_WORK"
}

_e2e_require_isolated() {
    [ "${E2E_ISOLATED:-0}" = 1 ] || e2e_die "$1 needs e2e_enter_isolated_netns first"
}

E2E_UPLINK_ADDR4=192.0.2.1
E2E_UPLINK_GATEWAY4=192.0.2.254
E2E_UPLINK_ECHO4=192.0.2.2
E2E_UPLINK_ADDR6=2001:db8::1
E2E_UPLINK_GATEWAY6=2001:db8::fe
E2E_UPLINK_ECHO6=2001:db8::2

e2e_uplink_create() {
    _e2e_require_isolated e2e_uplink_create
    ip link add e2e-uplink type veth peer name e2e-uplink-peer
    ip link set e2e-uplink up
    ip link set e2e-uplink-peer up
    ip addr add "$E2E_UPLINK_ADDR4/24" dev e2e-uplink
    ip route add default via "$E2E_UPLINK_GATEWAY4" dev e2e-uplink
    ip -6 addr add "$E2E_UPLINK_ADDR6/64" dev e2e-uplink nodad
    ip -6 route add default via "$E2E_UPLINK_GATEWAY6" dev e2e-uplink
    # An address that answers ping inside the namespace (it is local to it, like the loopback).
    ip addr add "$E2E_UPLINK_ECHO4/24" dev e2e-uplink-peer
    ip -6 addr add "$E2E_UPLINK_ECHO6/64" dev e2e-uplink-peer nodad
}

e2e_netns_create() {
    _e2e_require_isolated e2e_netns_create
    local full="e2e-$$-$1"
    ip netns add "$full"
    e2e_on_exit ip netns del "$full"
    ip -n "$full" link set lo up
    E2E_NETNS=$full
}

# ---------------------------------------------------------------- servers on 127.0.0.1

e2e_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

_e2e_picked_ports=" "
e2e_pick_port() {
    local count=${1:-1} p i ok
    while :; do
        p=$(e2e_free_port)
        ok=1
        for ((i = 0; i < count; i++)); do
            if [[ $_e2e_picked_ports == *" $((p + i)) "* ]] || [ $((p + i)) -gt 65535 ] ||
                { [ "$i" -gt 0 ] && ! python3 -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' $((p + i)) 2>/dev/null; }; then
                ok=0
            fi
        done
        [ "$ok" = 1 ] && break
    done
    for ((i = 0; i < count; i++)); do _e2e_picked_ports+="$((p + i)) "; done
    E2E_PORT=$p
}

e2e_check_cmd() {
    local name=$1
    shift
    if "$@" >"$E2E_WORK/$name.out" 2>&1; then
        e2e_ok "$name"
    else
        e2e_not_ok "$name" "exit $?: $(tail -n 5 "$E2E_WORK/$name.out" | tr '\n' ' ')"
    fi
}

_e2e_wait() {
    local what=$1 timeout=$2 deadline
    shift 2
    deadline=$(($(date +%s) + timeout))
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || e2e_die "timed out after ${timeout}s waiting for $what"
        sleep 0.1
    done
}

_e2e_tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
_e2e_udp_bound() { [ -n "$(ss -Hlun "sport = :$1")" ]; }

e2e_wait_tcp() { _e2e_wait "127.0.0.1:$1/tcp" "${2:-10}" _e2e_tcp_open "$1"; }
e2e_wait_udp() { _e2e_wait "127.0.0.1:$1/udp" "${2:-10}" _e2e_udp_bound "$1"; }
e2e_wait_path() { _e2e_wait "$1" "${2:-10}" test -e "$1"; }

e2e_random_file() {
    local path=$1 mib=$2
    head -c "$((mib * 1024 * 1024))" /dev/urandom >"$path"
    sha256sum "$path" | cut -d' ' -f1
}

e2e_http_server_start() {
    local dir=$1 port=${2:-0} bind=${3:-127.0.0.1} port_file log=http
    [[ $bind != *:* ]] || log=http6
    port_file="$E2E_WORK/http.port.$RANDOM"
    rm -f "$port_file"
    e2e_spawn "$log" python3 "$E2E_DIR/http_server.py" --dir "$dir" --bind "$bind" \
        --port "$port" --port-file "$port_file"
    E2E_HTTP_PID=$E2E_PID
    e2e_wait_path "$port_file" 10
    E2E_HTTP_PORT=$(cat "$port_file")
}

e2e_dnsmasq_start() {
    local port=$1 r
    shift
    local args=(--keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --no-poll
        --bind-interfaces --listen-address=127.0.0.1 --port="$port" --user=root
        --pid-file="$E2E_WORK/dnsmasq.$port.pid" --log-facility=- --log-queries --local=/test/)
    for r in "$@"; do
        case "$r" in
        --*) args+=("$r") ;;
        *=*) args+=("--host-record=${r%%=*},${r#*=}") ;;
        *) e2e_die "dnsmasq record '$r' is neither NAME=ADDR nor --option" ;;
        esac
    done
    e2e_spawn "dnsmasq.$port" dnsmasq "${args[@]}"
    E2E_DNSMASQ_PID=$E2E_PID
    e2e_wait_udp "$port" 10
}

e2e_iperf3_server_start() {
    local port=$1
    e2e_spawn "iperf3.$port" iperf3 --server --bind 127.0.0.1 --port "$port"
    E2E_IPERF3_PID=$E2E_PID
    e2e_wait_tcp "$port" 10
}

# ---------------------------------------------------------------- the guest

# Sets E2E_ACCEL once per run (the probe is not repeated).
_e2e_resolve_accel() {
    [ -z "${E2E_ACCEL:-}" ] || return 0
    case "${SLIPWAY_E2E_KVM:-0}" in
    1) E2E_ACCEL=kvm ;;
    auto)
        E2E_ACCEL=tcg
        if [ -w /dev/kvm ]; then
            local s="$E2E_WORK/kvm-probe.sh" log="$E2E_WORK/kvm-probe.log"
            echo 'echo kvm-probe-ok' >"$s"
            e2e_guest_build
            # Nested KVM can hang right after the BIOS: give it 15 s to reach the guest's /init.
            if timeout 15 qemu-system-x86_64 -nodefaults -no-user-config -accel kvm -m 256 \
                -display none -serial "file:$log" -no-reboot -kernel "$E2E_KERNEL" \
                -initrd "$E2E_INITRD" -append "$E2E_KERNEL_CMDLINE" \
                -fw_cfg "name=opt/slipway/script,file=$s" </dev/null >/dev/null 2>&1 &&
                grep -qa '^E2E-DONE rc=0' "$log"; then
                E2E_ACCEL=kvm
            fi
        fi
        e2e_log "accelerator probe: $E2E_ACCEL"
        ;;
    *) E2E_ACCEL=tcg ;;
    esac
}

e2e_qemu_accel() {
    _e2e_resolve_accel
    echo "$E2E_ACCEL"
}

e2e_guest_build() {
    if [ -z "${E2E_INITRD:-}" ]; then
        E2E_INITRD=$("$E2E_DIR/build-guest.sh")
        E2E_KERNEL="$E2E_BUILD_DIR/boot-kernel"
    fi
}

e2e_boot_guest() {
    local netdev=$1 script=$2 log=$3 timeout=${4:-180}
    local id start now pid rc=0 deadline_ns
    e2e_guest_build
    _e2e_resolve_accel
    [ -r "$script" ] || e2e_die "guest script $script not readable"
    # The guest kills its script a little before the host kills QEMU, so that a hung check shows
    # up as "E2E-FAIL script-timeout" and the log still ends with E2E-DONE.
    local guest_timeout=$((timeout > 60 ? timeout - 30 : timeout / 2))
    local args=(-nodefaults -no-user-config -accel "$E2E_ACCEL" -m 256 -smp 1
        -display none -serial "file:$log" -no-reboot
        -kernel "$E2E_KERNEL" -initrd "$E2E_INITRD"
        -append "$E2E_KERNEL_CMDLINE ${E2E_KERNEL_ARGS:-}"
        -fw_cfg "name=opt/slipway/script,file=$script"
        -fw_cfg "name=opt/slipway/timeout,string=$guest_timeout")
    if [ -n "$netdev" ]; then
        id=$(sed -n 's/.*\(^\|,\)id=\([^,]*\).*/\2/p' <<<"$netdev")
        [ -n "$id" ] || e2e_die "netdev '$netdev' has no id="
        # romfile=: no iPXE option ROM; the guest boots a kernel directly, so it only costs time.
        args+=(-netdev "$netdev" -device "virtio-net-pci,netdev=$id,mac=$E2E_GUEST_MAC,romfile=${E2E_NIC_OPTS:+,$E2E_NIC_OPTS}")
    fi
    args+=("${E2E_QEMU_EXTRA_ARGS[@]}")
    : >"$log"
    E2E_BOOT_LEASE_S=""
    start=$(e2e_now)
    deadline_ns=$(($(date +%s%N) + timeout * 1000000000))
    qemu-system-x86_64 "${args[@]}" </dev/null >"$log.qemu" 2>&1 &
    pid=$!
    e2e_on_exit _e2e_stop_child "$pid"
    while kill -0 "$pid" 2>/dev/null; do
        if [ -z "$E2E_BOOT_LEASE_S" ] && grep -qa '^E2E-LEASE ' "$log"; then
            E2E_BOOT_LEASE_S=$(e2e_elapsed "$start" "$(e2e_now)")
        fi
        if [ "$(date +%s%N)" -ge "$deadline_ns" ]; then
            e2e_log "guest timed out after ${timeout}s; stopping QEMU (pid $pid)"
            e2e_stop_pid "$pid"
            rc=124
            break
        fi
        sleep 0.1
    done
    wait "$pid" 2>/dev/null || true
    now=$(e2e_now)
    E2E_BOOT_TOTAL_S=$(e2e_elapsed "$start" "$now")
    sed -i 's/\r$//' "$log"
    if [ -z "$E2E_BOOT_LEASE_S" ] && grep -qa '^E2E-LEASE ' "$log"; then
        E2E_BOOT_LEASE_S=$E2E_BOOT_TOTAL_S # lease and power-off within one poll
    fi
    e2e_log "guest ran ${E2E_BOOT_TOTAL_S} s, lease after ${E2E_BOOT_LEASE_S:-(no lease)}${E2E_BOOT_LEASE_S:+ s}; log $log"
    if [ "$rc" = 0 ]; then
        if grep -qa '^E2E-DONE rc=0 ' "$log"; then
            rc=0
        elif grep -qa '^E2E-DONE ' "$log"; then
            rc=1
        else
            rc=125
            e2e_log "QEMU exited without E2E-DONE (guest crashed?); see $log"
            sed 's/^/  qemu: /' "$log.qemu" >&2
        fi
    fi
    return "$rc"
}

# ---------------------------------------------------------------- markers

e2e_marker_passed() {
    grep -qax "E2E-PASS $2" "$1" && ! grep -qa "^E2E-FAIL $2\( \|\$\)" "$1"
}

e2e_marker_result() {
    { grep -a "^E2E-RESULT $2=" "$1" || true; } | tail -n1 | cut -d= -f2-
}

e2e_marker_lease() {
    { grep -a '^E2E-LEASE ' "$1" || true; } | tail -n1 | tr ' ' '\n' | sed -n "s/^$2=//p"
}

e2e_marker_failures() { grep -a '^E2E-FAIL' "$1"; }

# ---------------------------------------------------------------- verdicts

e2e_ok() {
    E2E_PASSED=$((E2E_PASSED + 1))
    echo "ok $1"
}

e2e_not_ok() {
    E2E_FAILED=$((E2E_FAILED + 1))
    echo "not ok $1: ${2:-}"
}

e2e_expect_guest_pass() {
    local log=$1 name reason
    shift
    for name in "$@"; do
        if e2e_marker_passed "$log" "$name"; then
            e2e_ok "$name"
        else
            reason=$(grep -a "^E2E-FAIL $name\( \|\$\)" "$log" | head -n1 | cut -d' ' -f3-)
            e2e_not_ok "$name" "${reason:-no E2E-PASS $name in $log}"
        fi
    done
}

e2e_summary() {
    echo "e2e: $E2E_PASSED passed, $E2E_FAILED failed"
    [ "$E2E_FAILED" = 0 ] || return 1
    # A passing run keeps its logs but not its big artifacts (test-netns's capture of the iperf3
    # runs is ~2 GB): CI's disk is shared and small. A failing run keeps everything.
    if [ -n "${E2E_WORK:-}" ] && [ -d "$E2E_WORK" ]; then
        find "$E2E_WORK" -type f -size +32M -print -delete | sed 's/^/e2e: removed (run passed): /'
    fi
    return 0
}
