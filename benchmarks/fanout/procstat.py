"""What /proc says about a process: CPU time, resident memory, and the drops of its UDP sockets."""

from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of the process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # fields 14 and 15 of proc(5)


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def udp_drops_by_inode() -> dict[int, int]:
    """inode -> datagrams dropped on arrival (receive buffer full) for every UDP socket of this network
    namespace (the last column of /proc/net/udp)."""
    drops: dict[int, int] = {}
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(path) as fh:
                lines = fh.readlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            drops[int(fields[9])] = int(fields[12])
    return drops


def udp_drops(pids: list[int]) -> int:
    """Datagrams dropped so far on the UDP sockets the processes hold now."""
    table = udp_drops_by_inode()
    total = 0
    for pid in pids:
        try:
            inodes = socket_inodes(pid)
        except FileNotFoundError:
            continue
        total += sum(table.get(inode, 0) for inode in inodes)
    return total


def udp_rcvbuf_errors() -> int:
    """The namespace's UDP RcvbufErrors counter (/proc/net/snmp)."""
    with open("/proc/net/snmp") as fh:
        rows = [line.split() for line in fh if line.startswith("Udp:")]
    header, values = rows[0], rows[1]
    return int(values[header.index("RcvbufErrors")])


MACHINE_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def machine_times() -> dict[str, float]:
    """Seconds the whole machine spent in each state (the `cpu` line of /proc/stat, all cores)."""
    with open("/proc/stat") as fh:
        values = fh.readline().split()[1:1 + len(MACHINE_FIELDS)]
    return {name: int(v) / CLK_TCK for name, v in zip(MACHINE_FIELDS, values, strict=True)}
