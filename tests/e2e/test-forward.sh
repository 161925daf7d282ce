#!/usr/bin/env bash
# Port forwards from the host into guests (`slipway serve -p/--publish`): two network namespaces
# on one slipway, servers inside them, clients on the "host" (the isolated namespace, where
# slipway runs) and in a client namespace that reaches the host over a veth pair.
#
# Runs inside a loopback-only namespace (lib.sh). The client namespace has only the far end of a
# veth pair whose near end is in the isolated namespace (198.51.100.2/24 and 198.51.100.1/24,
# TEST-NET-2, no routes beyond that link); guests live on slipway's 192.168.127.0/24. slipway runs
# with --egress-allow 127.0.0.0/8, so even a wrong test could not dial out.
#
# Checks: a 16 MiB download through a TCP forward (sha256); the peer a guest sees for loopback
# clients (the host alias 192.168.127.254 with the client's own port) and for a client on another
# link (its real address and port), on TCP and UDP (two UDP clients at once each get their own
# replies); a port range; an IPv6 listener forwarding to the IPv4 guest; an explicit guest
# address (the second namespace); 200 sequential connections; a host unix socket forwarded to a
# guest port and a gateway port forwarded to a host unix socket (--gateway-unix), the socket file
# gone after slipway stops; a guest publishing its own port (--guest-api); a host port already in
# use and bad specs refused at start; with --unpublish-while-away, a forward closes while its
# (QEMU-framed) guest is disconnected and opens again when it returns.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_enter_isolated_netns "$@"

SLIPWAY=${SLIPWAY:-$E2E_ROOT/target/release/slipway}
[ -x "$SLIPWAY" ] || e2e_die "no slipway binary at $SLIPWAY: run cargo build --release"
blob_mib=${E2E_BLOB_MIB:-16}
host_addr=198.51.100.1
client_addr=198.51.100.2
alias_addr=192.168.127.254
guest1_addr=192.168.127.2
guest2_addr=192.168.127.3
peer_port=5000     # PEER servers (TCP and UDP) in both guests; the second one says "G2 PEER"
range_guest=7000   # 7000..7002 in the first guest, each answering its own port number

mkdir -p "$E2E_WORK/www"
blob_sha=$(e2e_random_file "$E2E_WORK/www/blob.bin" "$blob_mib")
echo "hello through a forward" >"$E2E_WORK/www/hello.txt"

# Host ports, all different (e2e_pick_port).
e2e_pick_port; p_http=$E2E_PORT
e2e_pick_port; p_peer=$E2E_PORT
e2e_pick_port; p_real=$E2E_PORT
e2e_pick_port; p_udp=$E2E_PORT
e2e_pick_port; p_udp_real=$E2E_PORT
e2e_pick_port 3; p_range=$E2E_PORT
e2e_pick_port; p_v6=$E2E_PORT
e2e_pick_port; p_g2=$E2E_PORT
e2e_pick_port; p_guest_api=$E2E_PORT
e2e_pick_port; p_away=$E2E_PORT

# The client namespace, one veth link away from the host. Deleting the namespace (at exit)
# deletes its end of the pair, and with it the other end.
e2e_netns_create client
client=$E2E_NETNS
ip link add e2e-fwd type veth peer name eth0 netns "$client"
ip addr add "$host_addr/24" dev e2e-fwd
ip link set e2e-fwd up
ip -n "$client" addr add "$client_addr/24" dev eth0
ip -n "$client" link set eth0 up

e2e_netns_create guest1
guest1=$E2E_NETNS
e2e_netns_create guest2
guest2=$E2E_NETNS

# Guest servers, bound to 0.0.0.0: PEER (TCP: one line per connection; UDP: one per datagram)
# naming the peer the guest sees, optionally a port-number answerer per port and an HTTP file
# server. The ready file is written once every socket listens.
cat >"$E2E_WORK/guest-servers.py" <<'PY'
import argparse, functools, http.server, socket, socketserver, threading

ap = argparse.ArgumentParser()
ap.add_argument("--ready", required=True)
ap.add_argument("--prefix", default="")
ap.add_argument("--peer-port", type=int, required=True)
ap.add_argument("--port-echo", type=int, nargs="*", default=[])
ap.add_argument("--http-port", type=int)
ap.add_argument("--http-dir")
a = ap.parse_args()
prefix = a.prefix + " " if a.prefix else ""

class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128

class Peer(socketserver.BaseRequestHandler):
    def handle(self):
        ip, port = self.client_address[:2]
        self.request.sendall(f"{prefix}PEER {ip} {port}\n".encode())

