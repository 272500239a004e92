"""Classes defined in the notebook stay ``__main__`` classes in every step, as in Jupyter.

Owns: `pin_preamble_classes` (run once after the imports and functions cells) and
`ClassRegistrar` (around the loading of a step's inputs). In Jupyter a class lives in
``__main__``, so ``pickle.dump(model, f)`` / ``joblib.dump`` of an instance works in any later
cell. A step process gets such an instance back through cloudpickle, which rebuilds the class
by value: without help the rebuilt class is not ``__main__.<name>`` (pickle then fails with
"attribute lookup ... on __main__ failed", or "not the same object as __main__.<name>" when the
functions cell defines it too).

Invariants:
    * a class the imports or functions cells define gets a cloudpickle tracker id derived from
      its qualified name and the preamble's code, the same in every step process of every run
      with that preamble, so an instance loaded in another step is an instance of the very
      class the functions cell defined there; the attributes the pickled copy overwrote on it
      while loading are put back (its methods keep the live ``__main__`` globals);
    * a class rebuilt while loading inputs (also one nested deep inside a value, such as a
      custom transformer in a scikit-learn ``Pipeline``) is bound in ``__main__`` under its
      ``__qualname__`` when that name is free there, so pickle finds it by reference;
    * nothing happens when cloudpickle is not imported (no value needed it);
    * the classes a step defines at top level are stored after it (`step_classes`), and a
      later step's ``__main__`` finds those of its ancestors on first use
      (`install_lazy_definitions`): ``pickle.load`` of an instance an earlier step wrote to a
      file works, as in Jupyter.

Must not depend on: notebooks, the KFP compiler, the CLI or the UI.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

__all__ = ["ClassRegistrar", "install_lazy_definitions", "pin_preamble_classes", "step_classes"]

# Classes of the preamble, with their attributes as the preamble defined them: loading an
# instance rebuilds the class onto the live one (same tracker id) and overwrites them.
_live: list[tuple[type, dict[str, Any]]] = []


def _cloudpickle_internals() -> Any:
    return sys.modules.get("cloudpickle.cloudpickle")


def _main_classes(namespace: MutableMapping[str, Any]) -> list[type]:
    return [
        value
        for value in list(namespace.values())
        if isinstance(value, type) and value.__module__ == "__main__"
    ]


def _restore_live_classes() -> None:
    """Put back the attributes cloudpickle's rebuild replaced on the preamble's classes."""
    for cls, attributes in _live:
        current = vars(cls)
        for name, value in attributes.items():
            if current.get(name, _MISSING) is not value:
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(cls, name, value)


_MISSING = object()


def pin_preamble_classes(namespace: MutableMapping[str, Any], code: Iterable[str]) -> None:
    """Give the preamble's classes tracker ids that every step process agrees on.

    Args:
        namespace: ``__main__``'s namespace after the imports and functions cells ran.
        code: the preamble's cells, whose text makes the ids differ between notebooks.
    """
    _live.clear()  # a new warm namespace (the in-process executor warms up again)
    classes = _main_classes(namespace)
    if not classes:
        return
    try:
        import cloudpickle.cloudpickle as internals
    except ImportError:
        return
    tracker_by_class = getattr(internals, "_DYNAMIC_CLASS_TRACKER_BY_CLASS", None)
    tracker_by_id = getattr(internals, "_DYNAMIC_CLASS_TRACKER_BY_ID", None)
    if tracker_by_class is None or tracker_by_id is None:
        return  # another cloudpickle: instances still load, as rebuilt classes
    salt = hashlib.sha256("\0".join(code).encode()).hexdigest()
    with internals._DYNAMIC_CLASS_TRACKER_LOCK:
        for cls in classes:
            tracker = hashlib.sha256(f"{salt}\0{cls.__qualname__}".encode()).hexdigest()
            tracker_by_class[cls] = tracker
            tracker_by_id[tracker] = cls
            _live.append((cls, dict(vars(cls))))


class ClassRegistrar:
    """Binds classes rebuilt by cloudpickle while loading inputs in ``__main__``.

    Use `start` before loading and `finish` after.
    """

    def __init__(self) -> None:
        self._before: set[str] = set()

    def start(self) -> None:
        """Note the classes cloudpickle knows already."""
        internals = _cloudpickle_internals()
        tracked = getattr(internals, "_DYNAMIC_CLASS_TRACKER_BY_ID", None)
        self._before = set() if tracked is None else set(tracked.keys())

    def finish(self, namespace: MutableMapping[str, Any]) -> list[str]:
        """Bind the newly rebuilt ``__main__`` classes under free names; return those names."""
        internals = _cloudpickle_internals()
        tracked = getattr(internals, "_DYNAMIC_CLASS_TRACKER_BY_ID", None)
        if tracked is None:
            return []
        _restore_live_classes()
        bound: list[str] = []
        for key, cls in list(tracked.items()):
            if key in self._before or not isinstance(cls, type):
                continue
            name = cls.__qualname__
            if cls.__module__ != "__main__" or not name.isidentifier():
                continue  # nested (A.B) or local (<locals>) classes are found through A
            if name not in namespace:
                namespace[name] = cls
                bound.append(name)
        return bound


# -- classes defined by earlier steps ---------------------------------------------------------


def step_classes(namespace: MutableMapping[str, Any], before: set[str]) -> dict[str, type]:
    """Return the ``__main__`` classes a step bound at top level (names new since ``before``)."""
    return {
        name: value
        for name, value in namespace.items()
        if name not in before
        and isinstance(value, type)
        and value.__module__ == "__main__"
        and value.__qualname__ == name
    }


def install_lazy_definitions(
    namespace: MutableMapping[str, Any], load: Callable[[], Iterable[Mapping[str, type]]]
) -> None:
    """Let ``__main__`` find the classes earlier steps defined, on first use.

    In Jupyter a class defined in one cell stays in ``__main__`` for every later cell, so a
    ``pickle.load`` of an instance another cell wrote finds it. A step process has only its
    own cells: this installs a module ``__getattr__`` (PEP 562) that, when a lookup on
    ``__main__`` misses (as pickle's does), loads the classes of the step's ancestors once and
    binds those whose names are free. Names the code itself reads are unaffected (a global
    lookup does not go through ``__getattr__``).

    Args:
        namespace: ``__main__``'s namespace.
        load: returns the ancestors' ``{name: class}`` values, oldest first.
    """
    loaded = False

    def find(name: str) -> Any:
        nonlocal loaded
        if not loaded and not (name.startswith("__") and name.endswith("__")):
            loaded = True
            for classes in load():
                for key, cls in classes.items():
                    namespace.setdefault(key, cls)
            if name in namespace:
                return namespace[name]
        raise AttributeError(f"module '__main__' has no attribute '{name}'")

    namespace["__getattr__"] = find
