"""
Caching Dynamo's compiled frames (torch 2.15 and later): a warm process runs
a compiled function without tracing it.

Note [Caching Dynamo's frames]
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
torch 2.15 can package a compiled frame (its transformed bytecode, its guards
in serialized form and the ids of the compiled graphs it calls) and install
such a package in another process (``torch._dynamo.package``); with
``torch._dynamo.config.caching_precompile`` it does so for every
``torch.compile``, but it saves only when the program calls
``torch.compiler.save_cache_artifacts()``, keys a package by the function's
name and first line only, and drops every guard it cannot serialize (a global
bound to a function, an imported module, a class): a later process can run a
stored frame where tracing would have produced another program.

With ``TORCH_AOTCACHE_DYNAMO=1`` (``torch_aotcache.config.dynamo``) we keep
upstream's package and replace the rest:

* saving (``frames.py``): each frame's package goes to our store as soon as
  the compiled graphs it calls are saved, with no call from the program, as
  one of our entries (verified header, signature, bound, ``ls``/``explain``,
  export/import, the remote tier);
* the key (``frames.py``): the function's module, name and bytecode, the
  settings of the ``torch.compile`` call, Dynamo's, Inductor's and
  AOTAutograd's configs, Python and torch;
* guards (``guards.py``): instead of dropping an identity guard, we name its
  value by reference (a module by name; a function or class by module and
  qualified name, and a function's bytecode) and keep a guard that holds
  across processes: the source must be the object of that name in the
  running process.  A value that cannot be named keeps its original guard,
  and the frame is not packaged (counted);
* loading (``frames.py``): before Dynamo would trace, a package is verified
  (header, checksum, signature) before anything in it is unpickled, and
  checked (the sources it inlined, the names its replacement guards refer
  to, its compiled graphs) before anything is installed; any failure is a
  miss, counted by reason, and Dynamo traces as usual.

``install.py`` switches it on and off (reversibly).
"""
