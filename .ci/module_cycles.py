#!/usr/bin/env python3
"""Fails when the crate's modules depend on each other in a cycle.

Reads src/**/*.rs and builds the graph of modules from their references to
each other: `use crate::a::b`, paths such as `crate::a::b::f(..)` in code,
`super::` and `self::` resolved relative to the file's module, bare paths that
start with a child module or with a name a `use` brought in. Comments, doc
comments and string literals are ignored, and so are the bodies of
`#[cfg(test)]` items (a test may reach anywhere).

Nodes are the top-level modules (`db`, `cases`, `outbox`, ...) and, for a
module that is a folder, each of its direct children (`cases::store`,
`outbox::sms`, `platform::wecom`, ...). A reference to an item of a folder's
`mod.rs` is an edge to the folder's node; a reference to a name that `mod.rs`
re-exports from a child (`pub use store::X`) is an edge to that child, and the
re-export itself is not an edge.

The composition roots (`main`, `lib`, `app`) may depend on anything; nothing
but them, `demo` and `loadgen` may depend on `app`, `main`, `demo` or
`loadgen`.

Prints each cycle as `a -> b -> a` with one example `file:line` per edge and
exits 1 if there is a cycle or a forbidden edge. `--all` lists every
elementary cycle instead of one shortest cycle through each edge that closes
one.

Standard library only.
"""

import os
import re
import sys
from collections import defaultdict, deque

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SRC = os.path.join(ROOT, "src")
CRATE_NAME = "rollcall"  # how the binary (main.rs) names the library

ROOTS = {"main", "lib", "app"}  # may depend on anything
LEAVES_OF_ROOT = {"app", "main", "demo", "loadgen"}  # only these may depend on them
MAY_USE_ROOT = {"app", "main", "lib", "demo", "loadgen"}

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
KEYWORDS = {
    "as", "break", "const", "continue", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
    "return", "static", "struct", "trait", "true", "type", "unsafe", "use", "where",
    "while", "async", "await", "dyn",
}


# ---------------------------------------------------------------- lexing


