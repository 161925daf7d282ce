#!/usr/bin/env bash
# slipway as a gvproxy drop-in: the binary started under the name `gvproxy` (a symlink) with
# gvproxy's own flags, a real Linux guest in QEMU on its `-listen-qemu` socket, and gvproxy's HTTP
# API on `-listen` driven with curl.
#
# Runs inside a loopback-only namespace (lib.sh). The guest gets gvproxy's defaults
# (192.168.127.0/24) and reaches the test's HTTP server on 127.0.0.1 only through the host
# loopback alias 192.168.127.254; host clients reach the guest only through the forwards.
#
# Checks: the pid file holds the process id; the default SSH forward (-ssh-port P: host
# 127.0.0.1:P -> 192.168.127.2:22) is the only entry of /services/forwarder/all; a guest with
# gvproxy's MAC 5a:94:ef:e4:0c:ee gets the static lease 192.168.127.2; a server on the guest's
# port 22 (busybox nc) answers through 127.0.0.1:P; /leases names the guest; a second port
# exposed with POST /services/forwarder/expose answers too; GET /tunnel to the guest's port 22
# answers OK and the banner, leaves no forward behind and refuses a query without ip; POST
# /connect makes the connection a QEMU-framed guest link that gets ARP answers; the log file is
# written; flags
# slipway does not support and unknown flags are refused, -help prints the usage; after
# SIGTERM the pid file and the API socket are gone.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_enter_isolated_netns "$@"

SLIPWAY=${SLIPWAY:-$E2E_ROOT/target/release/slipway}
[ -x "$SLIPWAY" ] || e2e_die "no slipway binary at $SLIPWAY: run cargo build --release"
guest_addr=192.168.127.2
guest_mac=5a:94:ef:e4:0c:ee
banner=SSH-2.0-slipway-e2e-guest
api_sock=$E2E_WORK/api.sock
qemu_sock=$E2E_WORK/qemu.sock
pid_file=$E2E_WORK/gvproxy.pid
log_file=$E2E_WORK/gvproxy.log

mkdir -p "$E2E_WORK/bin" "$E2E_WORK/www"
ln -sfn "$SLIPWAY" "$E2E_WORK/bin/gvproxy"
GVPROXY=$E2E_WORK/bin/gvproxy
e2e_http_server_start "$E2E_WORK/www"

ssh_port=$(e2e_free_port)
expose_port=$(e2e_free_port)
while [ "$expose_port" = "$ssh_port" ]; do expose_port=$(e2e_free_port); done

check() { e2e_check_cmd "$@"; }

# The stdout/stderr log of e2e_spawn has another name than -log-file, so the two never share
# one file.
e2e_spawn gvproxy-stdout "$GVPROXY" -listen "unix://$api_sock" -listen-qemu "unix://$qemu_sock" \
    -ssh-port "$ssh_port" -pid-file "$pid_file" -log-file "$log_file" -debug
gvproxy_pid=$E2E_PID
e2e_wait_path "$api_sock" 10
e2e_wait_path "$qemu_sock" 10
e2e_wait_tcp "$ssh_port" 10

api() { # METHOD PATH [BODY]: prints the body, then a last line "HTTP <status>"
    local args=(-sS --max-time 10 --unix-socket "$api_sock" -X "$1" -w '\nHTTP %{http_code}\n')
    [ -z "${3:-}" ] || args+=(-H 'Content-Type: application/json' --data "$3")
    curl "${args[@]}" "http://gvproxy$2"
}

pid_file_holds_pid() {
    local got
    got=$(cat "$pid_file") || return 1
    echo "pid file: '$got', spawned pid $gvproxy_pid"
    [ "$got" = "$gvproxy_pid" ]
}
check gvproxy_pid_file pid_file_holds_pid

# JSON_WANT: the exact forward list, compared as parsed JSON.
forwards_are() {
    local out
    out=$(api GET /services/forwarder/all) || return 1
    echo "$out"
    [ "$(tail -n1 <<<"$out")" = "HTTP 200" ] || return 1
    sed '$d' <<<"$out" | python3 -c '
import json, sys
got, want = json.load(sys.stdin), json.loads(sys.argv[1])
sys.exit(got != want)' "$1"
}
ssh_forward="{\"local\":\"127.0.0.1:$ssh_port\",\"remote\":\"$guest_addr:22\",\"protocol\":\"tcp\"}"
check gvproxy_ssh_forward_listed forwards_are "[$ssh_forward]"

