#!/usr/bin/env bash
# The HTTP/JSON API on a unix socket (`slipway serve --api PATH`, docs/api.md): the native /v1
# routes and the gvproxy-compatible ones, driven with curl against one slipway that serves a
# network namespace guest.
#
# Runs inside a loopback-only namespace (lib.sh). The guest namespace runs PEER servers on port
# 5000 (TCP: one line naming the peer the guest sees, then the connection stays open until the
# client closes it; UDP: one line per datagram); clients are on the "host" (the isolated
# namespace, where slipway runs). slipway runs with --egress-allow 127.0.0.0/8 and a dnsmasq
# upstream on 127.0.0.1 that answers NXDOMAIN for .test and .internal, so even a wrong test could
# not dial out.
#
# Checks: the socket's mode (0600); /v1/info; a forward added, listed and removed through
# /v1/forwards (its port answers, then is refused), conflicts, bad specs, bad JSON and a target
# that is not a guest answered with typed errors; a port range created all or nothing; a unix
# socket forward; leases; a live TCP flow in /v1/flows; /v1/counters (both directions counted); a
# DNS record added (the guest resolves it) and removed (NXDOMAIN); gvproxy's expose/unexpose/all
# for TCP, UDP and unix with its plain-text errors and defaults (":PORT" local, empty remote host,
# missing protocol), its leases, DNS zones (names, a Regexp record and a DefaultIP, resolved by
# the guest), /stats in gvproxy's shape and /tunnel's error; a
# second slipway on the same API path refused at start; a stale socket file replaced.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_enter_isolated_netns "$@"

SLIPWAY=${SLIPWAY:-$E2E_ROOT/target/release/slipway}
[ -x "$SLIPWAY" ] || e2e_die "no slipway binary at $SLIPWAY: run cargo build --release"
alias_addr=192.168.127.254
guest_addr=192.168.127.2
peer_port=5000 # PEER servers (TCP and UDP) in the guest
api_sock=$E2E_WORK/api.sock

# Host ports, all different (e2e_pick_port).
e2e_pick_port; p_cli=$E2E_PORT      # -p on the command line
e2e_pick_port; p_add=$E2E_PORT      # POST /v1/forwards
e2e_pick_port 2; p_range=$E2E_PORT  # a range of two through /v1/forwards
e2e_pick_port; p_nag=$E2E_PORT      # a target that is not a guest
e2e_pick_port; p_exp=$E2E_PORT      # gvproxy expose, TCP
e2e_pick_port; p_def=$E2E_PORT      # gvproxy expose ":PORT" with an empty remote host
e2e_pick_port; p_udp=$E2E_PORT      # gvproxy expose, UDP

dns_port=$(e2e_free_port)
e2e_dnsmasq_start "$dns_port" --local=/internal/

e2e_netns_create guest
guest=$E2E_NETNS

# Guest servers, bound to 0.0.0.0: PEER on TCP (one line, then wait for the client's close) and
# UDP (one line per datagram). The ready file is written once both sockets listen.
cat >"$E2E_WORK/guest-servers.py" <<'PY'
import socket, socketserver, sys, threading

port, ready = int(sys.argv[1]), sys.argv[2]

class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

class Peer(socketserver.BaseRequestHandler):
    def handle(self):
        ip, p = self.client_address[:2]
        self.request.sendall(f"PEER {ip} {p}\n".encode())
        self.request.settimeout(30)
        try:
            while self.request.recv(4096):
                pass
        except OSError:
            pass

tcp = Server(("0.0.0.0", port), Peer)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", port))

def udp_peer():
    while True:
        _, (ip, p) = udp.recvfrom(65535)
        udp.sendto(f"PEER {ip} {p}\n".encode(), (ip, p))

threading.Thread(target=udp_peer, daemon=True).start()
threading.Thread(target=tcp.serve_forever, daemon=True).start()
with open(ready, "w") as f:
    f.write("ready\n")
threading.Event().wait()
PY
e2e_spawn guest-servers ip netns exec "$guest" python3 "$E2E_WORK/guest-servers.py" \
    "$peer_port" "$E2E_WORK/guest.ready"
e2e_wait_path "$E2E_WORK/guest.ready" 10

