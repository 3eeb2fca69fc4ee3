#!/usr/bin/env python3
"""The crate's module dependency graph, read from the code (`crate::` and
`super::` paths outside comments and test modules).

    python3 scripts/module-graph.py            folders (src/<top>/, kafka/<layer>/)
    python3 scripts/module-graph.py --check    exit 1 when an import points the wrong way

The layering it checks is the README's: app -> http / rr / lfs / stages ->
kafka::client -> kafka::relay -> kafka::auth -> kafka::wire; config is read
only by app; leaves (metrics, health, shutdown, backoff, tls, capture)
import no feature module.
"""
import collections
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
LEAVES = {"metrics", "health", "shutdown", "backoff", "tls", "capture", "inspect", "limits"}
# (importer, imported): never allowed.
FORBIDDEN_TARGETS = {
    "kafka.wire": {"kafka.auth", "kafka.relay", "kafka.client"},
    "kafka.auth": {"kafka.relay", "kafka.client"},
    "kafka.relay": {"kafka.client"},
}
FEATURES = {"app", "config", "http", "rr", "lfs", "stages", "policy"}
ALLOWED_FEATURE_IMPORTS = {
    "app": FEATURES - {"app"},
    "config": {"lfs"},
    "http": {"lfs", "rr", "policy"},
    "rr": set(),
    "lfs": set(),
    "stages": {"lfs", "policy"},
    "policy": set(),
}


def node(parts):
    """`kafka.<layer>` for the Kafka folders, else the top folder."""
    if not parts:
        return None
    if parts[0] == "kafka" and len(parts) > 1:
        return "kafka." + parts[1]
    return parts[0]


def module_path(path):
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    return rel


def strip(source):
    source = re.split(r"#\[cfg\(test\)\]\s*(?:#\[path[^\]]*\]\s*)?mod tests", source)[0]
    return "\n".join(line.split("//")[0] for line in source.splitlines())


def graph():
    edges = collections.defaultdict(set)
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".rs") or name.endswith("_tests.rs"):
                continue
            path = os.path.join(folder, name)
            mod = module_path(path)
            if mod in (["main"], ["lib"]):
                continue
            me = node(mod)
            code = strip(open(path, encoding="utf-8").read())
            targets = [m.group(1).split("::") for m in re.finditer(r"\bcrate::((?:[a-z_]+::)*[a-z_]+)", code)]
            is_mod_rs = name == "mod.rs"
            for m in re.finditer(r"\b((?:super::)+)([a-z_]+(?:::[a-z_]+)*)", code):
                up = m.group(1).count("super::")
                base = mod if is_mod_rs else mod[:-1]
                base = base[: len(base) - (up - 1)] if up > 1 else base
                targets.append(base + m.group(2).split("::"))
            for parts in targets:
                target = node(parts)
                if target and target != me:
                    edges[me].add(target)
    return edges


def violations(edges):
    out = []
    for src, targets in edges.items():
        for dst in targets:
            if dst in FORBIDDEN_TARGETS.get(src, set()):
                out.append((src, dst, "a lower Kafka layer imports a higher one"))
            if src in LEAVES and (dst in FEATURES or dst.startswith("kafka")):
                out.append((src, dst, "a leaf module imports a feature"))
            if src.startswith("kafka") and dst in FEATURES:
                out.append((src, dst, "the Kafka layers import a feature"))
            if src in ALLOWED_FEATURE_IMPORTS and dst in FEATURES and dst not in ALLOWED_FEATURE_IMPORTS[src]:
                out.append((src, dst, "feature imports point one way only"))
    return sorted(out)


def main():
    edges = graph()
    if "--check" in sys.argv:
        bad = violations(edges)
        for src, dst, why in bad:
            print(f"{src} imports {dst}: {why}")
        print("module layering:", "violated" if bad else "ok")
        return 1 if bad else 0
    for src in sorted(edges):
        print(f"{src:14} -> {', '.join(sorted(edges[src]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
