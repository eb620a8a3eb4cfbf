#!/usr/bin/env python3
"""Checks the links of every Markdown file of the repository, so moved or renamed docs cannot
leave a reader at a dead end.

  files    every relative link (`[text](path)`, `![alt](path)`, `[label]: path`) resolves to an
           existing file or folder of the repository, and never outside it;
  anchors  a `#fragment`, in the same file or in another `.md`, matches a heading of that file
           under GitHub's slug rules (lowercase; punctuation other than `-` and `_` dropped;
           spaces become `-`; repeated headings get `-1`, `-2`, ...) or an explicit
           `<a name="…">`/`id="…"`.

Links inside code spans and fenced code blocks are ignored, as are URLs with a scheme (`https:`,
`mailto:`, ...). Folders named `target` (cargo's output, including `fuzz/target`), `.git` and
`node_modules` are skipped.

Usage: scripts/check-docs.py [--root DIR]. Exit 0 when every link resolves, 1 with one line per
broken link (`file:line: link: why`). Standard library only; the self-test is
scripts/check_docs_test.py.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from urllib.parse import unquote

SKIP_DIRS = {"target", ".git", "node_modules"}
FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
EXPLICIT_ANCHOR = re.compile(r"<a\s+[^>]*(?:name|id)\s*=\s*\"([^\"]+)\"", re.I)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_files(root: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".md")]
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = text.strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def prose_lines(text: str):
    """(line number, line) of every line outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)[0] * len(m.group(1))
            continue
        if fence is not None:
            if line.strip().startswith(fence) and set(line.strip()) <= {fence[0]}:
                fence = None
            continue
        yield number, line


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(text):
        found.update(EXPLICIT_ANCHOR.findall(line))
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(text: str):
    """(line number, target) of every link outside code."""
    for number, line in prose_lines(text):
        m = REFERENCE.match(line)
        if m:
            yield number, m.group(1)
            continue
        for target in INLINE.findall(CODE_SPAN.sub("", line)):
            yield number, target


def check(root: str) -> list[str]:
    root = os.path.realpath(root)
    problems = []
    cache: dict[str, set[str]] = {}

    def anchors_of(path: str) -> set[str]:
        if path not in cache:
            with open(path, encoding="utf-8") as f:
                cache[path] = anchors(f.read())
        return cache[path]

    for md in markdown_files(root):
        with open(md, encoding="utf-8") as f:
            text = f.read()
        rel = os.path.relpath(md, root)
        for number, target in links(text):
            if not target or SCHEME.match(target) or target.startswith("//"):
                continue
            path_part, _, fragment = target.partition("#")
            path_part = unquote(path_part.split("?")[0])
            if path_part:
                resolved = os.path.realpath(os.path.join(os.path.dirname(md), path_part))
                where = f"{rel}:{number}: {target}"
                if os.path.commonpath([resolved, root]) != root:
                    problems.append(f"{where}: points outside the repository")
                    continue
                if not os.path.exists(resolved):
                    problems.append(f"{where}: {os.path.relpath(resolved, root)} does not exist")
                    continue
            else:
                resolved = md
                where = f"{rel}:{number}: {target}"
            if fragment and resolved.endswith(".md") and os.path.isfile(resolved):
                if unquote(fragment).lower() not in anchors_of(resolved):
                    problems.append(f"{where}: no heading #{fragment} in {os.path.relpath(resolved, root)}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    args = ap.parse_args()
    problems = check(args.root)
    for p in problems:
        print(p)
    if problems:
        print(f"check-docs: {len(problems)} broken link(s)", file=sys.stderr)
        return 1
    print(f"check-docs: every link of {len(markdown_files(os.path.realpath(args.root)))} Markdown files resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
