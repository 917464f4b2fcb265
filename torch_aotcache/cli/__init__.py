"""The command line: ``python -m torch_aotcache <command>`` (``commands``) and
the demo (``demo``).  Reads the store without importing torch."""
