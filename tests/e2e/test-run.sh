#!/usr/bin/env bash
# `slipway run [OPTIONS] -- COMMAND`: the command in new network and mount namespaces (and a user
# namespace when run by a non-root user) whose network is slipway, as root and as nobody.
#
# Runs inside a loopback-only namespace (lib.sh): slipway runs there, the HTTP server listens on
# its 127.0.0.1, and every invocation passes --egress-allow 127.0.0.0/8, so even a wrong test
# could not dial out. The unprivileged runs use `setpriv` to become nobody (65534); they need
# /dev/net/tun at mode 0666 (as udev makes it on most distributions), which the test sets and
# restores at exit.
#
# Checks, as root: tap0 192.168.127.2/24, the default route via .1, lo up, a private resolv.conf
# naming 192.168.127.1 (the host's file byte-identical afterwards); a random multi-MiB download
# from the host's 127.0.0.1 through 192.168.127.254 and through host.slipway.internal (sha256);
# exit status passed through, 127 for a missing command, 126 for a non-executable one; a
# destination outside --egress-allow refused within 3 s; -p HOSTPORT:8000 publishing a server the
# command runs; SIGTERM forwarded (trapped: the command's own status 42; not trapped: 143).
# As nobody: tap0 configured, uid 0 in its own user namespace mapped to 65534, the download,
# exit status, SIGUSR1 forwarded (138); with /dev/net/tun at 0600 a clear refusal naming it.
# Afterwards: no /tmp/slipway-run-* file, no process of any run (slipway, its commands, anything
# in the commands' network namespaces), no new interface.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_enter_isolated_netns "$@"

SLIPWAY=${SLIPWAY:-$E2E_ROOT/target/release/slipway}
[ -x "$SLIPWAY" ] || e2e_die "no slipway binary at $SLIPWAY: run cargo build --release"
blob_mib=${E2E_BLOB_MIB:-8}
egress=(--egress-allow 127.0.0.0/8)
nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
tag=e2e-test-run # $0 of every `sh -c` the runs execute, so that ps can find leftovers
check() { e2e_check_cmd "$@"; }

# What "nothing left behind" is compared with.
tmp=${TMPDIR:-/tmp}
temp_files() { find /tmp "$tmp" -maxdepth 1 -name 'slipway-run-*' 2>/dev/null | sort -u; }
# Processes of the kinds the runs start: slipway run, the tagged shells and python, sleep 30.
our_processes() {
    local pid ppid args
    while read -r pid ppid args; do
        [ "$pid" = "$BASHPID" ] && continue
        case "$args" in
        *"slipway run"* | *"$tag"* | "sleep 30") echo "$pid $ppid $args" ;;
        esac
    done < <(ps -eo pid=,ppid=,args=)
}
links() { ip -o link show | awk -F': ' '{print $2}' | sort | tr '\n' ' '; }
# The machine's own namespace, where the script was started from (the parent shell's; /proc/1's
# may be out of reach in a container): its links, or "unavailable".
host_links() {
    nsenter --net="/proc/$PPID/ns/net" ip -o link show 2>/dev/null | awk -F': ' '{print $2}' |
        sort | tr '\n' ' ' || echo unavailable
}
temp_before=$(temp_files)
procs_before=$(our_processes)
links_before=$(links)
host_links_before=$(host_links)
cp /etc/resolv.conf "$E2E_WORK/host-resolv.conf.before"

# A directory that user nobody may enter and read (mktemp -d makes it 0700), for the HTTP
# server's files and as the unprivileged runs' working directory.
share=$(mktemp -d /tmp/e2e-run-share.XXXXXX)
e2e_on_exit rm -rf "$share"
chmod 0755 "$share"
mkdir -m 0755 "$share/www"
blob_sha=$(e2e_random_file "$share/www/blob.bin" "$blob_mib")
echo "hello through a published port" >"$share/www/hello.txt"
printf '#!/bin/sh\necho should not run\n' >"$share/not-executable.sh"
chmod 0644 "$share/www/blob.bin" "$share/www/hello.txt" "$share/not-executable.sh"
e2e_http_server_start "$share/www"
http_port=$E2E_HTTP_PORT

# Every run's slipway PID and its command's network namespace, for the leftover checks.
slipway_pids=()
command_netns=()

