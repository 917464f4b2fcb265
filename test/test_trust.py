"""
Entries you can trust (issue items 3 and 4 of "Entries you can trust"):
planted pickles, signed entries, key rotation, and the documented limits of
both.  See SECURITY.md for the threat model these tests pin down.

The attacker's payload is a pickle that creates a marker file when loaded
(``builtins.open(marker, "w")``), with a header otherwise valid for the key it
is planted under: right key, torch version, size and SHA-256.  It is planted
everywhere an entry can be read from:

(a) the local store file of the entry a compile just wrote;
(b) a Mega-Cache blob (``torch.compiler.load_cache_artifacts``) whose
    ``aot_autograd`` artifact is replaced;
(c) the command line (``ls``, ``verify``), which reads headers only;
(d) Inductor's cache dir, where a hit used to find the generated module and
    the compiled C++ kernels it imports (``TestPlantedInductorFiles``: a
    module and a shared library with a constructor, planted; a hit loads
    both from the verified entry instead).

With signing on (writer and reader share the key) the marker is never created,
the compile gives the eager result, and ``signature_rejected`` says why.
Without signing, an attacker who recomputes the checksum *is* trusted: that
is the documented threat model (entries are trusted as upstream trusts its
cache dir), and a test below shows it so the documentation stays true.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import glob
import io
import os
import pickle
import subprocess
import tempfile
import unittest
import unittest.mock
from collections.abc import Iterator
from typing import Any

import torch
from torch._dynamo.utils import counters
from torch._inductor.runtime.runtime_utils import cache_dir
from torch._inductor.utils import fresh_cache
from torch.testing._internal.common_utils import instantiate_parametrized_tests, parametrize

from torch_aotcache import autograd_cache as ours
from torch_aotcache import config, schemas
from torch_aotcache.entry import framing
from torch_aotcache.inductor import artifacts
from torch_aotcache.cli import commands as cli
from torch_aotcache.entry import signing
from torch_aotcache.store.local import LocalStore

from common import aot_counts, CacheTestCase, child_env, clear_in_memory_state, run_child, slow


def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    # matmuls and views only: extern kernels, no C++ to compile, fast tests
    return (x @ w).t() @ x


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, generator=g), torch.randn(3, 5, generator=g)


class PlantFile:
    """Unpickling this calls ``builtins.open(path, "w")``: the marker appears."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (builtins.open, (self.path, "w"))


NO_KEYS = {"signing_key": None, "signing_key_file": None, "verify_key_files": None}


def malicious_entry(genuine: bytes, marker: str, attacker_key: str | None, forge_key_id: str | None = None) -> bytes:
    """``genuine`` with its payload replaced by a PlantFile pickle.

    The header stays valid for its key (size and SHA-256 recomputed); it is
    signed with ``attacker_key`` (None: unsigned).  ``forge_key_id``: claim to
    be signed by that key (its id), with a signature made by ``attacker_key``.
    """
    header, _ = framing.decode_header(genuine)
    payload = pickle.dumps(PlantFile(marker))
    header = dataclasses.replace(
        header,
        payload_size=len(payload),
        payload_sha256=schemas.payload_digest(payload),
        artifacts=[],
        key_id="",
        signature="",
    )
    with config.patch(**{**NO_KEYS, "signing_key": attacker_key}):
        data = framing.encode_entry(header, payload)
    if forge_key_id is not None:
        forged, _ = framing.decode_header(data)
        forged = dataclasses.replace(forged, key_id=signing.key_id(forge_key_id.encode()), signature="")
        forged = dataclasses.replace(
            forged, signature=signing.sign(forged.signing_message(), (attacker_key or "x").encode())
        )
        raw = forged.to_json()
        data = schemas.MAGIC + len(raw).to_bytes(4, "big") + raw + payload
    # Sanity: the attacker's entry passes every check but the signature.
    with config.patch(**NO_KEYS):
        framing.verify_entry(data, key=header.key, torch_version=torch.__version__)
    return data


ATTACKERS = {
    # name: (key the attacker signs with, key id claimed)
    "unsigned": (None, None),
    "wrong_key": ("not-the-secret", None),
    "forged_key_id": ("not-the-secret", "secret"),
}


