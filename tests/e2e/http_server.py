#!/usr/bin/env python3
"""A tiny HTTP server for e2e tests, bound to loopback only.

  GET  /NAME         serves DIR/NAME (files only, no listings outside DIR)
  PUT  /ANY or POST  reads the body (Content-Length or chunked) and answers with its sha256 in
                     hex and its length: "<sha256> <bytes>\\n"

Usage: http_server.py --dir DIR [--bind 127.0.0.1] [--port 0] [--port-file FILE]
With --port 0 the kernel picks a port; it is written to --port-file once the socket listens, so
a caller can wait for that file instead of polling the port. Refuses non-loopback --bind.
"""

import argparse
import functools
import hashlib
import http.server
import ipaddress
import os
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _body_chunks(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024).strip():
                        pass
                    return
                left = size
                while left:
                    chunk = self.rfile.read(min(left, 1 << 16))
                    if not chunk:
                        raise ConnectionError("body ended early")
                    left -= len(chunk)
                    yield chunk
                self.rfile.readline(8)
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left:
                chunk = self.rfile.read(min(left, 1 << 16))
                if not chunk:
                    raise ConnectionError("body ended early")
                left -= len(chunk)
                yield chunk

    def _digest_body(self):
        h = hashlib.sha256()
        n = 0
        try:
            for chunk in self._body_chunks():
                h.update(chunk)
                n += len(chunk)
        except (ConnectionError, ValueError) as e:
            self.send_error(400, f"bad body: {e}")
            return
        reply = f"{h.hexdigest()} {n}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_PUT = _digest_body
    do_POST = _digest_body

    def list_directory(self, path):
        self.send_error(404, "no listings")
        return None

    def log_message(self, fmt, *args):
        sys.stderr.write("http: %s %s\n" % (self.address_string(), fmt % args))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    a = p.parse_args()
    if not ipaddress.ip_address(a.bind).is_loopback:
        sys.exit(f"http_server: refusing to bind {a.bind}: e2e servers listen on loopback only")
    handler = functools.partial(Handler, directory=os.path.abspath(a.dir))
    srv_cls = http.server.ThreadingHTTPServer
    if ":" in a.bind:
        srv_cls = type("V6Server", (srv_cls,), {"address_family": __import__("socket").AF_INET6})
    srv = srv_cls((a.bind, a.port), handler)
    srv.daemon_threads = True
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{srv.server_address[1]}\n")
        os.replace(tmp, a.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
