#!/usr/bin/env python3
"""How long a proxy works on each leg of a call before passing it on, from a syscall trace of it: the time from the
end of a read on one socket to the start of the next write on another, in the same thread. With one call in flight
these are the proxy's own stretches of the call's path, its system calls left out (what it does after a write until
its next read is off the path). Each leg is also timed until it is "passed on": to the end of the last of the writes
that carry it on — a proxy that writes an answer's head first and its message after (nginx does) has passed it on
only then, and the writes' own time (on loopback, the receiver's side of TCP runs inside them) counts. Used by
`scripts/passthrough-p50` (TRACE=N); by hand:

    perf record -e raw_syscalls:sys_enter,raw_syscalls:sys_exit -p PID -o trace.data   # during the calls
    perf script -i trace.data | scripts/path-gaps.py NAME

With cpu-clock samples in the trace as well (`perf record … -e cpu-clock/period=25000/`; `PROFILE=1` in
passthrough-p50), it also lists where each leg's samples fall, by function: the sampling slows the legs several
times over, so read the shares, not the µs.

Whole calls on one clock (`AROUND=N` in passthrough-p50) come from a trace of every process and of the scheduler's
switches instead: each step of a call from h2load's write of a request to its next one — through the proxy, the
backend and back — and what else the proxy's CPU did meanwhile (ran another process, or idled):

    perf record -a -e raw_syscalls:sys_enter,raw_syscalls:sys_exit,sched:sched_switch --exclude-perf -o all.data
    perf script -i all.data | scripts/path-gaps.py --around NAME PROXY_THREADS BACKEND_THREADS

(the thread ids comma-separated: `ls /proc/PID/task | paste -sd, -`).

Legs, told apart by what is read: the answer comes from the socket where a quarter or more of the reads are of 64
bytes or more (each answer's head and message; h2load's requests are smaller), read whole, or in two parts when the
proxy's wake-up came between the backend's two writes ("answer, trailers" is then the second part); the request comes
from the other socket. Timestamps are perf's, in µs; tracing slows every system call a little, alike for every
proxy."""
import bisect
import re
import statistics
import sys
from collections import Counter, defaultdict

READS = {0, 19, 45, 47}  # read, readv, recvfrom, recvmsg
WRITES = {1, 20, 44, 46}  # write, writev, sendto, sendmsg
# `perf script`'s lines: command, thread, [CPU] (left out on sample lines when the trace mixes events), time, event.
LINE = re.compile(r"^\s*(\S.*?)\s+(\d+)\s+(?:\[(\d+)\]\s+)?([\d.]+):\s+(.*)$")
# The load client, whose calls a system-wide trace holds too.
CLIENT = "h2load"
SYSCALL = re.compile(r"^raw_syscalls:sys_(enter|exit):\s+NR (\d+) (.*)$")
SWITCH = re.compile(r"^sched:sched_switch: .* ==> next_comm=.* next_pid=(\d+) ")
SAMPLE = re.compile(r"^(\d+)\s+cpu-clock\S*:\s+[0-9a-f]+\s+(.*?)(?:\+0x[0-9a-f]+)?\s+\(.*\)$")
BIG = 64
TOP = 12


def short(symbol):
    """A function's name without its generic arguments (`Map<Fut, F>` → `Map<>`); a qualified path's own brackets
    (`<X as Future>::poll`) stay."""
    out, i = [], 0
    while i < len(symbol):
        c = symbol[i]
        if c == "<" and i > 0 and (symbol[i - 1].isalnum() or symbol[i - 1] == "_"):
            depth = 0
            while i < len(symbol):
                if symbol[i] == "<":
                    depth += 1
                elif symbol[i] == ">" and symbol[i - 1] != "-":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            out.append("<>")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def events(lines):
    """The trace's events in order: (command, thread, µs, kind, detail) — a system call's `enter` (its number and first
    argument), its `exit` (its number and result, `None` when not a number), a cpu-clock `sample` (the function and
    the ns it stands for), or a scheduler's `switch` (the CPU, and the thread it switches to; "0" is idle)."""
    for line in lines:
        m = LINE.match(line)
        if not m:
            continue
        comm, tid, cpu, ts, event = m.group(1), m.group(2), m.group(3), float(m.group(4)) * 1e6, m.group(5)
        switch = SWITCH.match(event)
        if switch:
            yield comm, tid, ts, "switch", (cpu, switch.group(1))
            continue
        sample = SAMPLE.match(event)
        if sample:
            yield comm, tid, ts, "sample", (short(sample.group(2)), int(sample.group(1)))
            continue
        syscall = SYSCALL.match(event)
        if not syscall:
            continue
        what, nr, rest = syscall.group(1), int(syscall.group(2)), syscall.group(3)
        if what == "enter":
            fd = rest[rest.index("(") + 1:].split(",")[0].strip() if "(" in rest else "?"
            yield comm, tid, ts, "enter", (nr, fd)
        else:
            result = rest.split("=")[-1].strip()
            yield comm, tid, ts, "exit", (nr, int(result) if result.lstrip("-").isdigit() else None)


