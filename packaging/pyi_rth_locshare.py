"""PyInstaller runtime hook: runs in the one-file binary before locshare's own code.

It prepares the unpacked bundle (``sys._MEIPASS``, a fresh ``_MEIxxxxxx`` directory under
``$TMPDIR`` or ``/tmp``) for the embedded PostgreSQL that ``pgserver`` starts from
``_MEIPASS/pgserver/pginstall``:

Rule 1 (library path): the bootloader points ``LD_LIBRARY_PATH`` at the bundle so the
Python process finds its bundled libraries; the dynamic loader read it at start-up, so
it can be reset now.  Child processes (``initdb``, ``pg_ctl``, ``postgres``, and
``useradd`` when root) get the caller's original value back, as PyInstaller documents,
so system programs never load the bundle's copies of system libraries.  The PostgreSQL
programs find their own libraries through their RPATH (``pgserver.libs``, bundled at the
same relative place as in site-packages).

Rule 2 (root): PostgreSQL refuses to run as root, so under root ``pgserver`` runs it as
the system user ``pgserver``.  The bootloader unpacks directories as 0700, binaries as
0700 and other files as 0600, all owned by root, and ``pgserver`` itself only opens up
``pginstall/bin`` and ``pginstall/lib``.  So, as root only, the PostgreSQL tree and
``pgserver.libs`` are made readable (directories and programs also traversable and
executable) by group and others, and the directories above them traversable.  Nothing
else in the bundle is widened, and nothing is ever narrowed.  Under any other user
PostgreSQL runs as that user, who owns the bundle: nothing to do.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

_READ = stat.S_IRGRP | stat.S_IROTH
_TRAVERSE = stat.S_IXGRP | stat.S_IXOTH


def _restore_library_path() -> None:
    original = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is None:
        os.environ.pop("LD_LIBRARY_PATH", None)
    else:
        os.environ["LD_LIBRARY_PATH"] = original


def _widen(path: Path, bits: int) -> None:
    mode = path.lstat().st_mode
    if not stat.S_ISLNK(mode) and mode & bits != bits:
        path.chmod(stat.S_IMODE(mode) | bits)


def _open_tree_to_others(root: Path) -> None:
    """Directories and owner-executable files get r-x, other files r--, for group/others."""
    _widen(root, _READ | _TRAVERSE)
    for directory, subdirs, files in os.walk(root):
        for name in subdirs:
            _widen(Path(directory, name), _READ | _TRAVERSE)
        for name in files:
            path = Path(directory, name)
            executable = path.lstat().st_mode & stat.S_IXUSR
            _widen(path, _READ | (_TRAVERSE if executable else 0))


def _prepare_bundle_for_pgserver_user(bundle: Path) -> None:
    targets = [bundle / "pgserver" / "pginstall", bundle / "pgserver.libs"]
    for directory in (bundle, bundle / "pgserver"):
        _widen(directory, _TRAVERSE)
    for target in targets:
        if target.is_dir():
            _open_tree_to_others(target)


def _main() -> None:
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle is None:
        return
    _restore_library_path()
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        _prepare_bundle_for_pgserver_user(Path(bundle))


_main()