class PortEcho(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(f"{self.server.server_address[1]}\n".encode())

servers = [Server(("0.0.0.0", a.peer_port), Peer)]
servers += [Server(("0.0.0.0", p), PortEcho) for p in a.port_echo]
if a.http_port:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=a.http_dir)
    servers.append(http.server.ThreadingHTTPServer(("0.0.0.0", a.http_port), handler))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", a.peer_port))

def udp_peer():
    while True:
        _, (ip, port) = udp.recvfrom(65535)
        udp.sendto(f"{prefix}PEER {ip} {port}\n".encode(), (ip, port))

threading.Thread(target=udp_peer, daemon=True).start()
for s in servers:
    threading.Thread(target=s.serve_forever, daemon=True).start()
with open(a.ready, "w") as f:
    f.write("ready\n")
threading.Event().wait()
PY
e2e_spawn guest1-servers ip netns exec "$guest1" python3 "$E2E_WORK/guest-servers.py" \
    --ready "$E2E_WORK/guest1.ready" --peer-port "$peer_port" \
    --port-echo "$range_guest" $((range_guest + 1)) $((range_guest + 2)) \
    --http-port 80 --http-dir "$E2E_WORK/www"
e2e_spawn guest2-servers ip netns exec "$guest2" python3 "$E2E_WORK/guest-servers.py" \
    --ready "$E2E_WORK/guest2.ready" --peer-port "$peer_port" --prefix G2
e2e_wait_path "$E2E_WORK/guest1.ready" 10
e2e_wait_path "$E2E_WORK/guest2.ready" 10

# A host unix socket server that the guest reaches at the gateway's port 2375.
cat >"$E2E_WORK/unix-server.py" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(16)
while True:
    c, _ = s.accept()
    c.sendall(b"hello from a host unix socket\n")
    c.close()
PY
unix_in=$E2E_WORK/published.sock
unix_out=$E2E_WORK/host-engine.sock
e2e_spawn unix-server python3 "$E2E_WORK/unix-server.py" "$unix_out"
e2e_wait_path "$unix_out" 10

# The first --netns gets .2, the second .3.
e2e_spawn slipway "$SLIPWAY" serve --netns "/run/netns/$guest1" --netns "/run/netns/$guest2" \
    --egress-allow 127.0.0.0/8 -v \
    -p "$p_http:80" \
    -p "$p_peer:$peer_port" \
    -p "0.0.0.0:$p_real:$peer_port" \
    -p "$p_udp:$peer_port/udp" \
    -p "0.0.0.0:$p_udp_real:$peer_port/udp" \
    -p "$p_range-$((p_range + 2)):$range_guest-$((range_guest + 2))" \
    -p "[::1]:$p_v6:$peer_port" \
    -p "127.0.0.1:$p_g2:$guest2_addr:$peer_port" \
    -p "$unix_in:$peer_port" \
    --gateway-unix "2375=$unix_out" --guest-api
slipway_pid=$E2E_PID
check() { e2e_check_cmd "$@"; }

for _ in $(seq 100); do
    kill -0 "$slipway_pid" 2>/dev/null || break
    ip -n "$guest1" -o -4 addr show dev tap0 2>/dev/null | grep -q "$guest1_addr/" &&
        ip -n "$guest2" -o -4 addr show dev tap0 2>/dev/null | grep -q "$guest2_addr/" &&
        [ -n "$(ss -Hltn "sport = :$p_http")" ] && break
    sleep 0.1
done
check guests_configured bash -c "ip -n $guest1 -o -4 addr show dev tap0 | grep -q '$guest1_addr/24' &&
    ip -n $guest2 -o -4 addr show dev tap0 | grep -q '$guest2_addr/24'"

# Clients. WANT may contain {port}: the client's own source port.
#   tcp HOST PORT WANT           one connection; the server's line must be WANT
#   udp HOST PORT WANT           two sockets at once, three datagrams each; every reply must be
#                                WANT for that socket and come from HOST:PORT
#   range HOST PORT N FIRST      PORT+i must answer FIRST+i, for i < N
#   many HOST PORT N WANT        N sequential connections, each answering WANT, within 20 s
cat >"$E2E_WORK/client.py" <<'PY'
import socket, sys, time

def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET

