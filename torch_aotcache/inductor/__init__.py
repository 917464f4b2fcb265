"""The Inductor side: what a hit needs from Inductor, and what it can skip.

``artifacts``: compiled kernels carried inside entries; ``front_door`` and
``light_runtime``: a hit served without Inductor's compiler; ``digests`` and
``isa_probes``: Inductor's per-process work (``torch_key``, the CPU ISA
probes) kept on disk between processes.  Each module patches or mirrors
functions of ``torch/_inductor``; see CONTRIBUTING.md ("Where the code
lives") for why the patch tool carries them as a package, not as edits.
"""
