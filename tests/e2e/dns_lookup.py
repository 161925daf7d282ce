"""One DNS query from wherever it runs (e.g. inside a guest namespace via `ip netns exec`).

    dns_lookup.py SERVER NAME WANT [tcp]

Sends an A query for NAME to SERVER:53 (UDP, or TCP with a length prefix; SERVER may be IPv6)
and checks the reply: WANT is an IPv4 address that must be among the answers (rcode NOERROR),
an IPv6 address (then the query is for AAAA), or "absent" for NXDOMAIN (or an empty NOERROR
answer; "absent6" asks AAAA). Exits non-zero saying what was wrong.
"""

import random
import socket
import struct
import sys


def main():
    server, name, want = sys.argv[1:4]
    tcp = len(sys.argv) > 4 and sys.argv[4] == "tcp"
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    aaaa = ":" in want or want == "absent6"
    q += struct.pack(">HH", 28 if aaaa else 1, 1)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    if tcp:
        s = socket.create_connection((server, 53), timeout=5)
        s.sendall(struct.pack(">H", len(q)) + q)
        buf = b""
        while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        r = buf[2:]
    else:
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.sendto(q, (server, 53))
        r, _ = s.recvfrom(4096)
    rid, flags, _qd, an = struct.unpack(">HHHH", r[:8])
    assert rid == qid, "id mismatch"
    rcode = flags & 0xF
    print(f"{name}: rcode {rcode}, {an} answers")
    if want in ("absent", "absent6"):
        assert rcode == 3 or (rcode == 0 and an == 0), f"rcode {rcode} with {an} answers, want NXDOMAIN"
    else:
        assert rcode == 0, f"rcode {rcode}"
        assert an >= 1, "no answer"
        packed = socket.inet_pton(socket.AF_INET6 if aaaa else socket.AF_INET, want)
        assert packed in r, f"{want} not in the answer"


if __name__ == "__main__":
    main()
