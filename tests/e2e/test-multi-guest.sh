#!/usr/bin/env bash
# Several guests on one slipway network (D5): two QEMU guests and a network namespace on the
# same switch reach each other, and a guest that disconnects and comes back keeps its address
# even after another guest took a lease meanwhile.
#
# Runs inside a loopback-only namespace (lib.sh); all traffic stays on slipway's virtual switch.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_enter_isolated_netns "$@"

SLIPWAY=${SLIPWAY:-$E2E_ROOT/target/release/slipway}
[ -x "$SLIPWAY" ] || e2e_die "no slipway binary at $SLIPWAY: run cargo build --release"

e2e_netns_create ns
ns=$E2E_NETNS
sock="$E2E_WORK/qemu.sock"
# The namespace is attached first, so it gets the first pool address (.2).
e2e_spawn slipway "$SLIPWAY" serve --qemu "$sock" --netns "/run/netns/$ns" --egress-allow 127.0.0.0/8 -v
slipway_pid=$E2E_PID
e2e_wait_path "$sock" 10
netdev="stream,id=n0,server=off,addr.type=unix,addr.path=$sock"

# The namespace serves a page on its own address; guests fetch it and serve their own.
mkdir -p "$E2E_WORK/ns-www"
echo "hello from ns" >"$E2E_WORK/ns-www/ns.txt"
cat >"$E2E_WORK/ns-http.py" <<'PY'
import http.server, functools, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
http.server.ThreadingHTTPServer(("192.168.127.2", 8080), handler).serve_forever()
PY
for _ in $(seq 50); do
    ip -n "$ns" -o -4 addr show dev tap0 2>/dev/null | grep -q 192.168.127.2 && break
    sleep 0.1
done
e2e_spawn ns-http ip netns exec "$ns" python3 "$E2E_WORK/ns-http.py" "$E2E_WORK/ns-www"

# Guest A (MAC ...:0a) and guest B (MAC ...:0b) run at the same time. Each serves a file with
# busybox httpd and fetches the other's and the namespace's, retrying until the peer is up.
peer_script() { # ME PEER_IP PEER_NAME
    cat <<EOF2
mkdir -p /www && echo "hello from $1" >/www/$1.txt
httpd -p 8080 -h /www
fetch() { # IP NAME: retry until the peer serves NAME.txt
    i=0
    while [ \$i -lt 90 ]; do
        if wget -q -O /tmp/got.txt "http://\$1:8080/\$2.txt" 2>/dev/null && grep -q "hello from \$2" /tmp/got.txt; then
            return 0
        fi
        i=\$((i + 1)); sleep 1
    done
    return 1
}
e2e_check lease test "\$E2E_LEASE_OK" = 1
e2e_check ping_ns ping -c 2 -W 3 192.168.127.2
e2e_check fetch_ns fetch 192.168.127.2 ns
e2e_check fetch_peer fetch $2 $3
# Keep serving until the peer has fetched from us too.
sleep 8
EOF2
}
# A boots first and takes .3; B then takes .4.
peer_script a 192.168.127.4 b >"$E2E_WORK/a.sh"
peer_script b 192.168.127.3 a >"$E2E_WORK/b.sh"

log_a="$E2E_WORK/guest-a.log"
log_b="$E2E_WORK/guest-b.log"
(E2E_GUEST_MAC=52:54:00:e2:e0:0a e2e_boot_guest "$netdev" "$E2E_WORK/a.sh" "$log_a" 240) &
boot_a=$!
for _ in $(seq 120); do grep -qa '^E2E-LEASE' "$log_a" 2>/dev/null && break; sleep 0.5; done
rc_b=0
E2E_GUEST_MAC=52:54:00:e2:e0:0b e2e_boot_guest "$netdev" "$E2E_WORK/b.sh" "$log_b" 240 || rc_b=$?
rc_a=0
wait "$boot_a" || rc_a=$?
[ "$rc_a" = 0 ] && e2e_ok guest_a_boot || e2e_not_ok guest_a_boot "rc $rc_a, see $log_a"
[ "$rc_b" = 0 ] && e2e_ok guest_b_boot || e2e_not_ok guest_b_boot "rc $rc_b, see $log_b"
[ "$(e2e_marker_lease "$log_a" ip)" = 192.168.127.3 ] && e2e_ok guest_a_address || e2e_not_ok guest_a_address "got $(e2e_marker_lease "$log_a" ip)"
[ "$(e2e_marker_lease "$log_b" ip)" = 192.168.127.4 ] && e2e_ok guest_b_address || e2e_not_ok guest_b_address "got $(e2e_marker_lease "$log_b" ip)"
for g in a b; do
    for m in lease ping_ns fetch_ns fetch_peer; do
        if e2e_marker_passed "$E2E_WORK/guest-$g.log" "$m"; then e2e_ok "$g:$m"; else e2e_not_ok "$g:$m" "see $E2E_WORK/guest-$g.log"; fi
    done
done

# Reconnect: guest A comes back with the same MAC after B took .4 and keeps .3.
cat >"$E2E_WORK/again.sh" <<'EOF2'
e2e_check lease test "$E2E_LEASE_OK" = 1
e2e_check ping_gateway ping -c 1 -W 3 192.168.127.1
EOF2
log_again="$E2E_WORK/guest-a-again.log"
rc=0
E2E_GUEST_MAC=52:54:00:e2:e0:0a e2e_boot_guest "$netdev" "$E2E_WORK/again.sh" "$log_again" 180 || rc=$?
[ "$rc" = 0 ] && e2e_ok reconnect_boot || e2e_not_ok reconnect_boot "rc $rc, see $log_again"
got=$(e2e_marker_lease "$log_again" ip)
[ "$got" = 192.168.127.3 ] && e2e_ok reconnect_keeps_address || e2e_not_ok reconnect_keeps_address "got '$got', want 192.168.127.3"
e2e_marker_passed "$log_again" ping_gateway && e2e_ok reconnect_ping || e2e_not_ok reconnect_ping "see $log_again"

e2e_stop_pid "$slipway_pid"
if [ "$E2E_FAILED" != 0 ]; then
    for f in "$log_a" "$log_b" "$log_again"; do echo "--- $f"; grep -a 'E2E-' "$f" | tail -n 20; done
    echo "--- slipway log"
    tail -n 30 "$E2E_WORK/slipway.log"
fi
e2e_summary
