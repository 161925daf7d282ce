#!/usr/bin/env bash
# Many concurrent guest TCP connections (TCP issue: "10,000 concurrent connections opened and
# closed with no fd or memory leak afterwards"; "resident size with 10,000 open guest TCP
# connections reported, and under 64 MiB"), no QEMU.
#
# Runs inside a loopback-only namespace (lib.sh): slipway and the server live there; a guest
# namespace (`ip netns add`) reaches the server on 127.0.0.1 only through slipway's host-loopback
# alias 192.168.127.254. slipway runs with --egress-allow 127.0.0.0/8, so even a wrong test could
# not dial out. The fd limits are raised (soft to hard, hard to 65536 when allowed) for everything the test starts,
# and the ephemeral port range is widened in both namespaces (every guest connection is also a
# 127.0.0.1 connection from slipway to the server).
#
# Each round: a python client in the guest namespace opens N (10,000) connections to the server
# at once (non-blocking connects, at most E2E_CONN_INFLIGHT in progress) and reads the server's
# one-line greeting on each, keeping all of them open; with all N open the test reads the
# server's open count, slipway's fd count, VmRSS and live flow count (`slipway counters --json`
# over --api: tcp_flows_opened - tcp_flows_closed); then the client half-closes every connection
# and waits for the server's EOF on each. Rounds 1 and 2 are the leak test. Round 3 also lists
# all N flows (`slipway flows --json`), after reading RSS: building that listing costs slipway
# about 12 MiB for a moment, which the allocator keeps afterwards (no growth beyond on later
# listings), so it would hide or fake a leak if rounds 1 and 2 did it.
#
# Checks, per round: all N established and answered; the server sees N open; slipway holds at
# least N fds and N live flows (round 3: and lists N); every connection closed orderly (the
# server's EOF came back on each, and the server saw an EOF, not a reset, on each); within 30 s
# slipway's fd count is back within 10 of its count before the first round, its live flow count
# and its listing are empty and the server has none open. RSS with N open under 64 MiB (round 1;
# every round's is reported), slipway's peak RSS over the whole test (VmHWM, with the listing)
# under 64 MiB too; RSS after round 2 at most 8 MiB above RSS after round 1; slipway alive.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_enter_isolated_netns "$@"

SLIPWAY=${SLIPWAY:-$E2E_ROOT/target/release/slipway}
for _ in $(seq 60); do [ -x "$SLIPWAY" ] && break; sleep 1; done # rebuilt now and then
[ -x "$SLIPWAY" ] || e2e_die "no slipway binary at $SLIPWAY: run cargo build --release"
n=${E2E_CONNECTIONS:-10000}
inflight=${E2E_CONN_INFLIGHT:-500}
rss_limit_mib=64
rss_growth_mib=8
fd_slack=10
check() { e2e_check_cmd "$@"; }

# Every guest connection is a host socket in slipway (which raises its soft limit to the hard
# one), and the server and client each hold N too.
# Raising the hard limit needs CAP_SYS_RESOURCE (some containers drop it): then the hard limit
# as it is must leave room for N.
e2e_log "fd limits before: soft $(ulimit -Sn), hard $(ulimit -Hn)"
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt 65536 ]; then
    ulimit -Hn 65536 2>/dev/null || e2e_log "cannot raise the hard fd limit (no CAP_SYS_RESOURCE?)"
fi
ulimit -Sn hard
e2e_log "fd limits now: soft $(ulimit -Sn), hard $(ulimit -Hn)"
[ "$(ulimit -Hn)" = unlimited ] || [ "$(ulimit -Hn)" -ge $((n + 1000)) ] ||
    e2e_die "hard fd limit $(ulimit -Hn) leaves no room for $n connections"
# slipway's host side is N connections from 127.0.0.1 to one server port, and the closer keeps
# TIME_WAIT: two rounds need 2N source ports.
e2e_log "isolated namespace ip_local_port_range before: $(sysctl -n net.ipv4.ip_local_port_range)"
sysctl -qw net.ipv4.ip_local_port_range="1024 65000"

