#!/usr/bin/env bash
# A hostile guest against the guest API (`--guest-api`, gvproxy's forwarder paths at
# http://192.168.127.1:80): it must not create, replace or delete host files, nor remove the
# owner's forwards. One network namespace guest on slipway, which runs with
# --guest-api-unix-dir (the one directory where guests may make sockets) and two owner forwards
# (a host unix socket and a TCP port to the guest's port 5000).
#
# Runs inside a loopback-only namespace (lib.sh); slipway has --egress-allow 127.0.0.0/8.
#
# Checks: a unix expose at a host path outside the directory (absolute, "../", DIR/../) is
# refused and the file there keeps its content; a symbolic link, a regular file and a directory
# inside the directory are refused and left as they were; a plain name in the directory works
# (socket of mode 0600, a host client reaches the guest) and its unexpose removes it; a socket the
# guest made that someone replaced with a regular file is not removed by the guest's unexpose;
# the guest cannot unexpose the owner's unix or TCP forward (403), both keep working.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_enter_isolated_netns "$@"

SLIPWAY=${SLIPWAY:-$E2E_ROOT/target/release/slipway}
[ -x "$SLIPWAY" ] || e2e_die "no slipway binary at $SLIPWAY: run cargo build --release"
check() { e2e_check_cmd "$@"; }

W=$E2E_WORK
dir=$W/guest-sockets
mkdir -p "$dir" "$W/sub"
echo "precious host data" >"$W/victim"
ln -s "$W/victim" "$dir/link"
echo "a file of the owner's" >"$dir/plain"
mkdir "$dir/subdir"
owner_sock=$W/owner.sock
e2e_pick_port; p_owner=$E2E_PORT

e2e_netns_create guest
guest=$E2E_NETNS
# The guest's server: one line, then close.
e2e_spawn guest-server ip netns exec "$guest" python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5000)); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(b"guest-hello\n"); c.close()
'
e2e_spawn slipway "$SLIPWAY" serve --netns "/run/netns/$guest" --egress-allow 127.0.0.0/8 -v \
    --guest-api --guest-api-unix-dir "$dir" \
    -p "$owner_sock:5000" -p "127.0.0.1:$p_owner:5000"
slipway_pid=$E2E_PID
for _ in $(seq 100); do
    kill -0 "$slipway_pid" 2>/dev/null || break
    ip -n "$guest" -o -4 addr show dev tap0 2>/dev/null | grep -q "192.168.127.2/" && break
    sleep 0.1
done

# From the guest: METHOD PATH BODY -> prints the status, then the body.
cat >"$W/req.py" <<'PY'
import sys, urllib.request, urllib.error
path, body = sys.argv[1], sys.argv[2].encode()
req = urllib.request.Request("http://192.168.127.1" + path, data=body, method="POST")
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status, r.read().decode(errors="replace"))
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode(errors="replace"))
PY
# guest_req WANT_STATUS PATH JSON: the guest's request must get WANT_STATUS.
guest_req() {
    local want=$1 out
    out=$(ip netns exec "$guest" python3 "$W/req.py" "$2" "$3") || return 1
    echo "$2 $3 -> $out"
    [ "${out%% *}" = "$want" ]
}
expose_unix() { guest_req "$1" /services/forwarder/expose "{\"protocol\":\"unix\",\"local\":\"$2\",\"remote\":\":5000\"}"; }
unexpose_unix() { guest_req "$1" /services/forwarder/unexpose "{\"protocol\":\"unix\",\"local\":\"$2\"}"; }
# A host client of a unix socket (or 127.0.0.1:PORT) must read the guest's line.
host_reads() {
    python3 - "$1" <<'PY'
import socket, sys
t = sys.argv[1]
if t.startswith("/"):
    s = socket.socket(socket.AF_UNIX); s.connect(t)
else:
    s = socket.create_connection(("127.0.0.1", int(t)))
s.settimeout(10)
line = s.makefile().readline()
print("read:", repr(line))
sys.exit(line != "guest-hello\n")
PY
}
victim_intact() {
    [ -f "$W/victim" ] && [ ! -L "$W/victim" ] && [ "$(cat "$W/victim")" = "precious host data" ]
}

check guest_configured ip -n "$guest" -o -4 addr show dev tap0
owner_forwards_work() { host_reads "$owner_sock" && host_reads "$p_owner"; }
check owner_forwards_work owner_forwards_work

outside() {
    expose_unix 403 "$W/victim" || return 1
    expose_unix 403 "$W/sub/new.sock" || return 1
    expose_unix 403 "$dir/../victim" || return 1
    expose_unix 403 "../victim" || return 1
    expose_unix 403 "/etc/hostname-slipway-test" || return 1
    victim_intact && [ ! -e "$W/sub/new.sock" ] && [ ! -e /etc/hostname-slipway-test ]
}
check guest_unix_outside_dir_refused outside
not_sockets() {
    local name
    for name in link plain subdir; do
        guest_req 500 /services/forwarder/expose \
            "{\"protocol\":\"unix\",\"local\":\"$name\",\"remote\":\":5000\"}" || return 1
    done
    [ -L "$dir/link" ] && [ "$(readlink "$dir/link")" = "$W/victim" ] || return 1
    [ "$(cat "$dir/plain")" = "a file of the owner's" ] && [ -d "$dir/subdir" ] && victim_intact
}
check guest_unix_never_replaces_a_non_socket not_sockets
own_socket() {
    expose_unix 200 "g.sock" || return 1
    [ -S "$dir/g.sock" ] || return 1
    local mode
    mode=$(stat -c %a "$dir/g.sock")
    echo "mode $mode"
    [ "$mode" = 600 ] || return 1
    host_reads "$dir/g.sock" || return 1
    # The same socket named as DIR/NAME is the same forward.
    expose_unix 500 "$dir/g.sock" || return 1
    unexpose_unix 200 "$dir/g.sock" || return 1
    for _ in $(seq 50); do [ -e "$dir/g.sock" ] || break; sleep 0.1; done
    [ ! -e "$dir/g.sock" ]
}
check guest_unix_in_dir_works_and_is_removed own_socket
replaced() {
    expose_unix 200 "swap.sock" || return 1
    rm "$dir/swap.sock"
    echo "not the guest's" >"$dir/swap.sock"
    unexpose_unix 200 "swap.sock" || return 1
    sleep 0.5
    [ -f "$dir/swap.sock" ] && [ "$(cat "$dir/swap.sock")" = "not the guest's" ]
}
check guest_unexpose_keeps_a_replaced_file replaced
owner_kept() {
    unexpose_unix 403 "$owner_sock" || return 1
    guest_req 403 /services/forwarder/unexpose "{\"protocol\":\"tcp\",\"local\":\"127.0.0.1:$p_owner\"}" ||
        return 1
    [ -S "$owner_sock" ] && host_reads "$owner_sock" && host_reads "$p_owner"
}
check guest_cannot_remove_owner_forwards owner_kept
check slipway_still_running kill -0 "$slipway_pid"

e2e_stop_pid "$slipway_pid"
check socket_files_removed_at_exit bash -c "[ ! -e '$owner_sock' ] && [ -f '$dir/swap.sock' ] && [ -L '$dir/link' ]"
check victim_file_intact_at_end victim_intact
e2e_summary
