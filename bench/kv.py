"""The key=value files the benchmark scripts write (one `key=value` per line), read
by both report writers (report.py, pod_report.py)."""

import os


def read_kv(path):
    """The file's keys and values; an empty dict if it does not exist."""
    out = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.rstrip("\n")
                if "=" in line:
                    k, v = line.split("=", 1)
                    out[k] = v
    return out