# ---------------------------------------------------------------- the server on 127.0.0.1
# Greets each connection with one line and keeps it open until the peer's EOF, then closes. A
# control port answers "open=N accepted=N closed=N reset=N peak=N".
cat >"$E2E_WORK/server.py" <<'PY'
import selectors, socket, sys
sel = selectors.DefaultSelector()
lst = socket.socket()
lst.bind(("127.0.0.1", 0))
lst.listen(4096)
lst.setblocking(False)
ctl = socket.socket()
ctl.bind(("127.0.0.1", 0))
ctl.listen(16)
sel.register(lst, selectors.EVENT_READ, "listen")
sel.register(ctl, selectors.EVENT_READ, "control")
st = dict(open=0, accepted=0, closed=0, reset=0, peak=0)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(f"{lst.getsockname()[1]} {ctl.getsockname()[1]}\n")
import os
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
def drop(c, how):
    sel.unregister(c)
    c.close()
    st["open"] -= 1
    st[how] += 1
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if key.data == "listen":
            while True:
                try:
                    c, _ = lst.accept()
                except BlockingIOError:
                    break
                c.setblocking(False)
                st["accepted"] += 1
                st["open"] += 1
                st["peak"] = max(st["peak"], st["open"])
                c.send(b"hello %d\n" % st["accepted"])
                sel.register(c, selectors.EVENT_READ, "conn")
        elif key.data == "control":
            c, _ = ctl.accept()
            c.sendall(" ".join(f"{k}={v}" for k, v in st.items()).encode() + b"\n")
            c.close()
        else:
            try:
                data = s.recv(4096)
            except ConnectionError:
                drop(s, "reset")
                continue
            if not data:
                drop(s, "closed")
PY
e2e_spawn server bash -c 'ulimit -n hard && exec python3 "$1" "$2"' server \
    "$E2E_WORK/server.py" "$E2E_WORK/server.ports"
server_pid=$E2E_PID
e2e_wait_path "$E2E_WORK/server.ports" 10
read -r port ctl_port <"$E2E_WORK/server.ports"
server_stat() { # KEY: prints the server's counter KEY ("?" if it does not answer)
    { python3 - "$ctl_port" "$1" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
line = s.makefile().readline().split()
print(dict(kv.split("=") for kv in line)[sys.argv[2]])
PY
} 2>/dev/null || echo "?"; }

# ---------------------------------------------------------------- the client in the guest
# Opens N connections (at most INFLIGHT connecting or waiting for the greeting at a time), keeps
# every one open, prints ALL-OPEN and waits for GO_FILE; then half-closes each (at most INFLIGHT
# at a time) and waits for the server's EOF, and prints CLOSED. Exit 0 only if every step
# succeeded for all N.
cat >"$E2E_WORK/client.py" <<'PY'
import collections, errno, os, selectors, socket, sys, time
host, port, n, inflight, go_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
sel = selectors.DefaultSelector()
errors = collections.Counter()
opened = []          # answered connections, all kept open
started = answered = 0
pending = {}         # socket -> bytes received so far
t0 = time.monotonic()
deadline = t0 + 60
while answered + sum(errors.values()) < n and time.monotonic() < deadline:
    while started < n and len(pending) < inflight:
        s = socket.socket()
        s.setblocking(False)
        rc = s.connect_ex((host, port))
        started += 1
        if rc not in (0, errno.EINPROGRESS):
            errors["connect:" + errno.errorcode.get(rc, str(rc))] += 1
            s.close()
            continue
        pending[s] = b""
        sel.register(s, selectors.EVENT_READ)
    for key, _ in sel.select(timeout=1):
        s = key.fileobj
        try:
            data = s.recv(100)
        except OSError as e:
            errors["recv:" + errno.errorcode.get(e.errno, str(e.errno))] += 1
            sel.unregister(s); del pending[s]; s.close()
            continue
        if not data:
            errors["eof-before-greeting"] += 1
            sel.unregister(s); del pending[s]; s.close()
            continue
        pending[s] += data
        if pending[s].endswith(b"\n"):
            if not pending[s].startswith(b"hello "):
                errors["bad-greeting"] += 1
            sel.unregister(s); del pending[s]
            opened.append(s)
            answered += 1