# The guest: a banner server on port 22 (busybox nc, one answer per connection), then wait
# (bounded) until the host has put /done on its HTTP server, reached through the host alias.
script="$E2E_WORK/guest-script.sh"
cat >"$script" <<EOF2
HTTP_PORT=$E2E_HTTP_PORT
BANNER=$banner
EOF2
cat >>"$script" <<'EOF2'
e2e_check lease test "$E2E_LEASE_OK" = 1
printf '#!/bin/sh\necho %s\n' "$BANNER" >/tmp/sshd-banner
chmod +x /tmp/sshd-banner
nc -ll -p 22 -e /tmp/sshd-banner &
listening() {
    i=0
    while [ $i -lt 50 ]; do
        netstat -ltn | grep -q ':22 ' && return 0
        i=$((i + 1)); sleep 0.1
    done
    netstat -ltn
    return 1
}
e2e_check ssh_listening listening
host_done() {
    i=0
    while [ $i -lt 60 ]; do
        wget -q -O /dev/null "http://192.168.127.254:$HTTP_PORT/done" 2>/dev/null && return 0
        i=$((i + 1)); sleep 1
    done
    return 1
}
e2e_check host_done host_done
EOF2

log="$E2E_WORK/guest.log"
: >"$log"
netdev="stream,id=n0,server=off,addr.type=unix,addr.path=$qemu_sock"
(E2E_GUEST_MAC=$guest_mac e2e_boot_guest "$netdev" "$script" "$log" 120) &
boot=$!
for _ in $(seq 180); do
    grep -qa '^E2E-PASS ssh_listening\|^E2E-FAIL ssh_listening\|^E2E-DONE ' "$log" && break
    sleep 0.5
done

lease_ip=$(e2e_marker_lease "$log" ip)
if [ "$lease_ip" = "$guest_addr" ]; then
    e2e_ok gvproxy_static_lease
else
    e2e_not_ok gvproxy_static_lease "lease '$lease_ip', want $guest_addr: $(grep -a '^E2E-LEASE\|^E2E-NIC' "$log" | tr '\n' ' ')"
fi

banner_at() { # PORT: one connection to 127.0.0.1:PORT must answer the guest's banner
    python3 - "$1" "$banner" <<'PY'
import socket, sys
port, want = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
buf = b""
try:
    while b"\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
finally:
    s.close()
got = buf.decode(errors="replace").strip()
print(f"127.0.0.1:{port}: got '{got}', want '{want}'")
sys.exit(got != want)
PY
}
check gvproxy_ssh_port banner_at "$ssh_port"

lease_listed() {
    local out
    out=$(api GET /leases) || return 1
    echo "$out"
    [ "$(tail -n1 <<<"$out")" = "HTTP 200" ] || return 1
    sed '$d' <<<"$out" | python3 -c '
import json, sys
sys.exit(json.load(sys.stdin).get(sys.argv[1]) != sys.argv[2])' "$guest_addr" "$guest_mac"
}
check gvproxy_leases lease_listed

expose() {
    local out body
    body="{\"local\":\"127.0.0.1:$expose_port\",\"remote\":\"$guest_addr:22\",\"protocol\":\"tcp\"}"
    out=$(api POST /services/forwarder/expose "$body") || return 1
    echo "$out"
    [ "$(tail -n1 <<<"$out")" = "HTTP 200" ] || return 1
    banner_at "$expose_port" || return 1
    # Both forwards are listed now (the second by its host port, as gvproxy sorts by local).
    forwards_are "$(python3 -c '
import json, sys
print(json.dumps(sorted([json.loads(sys.argv[1]), json.loads(sys.argv[2])], key=lambda f: f["local"])))' \
        "$ssh_forward" "$body")"
}
check gvproxy_expose_api expose

# GET /tunnel: "OK", then a byte stream to the guest's port 22 (its banner comes back); the
# temporary forward behind it is gone once the tunnel closes; bad queries get gvproxy's 500.
tunnel_banner() {
    python3 - "$api_sock" "$guest_addr" "$banner" <<'PY'
import socket, sys
path, ip, want = sys.argv[1:]
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(path)
s.sendall(f"GET /tunnel?ip={ip}&port=22 HTTP/1.1\r\nHost: gvproxy\r\n\r\n".encode())
buf = b""
while b"\n" not in buf:
    chunk = s.recv(4096)
    if not chunk:
        break
    buf += chunk
s.close()
print(f"tunnel answered {buf!r}")
sys.exit(buf.decode(errors="replace").strip() != "OK" + want)
PY
}
check gvproxy_tunnel tunnel_banner
tunnel_forward_gone() {
    local out
    for _ in $(seq 50); do
        out=$(api GET /v1/forwards) || return 1
        grep -q tunnel <<<"$out" || { echo "$out"; return 0; }
        sleep 0.1
    done
    echo "$out"
    return 1
}
check gvproxy_tunnel_forward_removed tunnel_forward_gone
tunnel_needs_ip() {
    local out
    out=$(api GET "/tunnel?port=22") || return 1
    echo "$out"
    [ "$(tail -n1 <<<"$out")" = "HTTP 500" ] && grep -q '^ip is mandatory$' <<<"$out"
}
check gvproxy_tunnel_needs_ip tunnel_needs_ip

