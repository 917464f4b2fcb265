"""Installing torch_aotcache in place of upstream's cache, and taking it out.

``patching``: the patch table and the install itself (reversible);
``lazy``: installing when torch's patched modules are first imported;
``drift``: the check that the upstream code a part mirrors is still the code
it was written for (Note [Drift fails safe]).
"""
