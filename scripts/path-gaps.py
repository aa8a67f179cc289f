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

The client's side of the calls (`AROUND=N` in passthrough-p50) comes from a trace of every process instead:

    perf record -a -e raw_syscalls:sys_enter,raw_syscalls:sys_exit -o around.data   # during the calls
    perf script -i around.data | scripts/path-gaps.py --around "$(cat /proc/PID/comm)" NAME

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
# `perf script`'s lines: command, thread, [CPU] (left out on sample lines when the trace mixes events), time, event.
LINE = re.compile(r"^\s*(\S.*?)\s+(\d+)\s+(?:\[\d+\]\s+)?([\d.]+):\s+(.*)$")
# The load client, whose calls a system-wide trace holds too.
CLIENT = "h2load"
SYSCALL = re.compile(r"^raw_syscalls:sys_(enter|exit):\s+NR (\d+) (.*)$")
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
    argument), its `exit` (its number and result, `None` when not a number), or a cpu-clock `sample` (the function
    and the ns it stands for)."""
    for line in lines:
        m = LINE.match(line)
        if not m:
            continue
        comm, tid, ts, event = m.group(1), m.group(2), float(m.group(3)) * 1e6, m.group(4)
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


def around(name, proxy, lines):
    """The client's side of one call in flight, from a system-wide trace (`perf record -a`) of the proxy's process
    (named `proxy`) and h2load: how long after the proxy's last write of an answer h2load has read it and has started
    writing its next call, and how long after that the proxy reads the call. A client woken by an answer's first
    write (nginx writes the head first) is running by the time the last comes; one woken by the last is not."""
    entered = {}
    moved = []  # (start, end, who, syscall, fd, bytes) of the reads and writes that moved data
    for who, tid, ts, kind, detail in events(lines):
        if who not in (proxy, CLIENT) or kind == "sample":
            continue
        if kind == "enter":
            entered[tid] = (*detail, ts)
            continue
        nr, result = detail
        call = entered.pop(tid, None)
        if call and call[0] == nr and nr in READS | WRITES and result is not None and result > 0:
            moved.append((call[2], ts, who, nr, call[1], result))
    moved.sort()
    answers = defaultdict(int)
    for _, _, who, nr, fd, size in moved:
        if who == proxy and nr in READS and size >= BIG:
            answers[fd] += 1
    if not answers:
        return f"{name}: no answers in the trace"
    backend = max(answers, key=answers.get)
    read_it, wrote, got = [], [], []
    written = client_read = client_wrote = None
    for start, end, who, nr, fd, _ in moved:
        if who == proxy and nr in WRITES and fd != backend:
            written, client_read, client_wrote = end, None, None
        elif written is None:
            continue
        elif who == CLIENT and nr in READS and client_read is None:
            client_read = end
        elif who == CLIENT and nr in WRITES and client_read is not None and client_wrote is None:
            client_wrote = start
        elif who == proxy and nr in READS and fd != backend and client_wrote is not None:
            read_it.append(client_read - written)
            wrote.append(client_wrote - written)
            got.append(start - client_wrote)
            written = None
    if not got:
        return f"{name}: no call followed an answer in the trace"
    return (f"{name}: after the proxy's last write of an answer, h2load has read it in {statistics.median(read_it):.0f}"
            f" µs and writes its next call at {statistics.median(wrote):.0f}; the proxy reads that call"
            f" {statistics.median(got):.0f} µs after (n={len(got)})")


def self_test():
    """Three calls through a proxy (fd 7: client, fd 8: backend): two answers passed on in two writes, the last read
    in two parts and written in one; a sample in each request (`scripts/test`)."""
    lines = []

    def syscall(at_us, nr, fd, result, tid=42):
        # Writes take 2 µs, the rest no time.
        took = 2 if nr in WRITES else 0
        ts, end = (f"{1000 + t / 1e6:.6f}" for t in (at_us, at_us + took))
        lines.append(f"  proxy {tid} [000] {ts}: raw_syscalls:sys_enter: NR {nr} ({fd:x}, 7f00, 4000, 0, 0, 0)")
        lines.append(f"  proxy {tid} [000] {end}: raw_syscalls:sys_exit: NR {nr} = {result}")

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

    # The client's side: the proxy (fd 7: client, fd 8: backend) and h2load (fd 3) in one trace. The first answer
    # leaves in one write; the others head first (as nginx), h2load reading the head before the rest is written.
    lines = []

    def traced(who, tid, at_us, until_us, nr, fd, result):
        for what, t, tail in (("enter", at_us, f"({fd:x}, 7f00, 4000, 0, 0, 0)"), ("exit", until_us, f"= {result}")):
            lines.append(f"  {who} {tid} [000] {1000 + t / 1e6:.6f}: raw_syscalls:sys_{what}: NR {nr} {tail}")

    for call, start in enumerate((0, 1000, 2000)):
        traced("proxy", 42, start + 100, start + 100, 45, 8, 576)  # the answer from the backend
        if call == 0:
            traced("proxy", 42, start + 105, start + 107, 44, 7, 576)
            traced("h2load", 50, start + 115, start + 117, 0, 3, 576)
            traced("h2load", 50, start + 120, start + 122, 20, 3, 62)
            traced("proxy", 42, start + 150, start + 151, 45, 7, 62)
        else:
            traced("proxy", 42, start + 105, start + 106, 20, 7, 58)
            traced("h2load", 50, start + 106, start + 108, 0, 3, 58)
            traced("proxy", 42, start + 107, start + 110, 20, 7, 518)
            traced("h2load", 50, start + 110, start + 111, 0, 3, 518)
            traced("h2load", 50, start + 112, start + 113, 20, 3, 62)
            traced("proxy", 42, start + 140, start + 141, 45, 7, 62)
        traced("backend", 60, start + 160, start + 161, 1, 9, 62)  # another process: not counted
    got = around("proxy", "proxy", lines)
    want = ("proxy: after the proxy's last write of an answer, h2load has read it in 1 µs and writes its next call at"
            " 2; the proxy reads that call 28 µs after (n=3)")
    assert got == want, f"path-gaps self-test (client side): got {got!r}, want {want!r}"
    print("path-gaps: self-test passed")


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        self_test()
    elif sys.argv[1:2] == ["--around"]:
        print(around(sys.argv[3], sys.argv[2], sys.stdin))
    else:
        print(summary(sys.argv[1] if len(sys.argv) > 1 else "proxy", sys.stdin))