@contextlib.contextmanager
def spy_unpickling() -> Iterator[list[bytes]]:
    seen: list[bytes] = []
    real = pickle.loads

    def spy(b: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(bytes(b))
        return real(b, *args, **kwargs)

    with unittest.mock.patch.object(pickle, "loads", spy):
        yield seen


class TrustTestCase(CacheTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.enterContext(config.patch(**NO_KEYS))
        self.tmp = self.enterContext(tempfile.TemporaryDirectory())
        self.marker = os.path.join(self.tmp, "PWNED")

    def compile_and_check(self) -> None:
        x, w = inputs()
        torch.testing.assert_close(torch.compile(f)(x, w), f(x, w))

    def compile_and_plant(self, attacker: str) -> tuple[str, bytes]:
        """Compile once, then overwrite the entry it wrote; returns (path, evil bytes)."""
        self.compile_and_check()
        self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        [path] = LocalStore().iter_paths()
        with open(path, "rb") as fh:
            genuine = fh.read()
        key, forge = ATTACKERS[attacker]
        evil = malicious_entry(genuine, self.marker, key, forge)
        with open(path, "wb") as fh:
            fh.write(evil)
        clear_in_memory_state()
        return path, evil

    def assert_refused_then_replaced(self, evil: bytes, unpickled: list[bytes]) -> None:
        self.assertFalse(os.path.exists(self.marker), "the planted pickle was loaded")
        _, evil_payload = framing.decode_header(evil)
        self.assertNotIn(bytes(evil_payload), unpickled)
        self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
        self.assertEqual(counters["torch_aotcache"]["signature_rejected"], 1)
        self.assertEqual(counters["torch_aotcache"]["entry_rejected"], 1)
        self.assertEqual(counters["torch_aotcache"]["quarantined"], 1)
        # The replacement is signed and hits.
        clear_in_memory_state()
        self.compile_and_check()
        self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})
        self.assertFalse(os.path.exists(self.marker))


@instantiate_parametrized_tests
class TestPlantedEntries(TrustTestCase):
    @parametrize("attacker", list(ATTACKERS))
    def test_local_store_plant_refused_when_signed(self, attacker: str) -> None:
        with config.patch(signing_key="secret"):
            path, evil = self.compile_and_plant(attacker)
            with spy_unpickling() as unpickled:
                self.compile_and_check()
            self.assert_refused_then_replaced(evil, unpickled)
        quarantined = glob.glob(os.path.join(cache_dir(), config.subdir, "quarantine", "*"))
        self.assertEqual(len(quarantined), 1)
        with open(quarantined[0], "rb") as fh:
            self.assertEqual(fh.read(), evil)

    @parametrize("attacker", list(ATTACKERS))
    def test_mega_cache_plant_refused_when_signed(self, attacker: str) -> None:
        from torch.compiler._cache import (
            _serialize_single_cache,
            CacheArtifactFactory,
            CacheArtifactManager,
        )
        from torch.utils._appending_byte_serializer import AppendingByteSerializer

        with config.patch(signing_key="secret"):
            CacheArtifactManager.clear()
            self.compile_and_check()
            blob, info = torch.compiler.save_cache_artifacts()
            self.assertEqual(len(info.aot_autograd_artifacts), 1)
            artifacts = CacheArtifactManager.deserialize(blob)
            [genuine] = artifacts["aot_autograd"]
            key, forge = ATTACKERS[attacker]
            evil = malicious_entry(genuine.content, self.marker, key, forge)
            artifacts["aot_autograd"] = [CacheArtifactFactory.create("aot_autograd", genuine.key, evil)]
            writer = AppendingByteSerializer(serialize_fn=_serialize_single_cache)
            writer.extend(artifacts.items())
            with fresh_cache():
                clear_in_memory_state()
                torch.compiler.load_cache_artifacts(writer.to_bytes())
                self.assertEqual(list(LocalStore().iter_paths()), [])  # refused at the door
                self.assertEqual(counters["torch_aotcache"]["signature_rejected"], 1)
                counters.clear()
                with spy_unpickling() as unpickled:
                    self.compile_and_check()
                self.assertFalse(os.path.exists(self.marker))
                self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
                _, evil_payload = framing.decode_header(evil)
                self.assertNotIn(bytes(evil_payload), unpickled)

    def test_mega_cache_write_path_refuses_unsigned(self) -> None:
        # The path Mega-Cache loading takes, called directly.
        with config.patch(signing_key="secret"):
            path, evil = self.compile_and_plant("unsigned")
            os.unlink(path)
            key = os.path.basename(os.path.dirname(path))
            ours.upstream.AOTAutogradCache._write_to_local_cache(key, evil)
            self.assertEqual(list(LocalStore().iter_paths()), [])
            self.assertEqual(counters["torch_aotcache"]["signature_rejected"], 1)
        self.assertFalse(os.path.exists(self.marker))

    def test_command_line_reads_headers_only(self) -> None:
        with config.patch(signing_key="secret"):
            self.compile_and_plant("wrong_key")
        cache = cache_dir()
        for keys in (NO_KEYS, {**NO_KEYS, "signing_key": "secret"}):
            with config.patch(**keys), spy_unpickling() as unpickled:
                for command in ("ls", "stats", "verify"):
                    out = io.StringIO()
                    with contextlib.redirect_stdout(out):
                        cli.main(["--cache-dir", cache, command])
            self.assertEqual(unpickled, [])
            self.assertFalse(os.path.exists(self.marker))
        # The real entry point, with the key from the environment: the
        # signature is what verify refuses.
        proc = run_child(
            ["-m", "torch_aotcache", "--cache-dir", cache, "verify"],
            child_env({"TORCH_AOTCACHE_SIGNING_KEY": "secret"}), timeout=300, cwd=self.tmp,
        )
        self.assertEqual(proc.returncode, 1, proc.stderr[-2000:])
        self.assertIn("BAD", proc.stdout)
        self.assertIn("signature does not verify", proc.stdout)
        self.assertFalse(os.path.exists(self.marker))


