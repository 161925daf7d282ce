#!/usr/bin/env bash
# Hostile guest links against the real slipway binary: a guest that sends a nonsensical frame
# length is disconnected alone, garbage frames are counted and dropped, and a well-behaved guest
# on the same network keeps working throughout.
#
# The "guests" here are small python3 clients speaking QEMU's stream framing on slipway's
# --qemu socket (hostile input needs a hand-made peer). All inside a loopback-only namespace.
set -euo pipefail
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_enter_isolated_netns "$@"

SLIPWAY=${SLIPWAY:-$E2E_ROOT/target/release/slipway}
[ -x "$SLIPWAY" ] || e2e_die "no slipway binary at $SLIPWAY: run cargo build --release"
sock="$E2E_WORK/qemu.sock"
e2e_spawn slipway "$SLIPWAY" serve --qemu "$sock" --egress-allow 127.0.0.0/8 -v
slipway_pid=$E2E_PID
e2e_wait_path "$sock" 10

cat >"$E2E_WORK/guests.py" <<'PY'
import os, socket, struct, sys, time

GW = bytes([192, 168, 127, 1])

def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(3)
    return s

def send_frame(s, frame):
    s.sendall(struct.pack(">I", len(frame)) + frame)

def arp_request(mac, ip):
    eth = b"\xff" * 6 + mac + b"\x08\x06"
    return eth + struct.pack(">HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + b"\0" * 6 + GW

def arp_reply_seen(s, mac):
    # Read frames until an ARP reply to `mac` from the gateway arrives.
    deadline = time.time() + 3
    buf = b""
    while time.time() < deadline:
        chunk = s.recv(65536)
        if not chunk:
            return False
        buf += chunk
        while len(buf) >= 4:
            n = struct.unpack(">I", buf[:4])[0]
            if len(buf) < 4 + n:
                break
            f, buf = buf[4:4 + n], buf[4 + n:]
            if f[0:6] == mac and f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02" and f[28:32] == GW:
                return True
    return False

def closed_by_peer(s):
    s.settimeout(3)
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False

path, check = sys.argv[1], sys.argv[2]
good_mac = bytes([2, 0, 0, 0, 0, 0x0a])
good = connect(path)
send_frame(good, arp_request(good_mac, bytes([192, 168, 127, 10])))
assert arp_reply_seen(good, good_mac), "the good guest got no ARP reply"

if check == "bad_length":
    bad = connect(path)
    bad.sendall(struct.pack(">I", 0xFFFFFFF0) + os.urandom(64))
    assert closed_by_peer(bad), "slipway kept a link that sent a nonsensical length"
elif check == "garbage_frames":
    junk = connect(path)
    jmac = bytes([2, 0, 0, 0, 0, 0x0b])
    for i in range(2000):
        body = os.urandom(14 + (i % 200))
        send_frame(junk, body)
    # Still connected and still served: its own ARP request is answered after the junk.
    send_frame(junk, arp_request(jmac, bytes([192, 168, 127, 11])))
    assert arp_reply_seen(junk, jmac), "a guest sending junk frames was not served afterwards"

# The good guest was not affected.
send_frame(good, arp_request(good_mac, bytes([192, 168, 127, 10])))
assert arp_reply_seen(good, good_mac), "the good guest stopped being served"
print("ok", check)
PY

for check in bad_length garbage_frames; do
    if python3 "$E2E_WORK/guests.py" "$sock" "$check" >"$E2E_WORK/$check.out" 2>&1; then
        e2e_ok "$check"
    else
        e2e_not_ok "$check" "$(tail -n 3 "$E2E_WORK/$check.out" | tr '\n' ' ')"
    fi
done
if kill -0 "$slipway_pid" 2>/dev/null; then e2e_ok slipway_still_running; else e2e_not_ok slipway_still_running "it exited"; fi
e2e_stop_pid "$slipway_pid"
if grep -q "protocol error" "$E2E_WORK/slipway.log"; then
    e2e_ok bad_link_logged
else
    e2e_not_ok bad_link_logged "no 'protocol error' line in the log"
fi
if [ "$E2E_FAILED" != 0 ]; then tail -n 30 "$E2E_WORK/slipway.log"; fi
e2e_summary
