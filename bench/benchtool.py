#!/usr/bin/env python3
"""Helpers for bench/run.sh and bench/vm.sh: an iperf3 JSON reader, the markdown reports and a
slirp4netns API client. (The echo server and the latency / connection-rate clients are compiled:
bench/tool, slipway-benchtool.)

Subcommands (all addresses must be numeric; nothing here resolves names):

  iperf FILE BACKEND ROUND TEST CPU_BEFORE CPU_AFTER CLK_TCK [QEMU_BEFORE QEMU_AFTER WINDOW_S]
                                  reads one iperf3 -J output, prints one JSONL record; the
                                  optional QEMU ticks, taken WINDOW_S seconds apart, give
                                  qemu_cpu_s and qemu_cpu_share (bench/vm.sh)
  report RESULTS.jsonl INFO.json  prints the markdown report (bench/run.sh)
  vm-report RESULTS.jsonl INFO.json
                                  prints the markdown report of the VM comparison (bench/vm.sh)
  slirp-api SOCKET JSON           sends one request to slirp4netns's API socket, prints the
                                  reply; exits non-zero on an error reply
"""

import json
import os
import socket
import statistics
import sys


def slirp_api(path, request):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(path)
    sock.sendall(request.encode())
    sock.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        reply += chunk
    sock.close()
    print(reply.decode(errors="replace"))
    doc = json.loads(reply)
    if "error" in doc or "return" not in doc:
        sys.exit(1)


def iperf(path, backend, rnd, test, cpu_before, cpu_after, clk_tck, qemu_before="-",
          qemu_after="-", window_s="-"):
    rec = {"backend": backend, "round": int(rnd), "test": test}
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        rec["error"] = f"no iperf3 JSON: {e}"
        print(json.dumps(rec))
        return
    if doc.get("error") and "end" not in doc:
        rec["error"] = doc["error"]
        print(json.dumps(rec))
        return
    end = doc.get("end", {})
    recv = end.get("sum_received") or {}
    rec["bps"] = recv.get("bits_per_second", 0.0)
    rec["bytes"] = recv.get("bytes", 0)
    rec["retransmits"] = (end.get("sum_sent") or {}).get("retransmits")
    if doc.get("error"):
        rec["error"] = doc["error"]
    # Per-second figures from the receiver: the server in normal mode, the client with -R.
    reverse = doc.get("start", {}).get("test_start", {}).get("reverse", 0)
    if reverse:
        intervals = doc.get("intervals", [])
    else:
        intervals = (doc.get("server_output_json") or {}).get("intervals", [])
        if not intervals:
            intervals = doc.get("intervals", [])
    secs = []
    for iv in intervals:
        s = iv.get("sum", {})
        if s.get("seconds", 0) >= 0.5:
            secs.append(s.get("bits_per_second", 0.0))
    rec["seconds_bps"] = secs
    rec["zero_seconds"] = sum(1 for b in secs if b < 1e6)
    med = statistics.median(secs) if secs else 0.0
    rec["slow_seconds"] = sum(1 for b in secs if b < 0.1 * med)
    if cpu_before != "-" and cpu_after != "-":
        ticks = int(cpu_after) - int(cpu_before)
        rec["cpu_s"] = ticks / int(clk_tck)
        if rec["bytes"]:
            rec["cpu_s_per_gb"] = rec["cpu_s"] / (rec["bytes"] / 1e9)
    if qemu_before != "-" and qemu_after != "-":
        rec["qemu_cpu_s"] = (int(qemu_after) - int(qemu_before)) / int(clk_tck)
        if window_s != "-" and float(window_s) > 0:
            rec["window_s"] = float(window_s)
            rec["qemu_cpu_share"] = rec["qemu_cpu_s"] / float(window_s)
    print(json.dumps(rec))


# ---------------------------------------------------------------------------------------------
# Report

