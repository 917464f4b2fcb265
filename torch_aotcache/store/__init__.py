"""The local store and its housekeeping.

``layout``: where the store is and what every folder and file in it is
called (no torch import: the command line reads the store without torch);
``local``: reading and writing entries; ``housekeeping``: the size bound,
eviction, stale files; ``stats`` and ``explain``: what the cache did, and
why a lookup missed.
"""
