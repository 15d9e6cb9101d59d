#!/usr/bin/env python3
"""One reading of the CPU time the whole machine and one process tree have used so far.

`scripts/bench` takes a reading before and after its measurements; `scripts/bench-report.py`
subtracts them to tell how much of the machine other work used meanwhile. The load average
cannot tell that: it counts the bench's own proxies and load, and the build before them.

Prints one line: `WALL MACHINE_TICKS TREE_TICKS TICKS_PER_SECOND`, where

- MACHINE_TICKS is user + nice + system + irq + softirq time over all cores (`/proc/stat`).
  Without CONFIG_IRQ_TIME_ACCOUNTING a tick that lands in an interrupt or softirq is counted
  in those columns and also in the stime of the process it interrupted, so leaving them out
  made the bench's own tree outweigh the machine (a negative "other work"). With the setting,
  that time is charged to no process and shows as other work: on loopback it is mostly the
  bench's own packets, which makes the figure err towards calling a run loaded;
- TREE_TICKS is the user and system time of the process ROOT_PID and of every live process
  below it, each with the time of the children it has already reaped (`/proc/PID/stat`
  fields 14-17): a process that ended is counted in its parent's children time, one that
  still runs is found by walking the tree.
"""

import os
import sys
import time


def machine_ticks():
    with open("/proc/stat") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    return user + nice + system + irq + softirq


def process_table():
    """Parent and CPU ticks (own and reaped children's) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # ended while we looked
        # The command name is in parentheses and may hold spaces: split after it.
        fields = stat[stat.rindex(")") + 2:].split()
        parent = int(fields[1])
        ticks = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
        table[int(entry)] = (parent, ticks)
    return table


def tree_ticks(root):
    table = process_table()
    children = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += table.get(pid, (0, 0))[1]
        stack.extend(children.get(pid, []))
    return total


def main():
    if len(sys.argv) != 2:
        print("usage: cpu-snapshot.py ROOT_PID", file=sys.stderr)
        return 2
    root = int(sys.argv[1])
    print(f"{time.time():.3f} {machine_ticks()} {tree_ticks(root)} {os.sysconf('SC_CLK_TCK')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
