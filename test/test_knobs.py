"""
One parser reads every knob from the environment (``knobs.from_environment``,
``knobs.disabled``): the config module and the torch-free reader
(``store/layout.py``) get the same value for every spelling of a boolean,
and a value that says nothing clear warns, naming the variable, while the
default holds.  ``TORCH_AOTCACHE_DISABLE=off`` leaves the package on.
"""

from __future__ import annotations

import itertools
import unittest
import warnings

import torch  # noqa: F401  (first: the package's install waits for torch's import)

from torch_aotcache import knobs

from common import child_env, read_settings, run_child

SPELLINGS = {
    True: ["1", "true", "True", "TRUE", "yes", "Yes", "on", "ON", " on ", "true\n"],
    False: ["0", "false", "False", "FALSE ", "no", "NO", "off", "Off", " 0"],
}
BOOL_KNOBS = sorted(n for n, k in knobs.KNOBS.items() if k.type == "bool" and k.env)


class TestParsing(unittest.TestCase):
    def test_every_spelling_of_every_boolean_knob(self) -> None:
        for (want, words), name in itertools.product(SPELLINGS.items(), BOOL_KNOBS):
            for word in words:
                with self.subTest(name=name, word=word):
                    env = {knobs.KNOBS[name].env: word}
                    self.assertIs(knobs.from_environment(name, env), want)

    def test_anything_else_warns_naming_the_variable_and_keeps_the_default(self) -> None:
        for word in ("disable=0", "enabled", "2", "yes please", "-1"):
            with self.subTest(word=word), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                value = knobs.from_environment("front_door", {"TORCH_AOTCACHE_FRONT_DOOR": word})
                self.assertIs(value, knobs.KNOBS["front_door"].default)
                self.assertEqual(len(caught), 1)
                self.assertIn("TORCH_AOTCACHE_FRONT_DOOR", str(caught[0].message))
        with self.assertRaisesRegex(knobs.KnobError, "TORCH_AOTCACHE_DYNAMO='maybe' is not a boolean"):
            knobs.parse("dynamo", "maybe")

    def test_unset_or_empty_is_the_default(self) -> None:
        self.assertEqual(knobs.from_environment("max_size", {}), knobs.KNOBS["max_size"].default)
        self.assertEqual(knobs.from_environment("front_door", {"TORCH_AOTCACHE_FRONT_DOOR": ""}), True)
        self.assertEqual(knobs.from_environment("max_size", {"TORCH_AOTCACHE_MAX_SIZE": "3G"}), "3G")

    def test_disable(self) -> None:
        for word in SPELLINGS[True]:
            self.assertTrue(knobs.disabled({knobs.DISABLE_ENV: word}), word)
        for word in SPELLINGS[False] + ["", "  "]:
            self.assertFalse(knobs.disabled({knobs.DISABLE_ENV: word}), word)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.assertFalse(knobs.disabled({knobs.DISABLE_ENV: "disable=0"}))
        self.assertIn(knobs.DISABLE_ENV, str(caught[0].message))


class TestReadersAgree(unittest.TestCase):
    def test_config_and_the_torch_free_reader_read_words_alike(self) -> None:
        """``false``/``off`` mean off in a process with torch (config) and in one
        without (store/layout.py); ``off`` disables the package."""
        env = child_env({"TORCH_AOTCACHE_RECORD_STATS": "off", "TORCH_AOTCACHE_FRONT_DOOR": "False ",
                         "TORCH_AOTCACHE_DYNAMO": "yes"})
        want = {"record_stats": False, "front_door": False, "dynamo": True}
        self.assertEqual(read_settings(sorted(want), env), {"torch": want, "reader": want})
        # TORCH_AOTCACHE_DISABLE=off: not disabled (it used to turn the package off).
        for word, installed in (("off", "True"), ("on", "False")):
            proc = run_child(["-c", "import torch, torch_aotcache; print(torch_aotcache.is_installed())"],
                             child_env({knobs.DISABLE_ENV: word}))
            self.assertEqual(proc.stdout.strip().splitlines()[-1], installed, proc.stderr[-2000:])


if __name__ == "__main__":
    unittest.main()