e2e_spawn slipway "$SLIPWAY" serve --netns "/run/netns/$guest" --egress-allow 127.0.0.0/8 \
    --dns-upstream "127.0.0.1:$dns_port" --api "$api_sock" -v -p "$p_cli:$peer_port"
slipway_pid=$E2E_PID
check() { e2e_check_cmd "$@"; }

for _ in $(seq 100); do
    kill -0 "$slipway_pid" 2>/dev/null || break
    ip -n "$guest" -o -4 addr show dev tap0 2>/dev/null | grep -q "$guest_addr/" &&
        [ -S "$api_sock" ] && [ -n "$(ss -Hltn "sport = :$p_cli")" ] && break
    sleep 0.1
done
guest_mac=$(ip -n "$guest" -o link show tap0 2>/dev/null | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p')

# api METHOD PATH [BODY]: one request on the API socket. The status code goes into $status, the
# body into $E2E_WORK/body; prints both (the check's .out file).
body=$E2E_WORK/body
api() {
    local method=$1 path=$2 args=()
    [ $# -ge 3 ] && args=(-H 'Content-Type: application/json' --data-binary "$3")
    : >"$body"
    status=$(curl -sS --max-time 10 --unix-socket "$api_sock" -X "$method" -o "$body" \
        -w '%{http_code}' "${args[@]}" "http://x$path") || status=curl-failed
    echo "$method $path${3:+ $3} -> $status $(head -c 600 "$body")"
}
# json EXPR: EXPR (python) must be true of j, the parsed body. err(j, CODE): j is the native
# error object {"error":{"code":CODE,"message":"..."}}.
json() {
    python3 - "$body" "$1" <<'PY'
import json, sys

def err(j, code):
    return (isinstance(j, dict) and set(j) == {"error"} and set(j["error"]) == {"code", "message"}
            and j["error"]["code"] == code and isinstance(j["error"]["message"], str)
            and j["error"]["message"] != "")

def is_uint(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0

try:
    j = json.load(open(sys.argv[1]))
except ValueError as e:
    sys.exit(f"body is not JSON: {e}")
if not eval("(" + sys.argv[2] + ")", {"j": j, "err": err, "is_uint": is_uint}):
    sys.exit(f"not true of the body: {sys.argv[2]}")
PY
}
want() { # STATUS [EXPR]: the last answer had STATUS (and a JSON body EXPR is true of)
    [ "$status" = "$1" ] || { echo "status $status, want $1"; return 1; }
    [ $# -lt 2 ] || json "$2"
}
want_empty() { [ ! -s "$body" ] || { echo "body not empty: $(head -c 200 "$body")"; return 1; }; }
want_text() { grep -qF -- "$1" "$body" || { echo "body lacks '$1'"; return 1; }; }

# Clients. WANT may contain {port}: the client's own source port.
#   tcp HOST PORT WANT [HOLD_S]  one connection; the server's first line must be WANT; the
#                                connection stays open HOLD_S seconds after it
#   udp HOST PORT WANT           one datagram; the reply must be WANT and come from HOST:PORT
#   refused HOST PORT            a TCP connect must be refused
#   unix PATH - WANT             as tcp, to a unix socket; the line must be WANT and a port
#   unix-refused PATH -          a connect to the unix socket must fail (refused or no file)
cat >"$E2E_WORK/client.py" <<'PY'
import socket, sys, time

mode, host = sys.argv[1], sys.argv[2]
port = 0 if mode.startswith("unix") else int(sys.argv[3])
if mode == "tcp":
    try:
        s = socket.create_connection((host, port), timeout=5)
        local = s.getsockname()[1]
        buf = b""
        while b"\n" not in buf and len(buf) < 4096:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        time.sleep(float(sys.argv[5]) if len(sys.argv) > 5 else 0)
        s.close()
    except OSError as e:
        sys.exit(f"{host} port {port}: {e}")
    got, want = buf.decode(errors="replace").strip(), sys.argv[4].format(port=local)
    print(f"got '{got}', want '{want}'")
    sys.exit(got != want)
elif mode == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(b"hello", (host, port))
    want = sys.argv[4].format(port=s.getsockname()[1])
    try:
        data, peer = s.recvfrom(65535)
    except socket.timeout:
        sys.exit(f"no reply within 3 s, want '{want}'")
    got = data.decode(errors="replace").strip()
    print(f"got '{got}' from {peer[:2]}, want '{want}' from {(host, port)}")
    sys.exit(got != want or peer[:2] != (host, port))
elif mode == "unix":
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(host)
        buf = b""
        while b"\n" not in buf and len(buf) < 4096:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        s.close()
    except OSError as e:
        sys.exit(f"{host}: {e}")
    # A unix client has no port; the guest sees it from a port slipway picks.
    got, want = buf.decode(errors="replace").strip(), sys.argv[4]
    print(f"got '{got}', want '{want} <port>'")
    head, _, last = got.rpartition(" ")
    sys.exit(head != want or not last.isdigit())
elif mode == "unix-refused":
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(host)
    except (ConnectionRefusedError, FileNotFoundError) as e:
        print(f"{host}: {e}")
        sys.exit(0)
    except OSError as e:
        sys.exit(f"{host}: {e}, want refused")
    sys.exit(f"{host}: connected, want refused")
elif mode == "refused":
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        print(f"{host} port {port}: refused")
        sys.exit(0)
    except OSError as e:
        sys.exit(f"{host} port {port}: {e}, want refused")
    sys.exit(f"{host} port {port}: connected, want refused")
else:
    sys.exit(f"unknown mode {mode}")
PY
client() { python3 "$E2E_WORK/client.py" "$@"; }

# An A query from the guest to the gateway. WANT is an address that must be in the answer, or
# "absent": NXDOMAIN (or an empty NOERROR answer).
lookup() { # NAME WANT
    ip netns exec "$guest" python3 "$E2E_DIR/dns_lookup.py" 192.168.127.1 "$@"
}

check slipway_ready bash -c "ip -n $guest -o -4 addr show dev tap0 | grep -q '$guest_addr/24' &&
    [ -S '$api_sock' ] && [ -n \"\$(ss -Hltn 'sport = :$p_cli')\" ]"

socket_mode() {
    local mode
    mode=$(stat -c %a "$api_sock") || return 1
    echo "mode $mode"
    [ "$mode" = 600 ]
}
check api_socket_mode socket_mode

info() {
    api GET /v1/info
    want 200 'j["subnet"] == "192.168.127.0/24" and j["gateway"] == "192.168.127.1"
        and j["host_alias"] == "192.168.127.254" and j["mtu"] == 1500
        and isinstance(j["version"], str) and j["version"] != ""'
}
check api_info info

forward_id=""
forward_add() {
    api POST /v1/forwards "{\"spec\":\"127.0.0.1:$p_add:$peer_port\"}"
    want 201 "isinstance(j, list) and len(j) == 1 and j[0]['proto'] == 'tcp'
        and j[0]['host'] == '127.0.0.1:$p_add' and j[0]['guest_ip'] == '$guest_addr'
        and j[0]['guest_port'] == $peer_port and is_uint(j[0]['id'])" || return 1
    forward_id=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$body")
    client tcp 127.0.0.1 "$p_add" "PEER $alias_addr {port}" || return 1
    api GET /v1/forwards
    # The -p forward is there too; ids are unique and sorted.
    want 200 "{'id': $forward_id, 'proto': 'tcp', 'host': '127.0.0.1:$p_add',
        'guest_ip': '$guest_addr', 'guest_port': $peer_port} in j
        and any(f['host'] == '127.0.0.1:$p_cli' and f['guest_port'] == $peer_port for f in j)
        and [f['id'] for f in j] == sorted(set(f['id'] for f in j))"
}
check api_forward_add forward_add

forward_conflict() {
    api POST /v1/forwards "{\"spec\":\"127.0.0.1:$p_add:$peer_port\"}"
    want 409 'err(j, "conflict") and "already in use" in j["error"]["message"]' || return 1
    api POST /v1/forwards '{"spec":"nonsense"}'
    want 400 'err(j, "invalid_spec")' || return 1
    api POST /v1/forwards '{"spec":'
    want 400 'err(j, "invalid_request")' || return 1
    api POST /v1/forwards '{"spec":8080}'
    want 400 'err(j, "invalid_request")' || return 1
    # Nothing was added by the refused requests.
    api GET /v1/forwards
    want 200 "len([f for f in j if f['host'] == '127.0.0.1:$p_add']) == 1"
}
check api_forward_conflict forward_conflict

forward_not_a_guest() {
    # The gateway is no guest.
    api POST /v1/forwards "{\"spec\":\"127.0.0.1:$p_nag:192.168.127.1:80\"}"
    want 400 'err(j, "not_a_guest")' || return 1
    client refused 127.0.0.1 "$p_nag"
}
check api_forward_not_a_guest forward_not_a_guest

forward_range() {
    local second=$((p_range + 1)) ids
    # The second port of the range is taken: nothing of the range is created.
    api POST /v1/forwards "{\"spec\":\"127.0.0.1:$second:$peer_port\"}"
    want 201 'len(j) == 1' || return 1
    local single
    single=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$body")
    api POST /v1/forwards "{\"spec\":\"127.0.0.1:$p_range-$second:$peer_port-$((peer_port + 1))\"}"
    want 409 'err(j, "conflict")' || return 1
    [ -z "$(ss -Hltn "sport = :$p_range")" ] || { echo "port $p_range listens after the refused range"; return 1; }
    api DELETE "/v1/forwards/$single"
    want 200 || return 1
    api POST /v1/forwards "{\"spec\":\"127.0.0.1:$p_range-$second:$peer_port-$((peer_port + 1))\"}"
    want 201 "[(f['host'], f['guest_port']) for f in j] == [('127.0.0.1:$p_range', $peer_port),
        ('127.0.0.1:$second', $((peer_port + 1)))]" || return 1
    client tcp 127.0.0.1 "$p_range" "PEER $alias_addr {port}" || return 1
    ids=$(python3 -c 'import json, sys; print(" ".join(str(f["id"]) for f in json.load(open(sys.argv[1]))))' "$body")
    for id in $ids; do
        api DELETE "/v1/forwards/$id"
        want 200 || return 1
    done
}
check api_forward_range forward_range

# A unix socket on the host published to a guest TCP port (-p PATH:PORT).
forward_unix() {
    local sock=$E2E_WORK/fwd-unix.sock id
    api POST /v1/forwards "{\"spec\":\"$sock:$peer_port\"}"
    want 201 "len(j) == 1 and j[0]['proto'] == 'unix' and j[0]['host'] == '$sock'
        and j[0]['guest_ip'] == '$guest_addr' and j[0]['guest_port'] == $peer_port" || return 1
    id=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$body")
    client unix "$sock" - "PEER $alias_addr" || return 1
    api DELETE "/v1/forwards/$id"
    want 200 "j['proto'] == 'unix' and j['host'] == '$sock'" || return 1
    client unix-refused "$sock" -
}
check api_forward_unix forward_unix

forward_remove() {
    [ -n "$forward_id" ] || { echo "no forward from api_forward_add"; return 1; }
    api DELETE "/v1/forwards/$forward_id"
    want 200 "j == {'id': $forward_id, 'proto': 'tcp', 'host': '127.0.0.1:$p_add',
        'guest_ip': '$guest_addr', 'guest_port': $peer_port}" || return 1
    client refused 127.0.0.1 "$p_add" || return 1
    api DELETE "/v1/forwards/$forward_id"
    want 404 'err(j, "not_found")' || return 1
    api GET /v1/forwards
    want 200 "all(f['id'] != $forward_id for f in j)"
}
check api_forward_remove forward_remove

leases() {
    echo "guest tap0 MAC: $guest_mac"
    api GET /v1/leases
    want 200 "{'ip': '$guest_addr', 'mac': '$guest_mac'} in j
        and [l['ip'] for l in j] == sorted(set(l['ip'] for l in j), key=lambda a: tuple(map(int, a.split('.'))))"
}
check api_leases leases

flows() {
    local held i
    client tcp 127.0.0.1 "$p_cli" "PEER $alias_addr {port}" 3 >"$E2E_WORK/held-client.out" 2>&1 &
    held=$!
    # Once the PEER line has crossed, the flow is established and carries bytes both ways.
    local live="any(f['proto'] == 'tcp' and f['guest'] == '$guest_addr:$peer_port'
        and f['remote'].startswith('$alias_addr:') and f['state'] == 'established'
        and f['bytes_from_guest'] > 0 and is_uint(f['bytes_to_guest']) and is_uint(f['age_ms'])
        for f in j)"
    for i in $(seq 20); do
        api GET /v1/flows >/dev/null
        [ "$status" = 200 ] && json "$live" >/dev/null 2>&1 && break
        sleep 0.1
    done
    api GET /v1/flows
    want 200 "$live" || { wait "$held" || true; return 1; }
    json "all(f['proto'] in ('tcp', 'udp') and f['state'] in ({'tcp': ('connecting', 'syn_sent',
        'syn_ack_sent', 'established', 'closing'), 'udp': ('active',)}[f['proto']]) for f in j)" ||
        { wait "$held" || true; return 1; }
    wait "$held" || { echo "held client: $(cat "$E2E_WORK/held-client.out")"; return 1; }
}
check api_flows flows

