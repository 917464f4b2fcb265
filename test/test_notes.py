"""
Every ``Note [Title]`` cited in the package, the tools, the tests and the
docs is defined somewhere (a ``Note [Title]`` line followed by a ``~~~``
underline), once; and a citation that names a file (``Note [Title] in
key/graph_hashing.py``) names the file that defines it.  A Note moved or
renamed without its citations fails here.
"""

from __future__ import annotations

import os
import re
import unittest

from common import REPO_ROOT

FOLDERS = ("torch_aotcache", "tools", "test", "docs", ".ci", ".github")
TOP_FILES = ("README.md", "CONTRIBUTING.md", "SECURITY.md", "setup.py")

DEFINITION = re.compile(r"^[ \t]*(?:#[ \t]*)?Note \[([^\]]+)\][ \t]*\n[ \t]*(?:#[ \t]*)?~{3,}", re.M)
CITATION = re.compile(r"Note \[([^\]]+)\](?:[\s#*]+in[\s#]+`?([\w./-]+\.(?:py|md|sh))`?)?")
# Prose that shows the form of a citation rather than making one.
PLACEHOLDERS = {"...", "Title"}


def normalized(title: str) -> str:
    """A title as written across a line break, in a comment or a docstring."""
    return re.sub(r"[\s#]+", " ", title).strip()


def project_files(root: str = REPO_ROOT) -> list[str]:
    found = []
    for folder in FOLDERS:
        for dirpath, _dirs, files in os.walk(os.path.join(root, folder)):
            found += [
                os.path.join(dirpath, f) for f in files
                if f.endswith((".py", ".md", ".sh", ".yml")) or folder == ".ci"
            ]
    return sorted(found + [os.path.join(root, f) for f in TOP_FILES if os.path.exists(os.path.join(root, f))])


def definitions(texts: dict[str, str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path, text in texts.items():
        for m in DEFINITION.finditer(text):
            found.setdefault(normalized(m.group(1)), []).append(path)
    return found


def problems(texts: dict[str, str]) -> list[str]:
    defined = definitions(texts)
    out = [f"Note [{t}] is defined in {', '.join(paths)}" for t, paths in sorted(defined.items()) if len(paths) > 1]
    for path, text in texts.items():
        for m in CITATION.finditer(text):
            title, where = normalized(m.group(1)), m.group(2)
            if title in PLACEHOLDERS:
                continue
            if title not in defined:
                out.append(f"{path}: cites Note [{title}], defined nowhere")
            elif where and not any(d.endswith("/" + where) or d == where for d in defined[title]):
                out.append(f"{path}: cites Note [{title}] in {where}; it is in {', '.join(defined[title])}")
    return out


def read_all() -> dict[str, str]:
    texts = {}
    for path in project_files():
        if os.path.abspath(path) == os.path.abspath(__file__):
            continue  # its examples are made up
        with open(path, encoding="utf-8") as f:
            texts[os.path.relpath(path, REPO_ROOT)] = f.read()
    return texts


class TestNotes(unittest.TestCase):
    def test_every_cited_note_exists_where_cited(self) -> None:
        texts = read_all()
        self.assertGreater(len(definitions(texts)), 40)
        self.assertEqual(problems(texts), [])

    def test_the_check_catches_a_moved_or_missing_note(self) -> None:
        texts = {
            "pkg/a.py": "# Note [Kept]\n# ~~~~~~~~~~\n# text\n",
            "pkg/b.py": "x = 1  # See Note [Kept] in pkg/b.py\n# See Note [Gone]\n# Note [Kept\n# ] in pkg/a.py\n",
        }
        self.assertEqual(
            problems(texts),
            ["pkg/b.py: cites Note [Kept] in pkg/b.py; it is in pkg/a.py", "pkg/b.py: cites Note [Gone], defined nowhere"],
        )
        twice = dict(texts, **{"pkg/c.py": '"""\nNote [Kept]\n~~~~~~~~~~~\n"""\n'})
        self.assertIn("Note [Kept] is defined in pkg/a.py, pkg/c.py", problems(twice))


if __name__ == "__main__":
    unittest.main()
