#!/usr/bin/env python3
"""Checks the layout rules of the architecture document (Workspace), so they keep holding.

  crate graph  from `cargo metadata` (resolve graph, normal dependencies, transitively): admin and
               the CLI never reach the worker runtime, ingest never links sqlx, the worker never
               links the CLI, the fleet depends on no clap or axum itself and on no worker, shared links no other wafleet
               crate, axum or sqlx.
  file cycles  per compiled crate (lib, bin, test target), a graph of its .rs files from `use`
               trees, `crate::`/`super::`/`self::` paths in code and `mod` declarations, with paths
               followed through `pub use` re-exports; edges between a module and its own ancestor
               or descendant are allowed; every strongly connected component of more than one file
               is reported with the lines that tie it.
  sizes        no file over 500 lines, no function over 80 lines outside tests. A file opts out
               with a line comment `// layout: <reason>` in its first 10 lines, a function with one
               within the 3 lines above its `fn`.

Test code is skipped for cycles and function sizes: `#[cfg(test)] mod x;` files, `#[test]`
functions, and a `#[cfg(test)]` + `mod tests {` block, which by house convention runs to the end of
the file (checked: anything after its closing brace is reported).

Usage: scripts/check-layout.py [--root DIR]. Exit 0 when clean, 1 with the list of violations.
Standard library only; the self-test is scripts/check_layout_test.py.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

MAX_FILE_LINES = 500
MAX_FN_LINES = 80

# (package, forbidden dependency names, why) — normal dependencies (not dev, not build), followed
# transitively, except for the names in DIRECT_ONLY.
CRATE_RULES = [
    ("wafleet-admin", {"wafleet-worker"}, "admin works over the fleet service layer, never the worker runtime"),
    ("wafleet-cli", {"wafleet-worker"}, "the CLI works over the fleet service layer, never the worker runtime"),
    ("wafleet-ingest", {"sqlx"}, "ingest never touches Postgres"),
    ("wafleet-worker", {"wafleet-cli"}, "the runtime does not link the CLI"),
    ("wafleet-fleet", {"clap", "axum", "wafleet-worker"}, "the service layer parses no arguments, serves no HTTP, calls no runtime"),
]
# shared: no other wafleet crate at all, and neither axum nor sqlx.
SHARED = "wafleet-shared"
SHARED_FORBIDDEN = {"axum", "sqlx"}
# Checked as direct dependencies only. The OTLP exporter of shared's telemetry links tonic, which
# links axum for its server side; what matters is that no wafleet library serves HTTP itself.
# shared's settings groups derive clap's `Args` so every binary parses the same variables; the
# fleet may take those plain structs, but it must not parse arguments itself.
DIRECT_ONLY = {"axum", "clap"}

LAYOUT_OPT_OUT = re.compile(r"^\s*//\s*layout:\s*\S")
TEST_ATTR = re.compile(r"#\[\s*(?:[\w:]*::)?test\b")
MOD_DECL = re.compile(r"(?<![\w$])mod\s+(r#)?(\w+)\s*([;{])")
USE_START = re.compile(r"(?<![\w$])use\s+")
CODE_PATH = re.compile(r"(?<![\w$:])(crate|super|self)((?:\s*::\s*\w+)+)")
FN_START = re.compile(r"(?<![\w$])fn\s+(r#)?\w+")
SKIP_DIRS = {"target", ".git", "node_modules", "fuzz"}


# ---------------------------------------------------------------- lexing


def strip_code(text: str) -> str:
    """Blanks comments and the contents of string and char literals, keeping every newline and
    every offset, so the code that is left can be searched for paths and braces."""
    out = list(text)
    i, n = 0, len(text)

    def blank(a: int, b: int) -> None:
        for k in range(a, min(b, n)):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if c == "/" and text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif c == "/" and text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif c in "rb" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.compile(r"b?r(#*)\"").match(text, i)
            if m:
                end = text.find('"' + m.group(1), m.end())
                end = n if end < 0 else end + 1 + len(m.group(1))
                blank(m.end(), end - 1 - len(m.group(1)))
                i = end
            elif text.startswith('b"', i) or text.startswith("b'", i):
                i += 1  # the literal itself is handled on the next turn
            else:
                i += 1
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            blank(i + 1, j)
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}', '{') or a lifetime ('a, 'static).
            m = re.compile(r"'(\\(?:u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)|[^\\'\n])'").match(text, i)
            if m:
                blank(i + 1, m.end() - 1)
                i = m.end()
            else:
                i += 1
        else:
            i += 1
    return "".join(out)


def match_brace(code: str, open_at: int) -> int:
    """Offset of the brace closing the one at `open_at` (len(code) when unbalanced)."""
    depth = 0
    for k in range(open_at, len(code)):
        if code[k] == "{":
            depth += 1
        elif code[k] == "}":
            depth -= 1
            if depth == 0:
                return k
    return len(code)


@dataclass
class Source:
    path: str  # relative to the root
    raw: str
    code: str  # stripped, with the test block blanked
    test_block_line: int | None  # 1-based line of `#[cfg(test)]` opening `mod tests {`
    problems: list[str] = field(default_factory=list)

    def line_of(self, offset: int) -> int:
        return self.code.count("\n", 0, offset) + 1


TEST_BLOCK = re.compile(r"^[ \t]*#\[cfg\(test\)\][ \t]*\n(?:[ \t]*#\[[^\n]*\][ \t]*\n)*[ \t]*(?:pub(?:\([\w: ]+\))?\s+)?mod\s+tests\s*\{", re.M)


def load_source(root: str, rel: str) -> Source:
    with open(os.path.join(root, rel), encoding="utf-8") as f:
        raw = f.read()
    code = strip_code(raw)
    src = Source(rel, raw, code, None)
    m = TEST_BLOCK.search(code)
    if m:
        src.test_block_line = src.line_of(m.start())
        close = match_brace(code, m.end() - 1)
        if code[close + 1 :].strip():
            src.problems.append(
                f"{rel}:{src.line_of(close + 1)}: code after the `#[cfg(test)] mod tests` block "
                "(house convention: the test module ends the file; the checker skips from it to the end)"
            )
        src.code = code[: m.start()] + re.sub(r"[^\n]", " ", code[m.start() :])
    return src


# ---------------------------------------------------------------- crate graph


def load_metadata(root: str) -> dict:
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        cwd=root, check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


def check_crate_graph(meta: dict) -> list[str]:
    names = {p["id"]: p["name"] for p in meta["packages"]}
    normal: dict[str, set[str]] = {}
    for node in meta["resolve"]["nodes"]:
        normal[node["id"]] = {
            d["pkg"] for d in node.get("deps", []) if any(k.get("kind") is None for k in d.get("dep_kinds", []))
        }
    by_name = {names[pid]: pid for pid in meta["workspace_members"]}

    def reach(pid: str) -> dict[str, list[str]]:
        """Every package reachable through normal dependencies, with one path to it."""
        seen = {pid: [names[pid]]}
        todo = [pid]
        while todo:
            cur = todo.pop()
            for dep in sorted(normal.get(cur, ())):
                if dep not in seen:
                    seen[dep] = seen[cur] + [names[dep]]
                    todo.append(dep)
        return seen

    problems = []
    rules = list(CRATE_RULES)
    if SHARED in by_name:
        others = {n for n in by_name if n.startswith("wafleet-") and n != SHARED}
        rules.append((SHARED, others | SHARED_FORBIDDEN, "shared is the contract only"))
    for pkg, forbidden, why in rules:
        if pkg not in by_name:
            problems.append(f"crate graph: package {pkg} not found in the workspace (rule: {why})")
            continue
        for dep, path in sorted(reach(by_name[pkg]).items(), key=lambda kv: kv[1]):
            if names[dep] not in forbidden or dep == by_name[pkg]:
                continue
            if names[dep] in DIRECT_ONLY and len(path) > 2:
                continue
            problems.append(f"crate graph: {pkg} depends on {names[dep]} via {' -> '.join(path)} ({why})")
    return problems


# ---------------------------------------------------------------- modules of a crate


@dataclass
class Module:
    path: tuple[str, ...]
    file: str
    children: dict[str, "Module"] = field(default_factory=dict)
    reexports: dict[str, tuple[tuple[str, ...], int]] = field(default_factory=dict)
    test_only: bool = False


@dataclass
class Crate:
    name: str
    root: Module
    files: dict[str, Source] = field(default_factory=dict)
    file_module: dict[str, tuple[str, ...]] = field(default_factory=dict)


def inline_modules(code: str) -> list[tuple[int, int, str]]:
    """(start, end, name) of every `mod name { ... }` in the code."""
    spans = []
    for m in MOD_DECL.finditer(code):
        if m.group(3) == "{":
            spans.append((m.start(), match_brace(code, m.end() - 1), m.group(2)))
    return spans


def module_at(base: tuple[str, ...], spans, offset: int) -> tuple[str, ...]:
    inner = [s for s in spans if s[0] <= offset <= s[1]]
    return base + tuple(name for _, _, name in sorted(inner))


def child_file(root: str, parent_file: str, owns_dir: bool, name: str) -> str | None:
    base = os.path.dirname(parent_file) if owns_dir else parent_file[: -len(".rs")]
    for cand in (os.path.join(base, name + ".rs"), os.path.join(base, name, "mod.rs")):
        if os.path.isfile(os.path.join(root, cand)):
            return os.path.normpath(cand)
    return None


def load_crate(root: str, name: str, root_file: str, sources: dict[str, Source]) -> Crate:
    def src(rel: str) -> Source:
        if rel not in sources:
            sources[rel] = load_source(root, rel)
        return sources[rel]

    top = Module((), root_file)
    crate = Crate(name, top)

    def walk(mod: Module, owns_dir: bool, seen: set[str]) -> None:
        if mod.file in seen:
            return
        seen.add(mod.file)
        s = src(mod.file)
        crate.files[mod.file] = s
        crate.file_module[mod.file] = mod.path
        spans = inline_modules(s.code)
        for m in MOD_DECL.finditer(s.code):
            here = module_at(mod.path, spans, m.start())
            parent = mod
            for seg in here[len(mod.path) :]:
                parent = parent.children.setdefault(seg, Module(parent.path + (seg,), mod.file))
            before = s.code[max(0, m.start() - 200) : m.start()]
            test_only = bool(re.search(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([\w: ]+\))?\s+)?$", before))
            if m.group(3) == "{":
                parent.children.setdefault(m.group(2), Module(here + (m.group(2),), mod.file))
                continue
            if here != mod.path:
                continue  # `mod x;` inside an inline module: not used in this workspace
            rel = child_file(root, mod.file, owns_dir, m.group(2))
            if rel is None:
                s.problems.append(f"{mod.file}:{s.line_of(m.start())}: no file for `mod {m.group(2)};`")
                continue
            child = Module(mod.path + (m.group(2),), rel, test_only=test_only or mod.test_only)
            mod.children[m.group(2)] = child
            walk(child, rel.endswith("mod.rs"), seen)

    walk(top, True, set())
    return crate


# ---------------------------------------------------------------- references


def parse_use_tree(text: str) -> list[tuple[list[str], str | None]]:
    """Expands a use tree (`a::{b, c::d as e, f::*}`) into (segments, alias) pairs."""
    tokens = re.findall(r"::|[{},*]|\w+", text)
    pos = 0

    def tree(prefix: list[str]) -> list[tuple[list[str], str | None]]:
        nonlocal pos
        segs = list(prefix)
        while pos < len(tokens):
            t = tokens[pos]
            if t == "{":
                pos += 1
                out = []
                while pos < len(tokens) and tokens[pos] != "}":
                    if tokens[pos] == ",":
                        pos += 1
                        continue
                    out += tree(segs)
                pos += 1
                return out
            if t == "::":
                pos += 1
                continue
            if t == "*":
                pos += 1
                return [(segs + ["*"], None)]
            if t in (",", "}"):
                return [(segs, None)]
            if t == "as":
                alias = tokens[pos + 1] if pos + 1 < len(tokens) else None
                pos += 2
                return [(segs, alias)]
            segs.append(t)
            pos += 1
        return [(segs, None)]

    return tree([])


@dataclass
class Ref:
    file: str
    line: int
    module: tuple[str, ...]  # the module the reference is written in
    segs: list[str]
    text: str


def absolute(ref_module: tuple[str, ...], segs: list[str], crate: Crate, file_mod: Module) -> list[str] | None:
    """Turns a path into one from the crate root, or None when it names another crate."""
    if not segs:
        return None
    if segs[0] == "crate":
        return segs[1:]
    if segs[0] in ("super", "self"):
        base = list(ref_module)
        k = 0
        while k < len(segs) and segs[k] in ("super", "self"):
            if segs[k] == "super":
                if not base:
                    return None
                base.pop()
            k += 1
        return base + segs[k:]
    # A bare first segment is local when it names a child module of the current module.
    mod = find_module(crate.root, ref_module)
    if mod is not None and segs[0] in mod.children:
        return list(ref_module) + segs
    return None


def find_module(top: Module, path: tuple[str, ...]) -> Module | None:
    mod = top
    for seg in path:
        mod = mod.children.get(seg)
        if mod is None:
            return None
    return mod


def resolve(crate: Crate, segs: list[str], depth: int = 0) -> Module:
    """The module a crate-absolute path lands in, following `pub use` re-exports."""
    mod = crate.root
    for k, seg in enumerate(segs):
        if seg in mod.children:
            mod = mod.children[seg]
            continue
        if seg in mod.reexports and depth < 8:
            target, _ = mod.reexports[seg]
            return resolve(crate, list(target) + segs[k + 1 :], depth + 1)
        break
    return mod


def collect_refs(crate: Crate) -> list[Ref]:
    refs: list[Ref] = []
    for rel, s in crate.files.items():
        base = crate.file_module[rel]
        file_mod = find_module(crate.root, base)
        if file_mod is None or file_mod.test_only:
            continue
        spans = inline_modules(s.code)
        use_spans = []
        for m in USE_START.finditer(s.code):
            end = s.code.find(";", m.end())
            if end < 0:
                continue
            use_spans.append((m.start(), end))
            here = module_at(base, spans, m.start())
            head = s.code[max(0, m.start() - 40) : m.start()]
            public = re.search(r"pub(?:\([\w: ]+\))?\s*$", head) is not None
            for segs, alias in parse_use_tree(s.code[m.end() : end]):
                segs = [x for x in segs if x]
                if segs and segs[-1] == "self":
                    segs = segs[:-1]
                absolute_segs = absolute(here, segs, crate, file_mod)
                if absolute_segs is None:
                    continue
                line = s.line_of(m.start())
                refs.append(Ref(rel, line, here, absolute_segs, "use " + "::".join(segs)))
                if public and segs and segs[-1] != "*":
                    owner = find_module(crate.root, here)
                    if owner is not None:
                        owner.reexports[alias or segs[-1]] = (tuple(absolute_segs), line)
        for m in CODE_PATH.finditer(s.code):
            if any(a <= m.start() <= b for a, b in use_spans):
                continue
            segs = [m.group(1)] + [x for x in re.split(r"\s*::\s*", m.group(2).strip()) if x]
            here = module_at(base, spans, m.start())
            absolute_segs = absolute(here, segs, crate, file_mod)
            if absolute_segs is not None:
                refs.append(Ref(rel, s.line_of(m.start()), here, absolute_segs, "::".join(segs)))
    return refs


def related(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """True when one module is the other's ancestor (or itself)."""
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    return long_[: len(short)] == short