# run NAME [PREFIX...] -- SLIPWAY_RUN_ARGS...: `slipway run` in the foreground (at most 30 s),
# stdout to NAME.out, stderr to NAME.err; sets RC and RUN_MS. A command that prints
# "ids ppid=P netns=N" lines gets its slipway and namespace recorded.
run() {
    local name=$1 prefix=() t0 ids
    shift
    while [ "$1" != -- ]; do
        prefix+=("$1")
        shift
    done
    shift
    t0=$(date +%s%N)
    RC=0
    (cd "$share" && timeout 30 "${prefix[@]}" "$SLIPWAY" run "${egress[@]}" "$@") \
        </dev/null >"$E2E_WORK/$name.out" 2>"$E2E_WORK/$name.err" || RC=$?
    RUN_MS=$((($(date +%s%N) - t0) / 1000000))
    echo "$name: exit $RC after $RUN_MS ms" >>"$E2E_WORK/runs.txt"
    while read -r ids; do
        slipway_pids+=("$(sed -n 's/.*ppid=\([0-9]*\).*/\1/p' <<<"$ids")")
        command_netns+=("$(sed -n 's/.*netns=\([^ ]*\).*/\1/p' <<<"$ids")")
    done < <(grep '^ids ' "$E2E_WORK/$name.out" || true)
}
out() { cat "$E2E_WORK/$1.out"; }
# Lines of a run's output between "--- SECTION" and the next "---".
section() { awk -v s="--- $2" '$0 == s {on = 1; next} /^---/ {on = 0} on' "$E2E_WORK/$1.out"; }
ids='echo "ids ppid=$PPID netns=$(readlink /proc/self/ns/net)"'

tap_configured() { # NAME: the run's "--- addr", "--- route", "--- lo" sections
    local bad=0
    section "$1" addr | grep -q 'tap0 .*inet 192\.168\.127\.2/24' || { echo "no 192.168.127.2/24 on tap0"; bad=1; }
    section "$1" route | grep -q '^default via 192\.168\.127\.1 dev tap0' || { echo "no default route via 192.168.127.1"; bad=1; }
    section "$1" lo | grep -q '<[^>]*\bUP\b' || { echo "lo is not up"; bad=1; }
    [ "$bad" = 0 ] || out "$1"
    return "$bad"
}
network_script="$ids
echo '--- addr'; ip -o -4 addr show dev tap0
echo '--- route'; ip route show default
echo '--- lo'; ip -o link show lo"

# ---------------------------------------------------------------- as root

run root-basics -- sh -c "$network_script
echo '--- resolv'; cat /etc/resolv.conf
echo '---'; exit 7" "$tag"
check root_tap_configured tap_configured root-basics
resolv_ok() {
    section root-basics resolv | grep -qx 'nameserver 192\.168\.127\.1' &&
        [ "$(section root-basics resolv | grep -c '^nameserver')" = 1 ] ||
        { echo "resolv.conf inside:"; section root-basics resolv; return 1; }
}
check root_resolv_conf resolv_ok
exit_is() { # WANT: the last run's status
    [ "$RC" = "$1" ] || { echo "exit status $RC, want $1"; return 1; }
}
check root_exit_status_passed exit_is 7

