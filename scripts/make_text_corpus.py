"""Write jobs/data/pydocs.txt, the built-in text corpus (`builtin:pydocs`), once.

The corpus is the docstrings of a fixed list of pure-Python standard library modules
(PSF License, see jobs/data/README.md): English prose with code examples, which a small
character-level language model learns well beyond its unigram baseline. Each module gives
its own docstring, then those of its public classes, their methods and its functions, in
name order, each under a line naming it, until the file reaches `TARGET_BYTES`. The text
depends on the Python version that runs this (the file records it); the shipped file is
the data set, so regenerate it only on purpose:

    .venv/bin/python scripts/make_text_corpus.py
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

# prose-heavy modules first, so that a smaller target still gets the best text
MODULES = (
    "argparse",
    "textwrap",
    "string",
    "json",
    "json.decoder",
    "json.encoder",
    "csv",
    "collections",
    "functools",
    "dataclasses",
    "enum",
    "fractions",
    "decimal",
    "statistics",
    "random",
    "calendar",
    "datetime",
    "pathlib",
    "shutil",
    "tempfile",
    "glob",
    "fnmatch",
    "subprocess",
    "threading",
    "queue",
    "heapq",
    "bisect",
    "difflib",
    "pprint",
    "reprlib",
    "inspect",
    "typing",
    "contextlib",
    "abc",
    "copy",
    "shlex",
    "configparser",
    "logging",
    "zipfile",
    "tarfile",
    "gzip",
    "email.message",
    "email.utils",
    "urllib.parse",
    "http.client",
    "http.cookies",
    "smtplib",
    "ftplib",
    "socketserver",
    "pdb",
    "doctest",
    "unittest.case",
    "unittest.mock",
    "optparse",
    "getopt",
    "gettext",
    "locale",
    "codecs",
    "base64",
    "quopri",
    "uu",
    "pickle",
    "shelve",
    "sched",
    "selectors",
    "ipaddress",
    "wave",
    "mailbox",
    "imaplib",
    "poplib",
    "tokenize",
    "ast",
    "dis",
    "pickletools",
    "trace",
    "timeit",
    "cmd",
    "code",
    "pydoc",
    "asyncio.events",
    "asyncio.tasks",
    "asyncio.streams",
    "concurrent.futures._base",
    "multiprocessing.pool",
    "xml.dom.minidom",
    "xml.etree.ElementTree",
    "html.parser",
    "sqlite3",
    "zoneinfo",
    "graphlib",
    "numbers",
    "operator",
    "weakref",
    "types",
    "os",
    "posixpath",
    "platform",
    "sysconfig",
    "site",
    "warnings",
    "traceback",
    "linecache",
)
TARGET_BYTES = 400_000
OUT = Path(__file__).resolve().parent.parent / "jobs" / "data" / "pydocs.txt"


def _entries(module: object) -> list[tuple[str, str]]:
    """(heading, docstring) for a module and its public classes, methods and functions."""
    name = module.__name__  # type: ignore[attr-defined]
    out = []
    if doc := inspect.getdoc(module):
        out.append((f"module {name}", doc))
    for attr, obj in sorted(vars(module).items()):
        # only objects defined here: re-exports would repeat another module's text
        if attr.startswith("_") or getattr(obj, "__module__", None) != name:
            continue
        if inspect.isclass(obj):
            if doc := inspect.getdoc(obj):
                out.append((f"class {name}.{attr}", doc))
            for meth, fn in sorted(vars(obj).items()):
                if not meth.startswith("_") and inspect.isfunction(fn) and fn.__doc__:
                    out.append((f"method {name}.{attr}.{meth}", inspect.cleandoc(fn.__doc__)))
        elif inspect.isfunction(obj) and obj.__doc__:
            out.append((f"function {name}.{attr}", inspect.cleandoc(obj.__doc__)))
    return out


def main() -> None:
    version = ".".join(map(str, sys.version_info[:3]))
    parts = [f"Docstrings of the Python {version} standard library (PSF License).\n\n"]
    size = len(parts[0].encode())
    seen: set[str] = set()
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a module this build lacks (sqlite3 without libsqlite, ...)
            continue
        for heading, doc in _entries(module):
            if doc in seen:  # inherited or aliased docstrings appear once
                continue
            seen.add(doc)
            part = f"{heading}\n\n{doc}\n\n"
            parts.append(part)
            size += len(part.encode())
            if size >= TARGET_BYTES:
                OUT.write_text("".join(parts), encoding="utf-8")
                return
    OUT.write_text("".join(parts), encoding="utf-8")


if __name__ == "__main__":
    main()