dns() {
    api POST /v1/dns/records '{"name":"db.e2e.internal","ip":"192.168.127.77"}'
    want 201 'j == {"name": "db.e2e.internal", "ip": "192.168.127.77"}' || return 1
    api GET /v1/dns/records
    want 200 '{"name": "db.e2e.internal", "ip": "192.168.127.77"} in j
        and {"name": "host.slipway.internal", "ip": "192.168.127.254"} in j' || return 1
    lookup db.e2e.internal 192.168.127.77 || return 1
    api POST /v1/dns/records '{"name":"bad.e2e.internal","ip":"not-an-ip"}'
    want 400 'err(j, "invalid_request")' || return 1
    api POST /v1/dns/records '{"name":"","ip":"192.168.127.78"}'
    want 400 'err(j, "invalid_request")' || return 1
    api DELETE /v1/dns/records/db.e2e.internal
    want 204 && want_empty || return 1
    lookup db.e2e.internal absent || return 1
    api DELETE /v1/dns/records/db.e2e.internal
    want 404 'err(j, "not_found")'
}
check api_dns dns

gv_expose() {
    local entry="{'local': '127.0.0.1:$p_exp', 'remote': '$guest_addr:$peer_port', 'protocol': 'tcp'}"
    local expose="{\"local\":\"127.0.0.1:$p_exp\",\"remote\":\"$guest_addr:$peer_port\",\"protocol\":\"tcp\"}"
    api POST /services/forwarder/expose "$expose"
    want 200 && want_empty || return 1
    client tcp 127.0.0.1 "$p_exp" "PEER $alias_addr {port}" || return 1
    api GET /services/forwarder/all
    # The -p forward shows up too, in gvproxy's shape; sorted by local.
    want 200 "$entry in j and all(set(e) == {'local', 'remote', 'protocol'} for e in j)
        and {'local': '127.0.0.1:$p_cli', 'remote': '$guest_addr:$peer_port', 'protocol': 'tcp'} in j
        and [e['local'] for e in j] == sorted(e['local'] for e in j)" || return 1
    api POST /services/forwarder/expose "$expose"
    want 500 && want_text "proxy already running" || return 1
    api POST /services/forwarder/unexpose "{\"local\":\"127.0.0.1:$p_exp\",\"protocol\":\"tcp\"}"
    want 200 && want_empty || return 1
    client refused 127.0.0.1 "$p_exp" || return 1
    api GET /services/forwarder/all
    want 200 "$entry not in j" || return 1
    api POST /services/forwarder/unexpose "{\"local\":\"127.0.0.1:$p_exp\",\"protocol\":\"tcp\"}"
    want 500 && want_text "proxy not found" || return 1
    api POST /services/forwarder/expose \
        "{\"local\":\"127.0.0.1:$p_exp\",\"remote\":\"$guest_addr:$peer_port\",\"protocol\":\"sctp\"}"
    want 400 && want_text "sctp" || return 1
    client refused 127.0.0.1 "$p_exp"
}
check gvproxy_expose gv_expose

