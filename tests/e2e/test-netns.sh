#!/usr/bin/env bash
# slipway with a network namespace as the guest (`--netns`): slipway creates and configures
# tap0 itself; the namespace's own tools (busybox, curl, iperf3, python3) check the network.
#
# Runs inside a loopback-only namespace (lib.sh): slipway, the HTTP server, dnsmasq and iperf3
# all live there; the guest namespace reaches them only through slipway's host-loopback alias.
# slipway runs with --egress-allow 127.0.0.0/8, so even a wrong test could not dial out.
#
# Checks: address/route/MTU configured, ping of gateway and alias, ping of an outside address
# through an ICMP socket,
# local names and a name forwarded to dnsmasq (UDP and TCP), HTTP download and upload of a
# random multi-MiB file with sha256, "answer, then close" (the FIN reaches the guest at once,
# also behind acknowledged bytes), UDP through a flow, iperf3 both ways, an egress refusal.
#
# With SLIPWAY_TEST_NO_TCP_PEEK_OFF=1 in the environment (run.sh's test-netns+no-peek-off),
# slipway takes the TCP peek path of kernels before 6.9 (Debian 12, Ubuntu 22.04/24.04, RHEL 9).
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_enter_isolated_netns "$@"

SLIPWAY=${SLIPWAY:-$E2E_ROOT/target/release/slipway}
[ -x "$SLIPWAY" ] || e2e_die "no slipway binary at $SLIPWAY: run cargo build --release"
blob_mib=${E2E_BLOB_MIB:-16}
mtu=${E2E_MTU:-65520}

mkdir -p "$E2E_WORK/www"
blob_sha=$(e2e_random_file "$E2E_WORK/www/blob.bin" "$blob_mib")
e2e_http_server_start "$E2E_WORK/www"
dns_port=$(e2e_free_port)
e2e_dnsmasq_start "$dns_port" "web.e2e.test=192.168.127.254"
iperf_port=$(e2e_free_port)
e2e_iperf3_server_start "$iperf_port"
udp_port=$(e2e_free_port)
cat >"$E2E_WORK/udp-echo.py" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(data[::-1], peer)
PY
e2e_spawn udp-echo python3 "$E2E_WORK/udp-echo.py" "$udp_port"
e2e_wait_udp "$udp_port"
# "Answer, then close" (HTTP/1.0 style): a line, then the server closes.
hi_port=$(e2e_free_port)
e2e_spawn hi-server python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(b"hi\n"); c.close()
' "$hi_port"
e2e_wait_tcp "$hi_port"

# A "slow destination" of our own: a link whose neighbours never answer (lib.sh's fake uplink,
# both ends inside the isolated namespace). Connects to 192.0.2.200 hang in the kernel.
e2e_uplink_create

e2e_netns_create guest
guest=$E2E_NETNS
# `ip netns exec` bind-mounts this file over /etc/resolv.conf for the guest's commands.
mkdir -p "/etc/netns/$guest"
e2e_on_exit rm -rf "/etc/netns/$guest"
echo "nameserver 192.168.127.1" >"/etc/netns/$guest/resolv.conf"

e2e_spawn slipway "$SLIPWAY" serve --netns "/run/netns/$guest" --mtu "$mtu" \
    --dns-upstream "127.0.0.1:$dns_port" --dns-record db.e2e.internal=192.168.127.77 \
    --egress-allow 127.0.0.0/8 --egress-allow 192.0.2.200/32 \
    --egress-allow "$E2E_UPLINK_ECHO4/32" --pcap "$E2E_WORK/slipway.pcap" -v
slipway_pid=$E2E_PID
in_guest() { ip netns exec "$guest" "$@"; }
check() { e2e_check_cmd "$@"; }

for _ in $(seq 50); do
    in_guest ip -o -4 addr show dev tap0 2>/dev/null | grep -q inet && break
    sleep 0.1
done
check tap_configured bash -c "ip -n $guest -o -4 addr show dev tap0 | grep -q '192.168.127.2/24' &&
    ip -n $guest route show default | grep -q 'via 192.168.127.1 dev tap0' &&
    ip -n $guest link show tap0 | grep -q 'mtu $mtu' && ip -n $guest link show lo | grep -q UP"
check ping_gateway in_guest busybox ping -c 2 -W 3 192.168.127.1
check ping_alias in_guest busybox ping -c 2 -W 3 192.168.127.254
# An address outside the guest network (one of the isolated namespace's own): slipway relays the
# echo through an unprivileged ICMP socket.
check ping_outside in_guest busybox ping -c 2 -W 3 "$E2E_UPLINK_ECHO4"

lookup() { # NAME WANT [tcp]
    in_guest python3 "$E2E_DIR/dns_lookup.py" 192.168.127.1 "$@"
}
check dns_local_name lookup host.slipway.internal 192.168.127.254
check dns_docker_name lookup host.docker.internal 192.168.127.254
check dns_custom_record lookup db.e2e.internal 192.168.127.77
check dns_forwarded lookup web.e2e.test 192.168.127.254
check dns_forwarded_tcp lookup web.e2e.test 192.168.127.254 tcp
check dns_nslookup in_guest busybox nslookup web.e2e.test 192.168.127.1

