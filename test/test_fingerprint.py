"""The torch-install fingerprint: reused between processes only while it is valid."""

from __future__ import annotations

import os
import tempfile
import time
import unittest
import unittest.mock

from torch._inductor.utils import fresh_cache

from torch_aotcache.key import fingerprint


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
        from torch_aotcache.store import layout

        fp = fingerprint._Fingerprint()
        with fresh_cache():
            first_root = layout.store_root()
            with unittest.mock.patch.object(fingerprint, "_walk_sources", fingerprint_walk_slow):
                fp.prefetch()
                with fresh_cache():
                    second_root = layout.store_root()
                    value = fp.get()
                    self.assertFalse(os.path.exists(os.path.join(second_root, "meta")))
            self.assertTrue(os.listdir(os.path.join(first_root, "meta")))
        self.assertRegex(value, "^[0-9a-f]{64}$")


_real_walk = fingerprint._walk_sources


def fingerprint_walk_slow(root: str):
    time.sleep(0.3)
    return _real_walk(root)


class TestRecordDigest(unittest.TestCase):
    """The digest from the installer's RECORD equals the one from reading the files."""

    def setUp(self) -> None:
        import base64
        import hashlib

        self.site = tempfile.mkdtemp()
        self.root = os.path.join(self.site, "torch")
        os.makedirs(os.path.join(self.root, "sub"))
        self.files = {"a.py": b"x = 1\n", "sub/b.py": b"y = 2\n", "sub/c.pyi": b"z: int\n"}
        for rel, data in self.files.items():
            with open(os.path.join(self.root, rel), "wb") as f:
                f.write(data)
        lines = []
        for rel, data in self.files.items():
            b64 = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            lines.append(f"torch/{rel},sha256={b64},{len(data)}")
        lines.append("torch-9.9.dist-info/RECORD,,")
        os.makedirs(os.path.join(self.site, "torch-9.9.dist-info"))
        self.record = os.path.join(self.site, "torch-9.9.dist-info", "RECORD")
        # The installer writes RECORD after the files.
        time.sleep(0.01)
        with open(self.record, "w") as f:
            f.write("\n".join(lines) + "\n")

    def digests(self):
        files = fingerprint._walk_sources(self.root)
        return fingerprint.record_digest(self.root, files), fingerprint.content_digest(self.root, files)

    def test_pristine_install_gives_the_content_digest(self) -> None:
        from_record, from_files = self.digests()
        self.assertIsNotNone(from_record)
        self.assertEqual(from_record, from_files)

    def test_edited_file_falls_back(self) -> None:
        time.sleep(0.01)
        with open(os.path.join(self.root, "a.py"), "w") as f:
            f.write("x = 2\n")  # same size, newer than RECORD
        from_record, from_files = self.digests()
        self.assertIsNone(from_record)
        self.assertEqual(fingerprint.compute_torch_fingerprint(self.root, persist=False), from_files)

    def test_resized_added_or_missing_file_falls_back(self) -> None:
        past = os.stat(self.record).st_mtime_ns - 10**9
        cases = {
            "resized": lambda: open(os.path.join(self.root, "a.py"), "a").write("# more\n"),
            "added": lambda: open(os.path.join(self.root, "new.py"), "w").write(""),
            "missing": lambda: os.remove(os.path.join(self.root, "sub", "b.py")),
        }
        for name, change in cases.items():
            with self.subTest(name):
                self.setUp()
                change()
                for dirpath, _, names in os.walk(self.root):
                    for n in names:  # as old as the install: only the change itself may show
                        os.utime(os.path.join(dirpath, n), ns=(past, past))
                from_record, _ = self.digests()
                if name == "missing":
                    # Fewer files than recorded: each present file still matches,
                    # and the digest covers only what is present, as reading would.
                    self.assertEqual(from_record, self.digests()[1])
                else:
                    self.assertIsNone(from_record)

    def test_no_record_falls_back(self) -> None:
        os.remove(self.record)
        self.assertIsNone(self.digests()[0])

    def test_this_torch_install(self) -> None:
        root = fingerprint._torch_root()
        files = fingerprint._walk_sources(root)
        from_record = fingerprint.record_digest(root, files)
        if from_record is None:
            self.skipTest("torch here is not a pristine wheel install")
        self.assertEqual(from_record, fingerprint.content_digest(root, files))


if __name__ == "__main__":
    unittest.main()
