#!/usr/bin/env python3
"""Self-test of scripts/check-docs.py: tiny Markdown trees in a temp dir prove that each kind of
broken link is reported and that good links, code and external URLs pass. Standard library only;
run by .ci/run before the check.

  python3 scripts/check_docs_test.py
"""
from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import textwrap
import unittest

_spec = importlib.util.spec_from_file_location(
    "check_docs", os.path.join(os.path.dirname(os.path.abspath(__file__)), "check-docs.py")
)
assert _spec is not None and _spec.loader is not None
cd = importlib.util.module_from_spec(_spec)
sys.modules["check_docs"] = cd
_spec.loader.exec_module(cd)


def run(files: dict[str, str]) -> list[str]:
    with tempfile.TemporaryDirectory() as parent:
        root = os.path.join(parent, "repo")
        for rel, text in files.items():
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(textwrap.dedent(text))
        # A file beside the repository, so a link that climbs out finds something real.
        with open(os.path.join(parent, "outside.md"), "w", encoding="utf-8") as f:
            f.write("# Outside\n")
        return cd.check(root)


GUIDE = """\
    # Guide

    ## Ingest (`wafleet-ingest`)
    ## RabbitMQ 3.x and 4.x
    ## Notes
    ## Notes
    <a name="kept"></a>
    """


class Links(unittest.TestCase):
    def test_good_links_pass(self):
        problems = run({
            "README.md": """\
                See [the guide](docs/guide.md), [ingest](docs/guide.md#ingest-wafleet-ingest),
                [brokers](docs/guide.md#rabbitmq-3x-and-4x), [again](docs/guide.md#notes-1),
                [kept](docs/guide.md#kept), [a folder](docs/), ![picture](docs/p.png),
                [here](#top) and [web](https://example.com/x.md#nothing).

                ## Top
                [ref]: docs/guide.md#notes
                """,
            "docs/guide.md": GUIDE,
            "docs/p.png": "",
        })
        self.assertEqual(problems, [])

    def test_a_missing_file_is_reported_with_its_line(self):
        problems = run({"README.md": "# Title\n\nRead [this](docs/gone.md).\n"})
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("README.md:3: docs/gone.md: docs/gone.md does not exist", problems[0])

    def test_a_missing_heading_in_another_file_or_the_same_file_is_reported(self):
        problems = run({
            "README.md": "# Title\n[a](docs/guide.md#configuration) [b](#nowhere) [c](docs/guide.md#notes-2)\n",
            "docs/guide.md": GUIDE,
        })
        self.assertEqual(len(problems), 3, problems)
        self.assertTrue(all("no heading" in p for p in problems), problems)

    def test_a_link_out_of_the_repository_is_reported_even_if_the_target_exists(self):
        problems = run({"README.md": "[arch](../outside.md)\n"})
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("points outside the repository", problems[0])

    def test_links_in_code_and_headings_in_code_blocks_do_not_count(self):
        problems = run({
            "README.md": """\
                `[not a link](gone.md)`

                ```sh
                # Heading in a shell comment
                echo "[x](gone.md)"
                ```
                [bad](#heading-in-a-shell-comment)
                """,
        })
        self.assertEqual(len(problems), 1, problems)
        self.assertIn("#heading-in-a-shell-comment", problems[0])

    def test_build_output_folders_are_not_checked(self):
        self.assertEqual(run({"target/doc/x.md": "[gone](gone.md)\n", "fuzz/target/y.md": "[gone](gone.md)\n"}), [])


if __name__ == "__main__":
    unittest.main(verbosity=1)
