#!/usr/bin/env python3
"""How long a proxy works on each leg of a call before passing it on, from a syscall trace of it: the time from the
end of a read on one socket to the start of the next write on another, in the same thread. With one call in flight
these are the proxy's own stretches of the call's path, its system calls left out (what it does after a write until
its next read is off the path). Used by `scripts/passthrough-p50` (TRACE=N); by hand:

    perf record -e raw_syscalls:sys_enter,raw_syscalls:sys_exit -p PID -o trace.data   # during the calls
    perf script -i trace.data | scripts/path-gaps.py NAME

Legs, told apart by what is read: the answer comes from the socket where a quarter or more of the reads are of 64
bytes or more (each answer's head and message; h2load's requests are smaller), read whole, or in two parts when the
proxy's wake-up came between the backend's two writes ("answer, trailers" is then the second part); the request comes
from the other socket. Timestamps are perf's, in µs; tracing slows every system call a little, alike for every
proxy."""
import re
import statistics
import sys
from collections import defaultdict

READS = {0, 19, 45, 47}  # read, readv, recvfrom, recvmsg
WRITES = {1, 20, 44, 46}  # write, writev, sendto, sendmsg
LINE = re.compile(r"^\s*\S.*?\s+(\d+)\s+\[\d+\]\s+([\d.]+):\s+raw_syscalls:sys_(enter|exit):\s+NR (\d+) (.*)$")
BIG = 64


def legs(lines):
    """(read fd, write fd, bytes read) → gaps in µs, over every thread of the trace."""
    entered = {}  # tid → (syscall, first argument) of the call in progress
    last_read = {}  # tid → (fd, bytes, when) of the last read not yet followed by a write
    gaps = defaultdict(list)
    for line in lines:
        m = LINE.match(line)
        if not m:
            continue
        tid, ts, what, nr, rest = m.group(1), float(m.group(2)) * 1e6, m.group(3), int(m.group(4)), m.group(5)
        if what == "enter":
            fd = rest[rest.index("(") + 1:].split(",")[0].strip() if "(" in rest else "?"
            entered[tid] = (nr, fd)
            if nr in WRITES and tid in last_read:
                read_fd, size, at = last_read.pop(tid)
                if read_fd != fd:
                    gaps[(read_fd, fd, size)].append(ts - at)
        else:
            call = entered.pop(tid, None)
            result = rest.split("=")[-1].strip()
            if call and call[0] in READS and nr == call[0] and result.lstrip("-").isdigit() and int(result) > 0:
                last_read[tid] = (call[1], int(result), ts)
    return gaps


def summary(name, lines):
    """One line: each leg's median gap and how many calls had it."""
    gaps = legs(lines)
    reads, big = defaultdict(int), defaultdict(int)
    for (read_fd, _, size), values in gaps.items():
        reads[read_fd] += len(values)
        big[read_fd] += len(values) if size >= BIG else 0
    # Every answer has a big part; a request read is big only now and then (a connection's first, with its headers
    # not yet indexed).
    answer_fds = {fd for fd in reads if big[fd] * 4 >= reads[fd]}
    kinds = defaultdict(list)
    for (read_fd, _, size), values in gaps.items():
        if read_fd in answer_fds:
            kinds["answer" if size >= BIG else "answer, trailers"].extend(values)
        else:
            kinds["request"].extend(values)
    parts = []
    for kind in ("request", "answer", "answer, trailers"):
        values = sorted(kinds.get(kind, []))
        if values:
            parts.append(f"{kind} {statistics.median(values):.0f} µs (n={len(values)})")
    return f"{name}: " + "; ".join(parts)


def self_test():
    """Three calls through a proxy (fd 7: client, fd 8: backend), the last answer in two parts (`scripts/test`)."""
    lines = []

    def syscall(at_us, nr, fd, result, tid=42):
        ts = f"{1000 + at_us / 1e6:.6f}"
        lines.append(f"  proxy {tid} [000] {ts}: raw_syscalls:sys_enter: NR {nr} ({fd:x}, 7f00, 4000, 0, 0, 0)")
        lines.append(f"  proxy {tid} [000] {ts}: raw_syscalls:sys_exit: NR {nr} = {result}")

    for call, start in enumerate((0, 1000, 2000)):
        syscall(start, 45, 7, 40)  # the request
        syscall(start + 12, 44, 8, 40)
        if call < 2:
            syscall(start + 100, 45, 8, 576)  # the answer, whole
            syscall(start + 108, 44, 7, 576)
        else:
            syscall(start + 100, 45, 8, 566)  # the answer in two parts
            syscall(start + 106, 44, 7, 566)
            syscall(start + 130, 45, 8, 10)
            syscall(start + 133, 44, 7, 10)
        syscall(start + 140, 232, 3, 1)  # a wait between calls: no leg
    syscall(5000, 45, 7, -11)  # a failed read starts no leg
    syscall(5001, 44, 8, 40)
    got = summary("proxy", lines)
    want = "proxy: request 12 µs (n=3); answer 8 µs (n=3); answer, trailers 3 µs (n=1)"
    assert got == want, f"path-gaps self-test: got {got!r}, want {want!r}"
    print("path-gaps: self-test passed")


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        self_test()
    else:
        print(summary(sys.argv[1] if len(sys.argv) > 1 else "proxy", sys.stdin))