def legs(lines):
    """(read fd, write fd, bytes read) → the gaps in µs (to the first write), the times until passed on (to the end
    of the last write), and the samples (function → ns) that fell in the gaps, over every thread of the trace."""
    entered = {}  # tid → (syscall, first argument) of the call in progress
    last_read = {}  # tid → (fd, bytes, when, samples) of the last read not yet followed by a write
    passing_on = {}  # tid → [leg, when its read ended, fd written, end of the last write] while the leg's writes go on
    gaps = defaultdict(list)
    through = defaultdict(list)
    samples = defaultdict(lambda: defaultdict(int))
    for _, tid, ts, kind, detail in events(lines):
        if kind == "switch":
            continue
        if kind == "sample":
            if tid in last_read:
                last_read[tid][3].append(detail)
            continue
        if kind == "enter":
            nr, fd = detail
            entered[tid] = (nr, fd)
            open_leg = passing_on.get(tid)
            if open_leg and not (nr in WRITES and fd == open_leg[2]):
                # Anything but another write of the same leg: what was read has been passed on.
                leg, at, _, written = passing_on.pop(tid)
                if written is not None:
                    through[leg].append(written - at)
            if nr in WRITES and tid in last_read:
                read_fd, size, at, seen = last_read.pop(tid)
                if read_fd != fd:
                    gaps[(read_fd, fd, size)].append(ts - at)
                    passing_on[tid] = [(read_fd, fd, size), at, fd, None]
                    for function, ns in seen:
                        samples[(read_fd, fd, size)][function] += ns
        else:
            nr, result = detail
            call = entered.pop(tid, None)
            if call and call[0] in WRITES and tid in passing_on and passing_on[tid][2] == call[1]:
                passing_on[tid][3] = ts
            if call and call[0] in READS and nr == call[0] and result is not None and result > 0:
                last_read[tid] = (call[1], result, ts, [])
    return gaps, through, samples


def summary(name, lines):
    """One line: each leg's median gap, how many calls had it, and its median time until passed on; then, if the
    trace has samples, each leg's functions."""
    gaps, through, samples = legs(lines)
    reads, big = defaultdict(int), defaultdict(int)
    for (read_fd, _, size), values in gaps.items():
        reads[read_fd] += len(values)
        big[read_fd] += len(values) if size >= BIG else 0
    # Every answer has a big part; a request read is big only now and then (a connection's first, with its headers
    # not yet indexed).
    answer_fds = {fd for fd in reads if big[fd] * 4 >= reads[fd]}
    kinds = defaultdict(list)
    kinds_through = defaultdict(list)
    profiles = defaultdict(lambda: defaultdict(int))
    for leg, values in gaps.items():
        read_fd, _, size = leg
        if read_fd in answer_fds:
            kind = "answer" if size >= BIG else "answer, trailers"
        else:
            kind = "request"
        kinds[kind].extend(values)
        kinds_through[kind].extend(v for v in through.get(leg, []) if v >= 0)
        for function, ns in samples[leg].items():
            profiles[kind][function] += ns
    parts, profile_lines = [], []
    for kind in ("request", "answer", "answer, trailers"):
        values = sorted(kinds.get(kind, []))
        if not values:
            continue
        part = f"{kind} {statistics.median(values):.0f} µs (n={len(values)})"
        if kinds_through[kind]:
            part += f", passed on in {statistics.median(kinds_through[kind]):.0f}"
        parts.append(part)
        total = sum(profiles[kind].values())
        if total:
            profile_lines.append(f"  {kind}: {total / 1000 / len(values):.1f} µs sampled a leg")
            for function, ns in sorted(profiles[kind].items(), key=lambda kv: -kv[1])[:TOP]:
                profile_lines.append(f"    {100 * ns / total:4.1f} %  {function[:110]}")
    return "\n".join([f"{name}: " + "; ".join(parts)] + profile_lines)


