"""The torch-install fingerprint: reused between processes only while it is valid."""

from __future__ import annotations

import os
import tempfile
import time
import unittest
import unittest.mock

from torch._inductor.utils import fresh_cache

from torch_aotcache import fingerprint


class TestTorchFingerprint(unittest.TestCase):
    def setUp(self) -> None:
        self._fresh = fresh_cache()
        self._fresh.__enter__()
        self.root = tempfile.mkdtemp()
        os.makedirs(os.path.join(self.root, "sub", "__pycache__"))
        self.write("a.py", "x = 1\n")
        self.write("sub/b.py", "y = 2\n")
        self.write("sub/__pycache__/b.cpython-311.pyc", "ignored")

    def tearDown(self) -> None:
        self._fresh.__exit__(None, None, None)

    def write(self, rel: str, text: str) -> None:
        with open(os.path.join(self.root, rel), "w") as f:
            f.write(text)

    def count_content_hashes(self):
        return unittest.mock.patch.object(
            fingerprint, "content_digest", wraps=fingerprint.content_digest
        )

    def test_persisted_digest_is_reused_while_sources_are_unchanged(self) -> None:
        with self.count_content_hashes() as spy:
            first = fingerprint.compute_torch_fingerprint(self.root)
            second = fingerprint.compute_torch_fingerprint(self.root)
        self.assertEqual(first, second)
        self.assertEqual(spy.call_count, 1)

    def test_edit_in_place_invalidates(self) -> None:
        first = fingerprint.compute_torch_fingerprint(self.root)
        time.sleep(0.01)
        self.write("a.py", "x = 3\n")  # same size, new content and mtime
        with self.count_content_hashes() as spy:
            second = fingerprint.compute_torch_fingerprint(self.root)
        self.assertEqual(spy.call_count, 1)
        self.assertNotEqual(first, second)

    def test_added_and_removed_files_invalidate(self) -> None:
        first = fingerprint.compute_torch_fingerprint(self.root)
        self.write("sub/c.py", "z = 1\n")
        second = fingerprint.compute_torch_fingerprint(self.root)
        self.assertNotEqual(first, second)
        os.unlink(os.path.join(self.root, "sub", "c.py"))
        self.assertEqual(fingerprint.compute_torch_fingerprint(self.root), first)

    def test_touch_without_change_recomputes_same_digest(self) -> None:
        first = fingerprint.compute_torch_fingerprint(self.root)
        later = time.time() + 5
        os.utime(os.path.join(self.root, "a.py"), (later, later))
        with self.count_content_hashes() as spy:
            second = fingerprint.compute_torch_fingerprint(self.root)
        self.assertEqual(spy.call_count, 1)
        self.assertEqual(first, second)

    def test_content_not_mtime_goes_into_the_digest(self) -> None:
        other = tempfile.mkdtemp()
        for rel in ("a.py", "sub/b.py"):
            os.makedirs(os.path.dirname(os.path.join(other, rel)), exist_ok=True)
            with open(os.path.join(self.root, rel)) as src, open(os.path.join(other, rel), "w") as dst:
                dst.write(src.read())
        self.assertEqual(
            fingerprint.compute_torch_fingerprint(self.root, persist=False),
            fingerprint.compute_torch_fingerprint(other, persist=False),
        )

    def test_corrupt_persisted_file_is_ignored(self) -> None:
        first = fingerprint.compute_torch_fingerprint(self.root)
        with open(fingerprint._meta_path(self.root), "w") as f:
            f.write("{not json")
        self.assertEqual(fingerprint.compute_torch_fingerprint(self.root), first)


class TestBackgroundFingerprint(unittest.TestCase):
    def test_persisted_under_the_store_current_when_started(self) -> None:
        from torch_aotcache import storage

        fp = fingerprint._Fingerprint()
        with fresh_cache():
            first_root = storage.store_root()
            with unittest.mock.patch.object(fingerprint, "_walk_sources", fingerprint_walk_slow):
                fp.prefetch()
                with fresh_cache():
                    second_root = storage.store_root()
                    value = fp.get()
                    self.assertFalse(os.path.exists(os.path.join(second_root, "meta")))
            self.assertTrue(os.listdir(os.path.join(first_root, "meta")))
        self.assertRegex(value, "^[0-9a-f]{64}$")


_real_walk = fingerprint._walk_sources


def fingerprint_walk_slow(root: str):
    time.sleep(0.3)
    return _real_walk(root)


if __name__ == "__main__":
    unittest.main()