@instantiate_parametrized_tests
class TestWithoutSigning(TrustTestCase):
    """The documented threat model (SECURITY.md): without a key, an entry is
    trusted as upstream trusts its cache dir.  A writer who can put files in
    the store and recomputes the SHA-256 can make a process load code.  If one
    of these starts failing, update SECURITY.md."""

    def test_planted_pickle_with_recomputed_checksum_is_trusted(self) -> None:
        path, evil = self.compile_and_plant("unsigned")
        self.compile_and_check()  # still the right result...
        self.assertTrue(os.path.exists(self.marker))  # ...but the attacker's code ran
        # The loaded object is no compiled graph: a miss, recompiled and replaced.
        self.assertEqual(counters["torch_aotcache"]["load_failed"], 1)
        self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})

    def test_planted_mega_cache_artifact_is_trusted(self) -> None:
        path, evil = self.compile_and_plant("unsigned")
        os.unlink(path)
        ours.upstream.AOTAutogradCache._write_to_local_cache(os.path.basename(os.path.dirname(path)), evil)
        self.compile_and_check()
        self.assertTrue(os.path.exists(self.marker))

    @parametrize("signed", [False, True])
    def test_planted_guard_expression(self, signed: bool) -> None:
        # The guard expression is code too (the ShapeEnv evals it).  Unsigned,
        # nothing covers the header: an attacker edits the guard and names the
        # file after it.  Signed, the edit is refused before any guard runs.
        keys = {"signing_key": "secret"} if signed else {}
        with config.patch(**keys):
            self.compile_and_check()
            [path] = LocalStore().iter_paths()
            with open(path, "rb") as fh:
                header, payload = framing.decode_header(fh.read())
            evil_header = dataclasses.replace(header, guards_expr=f"open({self.marker!r}, 'w') is not None")
            raw = evil_header.to_json()
            os.unlink(path)
            LocalStore().put(header.key, evil_header.entry_id, schemas.MAGIC + len(raw).to_bytes(4, "big") + raw + bytes(payload))
            clear_in_memory_state()
            self.compile_and_check()
        if signed:
            self.assertFalse(os.path.exists(self.marker))
            self.assertEqual(counters["torch_aotcache"]["signature_rejected"], 1)
        else:
            self.assertTrue(os.path.exists(self.marker))


def g(x: torch.Tensor) -> torch.Tensor:
    # pointwise ops: Inductor generates C++ kernels for these on the CPU
    return (x.sin() * 2 + x.cos()).relu().sum(0)


