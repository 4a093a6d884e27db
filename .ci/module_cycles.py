#!/usr/bin/env python3
"""Fails if the files of a crate import each other in a cycle.

For every crate in the workspace, each source file is a module; a file depends on another when it
uses an item from it (`use crate::a::b`, `use super::x`, or a `crate::a::...` path in code). `mod`
declarations and `pub use` re-exports (a module's public face) are not dependencies. Prints every
cycle found and exits 1, or exits 0.

Usage: .ci/module_cycles.py [crate_src_dir ...]   (default: every */src of the workspace)
"""

import pathlib
import re
import sys

PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")


def modules(src):
    """Maps module paths (tuples) to files."""
    found = {}
    for file in src.rglob("*.rs"):
        parts = list(file.relative_to(src).with_suffix("").parts)
        if parts[-1] in ("lib", "main", "mod"):
            parts = parts[:-1]
        found[tuple(parts)] = file
    return found


def resolve(path, mods):
    """The longest prefix of `path` that is a module of the crate."""
    for end in range(len(path), -1, -1):
        if tuple(path[:end]) in mods:
            return tuple(path[:end])
    return ()


def code_lines(text):
    """The file's lines without comments, `mod` declarations, `pub use` re-exports and tests."""
    lines = []
    in_tests = False
    depth = 0
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#[cfg(test)]") or stripped.startswith("#[cfg(all(test"):
            in_tests = True
            depth = 0
            continue
        if in_tests:
            depth += line.count("{") - line.count("}")
            if depth <= 0 and "}" in line:
                in_tests = False
            continue
        if stripped.startswith("//"):
            continue
        if re.match(r"(pub(\([^)]*\))?\s+)?mod\s", stripped):
            continue
        if re.match(r"pub(\([^)]*\))?\s+use\s", stripped):
            continue
        lines.append(line.split("//")[0])
    return lines


def dependencies(src):
    mods = modules(src)
    graph = {module: set() for module in mods}
    for module, file in mods.items():
        text = "\n".join(code_lines(file.read_text()))
        # `use crate::{a, b::c}` groups: expand the first level.
        for group in re.finditer(r"\b(crate|super)::\{([^}]*)\}", text):
            base = [] if group.group(1) == "crate" else list(module[:-1])
            for item in group.group(2).split(","):
                name = item.strip().split("::")
                if name and name[0]:
                    target = resolve(base + name, mods)
                    if target != module and target in graph:
                        graph[module].add(target)
        # `use self::child::...` and `use child::...` for a child module declared here.
        children = set(re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", file.read_text(), re.M))
        for child in re.finditer(r"\buse\s+(?:self::)?([a-z_][a-z0-9_]*)::", text):
            if child.group(1) in children:
                target = resolve(list(module) + [child.group(1)], mods)
                if target != module and target in graph:
                    graph[module].add(target)
        for match in PATH.finditer(text):
            base = [] if match.group(1) == "crate" else list(module[:-1])
            parts = [p for p in match.group(2).split("::") if p]
            target = resolve(base + parts, mods)
            # The crate root's own items (re-exported or not) are not a file dependency.
            if target != module and target != () and target in graph:
                # A child using its parent module (`super::X`) is part of one concept's files
                # only when the parent re-exports it; it still counts.
                graph[module].add(target)
    return graph, mods


def cycles(graph):
    found = []
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for next_node in sorted(graph[node]):
            if state.get(next_node) == "open":
                found.append(stack[stack.index(next_node):] + [next_node])
            elif next_node not in state:
                visit(next_node)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def main():
    roots = [pathlib.Path(arg) for arg in sys.argv[1:]]
    if not roots:
        workspace = pathlib.Path(__file__).resolve().parent.parent
        roots = sorted(p for p in workspace.glob("*/src") if p.is_dir())
        roots += sorted(p for p in workspace.glob("*/*/src") if p.is_dir() and "target" not in p.parts)
    failed = False
    for src in roots:
        graph, mods = dependencies(src)
        for cycle in cycles(graph):
            failed = True
            names = [str(mods[m].relative_to(src)) for m in cycle]
            print(f"{src}: import cycle: {' -> '.join(names)}")
    if failed:
        return 1
    print(f"no import cycle between files in {len(roots)} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
