"""Layer 5, the notebooks' helpers: nothing in the package imports them.

- ``session``: run modes (``tiny`` under nbmake, ``full`` for committed outputs) and which results to show.
- ``teaching``: small, printable demonstrations of the method's pieces.
- ``toy``: notebook 01's exact toy problem (re-exported by ``teaching``).
- ``figures``: the notebooks' figures.
"""
