"""Re-run only the ``show_source`` cells of notebooks and store their fresh outputs.

A source listing shows a package function with its file and line numbers; editing a module above such a
function moves the numbers and ``tests/test_notebooks.py`` asks for a re-execution. When nothing else a
notebook shows changed, re-running just these cells (in order, in one namespace, as the kernel would)
gives the outputs a full re-execution would give them::

    python scripts/refresh_listings.py notebooks/04_qa_coding.ipynb notebooks/06_translation.ipynb
"""

from __future__ import annotations

import sys

import nbformat


def refresh(path: str) -> int:
    """Re-run the notebook's ``show_source`` cells; returns how many outputs changed."""
    notebook = nbformat.read(path, as_version=4)
    namespace: dict = {}
    changed = 0
    for cell in notebook.cells:
        if cell.cell_type != "code" or "show_source(" not in cell.source:
            continue
        *body, last = cell.source.rstrip().splitlines()
        exec("\n".join(body), namespace)  # the cell's own imports, as the kernel runs them
        listing = eval(last, namespace)
        # as IPython stores them (its plain-text formatter drops the trailing newline)
        data = {"text/markdown": listing._repr_markdown_(), "text/plain": repr(listing).rstrip("\n")}
        outputs = [o for o in cell.outputs if o.get("output_type") == "execute_result"]
        if len(outputs) != 1:
            raise ValueError(f"{path}: a show_source cell without exactly one result")
        changed += outputs[0]["data"] != data
        outputs[0]["data"] = data
    nbformat.write(notebook, path)
    return changed


if __name__ == "__main__":
    for notebook_path in sys.argv[1:]:
        print(notebook_path, refresh(notebook_path), "listing(s) changed")
