"""Top-level module name -> installed distribution and version (``sklearn`` -> scikit-learn).

Owns: `resolve_modules`, the mapping from the modules a notebook imports to `Package` values,
and `pip_name` with its table `DISTRIBUTIONS`: the distribution to ``pip install`` for a module
that is not installed here (``cv2`` -> opencv-python, ``PIL`` -> Pillow, ``yaml`` -> PyYAML).

Invariants: standard-library modules (`sys.stdlib_module_names`) and modules that live beside
the notebook (``helpers.py`` or a ``helpers/`` folder) are not packages. A module no installed
distribution provides gets ``distribution=None``.

This answers the same question as `importlib.metadata.packages_distributions()`, but only for
the modules asked about: that function reads every distribution's RECORD file (about 0.2 s
in a data-science environment), while here ``top_level.txt`` is tried first and a RECORD is
searched only for modules still unknown. The installed distributions are read once per
process (`functools.cache`); call `clear_cache` after installing packages in the same process.

Must not depend on: anything in cellpipe but the pipeline model.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from cellpipe.pipeline import Package

if TYPE_CHECKING:
    import importlib.metadata

_STDLIB = frozenset(sys.stdlib_module_names) | {"__future__", "__main__", "builtins"}

DISTRIBUTIONS: Mapping[str, str] = MappingProxyType(
    {
        "absl": "absl-py",
        "attr": "attrs",
        "Bio": "biopython",
        "bs4": "beautifulsoup4",
        "bson": "pymongo",
        "Crypto": "pycryptodome",
        "cv2": "opencv-python",
        "dateutil": "python-dateutil",
        "dns": "dnspython",
        "docx": "python-docx",
        "dotenv": "python-dotenv",
        "faiss": "faiss-cpu",
        "fitz": "PyMuPDF",
        "gi": "PyGObject",
        "git": "GitPython",
        "github": "PyGithub",
        "google.cloud.bigquery": "google-cloud-bigquery",
        "google.cloud.storage": "google-cloud-storage",
        "google.protobuf": "protobuf",
        "jose": "python-jose",
        "jwt": "PyJWT",
        "kale": "kubeflow-kale",
        "ldap": "python-ldap",
        "Levenshtein": "python-Levenshtein",
        "magic": "python-magic",
        "mpl_toolkits": "matplotlib",
        "MySQLdb": "mysqlclient",
        "OpenSSL": "pyOpenSSL",
        "osgeo": "GDAL",
        "PIL": "Pillow",
        "pkg_resources": "setuptools",
        "pptx": "python-pptx",
        "psycopg2": "psycopg2-binary",
        "ruamel": "ruamel.yaml",
        "sentence_transformers": "sentence-transformers",
        "serial": "pyserial",
        "skimage": "scikit-image",
        "sklearn": "scikit-learn",
        "slugify": "python-slugify",
        "telegram": "python-telegram-bot",
        "tensorflow_datasets": "tensorflow-datasets",
        "tensorflow_hub": "tensorflow-hub",
        "tflite_runtime": "tflite-runtime",
        "umap": "umap-learn",
        "usb": "pyusb",
        "websocket": "websocket-client",
        "win32api": "pywin32",
        "wx": "wxPython",
        "yaml": "PyYAML",
        "zmq": "pyzmq",
    }
)
"""Imported module (top-level or dotted) -> the distribution to ``pip install`` for it, where its
name differs from the module's or is easy to get wrong; other modules install as named."""


def is_stdlib(module: str) -> bool:
    """Return whether ``module`` is part of the standard library."""
    return module in _STDLIB


NAMESPACE_ROOTS = frozenset({"google", "azure", "zope", "jaraco", "backports", "sphinxcontrib"})
"""Top-level modules shared by many distributions: the module alone does not name one."""


def pip_name(module: str) -> str:
    """Return the distribution to ``pip install`` for an imported module (``cv2`` -> opencv-python).

    Args:
        module: the imported module, top-level (``sklearn``) or dotted (``google.protobuf``);
            the longest dotted prefix in `DISTRIBUTIONS` wins.

    Returns:
        The distribution name; the top-level module name when the table does not know it;
        ``""`` for a namespace package root (``google``) without a known submodule.
    """
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        found = DISTRIBUTIONS.get(".".join(parts[:end]))
        if found is not None:
            return found
    if parts[0] in NAMESPACE_ROOTS:
        return ""
    return parts[0]


def is_local(module: str, folder: Path) -> bool:
    """Return whether ``module`` is a ``.py`` file or a package folder in ``folder``."""
    return (folder / f"{module}.py").is_file() or (folder / module).is_dir()


@cache
def _distributions() -> tuple[tuple[importlib.metadata.Distribution, frozenset[str] | None], ...]:
    import importlib.metadata  # about 20 ms: only when a notebook imports a third-party module

    found = []
    for dist in importlib.metadata.distributions():
        try:
            top_level = dist.read_text("top_level.txt")
        except OSError:
            top_level = None
        names = frozenset(top_level.split()) if top_level else None
        found.append((dist, names))
    return tuple(found)


@cache
def _record(dist: importlib.metadata.Distribution) -> str:
    try:
        return "\n" + (dist.read_text("RECORD") or "")
    except OSError:
        return ""


@cache
def _describe(dist: importlib.metadata.Distribution) -> tuple[str, str]:
    return dist.metadata["Name"] or "", dist.version


@cache
def distribution_of(module: str) -> tuple[str, str] | None:
    """Return ``(distribution, version)`` for a top-level module, or None if not installed.

    When several distributions provide the module, the first by name wins.
    """
    matches: list[tuple[str, str]] = []
    for dist, names in _distributions():
        if names is not None and module in names:
            matches.append(_describe(dist))
    if not matches:
        for dist, names in _distributions():
            if names is not None:
                continue
            record = _record(dist)
            if f"\n{module}/" in record or f"\n{module}.py," in record:
                matches.append(_describe(dist))
    return min(matches) if matches else None


def clear_cache() -> None:
    """Forget what is installed (after installing packages in this process)."""
    _distributions.cache_clear()
    _record.cache_clear()
    _describe.cache_clear()
    distribution_of.cache_clear()


def resolve_modules(modules: Iterable[str], *, folder: Path) -> tuple[Package, ...]:
    """Map imported top-level modules to packages, sorted by module name.

    Args:
        modules: top-level module names, as imported.
        folder: the notebook's folder, where local modules live.

    Returns:
        One `Package` per third-party module; ``distribution`` is None when not installed.
    """
    packages = []
    for module in sorted(set(modules)):
        if is_stdlib(module) or is_local(module, folder):
            continue
        found = distribution_of(module)
        if found is None:
            packages.append(Package(module=module, distribution=None, version=None))
        else:
            packages.append(Package(module=module, distribution=found[0], version=found[1]))
    return tuple(packages)
