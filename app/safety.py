"""What keeps the app inside its runs directory and keeps data from becoming markup.

The app reads only below the runs root it was started on. Every path is resolved (symlinks included) and
checked against the resolved root BEFORE the app lists it or opens it: `inside` resolves, and resolving only
reads link entries (lstat, readlink), never a directory's listing or a file's bytes; `scandir` lists a
directory only once `inside` has accepted it. A refused path is named by its path under the root, never by
where it points, so the app shows nothing of the file system outside.

Text from the data (tokens, completions) is HTML-escaped wherever it is put into HTML, so a token such as
`<script>alert(1)</script>` is shown as text.
"""

import html
import os
from pathlib import Path


class OutsideRunsDir(ValueError):
    """A path resolves outside the runs root (a `..` component, an absolute path or a symlink pointing out),
    or does not resolve at all (a symlink loop)."""


def inside(root, relative) -> Path:
    """`root / relative`, resolved, or OutsideRunsDir if it is not within the resolved `root`. The message
    names `relative`, not its target."""
    base = Path(root).resolve()
    name = Path(relative).as_posix()
    try:
        path = (base / relative).resolve()
    except RuntimeError:  # Python 3.11: "Symlink loop from ..."
        raise OutsideRunsDir(f"{name}: a symlink loop") from None
    if not path.is_relative_to(base):
        raise OutsideRunsDir(f"{name}: outside the runs directory")
    return path


def scandir(root, relative) -> list[os.DirEntry]:
    """The entries of directory `root / relative`, sorted by name, listed only after `inside` has accepted the
    directory (OutsideRunsDir otherwise). The entries themselves are not checked: their paths go through
    `inside` before they are used."""
    with os.scandir(inside(root, relative)) as it:
        return sorted(it, key=lambda e: e.name)


def escape(text: str) -> str:
    """`text` as HTML character data or attribute value: & < > " ' escaped."""
    return html.escape(text, quote=True)
