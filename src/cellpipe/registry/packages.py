"""What a registered model needs installed: distribution -> version, found from the object.

Owns: `needed_packages` (the distributions whose modules the object is made of, the package its
serializer needs to load it, and their installed requirements, transitively) and
`object_modules` (the third-party top-level modules of an object and what it holds).

The rules:
    * the object's own type names its module (``sklearn.ensemble._forest`` -> ``sklearn``);
      what it holds is walked as pickle would store it: an object's attributes (a
      ``Pipeline``'s steps, a fitted estimator's ``coef_`` array), list, tuple, set and dict
      items, a bound method's object; at most `_MAX_OBJECTS` objects, `_MAX_DEPTH` levels
      deep;
    * standard-library modules, ``__main__`` (classes and functions defined in a notebook)
      and cellpipe itself are not packages;
    * a module maps to the installed distribution that provides it (`distribution_of`); one
      that no installed distribution provides is left out;
    * each distribution's requirements that apply here (no extra, markers true) and are
      installed are added with their installed versions, transitively: scikit-learn brings
      numpy, scipy, joblib and threadpoolctl;
    * the versions are the installed ones in this process: in a step, the run's own.

Invariants: never raises and never imports a module the object did not already load: what
cannot be found is left out.

Must not depend on: the runner, notebooks, the KFP compiler, the CLI.
"""

from __future__ import annotations

import functools
import re
import sys
import types
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

__all__ = [
    "KNOWN_DISTRIBUTIONS",
    "SERIALIZER_PACKAGES",
    "distribution_of",
    "needed_packages",
    "object_modules",
    "with_requirements",
]

SERIALIZER_PACKAGES: Mapping[str, str] = types.MappingProxyType(
    {"joblib": "joblib", "cloudpickle": "cloudpickle", "parquet": "pyarrow", "npy": "numpy"}
)
"""Serializer name -> the distribution that reads its files back."""

_MAX_OBJECTS = 500
_MAX_DEPTH = 6
_NOT_PACKAGES = frozenset({"__main__", "builtins", "cellpipe", "__mp_main__"})
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _top(module: object) -> str | None:
    if not isinstance(module, str) or not module:
        return None
    top = module.split(".", 1)[0]
    if top in _NOT_PACKAGES or top in sys.stdlib_module_names:
        return None
    return top


def object_modules(obj: Any) -> set[str]:
    """Return the third-party top-level modules ``obj`` and what it holds come from."""
    found: set[str] = set()
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack and len(seen) < _MAX_OBJECTS:
        value, depth = stack.pop()
        if id(value) in seen or value is None:
            continue
        seen.add(id(value))
        if isinstance(value, types.FunctionType | types.BuiltinFunctionType | type):
            top = _top(getattr(value, "__module__", None))
        else:
            top = _top(type(value).__module__)
        if top is not None:
            found.add(top)
        if depth >= _MAX_DEPTH:
            continue
        for child in _children(value):
            stack.append((child, depth + 1))
    return found


def _children(value: Any) -> Iterable[Any]:
    try:
        if isinstance(value, types.MethodType):  # model.predict: the model is what counts
            return [value.__self__, value.__func__]
        if isinstance(value, functools.partial):
            return [value.func, *value.args, *value.keywords.values()]
        if isinstance(value, dict):
            return list(value.values())[:_MAX_OBJECTS]
        if isinstance(value, list | tuple | set | frozenset):
            return list(value)[:_MAX_OBJECTS]
        if isinstance(value, type | types.ModuleType | types.FunctionType):
            return ()
        attributes = getattr(value, "__dict__", None)  # what pickle stores of most objects
        if isinstance(attributes, dict):
            return list(attributes.values())[:_MAX_OBJECTS]
    except Exception:  # an object that fails to describe itself holds nothing we can see
        return ()
    return ()


