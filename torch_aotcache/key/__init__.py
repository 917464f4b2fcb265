"""The key: what a cache key is made of.

``graph_hashing`` encodes the graph, its inputs and configuration values
canonically (the same in every process); ``fingerprint`` describes the torch
install, the toolchain and the hardware an artifact depends on.
``autograd_cache.autograd_cache_key`` puts the components together, as
upstream's function of that name does.
"""