http_get() {
    local got
    got=$(in_guest curl -sS --max-time 60 "http://$1:$E2E_HTTP_PORT/blob.bin" | sha256sum | cut -d' ' -f1)
    [ "$got" = "$blob_sha" ] || { echo "sha256 $got, want $blob_sha"; return 1; }
}
check http_get_alias http_get 192.168.127.254
check http_get_by_name http_get host.slipway.internal
http_put() {
    local want got
    want="$blob_sha $((blob_mib * 1024 * 1024))"
    got=$(in_guest curl -sS --max-time 60 -T "$E2E_WORK/www/blob.bin" "http://192.168.127.254:$E2E_HTTP_PORT/upload")
    [ "$got" = "$want" ] || { echo "server saw '$got', want '$want'"; return 1; }
}
check http_put http_put

reply_then_close() {
    # busybox nc ends when the server's FIN arrives; without it, it waits for its own timeout.
    local i t0 t1 out
    for i in 1 2 3; do
        t0=$(e2e_now)
        out=$(in_guest timeout 10 busybox nc 192.168.127.254 "$hi_port" </dev/null) || {
            echo "round $i: nc ended with status $? after $(e2e_elapsed "$t0" "$(e2e_now)") s, output '$out'"
            return 1
        }
        t1=$(e2e_now)
        echo "round $i: '$out' in $(e2e_elapsed "$t0" "$t1") s"
        [ "$out" = hi ] || return 1
        awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a < 2) }' || return 1
    done
}
check reply_then_close_reaches_guest reply_then_close
if [ "${SLIPWAY_TEST_NO_TCP_PEEK_OFF:-}" = 1 ]; then
    check peek_fallback_in_use grep -q "peeked without SO_PEEK_OFF" "$E2E_WORK/slipway.log"
fi

udp_echo() {
    in_guest python3 - "$udp_port" <<'PY'
import socket, sys, os
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
for size in (1, 1400, 8000):
    msg = os.urandom(size)
    s.sendto(msg, ("192.168.127.254", int(sys.argv[1])))
    data, peer = s.recvfrom(65535)
    assert data == msg[::-1], f"bad echo for {size} bytes"
    assert peer == ("192.168.127.254", int(sys.argv[1])), peer
print("ok")
PY
}
check udp_echo udp_echo

iperf() {
    in_guest iperf3 -c 192.168.127.254 -p "$iperf_port" -t 3 -f m "$@" >"$E2E_WORK/iperf.out" 2>&1 ||
        { cat "$E2E_WORK/iperf.out"; return 1; }
    awk '/receiver/ {print $7, $8}' "$E2E_WORK/iperf.out"
    awk '/receiver/ {exit !($7 > 0)}' "$E2E_WORK/iperf.out"
}
check iperf3_guest_to_host iperf
check iperf3_host_to_guest iperf -R

slow_destinations_do_not_block() {
    # 1,000 connects to a destination that never answers, in flight while a download proceeds.
    in_guest python3 - <<'PY' &
import socket, time
socks = []
for _ in range(1000):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("192.0.2.200", 80))
    socks.append(s)
time.sleep(8)
PY
    local hang=$! t0=$SECONDS
    sleep 1
    http_get 192.168.127.254 || return 1
    local took=$((SECONDS - t0))
    kill "$hang" 2>/dev/null || true
    wait "$hang" 2>/dev/null || true
    echo "download with 1000 hanging connects in flight took ${took}s"
    [ "$took" -lt 6 ]
}
check slow_destinations_do_not_block slow_destinations_do_not_block

refused() {
    # 192.0.2.1 (TEST-NET-1) is outside --egress-allow: slipway answers with a RST at once.
    local t0=$SECONDS rc=0
    in_guest curl -sS --max-time 10 http://192.0.2.1:80/ || rc=$?
    [ "$rc" = 7 ] && [ $((SECONDS - t0)) -lt 5 ]
}
check egress_refused refused

e2e_stop_pid "$slipway_pid"
if grep -q "dropped egress_denied" "$E2E_WORK/slipway.log"; then
    e2e_ok egress_counted
else
    e2e_not_ok egress_counted "no egress_denied counter in the log"
fi
opened=$(sed -n 's/.*TCP flows opened \([0-9]*\).*/\1/p' "$E2E_WORK/slipway.log" | tail -n 1)
if [ "${opened:-0}" -ge 1000 ]; then
    e2e_ok slow_connects_reached_slipway
else
    e2e_not_ok slow_connects_reached_slipway "slipway saw ${opened:-no} TCP flows, expected at least 1000"
fi
# The capture starts with the pcap magic (little-endian, microseconds) and holds the guest's HTTP
# request, which came before the iperf3 runs (so it is near the start of a file of ~2 GB).
if [ "$(head -c 4 "$E2E_WORK/slipway.pcap" | od -An -tx1 | tr -d ' ')" = d4c3b2a1 ] &&
    [ "$(head -c 64M "$E2E_WORK/slipway.pcap" | grep -ac "GET /")" -ge 1 ]; then
    e2e_ok pcap_written
else
    e2e_not_ok pcap_written "no pcap header or no HTTP request in $E2E_WORK/slipway.pcap"
fi
for f in iperf3_guest_to_host iperf3_host_to_guest; do
    echo "$f: $(head -n 1 "$E2E_WORK/$f.out" 2>/dev/null)"
done
if [ "$E2E_FAILED" != 0 ]; then
    echo "--- slipway log ---"
    tail -n 40 "$E2E_WORK/slipway.log"
fi
e2e_summary
