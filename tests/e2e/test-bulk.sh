#!/usr/bin/env bash
# Bulk TCP transfers through slipway with checksums (issue 3: "a 1 GiB transfer both ways with
# checksums"), no QEMU.
#
# Runs inside a loopback-only namespace (lib.sh): slipway and the servers live there; a guest
# namespace (`ip netns add`) attached with `serve --netns --mtu 65520` reaches the servers on
# 127.0.0.1 and ::1 only through slipway's host-loopback aliases 192.168.127.254 and
# fd00:5119::fe. slipway runs with --egress-allow 127.0.0.0/8 and ::1/128, so even a wrong test
# could not dial out.
#
# Each transfer is one TCP connection between two copies of a small python program (written to
# the run's directory): the sender generates a deterministic stream from a seed (a 1 MiB random
# block, its first 16 bytes replaced in each MiB by the MiB's index and the seed, so that a lost,
# duplicated or misordered piece changes the digest) and hashes it (sha256) while sending; the
# receiver hashes what arrives until EOF. Nothing is written to disk. The sender half-closes
# after the last byte and waits for the receiver's close, so it ends only once the receiver has
# everything. Each transfer uses its own seed, so crossed connections would not match either.
#
# Checks, each transfer: both ends finished within E2E_BULK_TIMEOUT seconds (120; a stall of 30 s
# without progress fails earlier), the receiver counted the size sent (E2E_BULK_MIB, 1024 MiB)
# and the sender's count, and its sha256 is the sender's.
#   guest_to_host        guest namespace -> 127.0.0.1 through 192.168.127.254
#   host_to_guest        127.0.0.1 -> guest namespace (the guest connects, the host sends)
#   both_ways_*          the two above at once, on two connections (E2E_BULK_BOTH_MIB each, 1024);
#                        the receivers' times (connection to EOF) overlap
#   guest_to_host_v6     guest namespace -> [::1] through [fd00:5119::fe]
#   forward_host_to_guest  a client on 127.0.0.1 sends through `-p 127.0.0.1:PORT:PORT` to a
#                        receiver in the guest namespace
# Afterwards: slipway still running and answering its API; its counters (printed) show no drop
# other than the link chatter of a fresh interface (IPv6 multicast, router and DHCPv6
# solicitations), at least the payload moved in each direction, and within 10 s no live flow
# (opened = closed, `slipway flows --json` empty). Each transfer's throughput is reported as an
# E2E-RESULT line (MiB/s, measured by the receiver from connection to EOF); it is not a check.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_enter_isolated_netns "$@"

SLIPWAY=${SLIPWAY:-$E2E_ROOT/target/release/slipway}
for _ in $(seq 60); do [ -x "$SLIPWAY" ] && break; sleep 1; done # rebuilt now and then
[ -x "$SLIPWAY" ] || e2e_die "no slipway binary at $SLIPWAY: run cargo build --release"
size_mib=${E2E_BULK_MIB:-1024}
both_mib=${E2E_BULK_BOTH_MIB:-1024}
timeout_s=${E2E_BULK_TIMEOUT:-120}
stall_s=30
mtu=65520
alias4=192.168.127.254
alias6=fd00:5119::fe
api=$E2E_WORK/api.sock
# Drops a fresh interface causes by itself (MLD reports, router and DHCPv6 solicitations to
# multicast groups); any other drop reason during bulk TCP is a finding.
chatter_drops="multicast_not_routed ndp_not_for_us dhcp6_dropped"

# ---------------------------------------------------------------- the transfer program
cat >"$E2E_WORK/bulk.py" <<'PY'
"""bulk.py connect HOST PORT ROLE SIZE SEED TIMEOUT
   bulk.py listen BIND PORT ROLE SIZE SEED TIMEOUT PORT_FILE

With BULK_GO_FILE set, `connect` waits until that file exists (to start two transfers at once).
ROLE send: generate SIZE bytes from SEED, hash and send them, half-close, wait for the peer's EOF.
ROLE recv: hash everything until EOF, then close. Both print "bytes=N sha256=HEX seconds=S
start=T end=T" (seconds from connection to the end; wall-clock times of both) on stdout; errors
go to stderr with exit status 2.
"""
import hashlib, os, random, socket, struct, sys, time