# protocol unix: local is a socket path slipway creates, remote tcp://IP:PORT (gvproxy's form).
gv_expose_unix() {
    local sock=$E2E_WORK/gv-unix.sock
    local expose="{\"local\":\"$sock\",\"remote\":\"tcp://$guest_addr:$peer_port\",\"protocol\":\"unix\"}"
    api POST /services/forwarder/expose "$expose"
    want 200 && want_empty || return 1
    client unix "$sock" - "PEER $alias_addr" || return 1
    api GET /services/forwarder/all
    want 200 "{'local': '$sock', 'remote': 'tcp://$guest_addr:$peer_port', 'protocol': 'unix'} in j" ||
        return 1
    api POST /services/forwarder/expose "$expose"
    want 500 && want_text "proxy already running" || return 1
    api POST /services/forwarder/unexpose "{\"local\":\"$sock\",\"protocol\":\"unix\"}"
    want 200 && want_empty || return 1
    client unix-refused "$sock" - || return 1
    # The same path can be exposed again.
    api POST /services/forwarder/expose "$expose"
    want 200 && want_empty || return 1
    client unix "$sock" - "PEER $alias_addr" || return 1
    api POST /services/forwarder/unexpose "{\"local\":\"$sock\",\"protocol\":\"unix\"}"
    want 200 && want_empty
}
check gvproxy_expose_unix gv_expose_unix

