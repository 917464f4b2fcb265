"""The entry: an entry's bytes, their format and their verification.

``schemas`` (beside ``autograd_cache``, as upstream has it) holds the data an
entry carries; this group checks an entry before anything in it is used:
``signing`` (signed entries).
"""
