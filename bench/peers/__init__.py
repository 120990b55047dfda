"""Other recognisers, run with their own pipelines, as rows to compare meer against.

Used by the benchmark scripts only (``from peers.dlib import ...`` in a script under bench/,
``from bench.peers.dlib import ...`` in the tests); not part of the installed package.
"""