def strip(text):
    """Blank out comments, string, byte-string, raw-string and char literals,
    keeping every newline so that line numbers stay right."""
    out = []
    i, n = 0, len(text)

    def blank(s):
        return "".join("\n" if c == "\n" else " " for c in s)

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(text[i:j]))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(text[i:j]))
            i = j
        elif re.match(r'(?:b|c)?r#*"', text[i:i + 300]) and not _ident_before(text, i):
            m = re.match(r'(?:b|c)?r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(blank(text[i:j]))
            i = j
        elif (c == '"' or (c in "bc" and text.startswith('"', i + 1))) and not _ident_before(text, i):
            j = i + (1 if c == '"' else 2)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
            out.append(blank(text[i:j]))
            i = j
        elif c == "'" or (c == "b" and text.startswith("'", i + 1) and not _ident_before(text, i)):
            k = i + (1 if c == "'" else 2)
            if k < n and text[k] == "\\":  # escaped char literal
                j = k + 1
                while j < n and text[j] != "'":
                    j += 1
                j += 1
                out.append(blank(text[i:j]))
                i = j
            elif k + 1 < n and text[k + 1] == "'":  # 'x'
                out.append(blank(text[i:k + 2]))
                i = k + 2
            else:  # a lifetime or a label
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _ident_before(text, i):
    return i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")


def matching(text, i, open_="{", close="}"):
    """Index just past the bracket that closes the one at text[i]."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == open_:
            depth += 1
        elif text[j] == close:
            depth -= 1
            if depth == 0:
                return j + 1
    return len(text)


def drop_cfg_test(text):
    """Blank out every item annotated `#[cfg(test)]`; return the text and the
    names of `#[cfg(test)] mod name;` file modules."""
    test_files = set()
    out = list(text)
    for m in re.finditer(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]", text):
        j = m.end()
        # further attributes
        while True:
            a = re.match(r"\s*#\s*\[", text[j:])
            if not a:
                break
            j = matching(text, j + a.end() - 1, "[", "]")
        item = text[j:]
        mm = re.match(r"\s*(?:pub(?:\s*\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*;", item)
        if mm:
            test_files.add(mm.group(1))
        is_use = re.match(r"\s*(?:pub(?:\s*\([^)]*\))?\s+)?use\b", item) is not None
        k, depth, end = j, 0, len(text)
        while k < len(text):
            ch = text[k]
            if ch == ";" and depth == 0:
                end = k + 1
                break
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0 and not is_use:
                    end = k + 1
                    break
            k += 1
        for p in range(m.start(), end):
            if out[p] != "\n":
                out[p] = " "
    return "".join(out), test_files


# ---------------------------------------------------------------- modules


class Crate:
    def __init__(self, src):
        self.src = src
        self.files = {}  # relative file -> module path (tuple)
        self.folders = set()  # module paths that are folders
        for dirpath, _dirs, files in os.walk(src):
            for f in files:
                if not f.endswith(".rs"):
                    continue
                full = os.path.join(dirpath, f)
                rel = os.path.relpath(full, src)
                parts = rel[:-3].split(os.sep)
                if parts[-1] == "mod":
                    parts = parts[:-1]
                    self.folders.add(tuple(parts))
                if parts in (["lib"], ["main"]):
                    self.files[rel] = (parts[0],)  # a root, named for reporting
                else:
                    self.files[rel] = tuple(parts)
        self.modules = {p for p in self.files.values()}
        self.reexports = defaultdict(dict)  # folder -> name -> child

    def is_module(self, path):
        return tuple(path) in self.modules

    def children(self, path):
        path = tuple(path)
        return {m[len(path)] for m in self.modules if len(m) > len(path) and m[: len(path)] == path}

    def node_of(self, segs):
        """The graph node a crate-absolute path lands in."""
        if not segs or not self.is_module(segs[:1]):
            return None
        top = segs[0]
        if (top,) in self.folders and len(segs) > 1:
            if self.is_module((top, segs[1])):
                return top + "::" + segs[1]
            child = self.reexports[(top,)].get(segs[1])
            if child:
                return top + "::" + child
        return top

    def node_of_module(self, mod):
        return self.node_of(list(mod))


# ---------------------------------------------------------------- use trees


def tokens(s):
    return re.findall(IDENT + r"|::|[{},*;]", s)


def use_leaves(toks):
    """The leaves of a use tree: (segments, bound name or None)."""
    pos = 0

    def tree(prefix):
        nonlocal pos
        segs = list(prefix)
        leaves = []
        while pos < len(toks):
            t = toks[pos]
            if t == "::":
                pos += 1
            elif t == "{":
                pos += 1
                while pos < len(toks) and toks[pos] != "}":
                    if toks[pos] == ",":
                        pos += 1
                        continue
                    leaves.extend(tree(segs))
                pos += 1
                return leaves
            elif t == "*":
                pos += 1
                return [(segs, None)]
            elif t in (",", "}", ";"):
                return [(segs, segs[-1] if segs else None)]
            elif t == "as":
                alias = toks[pos + 1] if pos + 1 < len(toks) else None
                pos += 2
                return [(segs, None if alias == "_" else alias)]
            else:
                segs.append(t)
                pos += 1
        return [(segs, segs[-1] if segs else None)] if segs else leaves

    return tree([])


# ---------------------------------------------------------------- scanning


class FileScan:
    def __init__(self, crate, rel):
        self.crate = crate
        self.rel = rel
        self.mod = crate.files[rel]
        with open(os.path.join(crate.src, rel), encoding="utf-8") as f:
            raw = f.read()
        self.text, self.test_files = drop_cfg_test(strip(raw))
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", self.text)]
        self.inline = self._inline_modules()
        self.imports = {}  # bound name -> crate-absolute segments
        self.refs = []  # (crate-absolute segments, offset, is_reexport_of_child)

    def line(self, off):
        lo, hi = 0, len(self.line_starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.line_starts[mid] <= off:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    def _inline_modules(self):
        spans = []
        for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{", self.text):
            spans.append((m.end() - 1, matching(self.text, m.end() - 1), m.group(1)))
        return spans

    def module_at(self, off):
        mod = list(self.mod) if self.mod not in (("lib",), ("main",)) else []
        for start, end, name in sorted(self.inline):
            if start < off < end:
                mod.append(name)
        return mod

    def absolute(self, segs, off, in_use):
        """Crate-absolute segments for a path written in this file, or None
        when it names something outside the crate."""
        if not segs:
            return None
        here = self.module_at(off)
        first = segs[0]
        if first == "crate" or (first == CRATE_NAME and self.mod == ("main",)):
            return list(segs[1:])
        if first == "self":
            return here + list(segs[1:])
        if first == "super":
            base, k = list(here), 0
            while k < len(segs) and segs[k] == "super":
                base, k = base[:-1], k + 1
            return base + list(segs[k:])
        if first in self.imports:
            return self.imports[first] + list(segs[1:])
        if first in self.crate.children(here) or (not here and self.crate.is_module([first])):
            return here + list(segs)
        return None

    def scan_uses(self):
        uses = []
        for m in re.finditer(r"(\bpub(?:\s*\([^)]*\))?\s+)?\buse\s+([^;]*);", self.text):
            start = m.start(2)
            leaves = use_leaves(tokens(m.group(2)))
            pub = m.group(1) is not None
            for segs, bound in leaves:
                ab = self.absolute(segs, start, True)
                if ab is None:
                    continue
                if bound and bound != "self":
                    self.imports[bound] = ab
                elif bound == "self" and ab:
                    self.imports[ab[-1]] = ab[:-1] if ab[-1] == "self" else ab
                ab = [s for s in ab if s != "self"]
                here = self.module_at(start)
                # `pub use child::X` in a folder's mod.rs: a re-export, not a use
                reexport = (
                    pub
                    and tuple(here) in self.crate.folders
                    and len(ab) > len(here)
                    and ab[: len(here)] == here
                    and self.crate.is_module(ab[: len(here) + 1])
                )
                if reexport and bound:
                    self.crate.reexports[tuple(here)][bound] = ab[len(here)]
                uses.append((ab, start, reexport))
            uses.append((None, m.start(), m.end()))
        return uses

    def scan(self):
        uses = self.scan_uses()
        spans = [(u[1], u[2]) for u in uses if u[0] is None]
        self.refs = [u for u in uses if u[0] is not None]
        path_re = re.compile(r"(?<![A-Za-z0-9_:])(" + IDENT + r"(?:\s*::\s*" + IDENT + r")+)")
        for m in path_re.finditer(self.text):
            off = m.start()
            if any(a <= off < b for a, b in spans):
                continue
            segs = [s.strip() for s in m.group(1).split("::")]
            if segs[0] in KEYWORDS - {"self", "super", "crate"}:
                continue
            ab = self.absolute(segs, off, False)
            if ab is not None:
                self.refs.append((ab, off, False))


def build_graph(crate):
    scans = [FileScan(crate, rel) for rel in sorted(crate.files)]
    test_only = set()
    for s in scans:
        for name in s.test_files:
            here = s.module_at(0)
            test_only.add(tuple(here + [name]))
    scans = [s for s in scans if not any(s.mod[: len(t)] == t for t in test_only)]
    # re-exports first, so that paths through them resolve to the child
    for s in scans:
        s.scan_uses()
    edges = {}  # (a, b) -> "file:line"
    for s in scans:
        s.imports = {}
        s.scan()
        src = crate.node_of_module(s.mod) if s.mod not in (("lib",), ("main",)) else s.mod[0]
        for ab, off, reexport in s.refs:
            if reexport:
                continue
            dst = crate.node_of(ab)
            if dst is None or dst == src:
                continue
            edges.setdefault((src, dst), "src/%s:%d" % (s.rel, s.line(off)))
    return edges


# ---------------------------------------------------------------- cycles


def sccs(nodes, adj):
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(adj[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def shortest_path(adj, start, goal, allowed):
    prev = {start: None}
    q = deque([start])
    while q:
        v = q.popleft()
        if v == goal:
            break
        for w in sorted(adj[v]):
            if w in allowed and w not in prev:
                prev[w] = v
                q.append(w)
    if goal not in prev:
        return None
    path, v = [], goal
    while v is not None:
        path.append(v)
        v = prev[v]
    return path[::-1]


def canonical(cycle):
    """Rotate a cycle (without its repeated end) to start at its least node."""
    k = cycle.index(min(cycle))
    return tuple(cycle[k:] + cycle[:k])


def elementary_cycles(comp, adj):
    """Every elementary cycle inside one strongly connected component."""
    found = set()
    order = sorted(comp)
    for i, s in enumerate(order):
        allowed = set(order[i:])
        stack = [(s, [s])]
        while stack:
            v, path = stack.pop()
            for w in sorted(adj[v]):
                if w == s:
                    found.add(canonical(path))
                elif w in allowed and w not in path:
                    stack.append((w, path + [w]))
    return sorted(found)


def main(argv):
    crate = Crate(SRC)
    edges = build_graph(crate)
    adj = defaultdict(set)
    nodes = set()
    for a, b in edges:
        adj[a].add(b)
        nodes |= {a, b}

    bad = 0
    forbidden = sorted((a, b) for a, b in edges if b in LEAVES_OF_ROOT and a not in MAY_USE_ROOT)
    for a, b in forbidden:
        print("forbidden: %s -> %s (%s): only %s may depend on %s"
              % (a, b, edges[(a, b)], ", ".join(sorted(MAY_USE_ROOT)), b))
        bad += 1

    cycles = set()
    comps = sccs(nodes, adj)
    for comp in comps:
        members = set(comp)
        if "--all" in argv:
            cycles.update(elementary_cycles(comp, adj))
            continue
        for a in comp:
            for b in adj[a]:
                if b in members:
                    back = shortest_path(adj, b, a, members)
                    if back:
                        cycles.add(canonical([a] + back[:-1]))
    for cyc in sorted(cycles, key=lambda c: (len(c), c)):
        ring = list(cyc) + [cyc[0]]
        print(" -> ".join(ring))
        for a, b in zip(ring, ring[1:]):
            print("    %s -> %s  %s" % (a, b, edges[(a, b)]))
    if cycles:
        print("%d module cycle(s) in %d tangle(s) of %s"
              % (len(cycles), len(comps), "; ".join(", ".join(c) for c in comps)))
    if cycles or bad:
        return 1
    print("no module cycles (%d modules, %d edges)" % (len(nodes), len(edges)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
