"""What keeps the app inside its runs directory and keeps data from becoming markup.

The app reads only below the runs root it was started on: every path is resolved (symlinks included) and must
stay inside the resolved root. Text from the data (tokens, completions) is HTML-escaped wherever it is put
into HTML, so a token such as `<script>alert(1)</script>` is shown as text.
"""

import html
from pathlib import Path


class OutsideRunsDir(ValueError):
    """A path resolves outside the runs root (a `..` component or a symlink pointing out)."""


def inside(root, relative) -> Path:
    """`root / relative`, resolved, or OutsideRunsDir if it is not within the resolved `root`."""
    base = Path(root).resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise OutsideRunsDir(f"{relative!s} resolves to {path}, outside the runs directory {base}")
    return path


def escape(text: str) -> str:
    """`text` as HTML character data or attribute value: & < > " ' escaped."""
    return html.escape(text, quote=True)