BLOCK = 1 << 20
STALL = float(os.environ.get("BULK_STALL_S", "30"))
mode, host, port, role, size, seed, timeout = sys.argv[1:8]
port, size, seed, timeout = int(port), int(size), int(seed), float(timeout)
deadline = time.monotonic() + timeout
done = 0

def fail(msg):
    sys.stderr.write(f"bulk {role}: {msg}\n")
    sys.exit(2)

def arm(s):
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout()
    s.settimeout(min(STALL, left))

def timed_out(what):
    over = time.monotonic() >= deadline
    why = f"{timeout:.0f} s deadline passed" if over else f"no progress for {STALL:.0f} s"
    fail(f"timed out {what} ({why}): {done} of {size} bytes after {time.monotonic() - t_start:.1f} s")

t_start = time.monotonic()
family = socket.AF_INET6 if ":" in host else socket.AF_INET
try:
    if mode == "listen":
        lst = socket.socket(family, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((host, port))
        lst.listen(1)
        port_file = sys.argv[8]
        with open(port_file + ".tmp", "w") as f:
            f.write(f"{lst.getsockname()[1]}\n")
        os.rename(port_file + ".tmp", port_file)
        lst.settimeout(timeout)
        try:
            s, peer = lst.accept()
        except socket.timeout:
            timed_out("waiting for the connection")
        lst.close()
    else:
        go = os.environ.get("BULK_GO_FILE")
        while go and not os.path.exists(go):
            if time.monotonic() >= deadline:
                timed_out(f"waiting for {go}")
            time.sleep(0.01)
        s = socket.socket(family, socket.SOCK_STREAM)
        arm(s)
        s.connect((host, port))
except socket.timeout:
    timed_out("connecting")
except OSError as e:
    fail(f"{mode} {host}:{port}: {e}")

t0, wall0 = time.monotonic(), time.time()
h = hashlib.sha256()
try:
    if role == "send":
        rng = random.Random(seed)
        block = bytearray(rng.randbytes(BLOCK))
        view = memoryview(block)
        index = 0
        while done < size:
            struct.pack_into("<QQ", block, 0, index, seed)
            n = min(BLOCK, size - done)
            h.update(view[:n])
            arm(s)
            s.sendall(view[:n])
            done += n
            index += 1
        s.shutdown(socket.SHUT_WR)
        while True:  # the receiver closes once it has read our EOF
            arm(s)
            extra = s.recv(65536)
            if not extra:
                break
            fail(f"the receiver sent {len(extra)} bytes back")
    else:
        buf = bytearray(4 * BLOCK)
        view = memoryview(buf)
        while True:
            arm(s)
            n = s.recv_into(buf)
            if n == 0:
                break
            h.update(view[:n])
            done += n
except socket.timeout:
    timed_out("sending" if role == "send" else "receiving")
except OSError as e:
    fail(f"connection failed after {done} of {size} bytes: {e}")
seconds = time.monotonic() - t0
s.close()
print(f"bytes={done} sha256={h.hexdigest()} seconds={seconds:.3f} start={wall0:.3f} end={wall0 + seconds:.3f}",
      flush=True)
PY

# ---------------------------------------------------------------- slipway and the guest
e2e_netns_create guest
guest=$E2E_NETNS
e2e_pick_port
fwd_port=$E2E_PORT
e2e_spawn slipway "$SLIPWAY" serve --netns "/run/netns/$guest" --mtu "$mtu" \
    --egress-allow 127.0.0.0/8 --egress-allow ::1/128 --api "$api" \
    -p "127.0.0.1:$fwd_port:$fwd_port" -v
slipway_pid=$E2E_PID
check() { e2e_check_cmd "$@"; }
counters_json() { SLIPWAY_API=$api "$SLIPWAY" counters --json; }

guest_ready() {
    local i out
    for ((i = 0; i < 100; i++)); do
        out=$(ip -n "$guest" addr show dev tap0 2>/dev/null || true)
        if grep -q "inet 192.168.127.2/24" <<<"$out" && grep -q "inet6 fd00:5119:.*scope global" <<<"$out" &&
            ! grep -q "tentative" <<<"$out" && ip -n "$guest" -6 route show default | grep -q tap0 &&
            [ -S "$api" ]; then
            return 0
        fi
        sleep 0.1
    done
    echo "after 10 s: tap0 $(tr -s ' \n' ' ' <<<"$out"); v6 routes: $(ip -n "$guest" -6 route | tr '\n' ' ')"
    return 1
}
check guest_ready guest_ready
check tap_mtu bash -c "ip -n $guest link show tap0 | grep -q 'mtu $mtu'"

# ---------------------------------------------------------------- transfers
declare -A t_size t_listen_pid t_connect_pid t_listen_role t_failed t_receiver_side
seed=0

# NAME SIDE(host|guest) BIND ROLE(send|recv) CONNECT_SIDE CONNECT_HOST SIZE_MIB [PORT=0]
# Starts a listener on SIDE, waits until it listens, then starts the connecting end on
# CONNECT_SIDE (the opposite role). Both run in the background; transfer_finish NAME judges.
# With GO set to a path, the connecting end waits until that file exists.
GO=
transfer_start() {
    local name=$1 side=$2 bind=$3 role=$4 cside=$5 chost=$6 mib=$7 port=${8:-0} crole i
    local bytes=$((mib * 1024 * 1024)) pf="$E2E_WORK/$name.port" wrap=()
    seed=$((seed + 1))
    crole=recv
    [ "$role" = recv ] && crole=send
    t_size[$name]=$bytes
    t_listen_role[$name]=$role
    t_receiver_side[$name]=$side
    [ "$role" = recv ] || t_receiver_side[$name]=$cside
    t_failed[$name]=""
    rm -f "$pf"
    [ "$side" = guest ] && wrap=(ip netns exec "$guest")
    e2e_spawn "$name.listen" "${wrap[@]}" timeout -k 5 $((timeout_s + 10)) env BULK_STALL_S=$stall_s \
        python3 "$E2E_WORK/bulk.py" listen "$bind" "$port" "$role" "$bytes" "$seed" "$timeout_s" "$pf"
    t_listen_pid[$name]=$E2E_PID
    for ((i = 0; i < 100; i++)); do
        [ -s "$pf" ] && break
        kill -0 "$E2E_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ ! -s "$pf" ]; then
        t_failed[$name]="the $role listener on $side $bind did not listen within 10 s:"
        t_failed[$name]+=" $(tail -n 3 "$E2E_WORK/$name.listen.log" | tr '\n' ' ')"
        return 0
    fi
    port=$(cat "$pf")
    wrap=()
    [ "$cside" = guest ] && wrap=(ip netns exec "$guest")
    e2e_spawn "$name.connect" "${wrap[@]}" timeout -k 5 $((timeout_s + 10)) \
        env BULK_STALL_S=$stall_s BULK_GO_FILE="$GO" \
        python3 "$E2E_WORK/bulk.py" connect "$chost" "$port" "$crole" "$bytes" "$seed" "$timeout_s"
    t_connect_pid[$name]=$E2E_PID
}

# LOG: the result line's fields "BYTES SHA256 SECONDS START END", or nothing.
result_of() {
    local n='\([0-9.]*\)'
    sed -n "s/^bytes=$n sha256=\([0-9a-f]*\) seconds=$n start=$n end=$n\$/\1 \2 \3 \4 \5/p" "$1" | tail -n 1
}

# An end's exit status as a sentence.
end_status() { # ROLE RC LOG
    case "$2" in
    0) echo "" ;;
    124 | 137) echo "the $1 end was killed after $((timeout_s + 10)) s (hung)" ;;
    *) echo "the $1 end failed (exit $2): $(grep -v '^bytes=' "$3" | tail -n 3 | tr '\n' ' ')" ;;
    esac
}