EVIL_C = r"""
#include <stdio.h>
__attribute__((constructor)) static void plant(void) {
    FILE *f = fopen(MARKER, "w");
    if (f) fclose(f);
}
"""


@slow
@instantiate_parametrized_tests
class TestPlantedInductorFiles(TrustTestCase):
    """A hit loads its generated module and C++ kernels from the verified entry
    (Note [Self-contained entries] in inductor/artifacts.py), never from files a writer
    to Inductor's cache dir may have planted."""

    def compile_g(self) -> None:
        x = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(torch.compile(g)(x), g(x))

    def evil_library(self) -> bytes:
        src = os.path.join(self.tmp, "evil.c")
        out = os.path.join(self.tmp, "evil.so")
        with open(src, "w") as fh:
            fh.write(EVIL_C)
        cc = os.environ.get("CC", "cc")
        subprocess.run(
            [cc, "-shared", "-fPIC", f"-DMARKER=\"{self.marker}\"", src, "-o", out],
            check=True,
            capture_output=True,
        )
        with open(out, "rb") as fh:
            return fh.read()

    @parametrize("signed", [False, True])
    def test_planted_module_and_kernels_never_load_on_a_hit(self, signed: bool) -> None:
        keys = {"signing_key": "secret"} if signed else {}
        # The store apart from Inductor's cache dir makes entries self-contained
        # even unsigned; signing does so by itself.
        store = {} if signed else {"store_dir": os.path.join(self.tmp, "store")}
        with config.patch(**keys, **store):
            self.compile_g()
            self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
            self.assertGreater(counters["torch_aotcache"]["kernels_carried"], 0)
            modules = glob.glob(os.path.join(cache_dir(), "*", "*.py"))
            kernels = glob.glob(os.path.join(cache_dir(), "**", "*.so"), recursive=True)
            self.assertTrue(modules)
            self.assertTrue(kernels)
            sources = {p: open(p).read() for p in modules}
            carried = counters["torch_aotcache"]["kernels_carried"]
            clear_in_memory_state()  # forgets the loaded kernels, purges the modules
            for p, source in sources.items():
                with open(p, "w") as fh:
                    fh.write(f"open({self.marker!r}, 'w').close()\n" + source)
            evil = self.evil_library()
            for p in kernels:
                # A new file in place (the old one is still mapped into this
                # process: truncating it in place would crash it, not attack it).
                with open(p + ".evil", "wb") as fh:
                    fh.write(evil)
                os.replace(p + ".evil", p)
            self.compile_g()
            self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})
            self.assertEqual(counters["torch_aotcache"]["kernels_loaded"], carried)
            self.assertNotIn("kernels_not_carried", counters["torch_aotcache"])
        self.assertFalse(os.path.exists(self.marker), "a planted file was loaded")

    def test_the_planted_library_does_run_when_loaded(self) -> None:
        # The attack above is real: loading the planted library creates the marker.
        import ctypes

        path = os.path.join(self.tmp, "check.so")
        with open(path, "wb") as fh:
            fh.write(self.evil_library())
        ctypes.CDLL(path)
        self.assertTrue(os.path.exists(self.marker))

    def test_kernels_carried_after_the_dir_that_built_them_is_gone(self) -> None:
        # As torch 2.11 does, keep the loaded kernel modules across
        # fresh_cache(): the second compile gets the first one's module, whose
        # file was deleted with the first temporary cache dir.
        from torch._inductor.codecache import CppPythonBindingsCodeCache

        keep_modules = staticmethod(CppPythonBindingsCodeCache.cache.clear)
        with unittest.mock.patch.object(CppPythonBindingsCodeCache, "cache_clear", keep_modules):
            for _ in range(2):
                with fresh_cache(), config.patch(store_dir=tempfile.mkdtemp(dir=self.tmp)):
                    clear_in_memory_state()
                    self.compile_g()
                    self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
                    self.assertGreater(counters["torch_aotcache"]["kernels_carried"], 0)
                    self.assertNotIn("kernels_unreadable", counters["torch_aotcache"])

    def test_carried_kernel_that_cannot_load_is_built_from_source(self) -> None:
        # E.g. a temp dir mounted noexec, or a binary from a machine with a
        # newer C library: the hit goes on, the kernel is built as upstream would.
        from torch._inductor.codecache import CppPythonBindingsCodeCache

        real = CppPythonBindingsCodeCache._load_library.__func__
        refused = []

        def refuse_private(cls, path, key):
            if os.path.dirname(path) == artifacts._private_folder():
                refused.append(path)
                raise OSError("failed to map segment from shared object")
            return real(cls, path, key)

        with config.patch(store_dir=os.path.join(self.tmp, "store")):
            self.compile_g()
            carried = counters["torch_aotcache"]["kernels_carried"]
            clear_in_memory_state()
            with unittest.mock.patch.object(
                CppPythonBindingsCodeCache, "_load_library", classmethod(refuse_private)
            ), self.assertLogs(
                "torch_aotcache.inductor.artifacts", level="WARNING"
            ) as logs:
                self.compile_g()
            self.assertEqual(len(logs.output), 1)  # once, however many kernels
            self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})
            self.assertEqual(len(refused), carried)
            self.assertEqual(counters["torch_aotcache"]["kernels_load_failed"], carried)

    def test_tampered_kernel_in_an_entry_is_refused(self) -> None:
        # A kernel carried in an entry is covered by its checksum (and the
        # signature): a flipped byte makes the entry a miss, never a load.
        with config.patch(store_dir=os.path.join(self.tmp, "store")):
            self.compile_g()
            [path] = LocalStore().iter_paths()
            with open(path, "rb") as fh:
                data = bytearray(fh.read())
            header, _ = framing.decode_header(bytes(data))
            self.assertTrue(header.artifacts)
            data[-10] ^= 0xFF  # inside the last carried kernel
            with open(path, "wb") as fh:
                fh.write(bytes(data))
            clear_in_memory_state()
            self.compile_g()
            self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
            self.assertEqual(counters["torch_aotcache"]["quarantined"], 1)