KNOWN_DISTRIBUTIONS: Mapping[str, str] = types.MappingProxyType(
    {
        "sklearn": "scikit-learn",
        "skimage": "scikit-image",
        "PIL": "Pillow",
        "cv2": "opencv-python",
        "yaml": "PyYAML",
    }
)
"""Modules whose distribution has another name (the rest are looked up, see `distribution_of`)."""


@cache
def _all_distributions_of_modules() -> Mapping[str, list[str]]:
    import importlib.metadata

    try:
        return importlib.metadata.packages_distributions()
    except Exception:  # a broken installation: no mapping rather than an error
        return {}


@cache
def distribution_of(module: str) -> str | None:
    """Return the installed distribution providing top-level ``module``, or None.

    Tried in order, cheapest first: `KNOWN_DISTRIBUTIONS` (so the deprecated ``sklearn``
    placeholder distribution never stands for scikit-learn), a distribution named like the
    module (numpy, xgboost), then every installed distribution's file list (about a second in
    a large environment, once per process).
    """
    for candidate in (KNOWN_DISTRIBUTIONS.get(module), module):  # the table wins: `sklearn`
        if candidate is not None and _installed(candidate) is not None:
            return candidate
    found = _all_distributions_of_modules().get(module)
    return sorted(found)[0] if found else None


def _installed(distribution: str) -> tuple[str, str] | None:
    """Return the installed ``(name as published, version)`` of a distribution, or None."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(distribution)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None
    name = dist.metadata["Name"] or distribution
    return str(name), str(dist.version)


def _requirements(distribution: str) -> list[str]:
    """The names of the distribution's requirements that apply here (no extras)."""
    import importlib.metadata

    try:
        lines = importlib.metadata.requires(distribution) or []
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return []
    names = []
    for line in lines:
        requirement, _, marker = line.partition(";")
        if marker and not _marker_applies(marker):
            continue
        match = _NAME.match(requirement)
        if match:
            names.append(match.group(1))
    return names


def _marker_applies(marker: str) -> bool:
    if "extra" in marker:
        return False
    try:
        from packaging.markers import Marker
    except ImportError:  # without packaging, a conditional requirement is left out
        return False
    try:
        return bool(Marker(marker.strip()).evaluate())
    except Exception:
        return False


def with_requirements(distributions: Iterable[str]) -> dict[str, str]:
    """Return the installed distributions and their requirements, transitively, with versions.

    Distributions that are not installed are left out.
    """
    result: dict[str, str] = {}
    seen: set[str] = set()
    todo = list(distributions)
    while todo:
        wanted = todo.pop()
        key = re.sub(r"[-_.]+", "-", wanted).lower()
        if key in seen:
            continue
        seen.add(key)
        installed = _installed(wanted)
        if installed is None:
            continue
        result[installed[0]] = installed[1]
        todo.extend(_requirements(wanted))
    return dict(sorted(result.items(), key=lambda item: item[0].lower()))


def needed_packages(
    obj: Any, *, serializer: str | None = None, fallback: Iterable[str] = ()
) -> dict[str, str]:
    """Return distribution -> installed version for what ``obj`` needs to load and run.

    Args:
        obj: the model object.
        serializer: the serializer that stored it (``joblib``, ``cloudpickle``): its package
            is needed to read it back.
        fallback: distributions to use when the object names no third-party module (a
            function or class defined in a notebook): the run's own list.

    Example::

        needed_packages(forest, serializer="joblib")
        # {'joblib': '1.4.2', 'numpy': '2.1.3', 'scikit-learn': '1.5.2', 'scipy': '1.14.1',
        #  'threadpoolctl': '3.5.0'}
    """
    try:
        modules = object_modules(obj)
        wanted = sorted({d for m in modules if (d := distribution_of(m)) is not None})
        if not wanted:
            wanted = sorted(set(fallback))
        extra = SERIALIZER_PACKAGES.get(serializer or "")
        if extra is not None:
            wanted.append(extra)
        return with_requirements(wanted)
    except Exception:  # never an error: a version without packages is still a version
        return {}
