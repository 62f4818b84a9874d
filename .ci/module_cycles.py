#!/usr/bin/env python3
"""No import circle among the modules of any crate (run by .ci/architecture-check).

A crate's modules form a graph: module A depends on module B when A's
non-test source names `crate::b::…`, `super::…` resolving to B, or (in a
folder module) `use child::…`. A parent naming its own descendants is
composition (declaring and re-exporting children), not a dependency, so
those edges are left out. Any strongly connected component of two or more
modules is a circle: one of them owns a type the other needs and also needs
the other. The usual fix is a `model.rs` that both import (the store and the
logic of a feature both depend on the model, never on each other).

Prints each circle with its edges and exits 1 when there is one.
"""

import os
import re
import sys
from collections import defaultdict

PATH_USE = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
CHILD_USE = re.compile(r"\buse\s+([a-z_][a-z0-9_]*)::")


def modules(src):
    """Module path (tuple of names) -> file, for one crate's src/."""
    found = {}
    for root, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            parts = os.path.relpath(path, src)[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]):
                parts = []
            found[tuple(parts)] = path
    return found


def production_source(path):
    """The file without its `#[cfg(test)]` tail and line comments."""
    with open(path, encoding="utf-8") as file:
        text = file.read()
    tests = text.find("#[cfg(test)]")
    if tests >= 0:
        text = text[:tests]
    return re.sub(r"//.*", "", text)


def longest_module(found, base, names):
    for end in range(len(names), -1, -1):
        candidate = tuple(base + names[:end])
        if candidate in found:
            return candidate
    return None


def dependencies(found):
    graph = defaultdict(set)
    for module, path in found.items():
        text = production_source(path)
        is_folder = os.path.basename(path) in ("mod.rs", "lib.rs", "main.rs")
        for match in PATH_USE.finditer(text):
            names = match.group(2).split("::")[1:]
            if match.group(1) == "crate":
                base = []
            else:
                base = list(module[:-1])
                while names and names[0] == "super":
                    base, names = base[:-1], names[1:]
            target = longest_module(found, base, names)
            if target is not None:
                graph[module].add(target)
        if is_folder:
            for match in CHILD_USE.finditer(text):
                target = module + (match.group(1),)
                if target in found:
                    graph[module].add(target)
    # A module naming itself or its own descendants is composition.
    return {m: {t for t in targets if t[: len(m)] != m} for m, targets in graph.items()}


def circles(nodes, graph):
    """Tarjan's strongly connected components of size > 1."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return found


def name(module):
    return "::".join(module) or "lib"


def main():
    failed = False
    for crate in sorted(os.listdir("crates")):
        src = os.path.join("crates", crate, "src")
        if not os.path.isdir(src):
            continue
        found = modules(src)
        graph = dependencies(found)
        for component in circles(found, graph):
            failed = True
            members = set(component)
            print(f"  crates/{crate}: {', '.join(sorted(name(m) for m in component))}", file=sys.stderr)
            for module in sorted(component):
                for target in sorted(graph.get(module, ())):
                    if target in members:
                        print(f"    {name(module)} -> {name(target)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