# POST /connect: the connection becomes a guest link, framed as the -listen-qemu socket is
# (4-byte big-endian lengths); an ARP request for the gateway on it is answered on it.
connect_link_arp() {
    python3 - "$api_sock" <<'PY'
import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(b"POST /connect HTTP/1.1\r\nHost: gvproxy\r\nContent-Length: 0\r\n\r\n")
mac = bytes([2, 0, 0, 0, 0x5e, 0x42])
arp = (b"\xff" * 6 + mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac
       + bytes([192, 168, 127, 77]) + b"\0" * 6 + bytes([192, 168, 127, 1]))
s.sendall(struct.pack("!I", len(arp)) + arp)
def exact(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            sys.exit(f"the link closed after {len(b)} of {n} bytes")
        b += c
    return b
for _ in range(20):  # skip frames flooded to every port (the guest's broadcasts)
    frame = exact(struct.unpack("!I", exact(4))[0])
    if frame[12:14] == b"\x08\x06" and frame[20:22] == b"\x00\x02" and frame[32:38] == mac:
        sender = ".".join(map(str, frame[28:32]))
        print(f"ARP reply on the /connect link: {sender} is at {frame[22:28].hex(':')}")
        sys.exit(sender != "192.168.127.1")
sys.exit("no ARP reply among the first 20 frames")
PY
}
check gvproxy_connect_link connect_link_arp

# Let the guest finish.
echo "done" >"$E2E_WORK/www/done"
rc=0
wait "$boot" || rc=$?
if [ "$rc" = 0 ]; then e2e_ok guest_boot; else e2e_not_ok guest_boot "rc $rc, see $log"; fi
e2e_expect_guest_pass "$log" lease ssh_listening host_done

check gvproxy_log_file test -s "$log_file"

refused() { # NAME WANT_IN_OUTPUT ARGS...: gvproxy ARGS exits non-zero within 5 s, saying WANT
    local name=$1 want=$2 rc=0 t0=$SECONDS
    shift 2
    timeout 10 "$GVPROXY" "$@" >"$E2E_WORK/$name.stdout" 2>"$E2E_WORK/$name.stderr" || rc=$?
    echo "gvproxy $*: exit $rc after $((SECONDS - t0)) s; stderr: $(head -c 300 "$E2E_WORK/$name.stderr")"
    if [ "$rc" = 0 ] || [ "$rc" = 124 ]; then
        echo "wanted a non-zero exit at start"
        return 1
    fi
    grep -qF -- "$want" "$E2E_WORK/$name.stderr" "$E2E_WORK/$name.stdout" ||
        { echo "no '$want' in its output"; return 1; }
}
help_usage() {
    local rc=0
    timeout 10 "$GVPROXY" -help >"$E2E_WORK/help.stdout" 2>"$E2E_WORK/help.stderr" || rc=$?
    echo "gvproxy -help: exit $rc; $(head -n 3 "$E2E_WORK/help.stdout" "$E2E_WORK/help.stderr")"
    [ "$rc" = 0 ] && grep -qF Usage "$E2E_WORK/help.stdout" "$E2E_WORK/help.stderr"
}
refuses() {
    local bad=0
    refused forward-sock "not supported by slipway" -forward-sock /x || bad=1
    refused nonsense "flag provided but not defined" -nonsense || bad=1
    help_usage || bad=1
    return "$bad"
}
check gvproxy_refuses refuses

if kill -0 "$gvproxy_pid" 2>/dev/null; then
    e2e_ok gvproxy_alive
else
    e2e_not_ok gvproxy_alive "gvproxy exited during the test"
fi
e2e_stop_pid "$gvproxy_pid"
check gvproxy_pid_file_removed bash -c "[ ! -e '$pid_file' ] && [ ! -e '$api_sock' ] ||
    { ls -l '$pid_file' '$api_sock'; exit 1; }"

if [ "$E2E_FAILED" != 0 ]; then
    echo "--- guest log ($log) ---"
    tail -n 40 "$log"
    echo "--- gvproxy log ($log_file) ---"
    tail -n 40 "$log_file"
    echo "--- gvproxy stdout/stderr ---"
    tail -n 20 "$E2E_WORK/gvproxy-stdout.log"
fi
e2e_summary
