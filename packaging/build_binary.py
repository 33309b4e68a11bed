"""Build the one-file ``locshare`` executable: ``python packaging/build_binary.py``.

The result, ``dist/locshare`` (``--dist`` to change), runs exactly like the installed
command: ``./dist/locshare serve``, ``settings``, ``healthcheck``.  On the target machine
it needs a glibc at least as new as the build machine's and ``libz.so.1`` (for
PostgreSQL; every glibc distribution has it), and, when run as root, ``useradd`` (pgserver
creates the ``pgserver`` user that runs PostgreSQL).  The Dockerfile and
``tests/test_binary.py`` build with this same command.

What goes into the binary, besides what PyInstaller finds by following imports:

* locshare's package data (``locshare/storage/migrations/*.sql``, ``locshare/web/**`` when
  present) and every locshare submodule;
* the PostgreSQL that ``pgserver`` ships: ``pginstall/bin``, the shared objects of
  ``pginstall/lib`` and ``pginstall/share``, at ``pgserver/pginstall`` in the bundle,
  which is where ``pgserver`` looks (``Path(pgserver._commands.__file__).parent``).
  Headers and static libraries stay out.  Executable bits are kept (PyInstaller unpacks
  files whose source is executable as 0700, everything else as 0600);
* ``pgserver.libs`` (the auditwheel-vendored libpq that ``initdb`` and friends find
  through ``RPATH=$ORIGIN/../../../pgserver.libs``), at the same relative place;
* the submodules that compiled extensions import behind PyInstaller's back (asyncpg's
  protocol imports ``asyncpg.pgproto.pgproto``), listed in ``HIDDEN_IMPORTS``;
* the runtime hook ``pyi_rth_locshare.py`` (library path and root permissions, see there).

Output: the binary in ``--dist``; PyInstaller's work files and the generated spec in
``--work`` (default ``build/pyinstaller``); PyInstaller's own cache in
``~/.cache/pyinstaller`` (cleared first, ``--clean``).  Nothing else is written.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
NAME = "locshare"

# Packages whose every submodule goes in: locshare (lazy imports inside functions are
# found too, but this keeps a future importlib-based import from breaking only the
# binary) and asyncpg (its Cython protocol imports modules PyInstaller cannot see).
COLLECT_SUBMODULES = ("locshare", "asyncpg")
HIDDEN_IMPORTS = ("asyncpg.pgproto.pgproto",)
# Never used by the server, but reachable through optional imports (numpy's
# ``show_config`` tries yaml; asyncpg's test helpers pull in unittest) or present in the
# same virtual environment as the test and bench extras.
EXCLUDES = (
    "asyncpg._testbase",
    "yaml",
    "tkinter",
    "pytest",
    "_pytest",
    "hypothesis",
    "schemathesis",
    "playwright",
    "IPython",
    "matplotlib",
    "PIL",
    "numpy.f2py",
    "numpy.distutils",
    "setuptools",
    "pip",
)
PG_DIRS_IN_FULL = ("bin", "share")
PG_LIB_SKIPPED_SUFFIXES = (".a",)
PG_LIB_SKIPPED_DIRS = ("pgxs", "pkgconfig")


def site_dir_of(package: str) -> Path:
    """The directory holding ``package`` (found without importing it)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"build_binary: {package} is not installed in this environment")
    return Path(spec.origin).resolve().parent.parent


def pgserver_data() -> Iterator[tuple[Path, str]]:
    """``(source, destination directory in the bundle)`` for the embedded PostgreSQL."""
    site = site_dir_of("pgserver")
    pginstall = site / "pgserver" / "pginstall"
    for name in PG_DIRS_IN_FULL:
        yield pginstall / name, f"pgserver/pginstall/{name}"
    lib = pginstall / "lib"
    for path in sorted(lib.rglob("*")):
        relative = path.relative_to(lib)
        if path.is_dir() or path.suffix in PG_LIB_SKIPPED_SUFFIXES:
            continue
        if any(part in PG_LIB_SKIPPED_DIRS for part in relative.parts):
            continue
        yield path, str(Path("pgserver/pginstall/lib", *relative.parts[:-1]))
    vendored = site / "pgserver.libs"
    if vendored.is_dir():
        yield vendored, "pgserver.libs"


def pyinstaller_arguments(dist: Path, work: Path) -> list[str]:
    arguments = [
        str(PACKAGING / "locshare_main.py"),
        "--name",
        NAME,
        "--onefile",
        "--noconfirm",
        "--clean",
        "--log-level",
        "WARN",
        "--distpath",
        str(dist),
        "--workpath",
        str(work),
        "--specpath",
        str(work),
        # PyInstaller's import analysis does not see setuptools' editable-install finder
        # (``pip install -e``), so the source tree goes on its search path.
        "--paths",
        str(ROOT),
        "--runtime-hook",
        str(PACKAGING / "pyi_rth_locshare.py"),
        "--collect-data",
        "locshare",
    ]
    for package in COLLECT_SUBMODULES:
        arguments += ["--collect-submodules", package]
    for module in HIDDEN_IMPORTS:
        arguments += ["--hidden-import", module]
    for module in EXCLUDES:
        arguments += ["--exclude-module", module]
    for source, destination in pgserver_data():
        arguments += ["--add-data", f"{source}{os.pathsep}{destination}"]
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="default: dist/")
    parser.add_argument(
        "--work",
        type=Path,
        default=ROOT / "build" / "pyinstaller",
        help="default: build/pyinstaller/",
    )
    args = parser.parse_args(argv)
    import PyInstaller.__main__  # type: ignore[import-untyped]

    started = time.monotonic()
    PyInstaller.__main__.run(pyinstaller_arguments(args.dist.resolve(), args.work.resolve()))
    binary = args.dist.resolve() / NAME
    size_mib = binary.stat().st_size / 2**20
    print(f"built {binary} ({size_mib:.1f} MiB) in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
