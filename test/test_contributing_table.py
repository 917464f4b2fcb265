"""CONTRIBUTING.md's table of test files lists every test file, and only
files that exist, so it cannot drift from the suite."""

from __future__ import annotations

import os
import re
import unittest

from common import REPO_ROOT


class TestContributingTable(unittest.TestCase):
    def test_table_lists_every_test_file(self) -> None:
        with open(os.path.join(REPO_ROOT, "CONTRIBUTING.md"), encoding="utf-8") as f:
            text = f.read()
        listed = set(re.findall(r"^\| `(test/test_[a-z0-9_]+\.py)` \|", text, re.M))
        present = {
            f"test/{name}" for name in os.listdir(os.path.join(REPO_ROOT, "test"))
            if name.startswith("test_") and name.endswith(".py")
        }
        self.assertEqual(present - listed, set(), "test files missing from CONTRIBUTING.md's table")
        self.assertEqual(listed - present, set(), "CONTRIBUTING.md's table names files that do not exist")


if __name__ == "__main__":
    unittest.main()