def tarjan(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        # Iterative, so a long chain of files cannot hit the recursion limit.
        work = [(v, iter(sorted(edges.get(v, ()))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    advanced = True
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def without(edges: dict[str, set[str]], node: str) -> dict[str, set[str]]:
    return {a: bs - {node} for a, bs in edges.items() if a != node}


def check_cycles(crate: Crate) -> list[str]:
    refs = collect_refs(crate)
    edges: dict[str, set[str]] = {}
    evidence: dict[tuple[str, str], list[str]] = {}
    for r in refs:
        target = resolve(crate, r.segs)
        src_mod = crate.file_module[r.file]
        dst_mod = crate.file_module.get(target.file, ())
        if target.file == r.file or target.test_only or related(src_mod, dst_mod):
            continue
        edges.setdefault(r.file, set()).add(target.file)
        evidence.setdefault((r.file, target.file), []).append(f"{r.file}:{r.line} {r.text}")
    problems = []
    for comp in tarjan(list(crate.files), edges):
        if len(comp) < 2:
            continue
        members = set(comp)
        lines = [f"import cycle in crate {crate.name} between {len(comp)} files: {', '.join(comp)}"]
        for a in comp:
            for b in sorted(edges.get(a, ()) & members):
                ev = evidence[(a, b)]
                more = f" (+{len(ev) - 1} more)" if len(ev) > 1 else ""
                lines.append(f"    {a} -> {b}: {ev[0]}{more}")
        hubs = [f for f in comp if not any(len(c) > 1 for c in tarjan(sorted(members - {f}), without(edges, f)))]
        if hubs:
            lines.append(f"    every cycle here passes through {' and through '.join(hubs)}: untangling it breaks them all")
        problems.append("\n".join(lines))
    return problems


# ---------------------------------------------------------------- sizes


def check_sizes(rel: str, s: Source, test_file: bool) -> list[str]:
    problems = []
    raw_lines = s.raw.split("\n")
    count = len(raw_lines) - (1 if s.raw.endswith("\n") else 0)
    if count > MAX_FILE_LINES and not any(LAYOUT_OPT_OUT.match(line) for line in raw_lines[:10]):
        problems.append(
            f"{rel}: {count} lines (over {MAX_FILE_LINES}; split it, or say why in a "
            "`// layout: <reason>` line comment within its first 10 lines)"
        )
    if test_file:
        return problems
    for m in FN_START.finditer(s.code):
        k, depth, body = m.end(), 0, None
        while k < len(s.code):
            c = s.code[k]
            if c in "([":
                depth += 1
            elif c in ")]":
                depth -= 1
            elif depth == 0 and c == ";":
                break
            elif depth == 0 and c == "{":
                body = k
                break
            k += 1
        if body is None:
            continue
        first = s.line_of(m.start())
        last = s.line_of(match_brace(s.code, body))
        length = last - first + 1
        if length <= MAX_FN_LINES:
            continue
        above = raw_lines[max(0, first - 4) : first - 1]
        if any(LAYOUT_OPT_OUT.match(line) for line in above):
            continue
        attrs = []
        for line in reversed(raw_lines[max(0, first - 8) : first - 1]):
            if line.rstrip().endswith(("}", ";")) and not line.strip().startswith("#"):
                break
            attrs.append(line)
        if any(TEST_ATTR.search(line) for line in attrs):
            continue
        name = s.code[m.start() : m.end()].split()[-1]
        problems.append(
            f"{rel}:{first}: fn {name} is {length} lines (over {MAX_FN_LINES}; split it, or say why in a "
            "`// layout: <reason>` line comment within the 3 lines above the fn)"
        )
    return problems


def rust_files(root: str) -> list[str]:
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS and not x.startswith("."))
        out += [os.path.relpath(os.path.join(d, f), root) for f in sorted(files) if f.endswith(".rs")]
    return out


# ---------------------------------------------------------------- main


def targets_of(meta: dict, root: str) -> list[tuple[str, str]]:
    """(crate label, root file relative to the workspace) of every lib, bin, test, bench, example."""
    out = []
    ws = set(meta["workspace_members"])
    for p in meta["packages"]:
        if p["id"] not in ws:
            continue
        for t in p["targets"]:
            if set(t["kind"]) & {"lib", "rlib", "bin", "test", "bench", "example", "proc-macro"}:
                out.append((f"{p['name']} ({t['name']}, {'/'.join(t['kind'])})", os.path.relpath(t["src_path"], root)))
    return out


def check(root: str, meta: dict) -> list[str]:
    problems = check_crate_graph(meta)
    sources: dict[str, Source] = {}
    test_files: set[str] = set()
    seen_cycles: set[str] = set()
    for label, root_file in targets_of(meta, root):
        crate = load_crate(root, label, root_file, sources)
        for rel in crate.files:
            mod = find_module(crate.root, crate.file_module[rel])
            if mod is not None and mod.test_only:
                test_files.add(rel)
        for p in check_cycles(crate):
            key = p.split("\n", 1)[0].split(": ", 1)[1]
            if key not in seen_cycles:
                seen_cycles.add(key)
                problems.append(p)
    for rel in rust_files(root):
        s = sources.get(rel) or load_source(root, rel)
        problems += s.problems
        problems += check_sizes(rel, s, rel in test_files)
    return problems


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    args = ap.parse_args(argv)
    root = os.path.abspath(args.root)
    problems = check(root, load_metadata(root))
    if problems:
        print(f"check-layout: {len(problems)} violation(s)")
        for p in problems:
            print("  " + p)
        return 1
    print("check-layout: crate graph, file cycles and sizes OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