declare -A t_mib_s t_start t_end
moved_to_host=0
moved_to_guest=0
transfer_finish() {
    local name=$1 lrc=0 crc=0 llog="$E2E_WORK/$1.listen.log" clog="$E2E_WORK/$1.connect.log"
    local why=${t_failed[$name]} slog rlog sb ss _ rb rs rsec rstart rend mib_s
    if [ -z "$why" ]; then
        wait "${t_connect_pid[$name]}" || crc=$?
        wait "${t_listen_pid[$name]}" || lrc=$?
        if [ "${t_listen_role[$name]}" = send ]; then slog=$llog rlog=$clog; else slog=$clog rlog=$llog; fi
        why=$(end_status listening "$lrc" "$llog")
        [ -n "$why" ] || why=$(end_status connecting "$crc" "$clog")
    fi
    if [ -z "$why" ]; then
        read -r sb ss _ <<<"$(result_of "$slog")"
        read -r rb rs rsec rstart rend <<<"$(result_of "$rlog")"
        if [ -z "${sb:-}" ] || [ -z "${rb:-}" ]; then
            why="no result line from the $([ -n "${sb:-}" ] && echo receiver || echo sender)"
        elif [ "$sb" != "${t_size[$name]}" ]; then
            why="the sender sent $sb bytes, want ${t_size[$name]}"
        elif [ "$rb" != "$sb" ]; then
            why="byte count mismatch: received $rb, sent $sb"
        elif [ "$rs" != "$ss" ]; then
            why="sha256 mismatch: received $rs, sent $ss"
        fi
    fi
    if [ -n "$why" ]; then
        e2e_not_ok "$name" "$why"
        return 0
    fi
    mib_s=$(awk -v b="$rb" -v s="$rsec" 'BEGIN { printf "%.0f", (s > 0 ? b / 1048576 / s : 0) }')
    t_mib_s[$name]=$mib_s
    t_start[$name]=$rstart
    t_end[$name]=$rend
    if [ "${t_receiver_side[$name]}" = host ]; then
        moved_to_host=$((moved_to_host + rb))
    else
        moved_to_guest=$((moved_to_guest + rb))
    fi
    e2e_ok "$name"
    echo "$name: $((rb / 1048576)) MiB in $rsec s, $mib_s MiB/s, sha256 ${rs:0:16}..."
    echo "E2E-RESULT ${name}_mib_s=$mib_s"
}

