"""
The supported releases have one owner, ``torch_aotcache/_compat.py``'s
``SUPPORTED_RELEASES``; every other place that names them is checked against
it here: setup.py's torch requirement, the README's table, .ci/run's matrix
and the GPU workflow.  A release added or dropped in one place only fails.
"""

from __future__ import annotations

import os
import re
import unittest

import torch  # noqa: F401  (first: the package's install waits for torch's import)

from torch_aotcache import _compat

from common import REPO_ROOT


def read(relpath: str) -> str:
    with open(os.path.join(REPO_ROOT, relpath), encoding="utf-8") as f:
        return f.read()


def readme_releases(text: str) -> list[str]:
    section = text.split("## Supported versions", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| (\d+\.\d+)\.x", section, re.M)


def ci_matrix(text: str) -> list[str]:
    m = re.search(r'TORCH_AOTCACHE_CI_RELEASES:-([\d. ]+)\}', text)
    assert m, ".ci/run has no default release matrix"
    return m.group(1).split()


def ci_stages(text: str) -> list[str]:
    return re.findall(r"^    (\d+\.\d+)\)$", text, re.M)


def requirement(text: str) -> str:
    m = re.search(r'"(torch[<>=!][^"]*)"', text)
    assert m, "setup.py names no torch requirement"
    return m.group(1)


def releases_named(text: str) -> set[str]:
    return set(re.findall(r"\b2\.\d{1,2}\b", text))


class TestSupportedReleases(unittest.TestCase):
    def test_setup_py_requires_the_supported_range(self) -> None:
        self.assertEqual(requirement(read("setup.py")), _compat.torch_requirement())

    def test_readme_table_lists_each_supported_release(self) -> None:
        self.assertEqual(sorted(readme_releases(read("README.md"))), sorted(_compat.SUPPORTED_RELEASES))

    def test_ci_runs_every_release_a_cpu_machine_can_install(self) -> None:
        text = read(".ci/run")
        self.assertEqual(tuple(ci_matrix(text)), _compat.ci_releases())
        self.assertEqual(sorted(ci_stages(text)), sorted(_compat.ci_releases()))

    def test_gpu_workflow_names_no_other_release(self) -> None:
        self.assertLessEqual(releases_named(read(".github/workflows/gpu.yml")), set(_compat.SUPPORTED_RELEASES))

    def test_the_requirement_follows_the_releases(self) -> None:
        self.assertEqual(_compat.torch_requirement(("2.11", "2.13", "2.14", "2.15")), "torch>=2.11,!=2.12.*,<2.16")
        self.assertEqual(_compat.torch_requirement(("2.13",)), "torch>=2.13,<2.14")
        self.assertTrue(set(_compat.GPU_ONLY_RELEASES) <= set(_compat.SUPPORTED_RELEASES))

    def test_the_checks_catch_a_drifted_copy(self) -> None:
        """Each reader above, on text that drifted."""
        self.assertEqual(readme_releases("## Supported versions\n\n| 2.15.x | all |\n| 2.9.x | x |\n\n## Next\n| 2.1.x |"),
                         ["2.15", "2.9"])
        self.assertEqual(ci_matrix('for r in ${TORCH_AOTCACHE_CI_RELEASES:-2.16 2.15}; do'), ["2.16", "2.15"])
        self.assertEqual(ci_stages("    2.15)\n        x\n    2.14)\n"), ["2.15", "2.14"])
        self.assertEqual(requirement('install_requires=["torch>=2.9,<2.16"]'), "torch>=2.9,<2.16")
        self.assertEqual(releases_named("a CUDA build (2.11 or 2.12)"), {"2.11", "2.12"})


if __name__ == "__main__":
    unittest.main()
