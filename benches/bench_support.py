"""What the benchmark scripts share: the release binary, the e2e fixtures
(tansu, SeaweedFS, the proxy) and the peak RSS of a process."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("KAFKA_LFS_PROXY_BIN", str(REPO / "target" / "release" / "kafka-lfs-proxy"))
sys.path.insert(0, str(REPO / "tests" / "e2e"))
import conftest  # noqa: E402,F401  (re-exported)


def vm_hwm_kib(pid):
    """Peak resident set size (VmHWM) of a running process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def vm_hwm_mib(pid):
    return round(vm_hwm_kib(pid) / 1024, 1)


def percentile(sorted_values, q):
    """The q-quantile (0..1) of an ascending list, rounded for reports."""
    return round(sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))], 3)


def cpu_seconds(pid):
    """User + system CPU time a process (and its reaped children) has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def histogram_totals(metrics_text, name):
    """(sum, count) of a Prometheus histogram over all its label sets."""
    total, count = 0.0, 0.0
    for line in metrics_text.splitlines():
        if line.startswith(name + "_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith(name + "_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count