# The steps of one call, each timed from the end of the one before, by the event that ends it.
STEPS = (
    "the proxy has read the request",  # from the start of h2load's write of it
    "the proxy has passed it on",  # the end of its last write to the backend
    "the backend has read it",
    "the backend has written its answer",  # the end of its last write
    "the proxy has read the answer",  # the end of its last read of it
    "the proxy has passed it on",  # the end of its last write to the client
    "h2load has read it",  # its first read after that
    "h2load starts its next request",
)


def whole_calls(name, proxy, backend, lines):
    """Each call on one clock, from a system-wide trace (`perf record -a`) with the scheduler's switches: the steps
    of the call from h2load's write of a request to its next one, across h2load, the proxy (thread ids `proxy`) and
    the backend (`backend`), and for each step how long the proxy's CPU ran something else meanwhile (another
    process, e.g. a busy loop sharing it) or nothing (idle: the time to wake it counts there). Medians."""
    entered = {}
    moved = []  # (start, end, who, "r"/"w", fd) of the reads and writes that moved data
    switches = defaultdict(list)  # CPU → [(when, thread switched in)]
    for comm, tid, ts, kind, detail in events(lines):
        if kind == "switch":
            switches[detail[0]].append((ts, detail[1]))
            continue
        who = "proxy" if tid in proxy else "backend" if tid in backend else "client" if comm == CLIENT else None
        if who is None or kind == "sample":
            continue
        if kind == "enter":
            entered[tid] = (*detail, ts)
            continue
        nr, result = detail
        call = entered.pop(tid, None)
        if call and call[0] == nr and nr in READS | WRITES and result is not None and result > 0:
            moved.append((call[2], ts, who, "r" if nr in READS else "w", call[1]))
    moved.sort()
    reads = defaultdict(int)
    for _, _, who, rw, fd in moved:
        if rw == "r" and who != "backend":
            reads[(who, fd)] += 1
    proxy_fds = {fd for who, fd in reads if who == "proxy"}
    client_fds = [fd for who, fd in reads if who == "client"]
    if len(proxy_fds) < 2 or not client_fds:
        return f"{name}: no calls in the trace"
    client_fd = max(client_fds, key=lambda fd: reads[("client", fd)])
    # The proxy's backend side is the socket it writes to right after h2load's write of a request.
    to_backend = defaultdict(int)
    request_out = False
    for _, _, who, rw, fd in moved:
        if who == "client" and rw == "w" and fd == client_fd:
            request_out = True
        elif who == "proxy" and rw == "w" and request_out:
            to_backend[fd] += 1
            request_out = False
    if not to_backend:
        return f"{name}: no call passed on in the trace"
    backend_fd = max(to_backend, key=to_backend.get)
    calls = split_calls(moved, client_fd)
    proxy_cpu = Counter(cpu for cpu, runs in switches.items() for _, tid in runs if tid in proxy).most_common(1)
    cpu = ProxyCpu(switches.get(proxy_cpu[0][0], []) if proxy_cpu else [], proxy | backend)
    took, whole = defaultdict(list), []
    for this, after in zip(calls, calls[1:]):
        points = call_points(this, after[0][0], backend_fd)
        if points is None:
            continue
        for step, (lo, hi) in enumerate(zip(points, points[1:])):
            took[step].append((hi - lo, *cpu.elsewhere(lo, hi)))
        whole.append(points[-1] - points[0])
    if not whole:
        return f"{name}: no whole call in the trace"
    out = [f"{name}: a call end to end {statistics.median(whole):.0f} µs (n={len(whole)}); each step, from the end"
           " of the one before: µs (the proxy's CPU meanwhile: µs running another process / idle)"]
    for step, label in enumerate(STEPS):
        medians = [statistics.median(v[k] for v in took[step]) for k in range(3)]
        out.append(f"  {label:36s} {medians[0]:4.0f}  ({medians[1]:.0f} / {medians[2]:.0f})")
    return "\n".join(out)