BACKENDS = ["slipway", "slipway-base", "slipway-nopoll", "slipway-s4", "slirp4netns", "pasta", "veth"]
# (key, title, unit, higher is better, formatter)
METRICS = [
    ("up", "TCP guest→host, 1 stream", "Gbit/s", True),
    ("down", "TCP host→guest, 1 stream", "Gbit/s", True),
    ("up4", "TCP guest→host, 4 streams", "Gbit/s", True),
    ("down4", "TCP host→guest, 4 streams", "Gbit/s", True),
    ("rr_p50", "TCP 1-byte request/response p50", "µs", False),
    ("rr_p99", "TCP 1-byte request/response p99", "µs", False),
    ("cr", "TCP connections (connect, 1-byte exchange, close)", "conn/s", True),
    ("cr_pin", "TCP connections, pinned to one CPU", "conn/s", True),
    ("fwd_down", "TCP forward host→guest, 1 stream", "Gbit/s", True),
    ("fwd_up", "TCP forward guest→host, 1 stream", "Gbit/s", True),
    ("fwd_cr", "TCP forward connections (connect, 1-byte exchange, close)", "conn/s", True),
    ("cpu_up", "backend CPU per GB, guest→host 1 stream", "CPU s/GB", False),
    ("cpu_down", "backend CPU per GB, host→guest 1 stream", "CPU s/GB", False),
    ("cpu_up4", "backend CPU per GB, guest→host 4 streams", "CPU s/GB", False),
    ("cpu_down4", "backend CPU per GB, host→guest 4 streams", "CPU s/GB", False),
    ("cpu_fwd_down", "backend CPU per GB, forward host→guest", "CPU s/GB", False),
    ("cpu_fwd_up", "backend CPU per GB, forward guest→host", "CPU s/GB", False),
]
THROUGHPUT = ["up", "down", "up4", "down4", "fwd_down", "fwd_up"]


def fmt(v, unit):
    if v is None:
        return "—"
    if unit == "Gbit/s":
        return f"{v:.2f}"
    if unit == "conn/s":
        return f"{v:.0f}"
    if unit == "CPU s/GB":
        return f"{v:.3f}"
    return f"{v:.1f}"


def collect(path):
    values = {}  # (metric, backend) -> list of values
    errors = []
    stalls = {}  # (test, backend) -> [zero, slow, total seconds]
    retrans = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            b, t = rec["backend"], rec["test"]
            if rec.get("error"):
                errors.append(f"{b} round {rec['round']} {t}: {rec['error']}")
            if t in THROUGHPUT:
                if "bps" in rec and rec.get("bytes"):
                    values.setdefault((t, b), []).append(rec["bps"] / 1e9)
                if "cpu_s_per_gb" in rec:
                    values.setdefault(("cpu_" + t, b), []).append(rec["cpu_s_per_gb"])
                if "seconds_bps" in rec:
                    s = stalls.setdefault((t, b), [0, 0, 0])
                    s[0] += rec["zero_seconds"]
                    s[1] += rec["slow_seconds"]
                    s[2] += len(rec["seconds_bps"])
                if rec.get("retransmits") is not None:
                    retrans.setdefault((t, b), []).append(rec["retransmits"])
            elif t == "rr":
                if "p50_us" in rec:
                    values.setdefault(("rr_p50", b), []).append(rec["p50_us"])
                    values.setdefault(("rr_p99", b), []).append(rec["p99_us"])
            elif t in ("cr", "cr_pin", "fwd_cr"):
                if "conn_per_s" in rec:
                    values.setdefault((t, b), []).append(rec["conn_per_s"])
                if rec.get("errors"):
                    errors.append(f"{b} round {rec['round']} {t}: {rec['errors']} failed connections")
    return values, errors, stalls, retrans