open_s = time.monotonic() - t0
errors["not-answered-in-60s"] += len(pending)
print(f"ALL-OPEN answered={answered} started={started} seconds={open_s:.1f} errors={dict(+errors)}", flush=True)
t = time.monotonic() + 120
while not os.path.exists(go_file) and time.monotonic() < t:
    time.sleep(0.05)
# Orderly close: half-close, wait for the server's EOF (it closes on ours), close.
t1 = time.monotonic()
deadline = t1 + 60
eof = 0
todo = collections.deque(opened)
closing = set()
cerrors = collections.Counter()
while (todo or closing) and time.monotonic() < deadline:
    while todo and len(closing) < inflight:
        s = todo.popleft()
        s.shutdown(socket.SHUT_WR)
        closing.add(s)
        sel.register(s, selectors.EVENT_READ)
    for key, _ in sel.select(timeout=1):
        s = key.fileobj
        try:
            data = s.recv(100)
        except OSError as e:
            cerrors["recv:" + errno.errorcode.get(e.errno, str(e.errno))] += 1
            data = b""
        else:
            if data:
                cerrors["data-after-greeting"] += 1
                continue
            eof += 1
        sel.unregister(s); closing.discard(s); s.close()
cerrors["no-eof-in-60s"] += len(closing) + len(todo)
for s in list(closing) + list(todo):
    s.close()
print(f"CLOSED eof={eof} seconds={time.monotonic() - t1:.1f} errors={dict(+cerrors)}", flush=True)
sys.exit(0 if answered == n and eof == n and not +errors and not +cerrors else 1)
PY

# ---------------------------------------------------------------- slipway and the guest
e2e_netns_create guest
guest=$E2E_NETNS
# The guest's own connections: N to one destination, and it keeps TIME_WAIT for each.
ip netns exec "$guest" sysctl -qw net.ipv4.ip_local_port_range="1024 65000"
api="$E2E_WORK/api.sock"
e2e_spawn slipway "$SLIPWAY" serve --netns "/run/netns/$guest" --egress-allow 127.0.0.0/8 \
    --api "$api" -v
slipway_pid=$E2E_PID
e2e_wait_path "$api" 10
for _ in $(seq 50); do
    ip -n "$guest" -o -4 addr show dev tap0 2>/dev/null | grep -q 192.168.127.2/24 && break
    sleep 0.1
done
check tap_configured bash -c "ip -n $guest -o -4 addr show dev tap0 | grep -q '192.168.127.2/24'"
e2e_log "slipway's fd limit: $(awk '/Max open files/ {print $4, $5}' "/proc/$slipway_pid/limits")"