# gvproxy's defaults: ":PORT" is every interface, an empty remote host the first guest, a
# missing protocol tcp.
gv_expose_defaults() {
    api POST /services/forwarder/expose "{\"local\":\":$p_def\",\"remote\":\":$peer_port\"}"
    want 200 && want_empty || return 1
    ss -Hltn "sport = :$p_def" | grep -q " 0\.0\.0\.0:$p_def " ||
        { echo "no listener on 0.0.0.0:$p_def: $(ss -Hltn "sport = :$p_def")"; return 1; }
    client tcp 127.0.0.1 "$p_def" "PEER $alias_addr {port}" || return 1
    api POST /services/forwarder/unexpose "{\"local\":\":$p_def\"}"
    want 200 && want_empty || return 1
    client refused 127.0.0.1 "$p_def"
}
check gvproxy_expose_defaults gv_expose_defaults

gv_expose_udp() {
    api POST /services/forwarder/expose \
        "{\"local\":\"127.0.0.1:$p_udp\",\"remote\":\"$guest_addr:$peer_port\",\"protocol\":\"udp\"}"
    want 200 && want_empty || return 1
    client udp 127.0.0.1 "$p_udp" "PEER $alias_addr {port}" || return 1
    api GET /services/forwarder/all
    want 200 "{'local': '127.0.0.1:$p_udp', 'remote': '$guest_addr:$peer_port', 'protocol': 'udp'} in j" ||
        return 1
    api POST /services/forwarder/unexpose "{\"local\":\"127.0.0.1:$p_udp\",\"protocol\":\"udp\"}"
    want 200 && want_empty || return 1
    [ -z "$(ss -Hlun "sport = :$p_udp")" ] || { echo "127.0.0.1:$p_udp/udp still bound"; return 1; }
}
check gvproxy_expose_udp gv_expose_udp