t_all=$(e2e_now)
transfer_start guest_to_host host 127.0.0.1 recv guest "$alias4" "$size_mib"
transfer_finish guest_to_host
transfer_start host_to_guest host 127.0.0.1 send guest "$alias4" "$size_mib"
transfer_finish host_to_guest

GO=$E2E_WORK/both_ways.go
transfer_start both_ways_guest_to_host host 127.0.0.1 recv guest "$alias4" "$both_mib"
transfer_start both_ways_host_to_guest host 127.0.0.1 send guest "$alias4" "$both_mib"
sleep 0.3 # both connecting ends started (python up) and waiting
touch "$GO"
GO=
transfer_finish both_ways_guest_to_host
transfer_finish both_ways_host_to_guest
# The two receivers' intervals (connection to EOF) must overlap: else it was not "at once".
both_overlap() {
    local a=both_ways_guest_to_host b=both_ways_host_to_guest
    [ -n "${t_mib_s[$a]:-}" ] && [ -n "${t_mib_s[$b]:-}" ] || { echo "a transfer failed"; return 1; }
    awk -v s1="${t_start[$a]}" -v e1="${t_end[$a]}" -v s2="${t_start[$b]}" -v e2="${t_end[$b]}" -v m="$both_mib" '
    function max(x, y) { return x > y ? x : y }
    function min(x, y) { return x < y ? x : y }
    BEGIN {
        o = min(e1, e2) - max(s1, s2); span = max(e1, e2) - min(s1, s2)
        printf "both_ways: 2 x %d MiB in %.2f s, together %.0f MiB/s;", m, span, 2 * m / span
        printf " both running for %.2f s (%.0f%% of the shorter)\n", max(o, 0), 100 * max(o, 0) / min(e1 - s1, e2 - s2)
        exit !(o > 0)
    }'
}
check both_ways_concurrent both_overlap
cat "$E2E_WORK/both_ways_concurrent.out"