def split_calls(moved, client_fd):
    """The reads and writes, one list per call: each starts with h2load's first write on its socket after a read."""
    calls, current, client_read = [], None, True
    for event in moved:
        _, _, who, rw, fd = event
        if who == "client" and fd != client_fd:
            continue  # h2load's own files
        if who == "client" and rw == "w" and client_read:
            if current:
                calls.append(current)
            current, client_read = [], False
        if who == "client" and rw == "r":
            client_read = True
        if current is not None:
            current.append(event)
    if current:
        calls.append(current)
    return calls


def call_points(call, next_start, backend_fd):
    """When each step of `call` ended (after its start, h2load's write of the request), ending with `next_start`; None
    for a call the trace cut, or one the proxy did not pass on in this order."""

    def ends(who, rw, fd, not_fd):
        """When `who`'s reads or writes (on `fd`, or on any but `not_fd`) ended, in order."""
        return (e for _, e, w, r, f in call
                if w == who and r == rw and (fd is None or f == fd) and (not_fd is None or f != not_fd))

    def first(who, rw, after, fd=None, not_fd=None):
        return next(e for e in ends(who, rw, fd, not_fd) if e > after)

    def last(who, rw, before, fd=None, not_fd=None):
        return max(e for e in ends(who, rw, fd, not_fd) if e < before)

    try:
        a = call[0][0]
        b = first("proxy", "r", a, not_fd=backend_fd)
        d = first("backend", "r", b)
        c = last("proxy", "w", d, fd=backend_fd)
        g = last("proxy", "w", next_start, not_fd=backend_fd)
        f = last("proxy", "r", g, fd=backend_fd)
        e = last("backend", "w", f)
        h = first("client", "r", g)
    except (StopIteration, ValueError):
        return None
    points = (a, b, c, d, e, f, g, h, next_start)
    return points if all(x <= y for x, y in zip(points, points[1:])) else None


class ProxyCpu:
    """What the proxy's CPU ran, from the scheduler's switches on it: [(when, thread switched in)]."""

    def __init__(self, runs, ours):
        self.runs, self.starts, self.ours = runs, [ts for ts, _ in runs], ours

    def elsewhere(self, lo, hi):
        """(µs another process ran, µs idle) between lo and hi: neither the proxy nor the backend."""
        other = idle = 0.0
        i = max(bisect.bisect_right(self.starts, lo) - 1, 0)
        while i < len(self.runs) and self.runs[i][0] < hi:
            until = self.runs[i + 1][0] if i + 1 < len(self.runs) else hi
            took = max(0.0, min(hi, until) - max(lo, self.runs[i][0]))
            if self.runs[i][1] == "0":
                idle += took
            elif self.runs[i][1] not in self.ours:
                other += took
            i += 1
        return other, idle


