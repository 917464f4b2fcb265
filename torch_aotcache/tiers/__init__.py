"""Beyond one process: the remote tier, single flight and multi-rank jobs.

``remote``: entries shared through Redis; ``single_flight``: one compile
per key across processes, the others wait for its entry; ``ranks``: the
hit-or-miss decision that the ranks of a job take together.
"""