transfer_start guest_to_host_v6 host ::1 recv guest "$alias6" "$size_mib"
transfer_finish guest_to_host_v6
transfer_start forward_host_to_guest guest 0.0.0.0 recv host 127.0.0.1 "$size_mib" "$fwd_port"
transfer_finish forward_host_to_guest
echo "transfers took $(e2e_elapsed "$t_all" "$(e2e_now)") s"

# ---------------------------------------------------------------- slipway afterwards
if kill -0 "$slipway_pid" 2>/dev/null; then
    e2e_ok slipway_running
else
    e2e_not_ok slipway_running "slipway exited: $(tail -n 5 "$E2E_WORK/slipway.log" | tr '\n' ' ')"
fi

# Live flows: opened - closed from the counters, and the listing; "?" when the API does not answer.
live_flows() {
    counters_json 2>/dev/null | python3 -c '
import json, sys
c = json.load(sys.stdin)
print(c["tcp_flows_opened"] - c["tcp_flows_closed"])' 2>/dev/null || echo "?"
}
listed_flows() {
    SLIPWAY_API=$api "$SLIPWAY" flows --json 2>/dev/null |
        python3 -c 'import json, sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo "?"
}
flows_drained() {
    local i live listed t0
    t0=$(e2e_now)
    for ((i = 0; i < 100; i++)); do
        live=$(live_flows)
        listed=$(listed_flows)
        if [ "$live" = 0 ] && [ "$listed" = 0 ]; then
            echo "no flow left after $(e2e_elapsed "$t0" "$(e2e_now)") s"
            return 0
        fi
        sleep 0.1
    done
    echo "after 10 s: $live live TCP flows by the counters, $listed listed:" \
        "$(SLIPWAY_API=$api "$SLIPWAY" flows --json 2>&1 | head -c 600)"
    return 1
}
check flows_drained flows_drained
cat "$E2E_WORK/flows_drained.out"

if counters_json >"$E2E_WORK/counters.json" 2>"$E2E_WORK/counters.err"; then
    e2e_ok api_answers
else
    e2e_not_ok api_answers "slipway counters --json: $(head -c 300 "$E2E_WORK/counters.err")"
fi
echo "counters: $(cat "$E2E_WORK/counters.json" 2>/dev/null)"

# The counters must account for the payload of the transfers that passed (frames carry it, plus
# headers) and show no drop outside the link chatter.
counters_consistent() {
    python3 - "$E2E_WORK/counters.json" "$moved_to_host" "$moved_to_guest" "$chatter_drops" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
to_host, to_guest, chatter = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split()
bad = []
if c["bytes_from_guests"] < to_host:
    bad.append(f"bytes_from_guests {c['bytes_from_guests']} < payload sent by the guest {to_host}")
if c["bytes_to_guests"] < to_guest:
    bad.append(f"bytes_to_guests {c['bytes_to_guests']} < payload sent to the guest {to_guest}")
if c["tcp_flows_opened"] < 5:
    bad.append(f"tcp_flows_opened {c['tcp_flows_opened']} < 5 guest connections")
if c["forwarded_connections"] < 1:
    bad.append("forwarded_connections 0, the forward carried one")
drops = {k: v for k, v in c.get("drops", {}).items() if k not in chatter}
if drops:
    bad.append(f"unexpected drops: {drops}")
print("; ".join(bad) or "ok")
sys.exit(1 if bad else 0)
PY
}
check counters_consistent counters_consistent

echo "throughput (MiB/s, receiver's view):" \
    "$(for n in guest_to_host host_to_guest both_ways_guest_to_host both_ways_host_to_guest \
        guest_to_host_v6 forward_host_to_guest; do printf '%s=%s ' "$n" "${t_mib_s[$n]:-failed}"; done)"
if [ "$E2E_FAILED" != 0 ]; then
    echo "--- slipway log ---"
    tail -n 40 "$E2E_WORK/slipway.log"
fi
e2e_summary