def report(results, info_path):
    with open(info_path) as f:
        info = json.load(f)
    values, errors, stalls, retrans = collect(results)
    backends = [b for b in BACKENDS if b in info["backends"]]
    out = []
    w = out.append
    w(f"# slipway benchmark — {info['date']}")
    w("")
    w(f"Command: `{info['command']}` — {info['rounds']} round(s), {info['duration']} s per iperf3 "
      f"run, {info['rr_n']} round trips per latency run, {info['cr_seconds']} s per "
      "connection-rate run. Every metric for every backend interleaved in each round (backend "
      "order rotated per round). Cells: median [min–max] over rounds.")
    w("")
    w("## Machine")
    w("")
    for k in ["kernel", "cpu", "nproc", "load", "slipway", "slirp4netns", "pasta", "iperf3", "python3"]:
        w(f"- {k}: {info.get(k, '?')}")
    w("")
    w("## Results")
    w("")
    w("| metric | unit | " + " | ".join(backends) + " |")
    w("|---|---|" + "---|" * len(backends))
    med = {}
    for key, title, unit, _ in METRICS:
        cells = []
        for b in backends:
            vs = values.get((key, b))
            if not vs:
                cells.append("—")
                continue
            m = statistics.median(vs)
            med[(key, b)] = m
            if len(vs) > 1:
                cells.append(f"{fmt(m, unit)} [{fmt(min(vs), unit)}–{fmt(max(vs), unit)}]")
            else:
                cells.append(fmt(m, unit))
        w(f"| {title} | {unit} | " + " | ".join(cells) + " |")
    w("")
    w("veth: the kernel limit (two namespaces joined by a veth pair, no user-mode stack, so no "
      "backend CPU figure). CPU = utime+stime of the backend process during the iperf3 run, "
      "divided by the bytes the receiver got.")
    w("")

    def ratio_table(title, ref_of, show_ref):
        w(f"## {title}")
        w("")
        w("Above 1 is better than the reference for every metric (throughput and connection rate: "
          "value / reference; latency and CPU: reference / value).")
        w("")
        w("| metric | " + ("reference | " if show_ref else "") + " | ".join(backends) + " |")
        w("|---|" + ("---|" if show_ref else "") + "---|" * len(backends))
        for key, t, _unit, higher in METRICS:
            ref, ref_name = ref_of(key, higher)
            if not ref:
                continue
            cells = []
            for b in backends:
                v = med.get((key, b))
                if v is None:
                    cells.append("—")
                elif higher:
                    cells.append(f"{v / ref:.2f}")
                else:
                    cells.append(f"{ref / v:.2f}" if v else "—")
            w(f"| {t} | " + (f"{ref_name} | " if show_ref else "") + " | ".join(cells) + " |")
        w("")

    if "veth" in backends:
        ratio_table("Ratio to veth (kernel limit)",
                    lambda key, higher: (med.get((key, "veth")), "veth"), False)

    def best_user(key, higher):
        vs = [(med[(key, b)], b) for b in ("slirp4netns", "pasta") if (key, b) in med]
        if not vs:
            return None, None
        return max(vs) if higher else min(vs)

    if "slirp4netns" in backends or "pasta" in backends:
        ratio_table("Ratio to the best of slirp4netns and pasta", best_user, True)

    if "slirp4netns" in backends and "slipway-s4" in backends:
        # What a drop-in user gains: the same command line, slipway's binary behind it.
        ratio_table("Ratio to slirp4netns (drop-in users: slipway-s4 is slipway under "
                    "slirp4netns's command line)",
                    lambda key, higher: (med.get((key, "slirp4netns")), "slirp4netns"), False)

    w("## Stalls")
    w("")
    w("Per-second receiver figures from iperf3 (1 s intervals), summed over all rounds: "
      "zero = seconds below 1 Mbit/s; slow = seconds below 10% of that run's median second. "
      "Retransmits: iperf3 sender's count per run (median [min–max]).")
    w("")
    w("| test | " + " | ".join(backends) + " |")
    w("|---|" + "---|" * len(backends))
    names = {"up": "guest→host, 1 stream", "down": "host→guest, 1 stream",
             "up4": "guest→host, 4 streams", "down4": "host→guest, 4 streams",
             "fwd_down": "forward host→guest, 1 stream", "fwd_up": "forward guest→host, 1 stream"}
    for t in THROUGHPUT:
        cells = []
        for b in backends:
            s = stalls.get((t, b))
            r = retrans.get((t, b))
            if not s:
                cells.append("—")
                continue
            c = f"zero {s[0]}/{s[2]} s, slow {s[1]}/{s[2]} s"
            if r:
                c += f", retr {statistics.median(r):.0f} [{min(r)}–{max(r)}]"
            cells.append(c)
        w(f"| {names[t]} | " + " | ".join(cells) + " |")
    w("")
    w("## Errors and notes")
    w("")
    if errors:
        for e in errors:
            w(f"- {e}")
    else:
        w("- no failed runs")
    for n in info.get("notes", []):
        w(f"- {n}")
    w("")
    print("\n".join(out))


