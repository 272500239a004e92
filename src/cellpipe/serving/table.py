"""The model versions one server serves, by name and version, and how they follow the registry.

Owns: `ModelTable` (for each served name the reference it was asked for, ``NAME``, ``NAME:N``
or ``NAME@ALIAS``, and the loaded version that reference names now; with ``all_versions``
the other versions of that name too, loaded on first use) and `Switch` (one recorded move of
a followed reference to another version).

What a server exposes:

- ``/v2/models/NAME`` is the version the reference names; ``/v2/models/NAME/versions/N``
  reaches that same version, and any other version only with ``all_versions`` (the
  ``--all-versions`` option). A version segment is ASCII digits ``[1-9][0-9]{0,17}``;
  anything else (superscript, Arabic-Indic or fullwidth digits, 23 digits, ``abc``) is a
  404 naming it.
- ``NAME@ALIAS`` and ``NAME`` (newest) are followed once `start_following` runs: a polling
  thread resolves them every ``interval`` seconds, loads a new version off the request path
  and swaps it in atomically; the move is a `Switch` (logged at INFO on the
  ``cellpipe.serving`` logger, kept in `ModelTable.switches`, passed to ``on_switch``).
  ``NAME:N`` is pinned.
- A version that cannot be served (the adapter refuses the object, loading fails, it is
  archived and only exposed by ``all_versions``) is not an error of the server: `readiness`
  says ``(False, reason)``, `metadata` carries the reason in ``properties``, `get` raises a
  503 `RequestError` with the reason. When a followed reference moves to a version that
  cannot be loaded, the table keeps serving the version it has, reports the failure (ready,
  with the reason in ``properties``) and retries that version with a growing delay (2 s,
  4 s, ... at most 5 minutes) without flapping.

Invariants: requests never wait for the follower: readers take no lock (each name's entry is
an immutable value replaced whole); other versions load once, under a lock; an unservable
version is remembered, not reloaded per request; a 404 for an unknown model never lists the
served names.

Must not depend on: the web framework, the runner, kfp, notebooks, config or api.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from cellpipe.errors import CellpipeError, ModelNotFoundError, ServingError
from cellpipe.registry.model import ModelRef, ModelSource, ModelVersion, parse_model_ref
from cellpipe.serving.adapters import adapt, platform_of
from cellpipe.serving.protocol import ServedModel, model_metadata
from cellpipe.serving.tensors import RequestError

__all__ = ["ModelTable", "Switch"]

logger = logging.getLogger("cellpipe.serving")

_VERSION = re.compile(r"[1-9][0-9]{0,17}")
"""A version path segment: ASCII digits only (`str.isdigit` also accepts superscripts)."""

MAX_RETRY_DELAY = 300.0
"""The longest wait, in seconds, before the follower retries a version that failed to load."""

_clock = time.monotonic  # the retry delays' clock (tests replace it)

KEPT_SWITCHES = 1000
"""How many switches `ModelTable.switches` keeps (the oldest are dropped)."""


@dataclass(frozen=True, slots=True)
class Switch:
    """One move of a followed reference: ``name`` now serves ``version`` instead of ``previous``.

    Attributes:
        name: the model name.
        ref: the followed reference as given (``wine@production``, ``wine``).
        previous: the version served before.
        version: the version served from ``at`` on.
        at: when the new version was swapped in (UTC).
    """

    name: str
    ref: str
    previous: int
    version: int
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class _Served:
    """What one name serves now; replaced whole, never changed in place."""

    text: str
    ref: ModelRef
    model: ServedModel
    problem: str | None = None  # why the reference's newer version is not served


@dataclass(slots=True, kw_only=True)
class _Failure:
    """The follower's memory of one name's failed attempt (polling thread only)."""

    version: int | None  # None: resolving the reference failed
    reason: str
    attempts: int
    retry_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class _Unservable:
    version: ModelVersion
    reason: str


def _load(source: ModelSource, version: ModelVersion) -> ServedModel:
    return ServedModel(version=version, adapter=adapt(source.load(version), version))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, CellpipeError):
        text = f"{exc.message} (hint: {exc.hint})" if exc.hint else exc.message
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:497] + "..."


def _shown(segment: str) -> str:
    return repr(segment) if len(segment) <= 32 else repr(segment[:32]) + "..."


def _follows(ref: ModelRef) -> bool:
    return ref.version is None


class ModelTable:
    """The model versions one server serves (see the module docstring).

    Args:
        source: where versions are resolved and loaded from (the registry), by requests.
        defaults: for each served name, the loaded version its reference resolved to.
        refs: for each served name, the reference as given (default: ``NAME:N``, pinned).
        all_versions: expose every version of a served name at ``/versions/N``.
    """

    def __init__(
        self,
        source: ModelSource,
        defaults: Sequence[ServedModel],
        *,
        refs: Mapping[str, str] | None = None,
        all_versions: bool = False,
    ) -> None:
        self.source = source
        self.all_versions = all_versions
        self._served: dict[str, _Served] = {}
        for model in defaults:
            name = model.version.name
            text = (refs or {}).get(name, model.version.ref)
            self._served[name] = _Served(text=text, ref=parse_model_ref(text), model=model)
        self._loaded: dict[tuple[str, int], ServedModel] = {}
        self._unservable: dict[tuple[str, int], _Unservable] = {}
        self._lock = threading.Lock()  # loads of other versions
        self._refresh_lock = threading.Lock()  # one polling pass at a time
        self._failures: dict[str, _Failure] = {}
        self._switches: deque[Switch] = deque(maxlen=KEPT_SWITCHES)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def resolve(
        cls, refs: Sequence[str], source: ModelSource, *, all_versions: bool = False
    ) -> ModelTable:
        """Resolve and load every reference now, so a missing model fails before serving.

        Args:
            refs: ``NAME`` (the newest version, followed), ``NAME:N`` (pinned) or
                ``NAME@ALIAS`` (followed); one reference per name.
            source: the registry.
            all_versions: expose every version of each name at ``/versions/N``.

        Raises:
            RegistryError: a reference is invalid or names no version (`ModelNotFoundError`).
            ServingError: no references, two references to one name, or a model object that
                cannot be served.
        """
        if not refs:
            raise ServingError(
                "no model to serve", hint="name at least one model: NAME, NAME:N or NAME@ALIAS"
            )
        chosen: dict[str, tuple[str, ModelVersion]] = {}
        for text in refs:
            parsed = parse_model_ref(text)
            version = source.resolve(parsed)
            earlier = chosen.get(version.name)
            if earlier is not None and parse_model_ref(earlier[0]) != parsed:
                differ = earlier[1].version != version.version
                what = (
                    f"different versions of model {version.name!r} "
                    f"({earlier[1].version} and {version.version})"
                    if differ
                    else f"two references to model {version.name!r}"
                )
                raise ServingError(
                    f"{earlier[0]!r} and {text!r} are {what}; /v2/models/{version.name} "
                    "serves one reference",
                    hint="serve one of them; with --all-versions every version of the model "
                    f"is reachable at /v2/models/{version.name}/versions/N",
                )
            chosen[version.name] = (text, version)
        loaded = [_load(source, version) for _, version in chosen.values()]
        texts = {name: text for name, (text, _) in chosen.items()}
        return cls(source, loaded, refs=texts, all_versions=all_versions)

    # -- lookups (request threads; no lock on the served versions) -------------------------

    @property
    def defaults(self) -> dict[str, ServedModel]:
        """For each served name, the version ``/v2/models/NAME`` serves now."""
        return {name: served.model for name, served in self._served.items()}

    def names(self) -> list[str]:
        """Return the served model names, sorted."""
        return sorted(self._served)

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """Return the model ``name`` serves now, or its version ``version`` (a path segment).

        Raises:
            RequestError: 404 for a name not served here, a segment that is not a version
                number, a version that does not exist or is not exposed (the message says how
                to expose it); 503 with the reason for an exposed version that cannot be
                served.
        """
        served = self._lookup(name)
        if version is None:
            return served.model
        number = self._number(name, version)
        if number == served.model.version.version:
            return served.model
        if not self.all_versions:
            raise self._not_exposed(served, number)
        return self._other(name, number)

    def readiness(self, name: str, version: str | None = None) -> tuple[bool, str | None]:
        """Return ``(ready, reason)`` for ``name`` (or its version ``version``).

        ``reason`` is None when all is well; when the version is served but its reference's
        newer version could not be, ``(True, reason)``; ``(False, reason)`` for an exposed
        version that cannot be served.

        Raises:
            RequestError: 404 as `get` (unknown name, bad segment, version not exposed).
        """
        served = self._lookup(name)
        if version is None:
            return True, served.problem
        number = self._number(name, version)
        if number == served.model.version.version:
            return True, served.problem
        if not self.all_versions:
            raise self._not_exposed(served, number)
        try:
            self._other(name, number)
        except RequestError as exc:
            if exc.status != 503:
                raise
            return False, exc.message
        return True, None

    def metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Return the OIP model metadata of ``name`` (or of its version ``version``).

        A reason (see `readiness`) is reported as ``properties: {"ready", "reason"}``; an
        exposed version that cannot be served has the inputs and outputs of its registered
        signature.

        Raises:
            RequestError: 404 as `get`; 503 when the version cannot even be resolved.
        """
        served = self._lookup(name)
        number = None if version is None else self._number(name, version)
        names = self.version_names(name)
        if number is None or number == served.model.version.version:
            document = model_metadata(served.model, names)
            if served.problem is not None:
                document["properties"] = {"ready": "true", "reason": served.problem}
            return document
        if not self.all_versions:
            raise self._not_exposed(served, number)
        try:
            return model_metadata(self._other(name, number), names)
        except RequestError as exc:
            broken = self._unservable.get((name, number))
            if exc.status != 503 or broken is None:
                raise
        signature = broken.version.signature
        return {
            "name": name,
            "versions": names,
            "platform": platform_of(broken.version),
            "inputs": [spec.to_json() for spec in signature.inputs] if signature else [],
            "outputs": [spec.to_json() for spec in signature.outputs] if signature else [],
            "properties": {"ready": "false", "reason": broken.reason},
        }

    def version_names(self, name: str) -> list[str]:
        """Return the versions of ``name`` that ``/versions/N`` exposes, as strings, oldest first.

        Without ``all_versions``: the one version served. With it: every version the source
        knows that is not archived, and the served one.
        """
        served = self._served.get(name)
        if served is None:
            return []
        current = served.model.version.version
        if not self.all_versions:
            return [str(current)]
        try:
            numbers = {v.version for v in self.source.versions(name) if not v.archived}
        except Exception as exc:  # the registry is unreachable: what this process knows
            logger.warning("cannot list the versions of %s: %s", name, _describe(exc))
            numbers = {n for (loaded, n) in self._loaded if loaded == name}
        numbers.add(current)
        return [str(n) for n in sorted(numbers)]

    @property
    def switches(self) -> list[Switch]:
        """The switches so far, oldest first (the last `KEPT_SWITCHES`)."""
        return list(self._switches)

    def _lookup(self, name: str) -> _Served:
        served = self._served.get(name)
        if served is None:
            raise RequestError(
                f"model {name!r} is not served here",
                status=404,
                hint="check the name: the server printed the models it serves when it started",
            )
        return served

    @staticmethod
    def _number(name: str, segment: str) -> int:
        if not _VERSION.fullmatch(segment):
            raise RequestError(
                f"model {name!r} has no version {_shown(segment)}; a version is a whole number "
                "from 1, in ASCII digits (at most 18)",
                status=404,
            )
        return int(segment)

    @staticmethod
    def _not_exposed(served: _Served, number: int) -> RequestError:
        name = served.model.version.name
        return RequestError(
            f"version {number} of model {name!r} is not served here: this server serves "
            f"version {served.model.version.version} ({served.text})",
            status=404,
            hint=f"start the server with --all-versions to expose every version of {name!r}, "
            f"or serve {name}:{number}",
        )

    def _other(self, name: str, number: int) -> ServedModel:
        key = (name, number)
        model = self._loaded.get(key)
        if model is not None:
            return model
        with self._lock:
            model = self._loaded.get(key)
            if model is not None:
                return model
            broken = self._unservable.get(key)
            if broken is None:
                try:
                    resolved = self.source.resolve(ModelRef(name=name, version=number))
                except ModelNotFoundError as exc:
                    raise RequestError(
                        f"model {name!r} has no version {number}", status=404
                    ) from exc
                except Exception as exc:  # the registry is unreachable: retry next time
                    raise RequestError(
                        f"version {number} of model {name!r} cannot be resolved now: "
                        f"{_describe(exc)}",
                        status=503,
                    ) from exc
                if resolved.archived:
                    broken = _Unservable(
                        version=resolved,
                        reason=f"version {number} of model {name!r} is archived "
                        f"(unarchive it to serve it, or serve {name}:{number} explicitly)",
                    )
                else:
                    try:
                        model = _load(self.source, resolved)
                    except Exception as exc:
                        logger.warning("cannot serve %s: %s", resolved.ref, _describe(exc))
                        broken = _Unservable(
                            version=resolved,
                            reason=f"version {number} of model {name!r} cannot be served: "
                            f"{_describe(exc)}",
                        )
                    else:
                        self._loaded[key] = model
                        logger.info("loaded %s on first use", resolved.ref)
                        return model
                self._unservable[key] = broken
        raise RequestError(broken.reason, status=503)

    # -- following aliases and new versions ------------------------------------------------

    def start_following(
        self,
        source: ModelSource | None = None,
        *,
        interval: float = 1.0,
        on_switch: Callable[[Switch], None] | None = None,
    ) -> None:
        """Follow every ``NAME@ALIAS`` and ``NAME`` reference in a daemon thread.

        Every ``interval`` seconds the thread runs `refresh` with ``source`` (default: the
        table's; pass a source of its own after a fork). Nothing starts when every reference
        is pinned (``NAME:N``). Stop it with `stop_following`.

        Raises:
            ServingError: the table is already following, or ``interval`` is not positive.
        """
        if not interval > 0:
            raise ServingError(f"the polling interval must be positive, not {interval!r}")
        if self._thread is not None:
            raise ServingError("this model table is already following its references")
        if not any(_follows(served.ref) for served in self._served.values()):
            return
        self._stop.clear()
        poller = source if source is not None else self.source
        self._thread = threading.Thread(
            target=self._follow,
            args=(poller, interval, on_switch),
            name="cellpipe-follow",
            daemon=True,
        )
        self._thread.start()

    def stop_following(self, timeout: float | None = None) -> None:
        """Stop the following thread and wait for it (a no-op when none runs)."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout)
        self._thread = None

    @property
    def following(self) -> bool:
        """Whether the following thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _follow(
        self, source: ModelSource, interval: float, on_switch: Callable[[Switch], None] | None
    ) -> None:
        while not self._stop.wait(interval):
            try:
                self.refresh(source, on_switch=on_switch)
            except Exception:  # never let the follower die; the next pass tries again
                logger.exception("following the served references failed")

    def refresh(
        self,
        source: ModelSource | None = None,
        *,
        on_switch: Callable[[Switch], None] | None = None,
    ) -> list[Switch]:
        """Resolve every followed reference once and swap in the versions they name now.

        The new version is loaded before the swap (requests keep the old one meanwhile). A
        reference that cannot be resolved, or a version that cannot be loaded, leaves the
        served version in place and sets its problem (see `readiness`); a failed version is
        retried after 2, 4, 8, ... seconds (at most `MAX_RETRY_DELAY`).

        Returns:
            The switches of this pass.
        """
        poller = source if source is not None else self.source
        switches: list[Switch] = []
        with self._refresh_lock:
            for name, served in list(self._served.items()):
                if not _follows(served.ref):
                    continue
                switch = self._refresh_one(poller, name, served)
                if switch is None:
                    continue
                switches.append(switch)
                if on_switch is not None:
                    try:
                        on_switch(switch)
                    except Exception:
                        logger.exception("the switch callback failed for %s", switch.ref)
        return switches

    def _refresh_one(self, source: ModelSource, name: str, served: _Served) -> Switch | None:
        current = served.model.version.version
        try:
            version = source.resolve(served.ref)
        except Exception as exc:
            self._fail(name, None, f"cannot resolve {served.text}: {_describe(exc)}", current)
            return None
        if version.version == current:
            if served.problem is not None:
                logger.info("%s names version %d again, which is served", served.text, current)
                self._served[name] = replace(served, problem=None)
            self._failures.pop(name, None)
            return None
        failure = self._failures.get(name)
        if (
            failure is not None
            and failure.version == version.version
            and _clock() < failure.retry_at
        ):
            return None
        if version.archived:
            reason = f"{served.text} names version {version.version}, which is archived"
            self._fail(name, version.version, reason, current)
            return None
        try:
            model = _load(source, version)
        except Exception as exc:
            reason = f"{served.text} names version {version.version}, which cannot be served: "
            self._fail(name, version.version, reason + _describe(exc), current)
            return None
        switch = Switch(
            name=name,
            ref=served.text,
            previous=current,
            version=version.version,
            at=datetime.now(UTC),
        )
        if self.all_versions:
            with self._lock:
                self._loaded.setdefault((name, current), served.model)
        # One assignment: a request sees either the old entry or the new one, never a mix.
        self._served[name] = replace(served, model=model, problem=None)
        self._failures.pop(name, None)
        self._switches.append(switch)
        logger.info(
            "%s moved from version %d to %d: now serving %s",
            served.text,
            current,
            version.version,
            version.ref,
        )
        return switch

    def _fail(self, name: str, version: int | None, reason: str, current: int) -> None:
        failure = self._failures.get(name)
        if failure is None or failure.version != version:
            failure = _Failure(version=version, reason=reason, attempts=0, retry_at=0.0)
            self._failures[name] = failure
        failure.attempts += 1
        failure.retry_at = _clock() + min(2.0**failure.attempts, MAX_RETRY_DELAY)
        problem = f"{reason}; still serving version {current}"
        served = self._served[name]
        if served.problem != problem:
            logger.warning("%s", problem)
            self._served[name] = replace(served, problem=problem)