gv_leases() {
    local path
    for path in /leases /services/dhcp/leases; do
        api GET "$path"
        want 200 "isinstance(j, dict) and j.get('$guest_addr') == '$guest_mac'" || return 1
    done
}
check gvproxy_leases gv_leases

gv_dns() {
    api POST /services/dns/add '{"name":"zone.e2e.internal.","records":[{"name":"a","ip":"192.168.127.55"}]}'
    want 200 && want_empty || return 1
    lookup a.zone.e2e.internal 192.168.127.55 || return 1
    api GET /services/dns/all
    want 200 'isinstance(j, list) and all(set(z) >= {"Name", "Records", "DefaultIP"} for z in j)
        and any(z["Name"] == "zone.e2e.internal." and {"Name": "a", "IP": "192.168.127.55", "Regexp": None} in z["Records"]
            for z in j)'
}
check gvproxy_dns gv_dns

# CRC's wildcard zone: a Regexp record and a zone DefaultIP, answered for any name of the zone
# (exact names first), and listed back; a bad expression gets 400.
gv_dns_patterns() {
    api POST /services/dns/add '{"name":"apps-crc.e2e.","records":[{"name":"exact","ip":"192.168.127.61"},{"regexp":"^console\\.","ip":"192.168.127.62"}],"DefaultIP":"192.168.127.63"}'
    want 200 && want_empty || return 1
    lookup exact.apps-crc.e2e 192.168.127.61 || return 1
    lookup console.apps-crc.e2e 192.168.127.62 || return 1
    lookup anything.else.apps-crc.e2e 192.168.127.63 || return 1
    api GET /services/dns/all
    want 200 'any(z["Name"] == "apps-crc.e2e." and z["DefaultIP"] == "192.168.127.63"
            and {"Name": "", "IP": "192.168.127.62", "Regexp": "^console\\."} in z["Records"] for z in j)' || return 1
    api POST /services/dns/add '{"name":"bad.e2e.","records":[{"regexp":"(","ip":"192.168.127.64"}]}'
    want 400 && want_text "regular expression"
}
check gvproxy_dns_patterns gv_dns_patterns

