"""The package's own source, shown in a notebook next to the equation it implements.

The notebooks never copy code: :func:`show_source` reads the function from the installed package with
``inspect`` at execution time, so what a reader sees is what runs, and it cannot drift.
"""

from __future__ import annotations

import inspect
from pathlib import Path

_PACKAGE_PARENT = Path(__file__).resolve().parent.parent.parent


class SourceListing:
    """A function's source with its file and line numbers; renders as Markdown in Jupyter, text elsewhere."""

    def __init__(self, obj: object) -> None:
        lines, start = inspect.getsourcelines(obj)  # follows __wrapped__ (e.g. @torch.no_grad()) ...
        path = Path(inspect.getsourcefile(inspect.unwrap(obj))).resolve()  # ... so the file must too
        try:
            path = path.relative_to(_PACKAGE_PARENT)
        except ValueError:
            pass
        self.name = getattr(obj, "__qualname__", repr(obj))
        self.where = f"{path.as_posix()}, lines {start}-{start + len(lines) - 1}"
        self.code = "".join(lines)

    def _repr_markdown_(self) -> str:
        return f"`{self.name}` ({self.where}):\n\n```python\n{self.code}```"

    def __repr__(self) -> str:
        return f"# {self.name} ({self.where})\n{self.code}"


def show_source(obj: object) -> SourceListing:
    """The source of a function, class or method of the package, rendered with where it lives."""
    return SourceListing(obj)
