#!/usr/bin/env python3
"""Self-test of scripts/check-layout.py: tiny fake crates in a temp dir prove that each rule fails
when broken and that its allowances hold. Standard library only; run by .ci/run before the check.

  python3 scripts/check_layout_test.py
"""
from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import textwrap
import unittest

_spec = importlib.util.spec_from_file_location(
    "check_layout", os.path.join(os.path.dirname(os.path.abspath(__file__)), "check-layout.py")
)
assert _spec is not None and _spec.loader is not None
cl = importlib.util.module_from_spec(_spec)
sys.modules["check_layout"] = cl  # dataclasses look their module up there
_spec.loader.exec_module(cl)


def write_tree(root: str, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(textwrap.dedent(text))


def fake_meta(root: str, deps: dict[str, list[str]] | None = None, lib: str = "src/lib.rs") -> dict:
    """cargo metadata for one package `demo` with its lib at `lib`, plus a dependency graph."""
    deps = deps or {}
    names = set(deps) | {d for ds in deps.values() for d in ds} | {"demo"}
    packages = [
        {"id": n, "name": n, "targets": [{"name": n, "kind": ["lib"], "src_path": os.path.join(root, lib)}] if n == "demo" else []}
        for n in sorted(names)
    ]
    nodes = [
        {"id": n, "deps": [{"pkg": d, "dep_kinds": [{"kind": None}]} for d in deps.get(n, [])]} for n in sorted(names)
    ]
    members = [n for n in names if n.startswith("wafleet-") or n == "demo"]
    return {"packages": packages, "resolve": {"nodes": nodes}, "workspace_members": members}


def run(files: dict[str, str], deps: dict[str, list[str]] | None = None) -> list[str]:
    with tempfile.TemporaryDirectory() as root:
        write_tree(root, files)
        # The fake package is not a wafleet crate: leave the crate rules to their own tests.
        return [p for p in cl.check(root, fake_meta(root, deps)) if not p.startswith("crate graph:")]


def cycles(problems: list[str]) -> list[str]:
    return [p for p in problems if p.startswith("import cycle")]


def long_fn(name: str, lines: int, above: str = "") -> str:
    body = "\n".join(f"    let _x{i} = {i};" for i in range(lines - 2))
    return f"{above}fn {name}() {{\n{body}\n}}\n"


class Cycles(unittest.TestCase):
    def test_a_cycle_between_sibling_files_is_reported_with_its_lines(self):
        problems = run({
            "src/lib.rs": "mod a;\nmod b;\n",
            "src/a.rs": "use crate::b::B;\npub struct A;\n",
            "src/b.rs": "pub struct B;\nfn f() -> crate::a::A { crate::a::A }\n",
        })
        found = cycles(problems)
        self.assertEqual(len(found), 1, problems)
        self.assertIn("src/a.rs, src/b.rs", found[0])
        self.assertIn("src/a.rs:1 use crate::b::B", found[0])

    def test_a_parent_and_its_children_may_import_each_other(self):
        problems = run({
            "src/lib.rs": "mod a;\npub use a::A;\n",
            "src/a.rs": "mod child;\nuse child::C;\npub struct A;\n",
            "src/a/child.rs": "use super::A;\nuse crate::A as Again;\npub struct C;\n",
        })
        self.assertEqual(cycles(problems), [], problems)

    def test_a_cycle_through_a_reexport_is_followed_to_the_defining_file(self):
        problems = run({
            "src/lib.rs": "mod a;\nmod b;\npub use b::B;\n",
            "src/a.rs": "use crate::B;\npub struct A;\n",
            "src/b.rs": "use super::a::A;\npub struct B;\n",
        })
        self.assertEqual(len(cycles(problems)), 1, problems)

    def test_use_trees_super_paths_and_mod_rs_children_are_resolved(self):
        problems = run({
            "src/lib.rs": "mod x;\nmod y;\n",
            "src/x/mod.rs": "mod inner;\n",
            "src/x/inner.rs": "use crate::{y::{self, Y}};\npub struct I;\n",
            "src/y.rs": "pub struct Y;\nfn f(_: super::x::inner::I) {}\n",
        })
        found = cycles(problems)
        self.assertEqual(len(found), 1, problems)
        self.assertIn("src/x/inner.rs, src/y.rs", found[0])

    def test_paths_in_comments_strings_and_test_modules_make_no_edge(self):
        problems = run({
            "src/lib.rs": "mod a;\nmod b;\n",
            "src/a.rs": "use crate::b::B;\n",
            "src/b.rs": (
                "// crate::a::A in a comment\n"
                "pub struct B;\n"
                'const S: &str = "crate::a::A";\n'
                "#[cfg(test)]\nmod tests {\n    use crate::a::A;\n}\n"
            ),
        })
        self.assertEqual(cycles(problems), [], problems)

    def test_a_hub_file_is_named_when_every_cycle_runs_through_it(self):
        problems = run({
            "src/lib.rs": "mod config;\nmod a;\nmod b;\n",
            "src/config.rs": "use crate::a::A;\nuse crate::b::B;\npub fn env() {}\n",
            "src/a.rs": "pub struct A;\nfn f() { crate::config::env() }\n",
            "src/b.rs": "pub struct B;\nfn f() { crate::config::env() }\n",
        })
        found = cycles(problems)
        self.assertEqual(len(found), 1, problems)
        self.assertIn("every cycle here passes through src/config.rs", found[0])

    def test_code_after_the_test_module_is_reported(self):
        problems = run({"src/lib.rs": "#[cfg(test)]\nmod tests {\n}\n\nfn late() {}\n"})
        self.assertTrue(any("after the `#[cfg(test)] mod tests` block" in p for p in problems), problems)


class Sizes(unittest.TestCase):
    def test_a_long_function_is_flagged_and_a_short_one_is_not(self):
        problems = run({"src/lib.rs": long_fn("long", 81) + long_fn("short", 80)})
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("src/lib.rs:1: fn long is 81 lines", problems[0])

    def test_a_function_opt_out_with_a_reason_is_honoured(self):
        problems = run({"src/lib.rs": long_fn("long", 120, "// layout: one match arm per command\n#[inline]\n")})
        self.assertEqual(problems, [])

    def test_an_opt_out_without_a_reason_or_too_far_above_is_not(self):
        problems = run({
            "src/lib.rs": long_fn("bare", 90, "// layout:\n") + long_fn("far", 90, "// layout: why\n\n\n\n"),
        })
        self.assertEqual(len(problems), 2, problems)

    def test_tests_and_braces_in_literals_do_not_count(self):
        code = (
            long_fn("helper", 10)
            + "#[test]\n" + long_fn("a_long_test", 100)
            + "fn tricky() {\n    let _ = \"}}}\";\n    let _ = '{';\n    let _ = r#\"{\"#;\n}\n"
            + "#[cfg(test)]\nmod tests {\n" + long_fn("inside", 100) + "}\n"
        )
        self.assertEqual(run({"src/lib.rs": code}), [])

    def test_a_long_file_is_flagged_unless_it_says_why(self):
        lines = "\n".join("const _: u8 = 0;" for _ in range(501)) + "\n"
        self.assertEqual(len(run({"src/lib.rs": lines})), 1)
        self.assertEqual(run({"src/lib.rs": "// layout: a generated table\n" + lines}), [])


class CrateGraph(unittest.TestCase):
    def test_forbidden_dependencies_are_found_transitively_with_their_path(self):
        meta = fake_meta("/nowhere", {
            "wafleet-admin": ["wafleet-fleet", "wafleet-tests-like"],
            "wafleet-tests-like": ["wafleet-worker"],
            "wafleet-cli": ["wafleet-fleet"],
            "wafleet-ingest": ["wafleet-shared", "middle"],
            "middle": ["sqlx"],
            "wafleet-worker": ["wafleet-fleet"],
            "wafleet-fleet": ["wafleet-shared"],
            "wafleet-shared": ["opentelemetry-otlp"],
            "opentelemetry-otlp": ["axum"],
        })
        problems = cl.check_crate_graph(meta)
        text = "\n".join(problems)
        self.assertIn("wafleet-admin depends on wafleet-worker via wafleet-admin -> wafleet-tests-like -> wafleet-worker", text)
        self.assertIn("wafleet-ingest depends on sqlx via wafleet-ingest -> middle -> sqlx", text)
        # axum only counts as a direct dependency (tonic links it under the OTLP exporter).
        self.assertNotIn("axum", text)
        self.assertEqual(len(problems), 2, problems)

    def test_shared_may_depend_on_no_other_wafleet_crate(self):
        meta = fake_meta("/nowhere", {
            "wafleet-shared": ["wafleet-fleet"],
            "wafleet-fleet": ["clap"],
            "wafleet-admin": [], "wafleet-cli": [], "wafleet-ingest": [], "wafleet-worker": [],
        })
        text = "\n".join(cl.check_crate_graph(meta))
        self.assertIn("wafleet-shared depends on wafleet-fleet", text)
        self.assertIn("wafleet-fleet depends on clap", text)

    def test_dev_dependencies_do_not_count(self):
        meta = fake_meta("/nowhere", {
            "wafleet-admin": [], "wafleet-cli": [], "wafleet-ingest": [], "wafleet-worker": [],
            "wafleet-fleet": [], "wafleet-shared": [],
        })
        for node in meta["resolve"]["nodes"]:
            if node["id"] == "wafleet-admin":
                node["deps"] = [{"pkg": "wafleet-worker", "dep_kinds": [{"kind": "dev"}]}]
        self.assertEqual(cl.check_crate_graph(meta), [])


if __name__ == "__main__":
    unittest.main(verbosity=1)