gv_other() {
    api GET /stats
    want 200 'all(is_uint(j[k]) for k in ("BytesSent", "BytesReceived", "DroppedPackets"))
        and j["BytesSent"] == j["slipway"]["bytes_to_guests"] and j["BytesSent"] > 0
        and is_uint(j["TCP"]["ActiveConnectionOpenings"]) and j["TCP"]["ActiveConnectionOpenings"] >= 1
        and is_uint(j["UDP"]["UnknownPortErrors"])' || return 1
    # /tunnel leaves HTTP (test-gvproxy); without ip it answers gvproxy's 500 first.
    api GET "/tunnel?port=22"
    want 500 && want_text "ip is mandatory"
}
check gvproxy_stats_and_tunnel_errors gv_other

counters() {
    api GET /v1/counters
    want 200 'all(is_uint(j[k]) for k in ("frames_from_guests", "bytes_from_guests",
        "frames_to_guests", "bytes_to_guests", "tcp_flows_opened", "tcp_flows_closed",
        "udp_flows_opened", "udp_flows_expired", "icmp_echo_forwarded", "dns_queries",
        "forwarded_connections", "forwarded_datagrams"))
        and j["forwarded_connections"] >= 1 and j["forwarded_datagrams"] >= 1
        and isinstance(j["drops"], dict) and all(v > 0 and is_uint(v) for v in j["drops"].values())'
}
check api_counters counters

# The guest has been sent frames by now (every forwarded connection's SYN, the DNS answers):
# both directions are counted.
counters_both_ways() {
    api GET /v1/counters
    want 200 'j["frames_from_guests"] >= 1 and j["bytes_from_guests"] >= 60
        and j["frames_to_guests"] >= 1 and j["bytes_to_guests"] >= 60'
}
check api_counters_both_ways counters_both_ways

second_instance() {
    local rc=0 t0=$SECONDS
    timeout 10 "$SLIPWAY" serve --qemu "$E2E_WORK/other.sock" --api "$api_sock" \
        >"$E2E_WORK/second.stdout" 2>"$E2E_WORK/second.stderr" || rc=$?
    echo "second slipway: exit $rc after $((SECONDS - t0)) s; stderr: $(head -c 300 "$E2E_WORK/second.stderr")"
    if [ "$rc" = 0 ] || [ "$rc" = 124 ]; then
        echo "wanted a non-zero exit at start"
        return 1
    fi
    [ $((SECONDS - t0)) -le 5 ] || { echo "took longer than 5 s"; return 1; }
    grep -qF -- "$api_sock" "$E2E_WORK/second.stderr" || { echo "no '$api_sock' in stderr"; return 1; }
    # The first slipway keeps its socket.
    socket_mode || return 1
    api GET /v1/info
    want 200 '"subnet" in j'
}
check api_second_instance second_instance

if kill -0 "$slipway_pid" 2>/dev/null; then
    e2e_ok slipway_alive
else
    e2e_not_ok slipway_alive "slipway exited during the test"
fi
e2e_stop_pid "$slipway_pid"

# A socket file nobody listens on (left by a killed slipway) is replaced.
stale_socket() {
    local i
    api_sock=$E2E_WORK/stale-api.sock
    python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$api_sock"
    [ -S "$api_sock" ] || { echo "could not make a stale socket"; return 1; }
    e2e_spawn slipway-stale "$SLIPWAY" serve --qemu "$E2E_WORK/stale-qemu.sock" --api "$api_sock"
    local pid=$E2E_PID
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        api GET /v1/info >/dev/null
        [ "$status" = 200 ] && break
        sleep 0.1
    done
    api GET /v1/info
    e2e_stop_pid "$pid"
    want 200 '"subnet" in j' || { echo "log: $(tail -n 5 "$E2E_WORK/slipway-stale.log")"; return 1; }
}
check api_stale_socket stale_socket

if [ "$E2E_FAILED" != 0 ]; then
    echo "--- slipway log ---"
    tail -n 40 "$E2E_WORK/slipway.log"
fi
e2e_summary