# ---------------------------------------------------------------------------------------------
# VM comparison report (bench/vm.sh)

VM_BACKENDS = ["slipway", "passt"]
VM_TESTS = {"up": "TCP guest→host, 1 stream", "down": "TCP host→guest, 1 stream",
            "up4": "TCP guest→host, 4 streams", "down4": "TCP host→guest, 4 streams"}
VM_DIRECTION = {"up": "guest→host, 1 stream", "down": "host→guest, 1 stream",
                "up4": "guest→host, 4 streams", "down4": "host→guest, 4 streams"}


def vm_report(results, info_path):
    with open(info_path) as f:
        info = json.load(f)
    backends = [b for b in VM_BACKENDS if b in info["backends"]]
    tests = [t for t in VM_TESTS if t in info["tests"]]
    per_round = {}  # (metric, backend) -> {round: value}
    errors, stalls, retrans = [], {}, {}
    with open(results) as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            b, t, r = rec["backend"], rec["test"], rec["round"]
            if rec.get("error"):
                errors.append(f"{b} round {r} {t}: {rec['error']}")
            if t == "boot":
                if "lease_s" in rec:
                    per_round.setdefault(("lease", b), {})[r] = rec["lease_s"]
                continue
            if "bps" in rec and rec.get("bytes"):
                per_round.setdefault((t, b), {})[r] = rec["bps"] / 1e9
            if "cpu_s_per_gb" in rec:
                per_round.setdefault(("cpu_" + t, b), {})[r] = rec["cpu_s_per_gb"]
            if "qemu_cpu_share" in rec:
                per_round.setdefault(("qemu_" + t, b), {})[r] = rec["qemu_cpu_share"]
            if "seconds_bps" in rec:
                s = stalls.setdefault((t, b), [0, 0, 0])
                s[0] += rec["zero_seconds"]
                s[1] += rec["slow_seconds"]
                s[2] += len(rec["seconds_bps"])
            if rec.get("retransmits") is not None:
                retrans.setdefault((t, b), []).append(rec["retransmits"])
    # (key, title, unit, higher is better)
    metrics = [(t, VM_TESTS[t], "Gbit/s", True) for t in tests]
    metrics += [("cpu_" + t, "backend CPU per GB, " + VM_DIRECTION[t], "CPU s/GB", False)
                for t in tests]
    metrics += [("qemu_" + t, "QEMU CPU share, " + VM_DIRECTION[t], "CPUs", None) for t in tests]
    metrics += [("lease", "QEMU start → DHCP lease", "s", False)]

    def fmt_vm(v, unit):
        return f"{v:.2f}" if unit in ("CPUs", "s") else fmt(v, unit)

    out = []
    w = out.append
    w(f"# slipway VM benchmark — {info['date']}")
    w("")
    w(f"Command: `{info['command']}` — {info['rounds']} round(s); each round boots one QEMU guest "
      f"per backend (order alternating per round) and runs iperf3 in the guest, "
      f"{info['duration']} s per run, against a server on the host side's 127.0.0.1. MTU "
      f"{info['mtu']} (DHCP and virtio-net host_mtu). Cells: median [min–max] over rounds.")
    w("")
    w("## Machine")
    w("")
    for k in ["kernel", "cpu", "nproc", "load", "slipway", "passt", "qemu", "guest", "iperf3"]:
        w(f"- {k}: {info.get(k, '?')}")
    w("")
    w("## Results")
    w("")
    w("| metric | unit | " + " | ".join(backends) + " |")
    w("|---|---|" + "---|" * len(backends))
    med = {}
    for key, title, unit, _ in metrics:
        cells = []
        for b in backends:
            vs = list(per_round.get((key, b), {}).values())
            if not vs:
                cells.append("—")
                continue
            m = statistics.median(vs)
            med[(key, b)] = m
            if len(vs) > 1:
                cells.append(f"{fmt_vm(m, unit)} [{fmt_vm(min(vs), unit)}–{fmt_vm(max(vs), unit)}]")
            else:
                cells.append(fmt_vm(m, unit))
        w(f"| {title} | {unit} | " + " | ".join(cells) + " |")
    w("")
    w("Throughput: iperf3's receiver figure (the host's server guest→host, the guest's client "
      "host→guest). Backend CPU = utime+stime of the backend process during the run, divided by "
      "the bytes the receiver got. QEMU CPU share = QEMU's utime+stime during the run divided by "
      "the run's wall time (1.00 = one host CPU kept busy; QEMU runs the emulated vCPU in one "
      "thread and the network I/O in another, so it can exceed 1).")
    w("")
    if "slipway" in backends and "passt" in backends:
        w("## Ratio slipway / passt")
        w("")
        w("Above 1 means slipway is better (throughput: slipway / passt; CPU per GB: passt / "
          "slipway). Per round: the two guests of the same round, booted one after the other.")
        w("")
        w("| metric | ratio of medians | per round |")
        w("|---|---|---|")
        for key, title, _unit, higher in metrics:
            if higher is None or key == "lease":
                continue
            s, p = med.get((key, "slipway")), med.get((key, "passt"))
            if s is None or p is None:
                continue
            ratio = s / p if higher else (p / s if s else None)
            rs, rp = per_round.get((key, "slipway"), {}), per_round.get((key, "passt"), {})
            rounds = []
            for r in sorted(set(rs) & set(rp)):
                if higher:
                    rounds.append(f"{rs[r] / rp[r]:.2f}" if rp[r] else "—")
                else:
                    rounds.append(f"{rp[r] / rs[r]:.2f}" if rs[r] else "—")
            w(f"| {title} | {ratio:.2f} | {', '.join(rounds) or '—'} |" if ratio is not None
              else f"| {title} | — | — |")
        w("")
    w("## Stalls")
    w("")
    w("Per-second receiver figures from iperf3 (1 s intervals), summed over all rounds: "
      "zero = seconds below 1 Mbit/s; slow = seconds below 10% of that run's median second. "
      "Retransmits: iperf3 sender's count per run (median [min–max]).")
    w("")
    w("| test | " + " | ".join(backends) + " |")
    w("|---|" + "---|" * len(backends))
    for t in tests:
        cells = []
        for b in backends:
            s = stalls.get((t, b))
            r = retrans.get((t, b))
            if not s:
                cells.append("—")
                continue
            c = f"zero {s[0]}/{s[2]} s, slow {s[1]}/{s[2]} s"
            if r:
                c += f", retr {statistics.median(r):.0f} [{min(r)}–{max(r)}]"
            cells.append(c)
        w(f"| {VM_DIRECTION[t]} | " + " | ".join(cells) + " |")
    w("")
    w("## Errors and notes")
    w("")
    if errors:
        for e in errors:
            w(f"- {e}")
    else:
        w("- no failed runs")
    for n in info.get("notes", []):
        w(f"- {n}")
    w("")
    print("\n".join(out))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "iperf":
        iperf(*args)
    elif cmd == "report":
        report(*args)
    elif cmd == "vm-report":
        vm_report(*args)
    elif cmd == "slirp-api":
        slirp_api(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