fds() { find "/proc/$slipway_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$slipway_pid/status" 2>/dev/null || echo 0; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$slipway_pid/status" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
live_flows() { # TCP flows opened minus closed, from the counters (cheap at any count)
    SLIPWAY_API=$api "$SLIPWAY" counters --json 2>/dev/null | python3 -c '
import json, sys
c = json.load(sys.stdin)
print(c["tcp_flows_opened"] - c["tcp_flows_closed"])' 2>/dev/null || echo "?"
}
listed_flows() { # length of the flow listing
    SLIPWAY_API=$api "$SLIPWAY" flows --json 2>/dev/null |
        python3 -c 'import json, sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo "?"
}

fd_base=$(fds)
rss_base=$(rss_kib)
e2e_log "before: slipway fds $fd_base, RSS $(mib "$rss_base") MiB, live flows $(live_flows), listed $(listed_flows)"

declare -A rss_open rss_after fd_open fd_after
round() { # R [list]: with "list", also list the N flows while they are open
    local r=$1 list=${2:-} log go pid t0 line answered srv fl f fl_now srv_now hwm closed resets
    local listed listed_now delta rc=0 i
    local closed_before
    closed_before=$(server_stat closed)
    log="$E2E_WORK/client$r.log"
    go="$E2E_WORK/client$r.go"
    t0=$(e2e_now)
    e2e_spawn "client$r" ip netns exec "$guest" bash -c 'ulimit -n hard && exec python3 "$@"' \
        client "$E2E_WORK/client.py" 192.168.127.254 "$port" "$n" "$inflight" "$go"
    pid=$E2E_PID
    for ((i = 0; i < 900; i++)); do
        grep -q '^ALL-OPEN' "$log" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    line=$(grep '^ALL-OPEN' "$log" || true)
    echo "round $r: $line (test saw it after $(e2e_elapsed "$t0" "$(e2e_now)") s)"
    answered=$(sed -n 's/^ALL-OPEN answered=\([0-9]*\).*/\1/p' <<<"$line")
    if [ "${answered:-0}" = "$n" ] && [[ $line == *"errors={}" ]]; then
        e2e_ok "round${r}_all_${n}_open_and_answered"
    else
        e2e_not_ok "round${r}_all_${n}_open_and_answered" \
            "client: ${line:-no ALL-OPEN line; $(tail -n 3 "$log" | tr '\n' ' ')}"
    fi

    # All N open at once: what the server, slipway's fd table, RSS and flow table say.
    rss_open[$r]=$(rss_kib)
    hwm=$(hwm_kib)
    srv=$(server_stat open)
    f=$(fds)
    fl=$(live_flows)
    fd_open[$r]=$f
    echo "round $r with $answered open: server open $srv, slipway fds $f, live flows $fl," \
        "RSS $(mib "${rss_open[$r]}") MiB (peak so far $(mib "$hwm") MiB)"
    [ "$srv" = "$n" ] && e2e_ok "round${r}_server_sees_$n" ||
        e2e_not_ok "round${r}_server_sees_$n" "server has $srv open"
    [ "$f" -ge "$n" ] && e2e_ok "round${r}_slipway_fds_at_least_$n" ||
        e2e_not_ok "round${r}_slipway_fds_at_least_$n" "slipway has $f fds"
    [ "$fl" = "$n" ] && e2e_ok "round${r}_slipway_flows_$n" ||
        e2e_not_ok "round${r}_slipway_flows_$n" "slipway counts $fl live flows"
    if [ "$list" = list ]; then
        listed=$(listed_flows)
        echo "round $r: slipway flows --json lists $listed flows; RSS $(mib "$(rss_kib)") MiB after" \
            "the listing (was $(mib "${rss_open[$r]}")), peak $(mib "$(hwm_kib)") MiB"
        [ "$listed" = "$n" ] && e2e_ok "round${r}_slipway_lists_${n}_flows" ||
            e2e_not_ok "round${r}_slipway_lists_${n}_flows" "slipway flows --json lists $listed"
    fi
    if [ "$r" = 1 ]; then
        if [ "${rss_open[$r]}" -lt $((rss_limit_mib * 1024)) ]; then
            e2e_ok "rss_with_${n}_open_under_${rss_limit_mib}mib"
        else
            e2e_not_ok "rss_with_${n}_open_under_${rss_limit_mib}mib" \
                "VmRSS $(mib "${rss_open[$r]}") MiB with $n open (before: $(mib "$rss_base") MiB)"
        fi
    fi

    # Orderly close of all of them.
    touch "$go"
    for ((i = 0; i < 900; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    wait "$pid" || rc=$?
    line=$(grep '^CLOSED' "$log" || true)
    echo "round $r: ${line:-no CLOSED line} (client exit $rc)"
    [ "$rc" = 0 ] && [[ $line == "CLOSED eof=$n "* ]] && e2e_ok "round${r}_all_closed_orderly" ||
        e2e_not_ok "round${r}_all_closed_orderly" "exit $rc: ${line:-$(tail -n 3 "$log" | tr '\n' ' ')}"
    # ... and the server saw an EOF (not a reset) on each.
    closed=$(server_stat closed)
    resets=$(server_stat reset)
    delta="?"
    [[ $closed$closed_before =~ ^[0-9]+$ ]] && delta=$((closed - closed_before))
    [ "$delta" = "$n" ] && [ "$resets" = 0 ] && e2e_ok "round${r}_server_saw_eof_on_each" ||
        e2e_not_ok "round${r}_server_saw_eof_on_each" \
            "server: $delta closed by EOF this round, $resets resets in all"

    # slipway lets go of every socket and flow.
    t0=$(e2e_now)
    for ((i = 0; i < 300; i++)); do
        f=$(fds)
        fl_now=$(live_flows)
        srv_now=$(server_stat open)
        [ "$f" -le $((fd_base + fd_slack)) ] && [ "$fl_now" = 0 ] && [ "$srv_now" = 0 ] && break
        sleep 0.1
    done
    fd_after[$r]=$f
    rss_after[$r]=$(rss_kib)
    listed_now=$(listed_flows)
    echo "round $r closed: after $(e2e_elapsed "$t0" "$(e2e_now)") s slipway fds $f (before" \
        "the test $fd_base), live flows $fl_now (listed $listed_now), server open $srv_now," \
        "RSS $(mib "${rss_after[$r]}") MiB"
    [ "$f" -le $((fd_base + fd_slack)) ] && e2e_ok "round${r}_slipway_fds_back_to_baseline" ||
        e2e_not_ok "round${r}_slipway_fds_back_to_baseline" "$f fds 30 s after the close, $fd_base before"
    [ "$fl_now" = 0 ] && [ "$listed_now" = 0 ] && e2e_ok "round${r}_slipway_flows_zero" ||
        e2e_not_ok "round${r}_slipway_flows_zero" \
            "$fl_now live flows, $listed_now listed 30 s after the close"
    [ "$srv_now" = 0 ] && e2e_ok "round${r}_server_all_closed" ||
        e2e_not_ok "round${r}_server_all_closed" "server still has $srv_now open"
}

t_start=$(e2e_now)
round 1
round 2
growth=$((rss_after[2] - rss_after[1]))
echo "RSS after round 1 $(mib "${rss_after[1]}") MiB, after round 2 $(mib "${rss_after[2]}") MiB"
[ "$growth" -le $((rss_growth_mib * 1024)) ] && e2e_ok "rss_no_growth_across_rounds" ||
    e2e_not_ok "rss_no_growth_across_rounds" "RSS after round 2 is $(mib "$growth") MiB above round 1's"
round 3 list
peak=$(hwm_kib)
echo "RSS: before $(mib "$rss_base") MiB; with $n open $(mib "${rss_open[1]}") / $(mib "${rss_open[2]}") /" \
    "$(mib "${rss_open[3]}") MiB; after $(mib "${rss_after[1]}") / $(mib "${rss_after[2]}") /" \
    "$(mib "${rss_after[3]}") MiB (rounds 1 / 2 / 3); peak $(mib "$peak") MiB"
echo "fds: before $fd_base; with $n open ${fd_open[1]} / ${fd_open[2]} / ${fd_open[3]};" \
    "after ${fd_after[1]} / ${fd_after[2]} / ${fd_after[3]}"
[ "$peak" -lt $((rss_limit_mib * 1024)) ] && e2e_ok "rss_peak_under_${rss_limit_mib}mib" ||
    e2e_not_ok "rss_peak_under_${rss_limit_mib}mib" "VmHWM $(mib "$peak") MiB"
kill -0 "$slipway_pid" 2>/dev/null && e2e_ok slipway_alive || e2e_not_ok slipway_alive "slipway exited"
echo "rounds took $(e2e_elapsed "$t_start" "$(e2e_now)") s"
server_pid_alive=$(kill -0 "$server_pid" 2>/dev/null && echo yes || echo no)
[ "$server_pid_alive" = yes ] || e2e_log "the server exited early: $(tail -n 5 "$E2E_WORK/server.log")"
if [ "$E2E_FAILED" != 0 ]; then
    echo "--- slipway log ---"
    tail -n 40 "$E2E_WORK/slipway.log"
fi
e2e_summary