run root-download -- sh -c "$ids
echo alias=\$(curl -sS --max-time 30 http://192.168.127.254:$http_port/blob.bin | sha256sum | cut -d' ' -f1)
echo name=\$(curl -sS --max-time 30 http://host.slipway.internal:$http_port/blob.bin | sha256sum | cut -d' ' -f1)" "$tag"
downloaded() { # RUN KEY
    local got
    got=$(sed -n "s/^$2=//p" "$E2E_WORK/$1.out")
    [ "$got" = "$blob_sha" ] || { echo "sha256 '$got', want $blob_sha; stderr: $(head -c 300 "$E2E_WORK/$1.err")"; return 1; }
}
check root_download_alias downloaded root-download alias
check root_download_by_name downloaded root-download name

run root-missing -- /nonexistent/e2e-no-such-command
missing_ok() {
    exit_is 127 && grep -q 'e2e-no-such-command' "$E2E_WORK/root-missing.err" ||
        { cat "$E2E_WORK/root-missing.err"; return 1; }
}
check root_missing_command_127 missing_ok
run root-not-executable -- "$share/not-executable.sh"
check root_not_executable_126 exit_is 126

run root-egress -- sh -c "$ids
curl -sS --max-time 10 -o /dev/null http://192.0.2.1:80/; echo curl_rc=\$?" "$tag"
egress_refused() {
    local crc
    crc=$(sed -n 's/^curl_rc=//p' "$E2E_WORK/root-egress.out")
    echo "curl exit ${crc:-?} ($(head -c 200 "$E2E_WORK/root-egress.err")), run took $RUN_MS ms"
    [ -n "$crc" ] && [ "$crc" != 0 ] && [ "$RUN_MS" -le 3000 ]
}
check root_egress_refused_fast egress_refused

# Waits up to SECONDS for PID (a child of this shell) to exit; its status then goes to RC.
wait_exit() { # PID SECONDS
    local pid=$1 deadline=$(($(date +%s%N) + $2 * 1000000000)) st
    while :; do
        st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
        [ -z "$st" ] || [ "$st" = Z ] && break
        if [ "$(date +%s%N)" -ge "$deadline" ]; then
            echo "still running after $2 s"
            e2e_stop_pid "$pid"
            RC=timeout
            return 1
        fi
        sleep 0.05
    done
    RC=0
    wait "$pid" || RC=$?
}
# Records the command (the child of slipway PID) once it runs COMM; 0 when it does within 10 s.
command_started() { # PID COMM
    local c
    for _ in $(seq 200); do
        for c in $(pgrep -P "$1" || true); do
            if [ "$(cat "/proc/$c/comm" 2>/dev/null)" = "$2" ]; then
                slipway_pids+=("$1")
                command_netns+=("$(readlink "/proc/$c/ns/net")")
                # The leftover check at the end must be able to see such a process.
                our_processes | grep -q "^$c $1 " ||
                    { echo "our_processes does not list the command $c"; return 1; }
                return 0
            fi
        done
        sleep 0.05
    done
    echo "no $2 under slipway $1 after 10 s"
    return 1
}

# A server of the command's own, published on the host: it answers one request (or gives up
# after 10 s) and exits, so nothing outlives the run.
e2e_pick_port
pub_port=$E2E_PORT
e2e_spawn root-publish "$SLIPWAY" run "${egress[@]}" -p "$pub_port:8000" -- python3 -c '
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
server = http.server.HTTPServer(("0.0.0.0", 8000), handler)
server.timeout = 10
server.handle_request()
' "$share/www" "$tag"
pub_pid=$E2E_PID
published() {
    local got="" i
    command_started "$pub_pid" python3 || return 1
    for i in $(seq 100); do
        got=$(curl -sS --max-time 3 "http://127.0.0.1:$pub_port/hello.txt" 2>/dev/null || true)
        [ -n "$got" ] && break
        sleep 0.1
    done
    echo "got '$got' after $i tries"
    [ "$got" = "hello through a published port" ]
}
check root_publish_serves published
publish_done() {
    wait_exit "$pub_pid" 12 && exit_is 0 || return 1
    [ -z "$(ss -Hltn "sport = :$pub_port")" ] || { echo "127.0.0.1:$pub_port still listening"; return 1; }
}
check root_publish_exits_and_unpublishes publish_done

# SIGTERM to slipway reaches the command: one that traps it exits with its own status.
ready=$share/trap.ready
e2e_spawn root-trap "$SLIPWAY" run "${egress[@]}" -- \
    sh -c 'trap "exit 42" TERM; touch "$1"; while :; do sleep 0.1; done' "$tag" "$ready"
trap_pid=$E2E_PID
sig_exit() { # PID SIGNAL WANT [COMM]: once the command runs, SIGNAL to slipway, exit WANT within 5 s
    local pid=$1 t0
    if [ -n "${4:-}" ]; then
        command_started "$pid" "$4" || return 1
    else
        e2e_wait_path "$ready" 10
        command_started "$pid" sh || return 1
    fi
    t0=$(date +%s%N)
    kill "-$2" "$pid"
    wait_exit "$pid" 5 || return 1
    echo "exit $RC $((($(date +%s%N) - t0) / 1000000)) ms after SIG$2"
    exit_is "$3"
}
check root_sigterm_trapped sig_exit "$trap_pid" TERM 42
e2e_spawn root-sleep "$SLIPWAY" run "${egress[@]}" -- sleep 30
check root_sigterm_143 sig_exit "$E2E_PID" TERM 143 sleep

# ---------------------------------------------------------------- as nobody

tun_mode=$(stat -c %a /dev/net/tun)
e2e_on_exit chmod "$tun_mode" /dev/net/tun
chmod 0666 /dev/net/tun

run nobody-basics "${nobody[@]}" -- sh -c "$network_script
echo '--- uid'; id -u
echo '--- uid_map'; cat /proc/self/uid_map
echo '---'
echo alias=\$(curl -sS --max-time 30 http://192.168.127.254:$http_port/blob.bin | sha256sum | cut -d' ' -f1)
exit 5" "$tag"
check nobody_tap_configured tap_configured nobody-basics
nobody_uid0() {
    [ "$(section nobody-basics uid)" = 0 ] &&
        section nobody-basics uid_map | grep -Eq '^ *0 +65534 +1$' ||
        { out nobody-basics; cat "$E2E_WORK/nobody-basics.err"; return 1; }
}
check nobody_root_of_own_userns nobody_uid0
check nobody_download_alias downloaded nobody-basics alias
check nobody_exit_status_passed exit_is 5

e2e_spawn nobody-sleep "${nobody[@]}" "$SLIPWAY" run "${egress[@]}" -- sleep 30
check nobody_sigusr1_138 sig_exit "$E2E_PID" USR1 138 sleep

# Without access to /dev/net/tun, a refusal that says what to do.
chmod 0600 /dev/net/tun
run nobody-no-tun "${nobody[@]}" -- sh -c 'echo the command ran' "$tag"
chmod 0666 /dev/net/tun
no_tun() {
    echo "exit $RC after $RUN_MS ms: $(head -c 400 "$E2E_WORK/nobody-no-tun.err")"
    [ "$RC" != 0 ] && [ "$RC" != 124 ] || return 1
    ! grep -q 'the command ran' "$E2E_WORK/nobody-no-tun.out" || { echo "the command ran"; return 1; }
    grep -q '/dev/net/tun' "$E2E_WORK/nobody-no-tun.err" && grep -q '0666' "$E2E_WORK/nobody-no-tun.err"
}
check nobody_tun_0600_refused no_tun

# ---------------------------------------------------------------- nothing left behind

no_temp_files() {
    local now
    now=$(temp_files)
    [ "$now" = "$temp_before" ] || { echo "new: $(comm -13 <(echo "$temp_before") <(echo "$now"))"; return 1; }
}
check no_temp_files_left no_temp_files
no_processes() {
    local bad=0 p n line
    echo "slipway runs: ${slipway_pids[*]}; command namespaces: ${command_netns[*]}"
    [ "${#slipway_pids[@]}" -ge 8 ] || { echo "only ${#slipway_pids[@]} runs recorded"; bad=1; }
    for p in "${slipway_pids[@]}"; do
        if tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -q slipway; then
            echo "slipway $p still running"
            bad=1
        fi
        if [ -n "$(ps -o pid= --ppid "$p" 2>/dev/null)" ] &&
            tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -q slipway; then
            echo "children of slipway $p: $(ps -o pid=,args= --ppid "$p")"
            bad=1
        fi
    done
    for p in /proc/[0-9]*; do
        n=$(readlink "$p/ns/net" 2>/dev/null) || continue
        for line in "${command_netns[@]}"; do
            if [ "$n" = "$line" ]; then
                echo "process ${p#/proc/} in a command's namespace $n: $(tr '\0' ' ' 2>/dev/null <"$p/cmdline")"
                bad=1
            fi
        done
    done
    line=$(comm -13 <(echo "$procs_before" | sort) <(our_processes | sort))
    [ -z "$line" ] || { echo "new processes: $line"; bad=1; }
    return "$bad"
}
check no_processes_left no_processes
no_interfaces() {
    local l h
    l=$(links)
    h=$(host_links)
    echo "links here: '$l'; in the machine's namespace: '$h'"
    [ "$l" = "$links_before" ] || { echo "before here: '$links_before'"; return 1; }
    [ "$h" = "$host_links_before" ] || { echo "before there: '$host_links_before'"; return 1; }
}
check no_interfaces_left no_interfaces
check host_resolv_conf_untouched cmp "$E2E_WORK/host-resolv.conf.before" /etc/resolv.conf

cat "$E2E_WORK/runs.txt"
if [ "$E2E_FAILED" != 0 ]; then
    for f in "$E2E_WORK"/*.err "$E2E_WORK"/root-*.log "$E2E_WORK"/nobody-*.log; do
        [ -s "$f" ] && { echo "--- $f"; tail -n 10 "$f"; }
    done
fi
e2e_summary