class TestKeyRotation(TrustTestCase):
    def key_file(self, secret: str) -> str:
        path = os.path.join(self.tmp, f"{secret}.key")
        with open(path, "w") as fh:
            fh.write(secret + "\n")
        return path

    def test_old_key_accepted_while_listed_for_verification(self) -> None:
        with config.patch(signing_key="old"):
            self.compile_and_check()
        clear_in_memory_state()
        with config.patch(signing_key="new", verify_key_files=self.key_file("old")):
            self.compile_and_check()
        self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})
        self.assertNotIn("signature_rejected", counters["torch_aotcache"])

    def test_old_key_refused_once_dropped(self) -> None:
        with config.patch(signing_key="old"):
            self.compile_and_check()
        clear_in_memory_state()
        with config.patch(signing_key="new"):
            self.compile_and_check()
            self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})
            self.assertEqual(counters["torch_aotcache"]["signature_rejected"], 1)
            self.assertEqual(counters["torch_aotcache"]["quarantined"], 1)
            # The replacement is signed with the new key.
            [path] = LocalStore().iter_paths()
            with open(path, "rb") as fh:
                header, _ = framing.decode_header(fh.read())
            self.assertEqual(header.key_id, signing.key_id(b"new"))
            clear_in_memory_state()
            self.compile_and_check()
            self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})

    def test_signing_key_from_file(self) -> None:
        with config.patch(signing_key_file=self.key_file("filekey")):
            self.compile_and_check()
            [path] = LocalStore().iter_paths()
            with open(path, "rb") as fh:
                header, _ = framing.decode_header(fh.read())
            self.assertEqual(header.key_id, signing.key_id(b"filekey"))
            clear_in_memory_state()
            self.compile_and_check()
            self.assertEqual(aot_counts(), {"autograd_cache_hit": 1})

    def test_unsigned_entry_refused_once_signing_is_on(self) -> None:
        self.compile_and_check()
        clear_in_memory_state()
        with config.patch(signing_key="secret"):
            self.compile_and_check()
        self.assertEqual(counters["torch_aotcache"]["signature_rejected"], 1)
        self.assertEqual(aot_counts(), {"autograd_cache_miss": 1, "autograd_cache_saved": 1})


if __name__ == "__main__":
    from torch._dynamo.test_case import run_tests

    run_tests()