def tcp_line(host, port):
    s = socket.socket(family(host), socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((host, port))
        local = s.getsockname()[1]
        buf = b""
        while len(buf) < 4096:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    return local, buf.decode(errors="replace").strip()

mode, host = sys.argv[1], sys.argv[2]
port = int(sys.argv[3]) if mode != "unix" else 0
if mode == "tcp":
    try:
        local, got = tcp_line(host, port)
    except OSError as e:
        sys.exit(f"{host} port {port}: {e}")
    want = sys.argv[4].format(port=local)
    print(f"got '{got}', want '{want}'")
    sys.exit(got != want)
elif mode == "udp":
    socks = [socket.socket(family(host), socket.SOCK_DGRAM) for _ in range(2)]
    good = bad = 0
    for rnd in range(3):
        for s in socks:
            s.settimeout(3)
            s.sendto(b"hello %d" % rnd, (host, port))
        for i, s in enumerate(socks):
            local = s.getsockname()[1]
            want = sys.argv[4].format(port=local)
            try:
                data, peer = s.recvfrom(65535)
            except socket.timeout:
                print(f"round {rnd} client {i} (port {local}): no reply within 3 s, want '{want}'")
                bad += 1
                continue
            got = data.decode(errors="replace").strip()
            if got == want and peer[:2] == (host, port):
                good += 1
            else:
                print(f"round {rnd} client {i}: got '{got}' from {peer[:2]}, want '{want}' from {(host, port)}")
                bad += 1
        if bad:
            break
    print(f"{good} of 6 replies right")
    sys.exit(good != 6)
elif mode == "unix":
    # unix PATH WANT_PREFIX: one connection to a unix socket; the line must start with it.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(sys.argv[2])
        got = s.recv(4096).decode(errors="replace").strip()
    except OSError as e:
        sys.exit(f"{sys.argv[2]}: {e}")
    print(f"got '{got}', want it to start with '{sys.argv[3]}'")
    sys.exit(not got.startswith(sys.argv[3]))
elif mode == "range":
    n, first = int(sys.argv[4]), int(sys.argv[5])
    bad = 0
    for i in range(n):
        try:
            _, got = tcp_line(host, port + i)
        except OSError as e:
            got = f"error {e}"
        print(f"port {port + i}: got '{got}', want '{first + i}'")
        bad += got != str(first + i)
    sys.exit(bad != 0)
elif mode == "many":
    n, t0, good = int(sys.argv[4]), time.monotonic(), 0
    for i in range(n):
        if time.monotonic() - t0 > 20:
            print(f"stopped after 20 s at connection {i}")
            break
        try:
            local, got = tcp_line(host, port)
        except OSError as e:
            print(f"connection {i}: {e}")
            continue
        want = sys.argv[5].format(port=local)
        if got == want:
            good += 1
        else:
            print(f"connection {i}: got '{got}', want '{want}'")
    print(f"{good}/{n} connections right in {time.monotonic() - t0:.2f} s")
    sys.exit(good != n)
else:
    sys.exit(f"unknown mode {mode}")
PY
client() { python3 "$E2E_WORK/client.py" "$@"; }
in_client() { ip netns exec "$client" python3 "$E2E_WORK/client.py" "$@"; }

download() {
    local got
    got=$(curl -sS --max-time 60 "http://127.0.0.1:$p_http/blob.bin" | sha256sum | cut -d' ' -f1)
    [ "$got" = "$blob_sha" ] || { echo "sha256 $got, want $blob_sha"; return 1; }
}
check forward_tcp_download download
check forward_tcp_peer_loopback client tcp 127.0.0.1 "$p_peer" "PEER $alias_addr {port}"
check forward_tcp_peer_real in_client tcp "$host_addr" "$p_real" "PEER $client_addr {port}"
check forward_udp_loopback client udp 127.0.0.1 "$p_udp" "PEER $alias_addr {port}"
check forward_udp_peer_real in_client udp "$host_addr" "$p_udp_real" "PEER $client_addr {port}"
check forward_range client range 127.0.0.1 "$p_range" 3 "$range_guest"
check forward_ipv6_listener client tcp ::1 "$p_v6" "PEER $alias_addr {port}"
check forward_explicit_guest client tcp 127.0.0.1 "$p_g2" "G2 PEER $alias_addr {port}"
check forward_unix_to_guest client unix "$unix_in" "PEER $alias_addr "
check forward_guest_to_unix ip netns exec "$guest1" python3 "$E2E_WORK/client.py" tcp \
    192.168.127.1 2375 "hello from a host unix socket"
# A guest publishes its own port through gvproxy's forwarder API at the gateway's port 80
# (--guest-api); ":5000" means the caller.
guest_expose() {
    ip netns exec "$guest1" python3 - "$p_guest_api" "$peer_port" <<'PY' || return 1
import json, sys, urllib.request
body = json.dumps({"local": f"127.0.0.1:{sys.argv[1]}", "remote": f":{sys.argv[2]}"}).encode()
req = urllib.request.Request("http://192.168.127.1/services/forwarder/expose", data=body, method="POST")
with urllib.request.urlopen(req, timeout=5) as r:
    print("expose:", r.status, r.read())
with urllib.request.urlopen("http://192.168.127.1/services/forwarder/all", timeout=5) as r:
    listed = json.load(r)
want = {"local": f"127.0.0.1:{sys.argv[1]}", "remote": f"192.168.127.2:{sys.argv[2]}", "protocol": "tcp"}
print("all:", listed)
sys.exit(want not in listed)
PY
    client tcp 127.0.0.1 "$p_guest_api" "PEER $alias_addr {port}"
}
check forward_guest_api guest_expose
check forward_many_connections client many 127.0.0.1 "$p_peer" 200 "PEER $alias_addr {port}"

refused_at_start() { # NAME WANT_IN_STDERR SLIPWAY_ARGS...: exits non-zero within 5 s, saying WANT
    local name=$1 want=$2 rc=0 t0=$SECONDS
    shift 2
    timeout 10 "$SLIPWAY" serve "$@" >"$E2E_WORK/$name.stdout" 2>"$E2E_WORK/$name.stderr" || rc=$?
    echo "slipway serve $*: exit $rc after $((SECONDS - t0)) s; stderr: $(head -c 300 "$E2E_WORK/$name.stderr")"
    if [ "$rc" = 0 ] || [ "$rc" = 124 ]; then
        echo "wanted a non-zero exit at start"
        return 1
    fi
    [ $((SECONDS - t0)) -le 5 ] || { echo "took longer than 5 s"; return 1; }
    grep -qF -- "$want" "$E2E_WORK/$name.stderr" || { echo "no '$want' in stderr"; return 1; }
}
port_in_use() {
    refused_at_start in-use "already in use" --qemu "$E2E_WORK/in-use.sock" -p "$p_http:80" ||
        return 1
    # The first slipway keeps its listener.
    local got
    got=$(curl -sS --max-time 10 "http://127.0.0.1:$p_http/hello.txt")
    [ "$got" = "hello through a forward" ] || { echo "first slipway answers '$got' afterwards"; return 1; }
}
check forward_port_in_use port_in_use
bad_specs() {
    local spec i=0 bad=0
    for spec in 80 1-3:1-2 8080:80/sctp; do
        i=$((i + 1))
        refused_at_start "bad-spec-$i" "$spec" --qemu "$E2E_WORK/bad-spec-$i.sock" -p "$spec" ||
            bad=1
    done
    return "$bad"
}
check forward_bad_spec bad_specs

# A second slipway with one QEMU-framed guest played by a script (a gratuitous ARP for
# 192.168.127.2 is all it says): the forward listens while it is attached, not while it is gone.
cat >"$E2E_WORK/away.py" <<'PY'
import socket, struct, sys, time
sock_path, port = sys.argv[1], int(sys.argv[2])
mac = bytes.fromhex("020000000077")
ip = socket.inet_aton("192.168.127.2")
arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + b"\0" * 6 + ip
frame = b"\xff" * 6 + mac + b"\x08\x06" + arp
def listening():
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
def attach():
    g = socket.socket(socket.AF_UNIX)
    g.connect(sock_path)
    g.sendall(struct.pack("!I", len(frame)) + frame)
    return g
def wait_for(state):
    for _ in range(30):
        if listening() == state:
            return True
        time.sleep(0.1)
    return False
g = attach()
steps = [("attached", wait_for(True))]
g.close()
steps.append(("gone", wait_for(False)))
g = attach()
steps.append(("back", wait_for(True)))
print(steps)
sys.exit(not all(ok for _, ok in steps))
PY
e2e_spawn slipway-away "$SLIPWAY" serve --qemu "$E2E_WORK/away.sock" --egress-allow 127.0.0.0/8 \
    -p "$p_away:80" --unpublish-while-away -v
away_pid=$E2E_PID
e2e_wait_path "$E2E_WORK/away.sock" 10
check forward_unpublish_while_away python3 "$E2E_WORK/away.py" "$E2E_WORK/away.sock" "$p_away"
e2e_stop_pid "$away_pid"

if kill -0 "$slipway_pid" 2>/dev/null; then
    e2e_ok slipway_alive
else
    e2e_not_ok slipway_alive "slipway exited during the test"
fi
e2e_stop_pid "$slipway_pid"
check forward_unix_socket_removed test ! -e "$unix_in"
echo "forward_many_connections: $(tail -n 1 "$E2E_WORK/forward_many_connections.out" 2>/dev/null)"
if [ "$E2E_FAILED" != 0 ]; then
    echo "--- slipway log ---"
    tail -n 40 "$E2E_WORK/slipway.log"
fi
e2e_summary
