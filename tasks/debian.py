"""The pinned Debian packages that the corpus and the text tasks are made from, and their download.

    PACKAGES                 every (package, version) the corpus and the text tasks are built from
    fetch(cache)             `apt-get download PKG=VERSION` into cache/debs, `dpkg-deb -x` into cache/trees
                             (never installed); the only function of the data floor that touches the network

What the unpacked trees hold is read by tasks/sources.py (man pages, gettext catalogs, reStructuredText,
WordNet), man pages rendered to text by tasks/roff.py.
"""

import shutil
import subprocess
import tempfile
from pathlib import Path

from common.io import sha256_file

# The packages text comes from, with the exact versions (Debian 12 "bookworm", amd64 for arch-dependent
# packages). Versions are pinned so that the same list gives the same .debs; a version the archive no
# longer carries (a point or security release replaced it) fails the download, naming it.
PACKAGES: tuple[tuple[str, str], ...] = (
    # man pages: the Linux man-pages project (sections 2-7) and the pages of common command-line tools
    ("manpages", "6.03-2"),
    ("manpages-dev", "6.03-2"),
    ("coreutils", "9.1-1"),
    ("findutils", "4.9.0-4"),
    ("grep", "3.8-5"),
    ("sed", "4.9-1+deb12u1"),
    ("tar", "1.34+dfsg-1.2+deb12u1"),
    ("diffutils", "1:3.8-4"),
    ("gzip", "1.12-1"),
    ("gawk", "1:5.2.1-2"),
    ("make", "4.3-4.1"),
    ("procps", "2:4.0.2-3"),
    ("psmisc", "23.6-1"),
    ("util-linux", "2.38.1-5+deb12u3"),
    ("man-db", "2.11.2-2"),
    ("dpkg", "1.21.23"),
    ("apt", "2.6.2"),
    ("iproute2", "6.1.0-3"),
    ("e2fsprogs", "1.47.0-2+b2"),
    ("passwd", "1:4.13+dfsg1-1+deb12u2"),
    ("gettext", "0.21-12"),
    ("git-man", "1:2.39.5-0+deb12u3"),
    ("openssl", "3.0.22-1~deb12u2"),
    ("libssl-doc", "3.0.22-1~deb12u2"),
    ("libx11-doc", "2:1.8.4-2+deb12u2"),
    ("tcl8.6-doc", "8.6.13+dfsg-2"),
    ("perl-doc", "5.36.0-7+deb12u4"),
    # gettext catalogs (English msgids; French msgstrs for the translation task)
    ("bash", "5.2.15-2+b13"),
    ("cpio", "2.13+dfsg-7.1"),
    ("wget", "1.21.3-1+deb12u1"),
    ("nano", "7.2-1+deb12u1"),
    ("bison", "2:3.8.2+dfsg-1+b1"),
    ("sudo", "1.9.13p3-1+deb12u4"),
    ("git", "1:2.39.5-0+deb12u3"),
    ("util-linux-locales", "2.38.1-5+deb12u3"),
    ("e2fsprogs-l10n", "1.47.0-2"),
    ("gnupg-l10n", "2.2.40-1.1+deb12u2"),
    ("libc-l10n", "2.36-9+deb12u14"),
    ("debconf-i18n", "1.5.82"),
    ("aptitude-common", "0.8.13-5"),
    ("mc-data", "3:4.8.29-2"),
    ("binutils-common", "2.40-2"),
    ("libgtk-3-common", "3.24.38-2~deb12u3"),
    ("libglib2.0-data", "2.74.6-2+deb12u9"),
    ("postgresql-client-15", "15.20-0+deb12u1"),
    # WordNet 3.0 glosses and the Python 3.11 documentation (its reStructuredText sources)
    ("wordnet-base", "1:3.0-37"),
    ("python3.11-doc", "3.11.2-6+deb12u9"),
)


class FetchError(RuntimeError):
    """A package could not be downloaded or unpacked; the message names it."""


# ---------------------------------------------------------------------------------------------------------------
# Download and unpack (network: the Debian archive through apt)


def deb_stem(package: str, version: str) -> str:
    """`package_version` as apt-get download names the file (an epoch's ':' becomes '%3a')."""
    return f"{package}_{version.replace(':', '%3a')}"


def fetch(cache, packages=PACKAGES) -> dict[tuple[str, str], dict]:
    """Download (once) and unpack (once) each pinned package into `cache`.

    Returns {(package, version): {"deb": path, "sha256": hex digest of the .deb, "tree": unpacked dir}}.
    `apt-get update` runs once, before the first download, when a .deb is missing; nothing is installed.
    """
    cache = Path(cache).resolve()
    debs, trees = cache / "debs", cache / "trees"
    debs.mkdir(parents=True, exist_ok=True)
    trees.mkdir(parents=True, exist_ok=True)
    updated = False
    out = {}
    for package, version in packages:
        stem = deb_stem(package, version)
        found = sorted(debs.glob(f"{stem}_*.deb"))
        if not found:
            if not updated:
                _run(["apt-get", "update", "-q"], cwd=debs, what="apt-get update")
                updated = True
            _run(["apt-get", "download", "-q", f"{package}={version}"], cwd=debs, what=f"{package}={version}")
            found = sorted(debs.glob(f"{stem}_*.deb"))
            if not found:
                raise FetchError(f"{package}={version}: apt-get download left no {stem}_*.deb in {debs}")
        deb = found[0]
        tree = trees / stem
        if not tree.is_dir():
            tmp = Path(tempfile.mkdtemp(dir=trees, prefix=f".{stem}."))
            try:
                _run(["dpkg-deb", "-x", str(deb), str(tmp)], cwd=trees, what=f"unpacking {deb.name}")
                tmp.rename(tree)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        out[(package, version)] = {"deb": deb, "sha256": sha256_file(deb), "tree": tree}
    return out


def _run(cmd, cwd, what):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise FetchError(f"{what}: `{' '.join(cmd)}` failed ({result.returncode}): {result.stderr.strip()[-500:]}")