def self_test():
    """Three calls through a proxy (fd 7: client, fd 8: backend): two answers passed on in two writes, the last read
    in two parts and written in one; a sample in each request (`scripts/test`)."""
    lines = []

    def traced(who, tid, at_us, until_us, nr, fd, result):
        for what, t, tail in (("enter", at_us, f"({fd:x}, 7f00, 4000, 0, 0, 0)"), ("exit", until_us, f"= {result}")):
            lines.append(f"  {who} {tid} [000] {1000 + t / 1e6:.6f}: raw_syscalls:sys_{what}: NR {nr} {tail}")

    def syscall(at_us, nr, fd, result):
        # The proxy's; writes take 2 µs, the rest no time.
        traced("proxy", 42, at_us, at_us + (2 if nr in WRITES else 0), nr, fd, result)

    for call, start in enumerate((0, 1000, 2000)):
        syscall(start, 45, 7, 40)  # the request
        # A sample within it (a sample line has no CPU field when the trace mixes events).
        at = f"{1000 + (start + 5) / 1e6:.6f}"
        lines.append(f"  proxy 42 {at}:      25000 cpu-clock/period=25000/:      55592aec867a "
                     "gateway::Call<gateway::Body<u8>>::poll+0x2da (/bin/gateway)")
        syscall(start + 12, 44, 8, 40)
        if call < 2:
            syscall(start + 100, 45, 8, 576)  # the answer read whole, passed on in two writes (head first, as nginx)
            syscall(start + 108, 20, 7, 58)
            syscall(start + 113, 20, 7, 518)
        else:
            syscall(start + 100, 45, 8, 566)  # the answer in two parts
            syscall(start + 106, 44, 7, 566)
            syscall(start + 130, 45, 8, 10)
            syscall(start + 133, 44, 7, 10)
        syscall(start + 140, 232, 3, 1)  # a wait between calls: no leg
    syscall(5000, 45, 7, -11)  # a failed read starts no leg
    syscall(5001, 44, 8, 40)
    got = summary("proxy", lines)
    assert short("<a::Map<F, G<u8>> as core::Future>::poll") == "<a::Map<> as core::Future>::poll"
    want = "\n".join([
        "proxy: request 12 µs (n=3), passed on in 14; answer 8 µs (n=3), passed on in 15; "
        "answer, trailers 3 µs (n=1), passed on in 5",
        "  request: 25.0 µs sampled a leg",
        "    100.0 %  gateway::Call<>::poll",
    ])
    assert got == want, f"path-gaps self-test: got {got!r}, want {want!r}"

    # Whole calls: h2load (fd 3, and its log file, fd 4) on CPU 1; the proxy (fd 7: client, fd 8: backend), the
    # backend and a busy loop sharing CPU 0, which is idle from the second call's answer on.
    lines = []

    def switch(cpu, at_us, to, tid):
        lines.append(f"  x 1 [{cpu:03}] {1000 + at_us / 1e6:.6f}: sched:sched_switch: prev_comm=x prev_pid=1"
                     f" prev_prio=120 prev_state=S ==> next_comm={to} next_pid={tid} next_prio=120")

    switch(0, -5, "loop", 70)
    for call, start in enumerate((0, 1000, 2000)):
        traced("h2load", 50, start, start + 2, 20, 3, 62)  # the request
        switch(1, start + 3, "swapper/1", 0)  # h2load's CPU: not the proxy's
        switch(0, start + 8, "proxy", 42)
        traced("proxy", 42, start + 10, start + 11, 45, 7, 62)
        traced("proxy", 42, start + 20, start + 22, 44, 8, 62)
        switch(0, start + 24, "backend", 60)
        traced("backend", 60, start + 25, start + 26, 45, 9, 62)
        traced("backend", 60, start + 40, start + 42, 20, 9, 566)  # the answer in two writes
        traced("backend", 60, start + 43, start + 45, 20, 9, 10)
        switch(0, start + 46, "proxy", 42)
        traced("proxy", 42, start + 47, start + 48, 45, 8, 576)
        traced("proxy", 42, start + 55, start + 57, 20, 7, 58)  # passed on head first
        traced("proxy", 42, start + 58, start + 60, 20, 7, 518)
        switch(0, start + 61, *(("loop", 70) if call == 0 else ("swapper/0", 0)))
        traced("h2load", 50, start + 70, start + 71, 0, 3, 576)
        traced("h2load", 50, start + 72, start + 73, 1, 4, 25)  # its log: not the call
    traced("h2load", 50, 3000, 3002, 20, 3, 62)
    got = whole_calls("proxy", {"42"}, {"60"}, lines)
    want = "\n".join([
        "proxy: a call end to end 1000 µs (n=3); each step, from the end of the one before: µs (the proxy's CPU"
        " meanwhile: µs running another process / idle)",
        "  the proxy has read the request         11  (8 / 0)",
        "  the proxy has passed it on             11  (0 / 0)",
        "  the backend has read it                 4  (0 / 0)",
        "  the backend has written its answer     19  (0 / 0)",
        "  the proxy has read the answer           3  (0 / 0)",
        "  the proxy has passed it on             12  (0 / 0)",
        "  h2load has read it                     11  (0 / 10)",
        "  h2load starts its next request        929  (0 / 929)",
    ])
    assert got == want, f"path-gaps self-test (whole calls): got {got!r}, want {want!r}"
    print("path-gaps: self-test passed")


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        self_test()
    elif sys.argv[1:2] == ["--around"]:
        if len(sys.argv) != 5:
            sys.exit("usage: path-gaps.py --around NAME PROXY_THREADS BACKEND_THREADS < trace")
        name, proxy, backend = sys.argv[2:]
        print(whole_calls(name, set(proxy.split(",")), set(backend.split(",")), sys.stdin))
    else:
        print(summary(sys.argv[1] if len(sys.argv) > 1 else "proxy", sys.stdin))
