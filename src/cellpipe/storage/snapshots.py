"""Workspace snapshots: what the notebook's folder, the environment and a step's values were.

Owns: `IgnoreRules` (``.cellpipeignore``, the common subset of .gitignore syntax),
`WorkspaceScanner` (the workspace as ``path -> FileEntry``, hashing only files whose size,
mtime or inode changed since its last scan), `environment` (Python and installed
distributions), the manifest format (`store_manifest`, `read_manifest`, `manifest_files`),
`restore_files`, and `SnapshotRecorder`, which the runner calls at the run start and before
and after each step.

A snapshot is two artifacts, both JSON with sorted keys, so identical content is stored once:

* the *tree*: ``{"files": {path: [digest, size, mode]}}``: an unchanged workspace is the same
  tree, and an unchanged file is the same file artifact, so both cost nothing to store again;
* the *manifest*: format, run, step, kind, the tree digest, counts, the notebook's path, the
  environment artifact's digest, and the step's input/output values (``ArtifactRef`` JSON).

Invariants:
    * ``.cellpipe/``, ``.git/``, ``__pycache__/`` and ``.ipynb_checkpoints/`` are never
      scanned, whatever ``.cellpipeignore`` says;
    * secret-looking files (`SECRET_IGNORED`, and ``cellpipe.toml`` holding a password) are
      never read unless ``.cellpipeignore`` takes them back with ``!pattern``; the scanner
      says which it left out (`WorkspaceScanner.secrets`);
    * nothing is followed: a symbolic link is recorded as a link (its target text,
      `LINK_MODE`), so a link out of the workspace is never read; FIFOs, sockets and devices
      are skipped;
    * a live SQLite database is never opened: the scanner skips the files it is told are
      private (the metadata database, with its ``-wal``, ``-shm`` and ``-journal``
      siblings) and every SQLite journal (`ALWAYS_IGNORED_FILES`). Opening and closing a
      file that this process's SQLite connection has locked drops those POSIX locks, after
      which concurrent writers corrupt the database (sqlite.org/howtocorrupt.html, 2.2);
    * the size limit is checked from ``stat`` alone, before anything is hashed or copied;
    * a file is re-hashed when its size, mtime, ctime or inode differ from the cached entry,
      or when its mtime is within `RACY_WINDOW_NS` of the scan (a same-tick rewrite could keep
      size and mtime, as with git's "racy clean" problem); the ctime catches a rewrite whose
      mtime was put back (``os.utime``), since no user call can set it;
    * an after snapshot lists the files changed since the step's before snapshot with the
      step each is attributed to (`attribute_changes`): steps running at once share the
      workspace;
    * restoring never writes into a non-empty folder unless asked to (``force``), never
      writes a file the ignore rules exclude, never writes through an existing link, and
      recreates a link only when its target stays inside the folder.

Must not depend on: notebooks, the pipeline model, the runner.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import posixpath
import re
import stat as stat_module
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellpipe.errors import CellpipeError, StorageError
from cellpipe.storage._urls import redact_url
from cellpipe.storage.protocols import ArtifactDigest, ArtifactStore

if TYPE_CHECKING:  # the run records load with the recorder: `check` only walks the workspace
    from cellpipe.storage.lineage import HistoryStore, SnapshotKind, SnapshotRecord
    from cellpipe.storage.records import ArtifactRef

__all__ = [
    "ALWAYS_IGNORED",
    "ALWAYS_IGNORED_FILES",
    "DEFAULT_MAX_BYTES",
    "IGNORE_FILE",
    "LINK_MODE",
    "SECRET_IGNORED",
    "FileEntry",
    "IgnoreRules",
    "RestoreResult",
    "SnapshotRecorder",
    "UnsafeLinkError",
    "WorkspaceScanner",
    "WorkspaceTooLargeError",
    "attribute_changes",
    "environment",
    "holds_credentials",
    "left_out_secrets",
    "manifest_files",
    "parse_size",
    "read_manifest",
    "restore_files",
    "store_manifest",
]

logger = logging.getLogger(__name__)

IGNORE_FILE = ".cellpipeignore"
"""The ignore file in the workspace root (.gitignore syntax)."""
ALWAYS_IGNORED = (".cellpipe/", ".git/", "__pycache__/", ".ipynb_checkpoints/")
"""Folders never snapshotted, at any depth."""
ALWAYS_IGNORED_FILES = tuple(
    f"*.{suffix}-{journal}"
    for suffix in ("db", "sqlite", "sqlite3")
    for journal in ("wal", "shm", "journal")
)
"""Files never snapshotted, at any depth: SQLite's journals, which a live database locks."""
SECRET_IGNORED = (
    # environment files of dotenv, docker compose, direnv and friends
    ".env",
    ".env.*",
    ".envrc",
    # private keys and certificates with their keys
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    # SSH keys by their ssh-keygen names (``id_map.csv`` and other ``id_*`` data stay in)
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    # folders of credentials
    ".ssh/",
    ".gnupg/",
    ".aws/",
    ".azure/",
    "**/.config/gcloud/",
    # credential files of tools
    "credentials",
    "credentials.json",
    "application_default_credentials.json",
    "service-account*.json",
    ".netrc",
    "_netrc",
    ".pgpass",
    ".pypirc",
    ".npmrc",
    ".yarnrc.yml",
    ".git-credentials",
    "**/.docker/config.json",
    "**/.kube/config",
    "kubeconfig",
    "secrets.toml",
)
"""Secret-looking files and folders left out of snapshots by default, at any depth.

``.cellpipeignore`` can take any of them back with ``!pattern`` (the last matching rule wins;
a file inside a left-out folder needs the folder back first, ``!.aws/``). ``cellpipe.toml`` is
left out too when a URL in it holds a literal password (see `holds_credentials`)."""
CONFIG_FILE = "cellpipe.toml"
"""The project file (its name; `cellpipe.config` reads it)."""
_SQLITE_SIBLINGS = ("", "-wal", "-shm", "-journal")
DEFAULT_MAX_BYTES = 2 * 1024**3
"""The workspace size limit (2 GiB); ``CELLPIPE_SNAPSHOT_MAX_BYTES`` overrides it."""
MANIFEST_FORMAT = "cellpipe-snapshot/1"
RACY_WINDOW_NS = 2_000_000_000
"""Files modified this recently before a scan are hashed again at the next scan."""
_CACHE_FORMAT = 2


class WorkspaceTooLargeError(StorageError):
    """The workspace is bigger than the snapshot size limit."""

    headline = "workspace too large to snapshot"


def parse_size(text: str) -> int:
    """Return bytes for ``1000``, ``500M``, ``2GiB``, ``1.5G`` (binary units).

    Raises:
        CellpipeError: for any other text.
    """
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if match is None:
        raise CellpipeError(
            f"CELLPIPE_SNAPSHOT_MAX_BYTES={text!r} is not a size",
            hint="use bytes or a unit: 500M, 2G, 10GiB (0 turns workspace snapshots off)",
        )
    power = " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * 1024**power)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


# -- ignore rules -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rule:
    match: Callable[[str], object]
    negated: bool
    dir_only: bool
    secret: bool = False
    pattern: str = ""
    anchored: bool = False


class _AnyOf:
    """Whether any of several positive rules matches a path, in a few C-level calls.

    Every path of every scan meets the built-in and secret rules (about 60): one test per
    rule would double the time of a scan of 10,000 cached files. Plain names become one set
    lookup, ``*SUFFIX`` one ``endswith`` and ``PREFIX*`` one ``startswith`` of tuples; only
    the other shapes are tested one by one.
    """

    def __init__(self, rules: Iterable[_Rule]) -> None:
        names: set[str] = set()
        suffixes: list[str] = []
        prefixes: list[str] = []
        self.others: list[Callable[[str], object]] = []
        for rule in rules:
            text = rule.pattern
            if rule.anchored:
                self.others.append(rule.match)
            elif _GLOB_CHARS.isdisjoint(text):
                names.add(text)
            elif text.startswith("*") and _GLOB_CHARS.isdisjoint(text[1:]):
                suffixes.append(text[1:])
            elif text.endswith("*") and _GLOB_CHARS.isdisjoint(text[:-1]):
                prefixes.append(text[:-1])
            else:
                self.others.append(rule.match)
        self.names = frozenset(names)
        self.suffixes = tuple(suffixes)
        self.prefixes = tuple(prefixes)

    def __call__(self, path: str) -> bool:
        name = path.rpartition("/")[2]
        if name in self.names or name.endswith(self.suffixes) or name.startswith(self.prefixes):
            return True
        return any(match(path) for match in self.others)


_GLOB_CHARS = frozenset("*?[\\")


def _matcher(pattern: str, *, anchored: bool) -> Callable[[str], object]:
    """Return a test of paths against one pattern; plain names need no regex.

    Most rules are plain names (``data``, ``.git``) or ``*.suffix``; compiling a regex
    costs about 1 ms each here, which every run's start paid for the built-in rules.
    """
    if _GLOB_CHARS.isdisjoint(pattern):
        if anchored:
            return pattern.__eq__
        tail = "/" + pattern
        return lambda path: path == pattern or path.endswith(tail)
    head, star, tail = pattern.partition("*")
    if not anchored and star and _GLOB_CHARS.isdisjoint(head + tail + "/"):
        # PREFIX*SUFFIX on the last name: ``*.pem``, ``id_rsa*``, ``service-account*.json``
        least = len(head) + len(tail)

        def name_matches(path: str) -> bool:
            name = path.rpartition("/")[2]
            return len(name) >= least and name.startswith(head) and name.endswith(tail)

        return name_matches
    rest = pattern[3:]
    if anchored and pattern.startswith("**/") and _GLOB_CHARS.isdisjoint(rest):
        tail = "/" + rest  # ``**/.docker/config.json``: the path at any depth
        return lambda path: path == rest or path.endswith(tail)
    return _glob_regex(pattern, anchored=anchored).match


def _glob_regex(pattern: str, *, anchored: bool) -> re.Pattern[str]:
    """Translate a gitignore glob (``*``, ``?``, ``[...]``, ``**``) to a regex on paths."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("/.*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end + 1
        elif pattern[i] == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(prefix + "".join(out) + r"\Z")


class IgnoreRules:
    """Which workspace paths a snapshot leaves out: .gitignore syntax, common subset.

    Supported: ``#`` comments and blank lines, globs (``*``, ``?``, ``[abc]``, ``**``), a
    pattern with a slash anchored at the workspace root (a leading ``/`` too), a trailing
    ``/`` for folders only, and ``!`` to re-include; the last matching rule wins, and a file
    inside an ignored folder stays ignored (as in git). `ALWAYS_IGNORED` comes first and
    cannot be negated, nor can `ALWAYS_IGNORED_FILES`. `SECRET_IGNORED` comes before
    ``lines``, so a line ``!.env`` takes one of them back.

    Args:
        lines: the rules, one per line.
        secrets: start with `SECRET_IGNORED` (off only for tests of the syntax).

    Example::

        rules = IgnoreRules(["data/", "*.tmp", "!keep.tmp"])
        rules.ignored("data", is_dir=True)   # True
    """

    def __init__(self, lines: Iterable[str] = (), *, secrets: bool = True) -> None:
        fixed = [r for r in map(self._parse, (*ALWAYS_IGNORED, *ALWAYS_IGNORED_FILES)) if r]
        self._fixed_dir = _AnyOf(fixed)
        self._fixed_file = _AnyOf(r for r in fixed if not r.dir_only)
        defaults = [self._parse(p, secret=True) for p in SECRET_IGNORED] if secrets else []
        secret_rules = [r for r in defaults if r is not None]
        self._secret_dir = _AnyOf(secret_rules)
        self._secret_file = _AnyOf(r for r in secret_rules if not r.dir_only)
        self._rules = [r for r in (self._parse(line) for line in lines) if r is not None]

    @classmethod
    def for_workspace(cls, root: Path) -> IgnoreRules:
        """Return the rules of ``root/.cellpipeignore`` (none when it does not exist)."""
        try:
            text = (root / IGNORE_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise StorageError(
                f"cannot read {root / IGNORE_FILE}: {exc}", hint="fix its permissions"
            ) from exc
        return cls(text.splitlines())

    @staticmethod
    def _parse(line: str, *, secret: bool = False) -> _Rule | None:
        text = line.rstrip("\n")
        if not text.strip() or text.startswith("#"):
            return None
        if not text.endswith("\\ "):
            text = text.rstrip()
        negated = text.startswith("!")
        if negated or text.startswith("\\#") or text.startswith("\\!"):
            text = text[1:]
        dir_only = text.endswith("/")
        text = text.rstrip("/")
        anchored = "/" in text
        text = text.lstrip("/")
        if not text:
            return None
        return _Rule(_matcher(text, anchored=anchored), negated, dir_only, secret, text, anchored)

    def ignored(self, path: str, *, is_dir: bool) -> bool:
        """Return whether ``path`` (relative, ``/``-separated) is left out.

        The caller walks top-down and does not descend into an ignored folder, which is what
        makes a file inside one ignored.
        """
        return self.reason(path, is_dir=is_dir) is not None

    def reason(self, path: str, *, is_dir: bool, secret: bool = False) -> str | None:
        """Return why ``path`` is left out: ``"always"``, ``"secret"``, ``"ignored"`` or None.

        Args:
            path: relative, ``/``-separated.
            is_dir: whether it is a folder.
            secret: the caller found it secret by its content (``cellpipe.toml``): it is
                left out unless a ``!pattern`` takes it back.
        """
        if (self._fixed_dir if is_dir else self._fixed_file)(path):
            return "always"
        # The secret rules come first and none is negated: whether any matches is enough.
        result: str | None = None
        if secret or (self._secret_dir if is_dir else self._secret_file)(path):
            result = "secret"
        for rule in self._rules:
            if rule.dir_only and not is_dir:
                continue
            if rule.match(path):
                result = None if rule.negated else "secret" if rule.secret else "ignored"
        return result

    def excludes(self, path: str) -> bool:
        """Return whether the file ``path`` or a folder above it is left out (for restores)."""
        parts = path.split("/")
        for i in range(1, len(parts)):
            if self.ignored("/".join(parts[:i]), is_dir=True):
                return True
        return self.ignored(path, is_dir=False)


_ENV_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"']+")


def holds_credentials(text: str) -> bool:
    """Return whether a text (``cellpipe.toml``) has a URL with a literal password in it.

    A password given as ``${VARIABLE}`` (expanded when the settings are read) is not one.
    """
    for url in _URL_IN_TEXT.findall(text):
        shown = _ENV_REFERENCE.sub("***", url)
        if redact_url(shown) != shown:
            return True
    return False


# -- scanning ---------------------------------------------------------------------------------


LINK_MODE = stat_module.S_IFLNK | 0o777
"""The mode recorded for a symbolic link (its kind bits kept, unlike a file's)."""


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One workspace entry in a snapshot: content digest, size in bytes, permission bits.

    A symbolic link has ``link`` (its target, as written), the digest and size of that text,
    and `LINK_MODE`; it is recorded, never followed.
    """

    digest: ArtifactDigest
    size: int
    mode: int
    link: str | None = None

    def to_json(self) -> list[Any]:
        """Return the compact JSON form ``[digest, size, mode]`` (``+ [target]`` for a link)."""
        if self.link is not None:
            return [self.digest, self.size, self.mode, self.link]
        return [self.digest, self.size, self.mode]

    @classmethod
    def from_json(cls, value: list[Any]) -> FileEntry:
        """Return the entry of `to_json`'s form."""
        link = str(value[3]) if len(value) > 3 else None
        return cls(ArtifactDigest(value[0]), int(value[1]), int(value[2]), link)


class WorkspaceScanner:
    """The workspace's files by content, stored in the artifact store as it goes.

    Args:
        root: the workspace (the notebook's folder).
        store: where file contents go.
        cache_file: where the ``stat -> digest`` cache persists between runs (optional).
        max_bytes: the size limit; 0 or less means no limit.
        ignore: the rules (default: ``root/.cellpipeignore``).
        private_files: files never to open, with their SQLite siblings (``-wal``, ``-shm``,
            ``-journal``): the metadata database when it lives in the workspace.

    Thread-safe: scans run one at a time.
    """

    def __init__(
        self,
        root: Path,
        store: ArtifactStore,
        *,
        cache_file: Path | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        ignore: IgnoreRules | None = None,
        private_files: Iterable[Path] = (),
    ) -> None:
        self.root = Path(root).resolve()
        self.store = store
        self.private = self._private_paths(private_files)
        """Workspace-relative paths that are never opened (nor listed in snapshots)."""
        self.cache_file = cache_file
        self.max_bytes = max_bytes
        self.ignore = ignore if ignore is not None else IgnoreRules.for_workspace(self.root)
        self._lock = threading.Lock()
        self._cache: dict[str, list[Any]] = self._load_cache()
        self._dirty = False
        self.hashed = 0
        """Files hashed by the last scan (the rest came from the cache)."""
        self.secrets: tuple[str, ...] = ()
        """What the last scan left out by the secret rules (folders end in ``/``)."""

    def _store_id(self) -> str:
        return repr(self.store)

    def _private_paths(self, files: Iterable[Path]) -> frozenset[str]:
        found: set[str] = set()
        for file in files:
            path = Path(file).absolute()
            try:
                # Resolve the folder only: the file itself may not exist yet.
                rel = (path.parent.resolve() / path.name).relative_to(self.root).as_posix()
            except (OSError, ValueError):  # outside the workspace: nothing to skip
                continue
            found.update(rel + sibling for sibling in _SQLITE_SIBLINGS)
        return frozenset(found)

    def _load_cache(self) -> dict[str, list[Any]]:
        if self.cache_file is None:
            return {}
        try:
            data = json.loads(self.cache_file.read_text())
        except (OSError, ValueError):
            return {}
        if data.get("format") != _CACHE_FORMAT or data.get("store") != self._store_id():
            return {}  # a different store may not have these digests
        entries = data.get("entries")
        return entries if isinstance(entries, dict) else {}

    def save_cache(self) -> None:
        """Write the stat cache (temp file + rename); a no-op when nothing changed."""
        if self.cache_file is None or not self._dirty:
            return
        with self._lock:
            data = {"format": _CACHE_FORMAT, "store": self._store_id(), "entries": self._cache}
            tmp = self.cache_file.with_name(f"{self.cache_file.name}.{os.getpid()}.tmp")
            try:
                tmp.write_text(json.dumps(data, separators=(",", ":")))
                tmp.replace(self.cache_file)
            except OSError:  # the cache only saves time; a run never fails for it
                logger.debug("could not write %s", self.cache_file, exc_info=True)
            self._dirty = False

    def _walk(self) -> tuple[list[tuple[str, os.stat_result]], dict[str, str]]:
        """Return the regular files with their ``stat``, and the links with their targets.

        Nothing is followed: a link is read with ``readlink`` only (so a link to
        ``/etc/shadow`` or ``/proc/self/environ`` costs its target's name, never its bytes),
        and FIFOs, sockets and devices are skipped.
        """
        found: list[tuple[str, os.stat_result]] = []
        links: dict[str, str] = {}
        secrets: list[str] = []
        stack: list[tuple[str, str]] = [("", str(self.root))]
        while stack:
            prefix, folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError as exc:
                logger.warning("snapshot: cannot list %s: %s", folder, exc)
                continue
            for entry in entries:
                rel = prefix + entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        why = self.ignore.reason(rel, is_dir=True)
                        if why == "secret":
                            secrets.append(rel + "/")
                        elif why is None:
                            stack.append((rel + "/", entry.path))
                        continue
                    if rel in self.private:
                        continue
                    link = entry.is_symlink()
                    if not link and not entry.is_file(follow_symlinks=False):
                        continue  # FIFOs, sockets, devices: never opened
                    why = self.ignore.reason(rel, is_dir=False, secret=self._secret_file(rel))
                    if why == "secret":
                        secrets.append(rel)
                    if why is not None:
                        continue
                    if link:
                        links[rel] = str(Path(entry.path).readlink())
                    else:
                        found.append((rel, entry.stat(follow_symlinks=False)))
                except OSError as exc:
                    logger.warning("snapshot: cannot read %s: %s", entry.path, exc)
        found.sort()
        self.secrets = tuple(sorted(secrets))
        return found, links

    def _secret_file(self, rel: str) -> bool:
        """Return whether a file is secret by its content: a ``cellpipe.toml`` with a password."""
        if rel != CONFIG_FILE:
            return False
        try:
            with (self.root / rel).open("rb") as f:
                return holds_credentials(f.read(1024 * 1024).decode("utf-8", "replace"))
        except OSError:
            return True  # unreadable: we cannot tell, so it stays out

    def left_out_secrets(self) -> tuple[str, ...]:
        """Walk the workspace (nothing is read or stored) and return `secrets`."""
        with self._lock:
            self._walk()
            return self.secrets

    def _check_size(self, files: list[tuple[str, os.stat_result]]) -> None:
        total = sum(st.st_size for _, st in files)
        if self.max_bytes <= 0 or total <= self.max_bytes:
            return
        biggest = sorted(files, key=lambda f: f[1].st_size, reverse=True)[:5]
        listed = ", ".join(f"{rel} ({_human(st.st_size)})" for rel, st in biggest)
        raise WorkspaceTooLargeError(
            f"the workspace {self.root} holds {len(files)} files, {_human(total)} in total, "
            f"over the snapshot limit of {_human(self.max_bytes)}; the biggest: {listed}",
            hint=f"list what the notebook does not need in {self.root / IGNORE_FILE} "
            f"(.gitignore syntax), e.g. `{biggest[0][0]}` or `{biggest[0][0].split('/')[0]}/`; "
            "or raise the limit: CELLPIPE_SNAPSHOT_MAX_BYTES=10G (0 turns it off)",
        )

    def scan(self) -> dict[str, FileEntry]:
        """Return the workspace as ``relative path -> FileEntry``, storing new contents.

        Raises:
            WorkspaceTooLargeError: when the files add up to more than ``max_bytes``.
        """
        with self._lock:
            started = time.time_ns()
            files, links = self._walk()
            self._check_size(files)
            result: dict[str, FileEntry] = {}
            self.hashed = 0
            for rel, st in files:
                mode = stat_module.S_IMODE(st.st_mode)
                cached = self._cache.get(rel)
                # The ctime is in the key: a same-size rewrite whose mtime was put back (os.utime,
                # tar, rsync -t) still moves the ctime, which no user call can set.
                if cached is not None and cached[:4] == [
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_ctime_ns,
                    st.st_ino,
                ]:
                    result[rel] = FileEntry(ArtifactDigest(cached[4]), st.st_size, mode)
                    continue
                try:
                    digest = self._put_regular(rel, st)
                except OSError as exc:  # vanished, unreadable or replaced since the walk
                    logger.warning("snapshot: cannot read %s: %s", self.root / rel, exc)
                    continue
                self.hashed += 1
                result[rel] = FileEntry(digest, st.st_size, mode)
                if st.st_mtime_ns < started - RACY_WINDOW_NS:
                    self._cache[rel] = [
                        st.st_size,
                        st.st_mtime_ns,
                        st.st_ctime_ns,
                        st.st_ino,
                        digest,
                    ]
                else:
                    self._cache.pop(rel, None)
                self._dirty = True
            for rel, target in links.items():
                data = os.fsencode(target)
                result[rel] = FileEntry(self.store.put_bytes(data), len(data), LINK_MODE, target)
            for rel in set(self._cache) - set(result):
                del self._cache[rel]
                self._dirty = True
            return dict(sorted(result.items()))

    def _put_regular(self, rel: str, walked: os.stat_result) -> ArtifactDigest:
        """Store a file the walk found regular, unless it was since replaced (a link, a FIFO).

        The file is opened one component at a time without following links (``openat`` with
        ``O_NOFOLLOW``), so a folder or file swapped for a link after the walk is not read
        through it; the store then reads that very open file (``/proc/self/fd``).
        """
        fd = _open_no_follow(self.root, rel)
        try:
            now = os.fstat(fd)
            if not stat_module.S_ISREG(now.st_mode) or now.st_ino != walked.st_ino:
                raise OSError(f"{self.root / rel} was replaced while the workspace was scanned")
            handle = Path(f"/proc/self/fd/{fd}")
            if not handle.exists():  # no /proc (not Linux): the checks above must do
                handle = self.root / rel
            return self.store.put_file(handle)
        finally:
            os.close(fd)


def _open_no_follow(root: Path, rel: str) -> int:
    """Open ``root/rel`` for reading, following no link on the way (raises OSError)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    *folders, name = rel.split("/")
    fd = os.open(root, flags | getattr(os, "O_DIRECTORY", 0))
    try:
        for folder in folders:
            inner = os.open(folder, flags | getattr(os, "O_DIRECTORY", 0), dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(name, flags | getattr(os, "O_NONBLOCK", 0), dir_fd=fd)
    finally:
        os.close(fd)


class _NothingStored:
    """The store of a scanner that only walks (`left_out_secrets`): it never stores."""

    def _refuse(self, *_args: object, **_kwargs: object) -> Any:
        raise StorageError("this workspace scan stores nothing")

    put_file = put_bytes = open = exists = local_path = _refuse


def left_out_secrets(root: Path, *, ignore: IgnoreRules | None = None) -> tuple[str, ...]:
    """Return what a snapshot of ``root`` would leave out by the secret rules.

    Only names are looked at (and ``cellpipe.toml``'s text): nothing is hashed or stored, and
    the artifact store is not even imported, so ``cellpipe check`` can say it cheaply.

    Args:
        root: the workspace.
        ignore: the rules (default: ``root/.cellpipeignore``).

    Returns:
        Workspace-relative paths, folders ending in ``/``.
    """
    return WorkspaceScanner(root, _NothingStored(), ignore=ignore).left_out_secrets()


# -- environment and manifests ----------------------------------------------------------------


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_from_folders() -> dict[str, str]:
    """Read ``name-version.dist-info`` folder names on ``sys.path``: no file is opened.

    Reading every distribution's METADATA costs about 0.4 s in a large environment, which
    would be paid by every run; the folder names carry the same two facts.
    """
    found: dict[str, str] = {}
    for entry_path in sys.path:
        try:
            entries = os.scandir(entry_path or ".")
        except OSError:
            continue
        with entries:
            for entry in entries:
                stem, dot, suffix = entry.name.rpartition(".")
                if suffix not in ("dist-info", "egg-info") or not dot:
                    continue
                name, dash, version = stem.partition("-")
                if dash and version:
                    found.setdefault(_canonical(name), version.partition("-py")[0])
    return found


@functools.cache
def environment() -> Mapping[str, Any]:
    """Return the Python version, platform and installed distributions (name -> version).

    Computed once per process: the environment does not change while a run goes.
    """
    packages = _installed_from_folders()
    if not packages:  # unusual layouts (zip imports, editable finders only)
        import importlib.metadata  # lazily: about 20 ms that every run start would pay

        for dist in importlib.metadata.distributions():
            name = dist.metadata["Name"]
            if name:
                packages[_canonical(name)] = dist.version
    import platform  # here: `check` imports this module to walk the workspace, not for this

    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "packages": dict(sorted(packages.items())),
    }


def _put_json(store: ArtifactStore, value: Any) -> ArtifactDigest:
    data = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return store.put_bytes(data.encode("utf-8"))


def _get_json(store: ArtifactStore, digest: str) -> Any:
    with store.open(ArtifactDigest(digest)) as f:
        return json.loads(f.read().decode("utf-8"))


def store_manifest(
    store: ArtifactStore,
    *,
    files: Mapping[str, FileEntry],
    run_id: str,
    step: str,
    kind: SnapshotKind,
    notebook: str | None = None,
    env: Mapping[str, Any] | None = None,
    inputs: Mapping[str, ArtifactRef] | None = None,
    outputs: Mapping[str, ArtifactRef] | None = None,
) -> tuple[ArtifactDigest, int, int]:
    """Store a snapshot's tree and manifest.

    Args:
        store: the artifact store.
        files: the workspace files.
        run_id: the run.
        step: the step, or ``""`` for the run start.
        kind: start, before or after.
        notebook: the notebook's path relative to the workspace (start snapshots).
        env: the environment (start snapshots), stored as its own artifact.
        inputs: the step's input values.
        outputs: the step's output values.

    Returns:
        ``(manifest digest, file count, total size)``.
    """
    tree = _put_json(store, {"files": {p: e.to_json() for p, e in sorted(files.items())}})
    return store_manifest_of_tree(
        store,
        tree=tree,
        files=files,
        run_id=run_id,
        step=step,
        kind=kind,
        notebook=notebook,
        env=env,
        inputs=inputs,
        outputs=outputs,
    )


def store_manifest_of_tree(
    store: ArtifactStore,
    *,
    tree: ArtifactDigest,
    files: Mapping[str, FileEntry],
    run_id: str,
    step: str,
    kind: SnapshotKind,
    notebook: str | None = None,
    env: Mapping[str, Any] | None = None,
    inputs: Mapping[str, ArtifactRef] | None = None,
    outputs: Mapping[str, ArtifactRef] | None = None,
    changes: Mapping[str, Any] | None = None,
) -> tuple[ArtifactDigest, int, int]:
    """Like `store_manifest`, with the tree already stored (its digest given).

    ``changes`` (after snapshots): `attribute_changes` of the step's window.
    """
    total = sum(e.size for e in files.values())
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "run_id": run_id,
        "step": step,
        "kind": kind.value,
        "tree": tree,
        "file_count": len(files),
        "total_size": total,
        "notebook": notebook,
        "environment": _put_json(store, dict(env)) if env is not None else None,
        "inputs": {k: v.to_json() for k, v in (inputs or {}).items()},
        "outputs": {k: v.to_json() for k, v in (outputs or {}).items()},
    }
    if changes is not None:
        manifest["changes"] = dict(changes)
    return _put_json(store, manifest), len(files), total


def attribute_changes(
    before: Mapping[str, FileEntry],
    after: Mapping[str, FileEntry],
    *,
    step: str,
    concurrent: Iterable[str] = (),
    written: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Return each file changed between a step's before and after snapshots, with its author.

    Steps that run at the same time share one workspace, so a change in a step's window may be
    another step's. Each change gets ``by`` (the steps it is attributed to) and ``attribution``:

    * ``"seen"``: the audit hook of the steps in ``by`` saw them open the file for writing;
    * ``"unseen"``: no other step ran meanwhile, so it is this step's, though its audit hook
      did not see it (a subprocess, a library writing outside Python's ``open``);
    * ``"shared"``: no hook saw it and other steps ran meanwhile: it is one of ``by``'s.

    Args:
        before: the step's before snapshot.
        after: its after snapshot.
        step: the step.
        concurrent: the steps that ran at some point of its window.
        written: step -> files its audit hook saw written, for the steps known so far.

    Returns:
        ``path -> {"change": "added"|"modified"|"removed", "by": [...], "attribution": ...}``.
    """
    others = sorted(set(concurrent) - {step})
    seen = {name: set(files) for name, files in (written or {}).items()}
    result: dict[str, dict[str, Any]] = {}
    for path in sorted({*before, *after}):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        change = "added" if old is None else "removed" if new is None else "modified"
        writers = [name for name in (step, *others) if path in seen.get(name, ())]
        if writers:
            by, attribution = writers, "seen"
        elif not others:
            by, attribution = [step], "unseen"
        else:
            by, attribution = [step, *others], "shared"
        result[path] = {"change": change, "by": by, "attribution": attribution}
    return result


def read_manifest(store: ArtifactStore, digest: str) -> dict[str, Any]:
    """Return a manifest (with ``environment`` replaced by its content, when recorded).

    Raises:
        ArtifactNotFoundError: when the manifest is not in the store.
        StorageError: when the artifact is not a snapshot manifest.
    """
    manifest = _get_json(store, digest)
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise StorageError(
            f"artifact {digest} is not a cellpipe snapshot manifest",
            hint="`cellpipe snapshot list RUN` lists a run's snapshots",
        )
    if manifest.get("environment"):
        manifest["environment"] = _get_json(store, manifest["environment"])
    return manifest


def manifest_files(store: ArtifactStore, manifest: Mapping[str, Any]) -> dict[str, FileEntry]:
    """Return the files of a manifest (as `read_manifest` returns it)."""
    tree = _get_json(store, manifest["tree"])
    return {path: FileEntry.from_json(v) for path, v in tree["files"].items()}


class UnsafeLinkError(CellpipeError):
    """A snapshot's symbolic link would point outside the folder it is restored into."""

    headline = "symbolic link points outside the restore folder"


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreResult:
    """What `restore_files` wrote and what it left out.

    Attributes:
        files: files and links written.
        left_out: paths the ignore rules exclude (default secret rules and the workspace's
            ``.cellpipeignore``), never written.
        links_skipped: links left out because their target is outside the folder.
    """

    files: int
    left_out: tuple[str, ...] = ()
    links_skipped: tuple[str, ...] = ()


def _link_escapes(rel: str, target: str) -> bool:
    """Return whether a link at ``rel`` with ``target`` leaves the folder (by its text).

    An absolute target, or one whose ``..`` climb above the root, leaves it; the real check
    after the links exist (`restore_files`) also catches a climb through another link.
    """
    if target.startswith("/"):
        return True
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    return joined == ".." or joined.startswith("../")


def restore_files(
    store: ArtifactStore,
    files: Mapping[str, FileEntry],
    target: Path,
    *,
    force: bool = False,
    ignore: IgnoreRules | None = None,
    skip_outside_links: bool = False,
) -> RestoreResult:
    """Write the files into ``target`` with their permission bits, and recreate the links.

    Args:
        store: the artifact store holding the contents.
        files: what to write (`manifest_files`).
        target: the folder; created when missing.
        force: write into a non-empty folder (files of the same name are replaced, others
            are left alone).
        ignore: the rules of what is never written (default: `SECRET_IGNORED` only). A
            snapshot taken before a secret rule existed may hold such a file: it stays out,
            as does a ``cellpipe.toml`` holding a password (`holds_credentials`).
        skip_outside_links: leave out links whose target is outside ``target`` instead of
            refusing the restore.

    Raises:
        CellpipeError: when ``target`` is a non-empty folder and ``force`` is False, or a
            path would land outside it.
        UnsafeLinkError: a link's target is outside ``target`` (nothing has been written).
        ArtifactNotFoundError: when a file's content is missing from the store.
    """
    rules = ignore if ignore is not None else IgnoreRules()
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise CellpipeError(f"{target} is a file, not a folder", hint="give a folder with --to")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise CellpipeError(
            f"{target} is not empty; restoring would mix the snapshot with its files",
            hint="choose a new or empty folder, or pass --force to write over it",
        )
    left_out = tuple(
        sorted(
            rel
            for rel, entry in files.items()
            if rules.excludes(rel) or (rel == CONFIG_FILE and _secret_config(store, entry))
        )
    )
    wanted = {rel: e for rel, e in sorted(files.items()) if rel not in left_out}
    outside = [
        (rel, e.link)
        for rel, e in wanted.items()
        if e.link is not None and _link_escapes(rel, e.link)
    ]
    if outside and not skip_outside_links:
        listed = ", ".join(f"{rel} -> {link}" for rel, link in outside[:5])
        more = f" and {len(outside) - 5} more" if len(outside) > 5 else ""
        raise UnsafeLinkError(
            f"the snapshot holds {len(outside)} symbolic link(s) whose target is outside "
            f"{target}: {listed}{more}; cellpipe recreates a link only when it stays inside "
            "the folder it restores into",
            hint="pass --skip-outside-links to restore everything else, then recreate those "
            "links yourself if you trust their targets",
        )
    skipped = tuple(rel for rel, _ in outside)
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    links: list[tuple[Path, str]] = []
    for rel, entry in wanted.items():
        if rel in skipped:
            continue
        dest = root / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise CellpipeError(
                f"snapshot path {rel!r} points outside {root}", hint="the manifest is damaged"
            )
        if not dest.parent.resolve().is_relative_to(root):
            link = next((p for p in _parents_below(dest, root) if p.is_symlink()), dest.parent)
            raise UnsafeLinkError(
                f"cannot restore {rel!r}: {link} is a symbolic link to {link.resolve()}, outside "
                f"{root}, and cellpipe never writes through a link out of the folder it restores "
                "into",
                hint="restore into a new or empty folder, or remove that link first",
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.cellpipe-tmp")
        tmp.unlink(missing_ok=True)
        if entry.link is not None:
            tmp.symlink_to(entry.link)
            links.append((dest, entry.link))
        else:
            with store.open(entry.digest) as src, tmp.open("xb") as out:
                while chunk := src.read(1024 * 1024):
                    out.write(chunk)
            tmp.chmod(entry.mode or 0o644)
        tmp.replace(dest)  # replaces a link of the same name, never writes through it
    # A link can climb out through another link (a -> ., b -> a/../..): check the real paths
    # now that every link exists, and take out any that leaves.
    escaped = [(dest, link) for dest, link in links if not _real_inside(dest, root)]
    if escaped:
        for dest, _ in escaped:
            dest.unlink(missing_ok=True)
        listed = ", ".join(f"{d.relative_to(root)} -> {link}" for d, link in escaped[:5])
        raise UnsafeLinkError(
            f"symbolic link(s) in the snapshot lead outside {root} through other links: "
            f"{listed}; they were removed again",
            hint="the other files were restored; recreate those links yourself if you trust "
            "their targets",
        )
    return RestoreResult(files=len(wanted) - len(skipped), left_out=left_out,
                         links_skipped=skipped)  # fmt: skip


def _secret_config(store: ArtifactStore, entry: FileEntry) -> bool:
    """Return whether a snapshot's ``cellpipe.toml`` holds a password (an older snapshot may)."""
    if entry.link is not None:
        return False
    with store.open(entry.digest) as f:
        return holds_credentials(f.read(1024 * 1024).decode("utf-8", "replace"))


def _parents_below(path: Path, root: Path) -> list[Path]:
    """Return the folders between ``root`` (excluded) and ``path`` (excluded), outermost first."""
    return [p for p in reversed(path.parents) if p != root and p.is_relative_to(root)]


def _real_inside(path: Path, root: Path) -> bool:
    try:
        return Path(os.path.realpath(path)).is_relative_to(root)
    except OSError:
        return False


# -- the runner's side ------------------------------------------------------------------------


class SnapshotRecorder:
    """Takes and records the snapshots of one run.

    Args:
        root: the workspace (the notebook's folder).
        store: the artifact store.
        history: where snapshot rows go (None: store the manifests, record nothing).
        run_id: the run.
        state_dir: the project's ``.cellpipe`` folder (the stat cache lives there).
        max_bytes: the workspace size limit (default: ``CELLPIPE_SNAPSHOT_MAX_BYTES`` from
            ``env``, else `DEFAULT_MAX_BYTES`); 0 records no workspace files.
        env: where to read ``CELLPIPE_SNAPSHOT_MAX_BYTES`` (default: ``os.environ``).
        private_files: files never to open (see `WorkspaceScanner`): the metadata database
            when it is a SQLite file in the workspace.

    Example::

        recorder = SnapshotRecorder(root, store, history, run_id=run_id, state_dir=state)
        start = recorder.take_start(notebook)      # before the run record: may raise
        ...start the run record...
        recorder.record(start)
        recorder.step_snapshot("train", SnapshotKind.BEFORE, inputs=refs)
    """

    def __init__(
        self,
        root: Path,
        store: ArtifactStore,
        history: HistoryStore | None,
        *,
        run_id: str,
        state_dir: Path,
        max_bytes: int | None = None,
        env: Mapping[str, str] | None = None,
        private_files: Iterable[Path] = (),
    ) -> None:
        environ = os.environ if env is None else env
        if max_bytes is None:
            raw = environ.get("CELLPIPE_SNAPSHOT_MAX_BYTES")
            max_bytes = parse_size(raw) if raw else DEFAULT_MAX_BYTES
        self.enabled = max_bytes > 0
        self.history = history
        self.run_id = run_id
        self.store = store
        self.scanner = WorkspaceScanner(
            root,
            store,
            cache_file=state_dir / "snapshot-cache.json",
            max_bytes=max_bytes,
            private_files=private_files,
        )
        # Unchanged workspace between snapshots: the same tree, not serialised again.
        self._last_files: dict[str, FileEntry] = {}
        self._last_tree: ArtifactDigest | None = None

    def _scan(self) -> dict[str, FileEntry]:
        return self.scanner.scan() if self.enabled else {}

    @property
    def last_files(self) -> Mapping[str, FileEntry]:
        """The files of the latest step snapshot."""
        return self._last_files

    @property
    def secrets(self) -> tuple[str, ...]:
        """What the latest scan left out by the secret rules (folders end in ``/``)."""
        return self.scanner.secrets

    def take_start(self, notebook: Path) -> SnapshotRecord:
        """Snapshot the notebook, environment and workspace (not recorded yet).

        Raises:
            WorkspaceTooLargeError: over the size limit (nothing has been recorded).
        """
        from cellpipe.storage.lineage import SnapshotKind

        files = self._scan()
        nb = Path(notebook).resolve()
        try:
            rel = nb.relative_to(self.scanner.root).as_posix()
        except ValueError:
            rel = nb.name
        if rel not in files:  # ignored or snapshots off: the notebook is always kept
            st = nb.stat()
            files[rel] = FileEntry(
                self.store.put_file(nb), st.st_size, stat_module.S_IMODE(st.st_mode)
            )
        digest, count, size = store_manifest(
            self.store,
            files=files,
            run_id=self.run_id,
            step="",
            kind=SnapshotKind.START,
            notebook=rel,
            env=environment(),
        )
        return self._record_of("", SnapshotKind.START, digest, count, size)

    def _record_of(
        self, step: str, kind: SnapshotKind, digest: ArtifactDigest, count: int, size: int
    ) -> SnapshotRecord:
        from datetime import UTC, datetime

        from cellpipe.storage.lineage import SnapshotRecord

        return SnapshotRecord(
            run_id=self.run_id,
            step=step,
            kind=kind,
            manifest=digest,
            file_count=count,
            total_size=size,
            created_at=datetime.now(UTC),
        )

    def record(self, record: SnapshotRecord) -> None:
        """Record a snapshot row (no-op without a history store)."""
        if self.history is not None:
            self.history.record_snapshot(record)

    def step_snapshot(
        self,
        step: str,
        kind: SnapshotKind,
        *,
        inputs: Mapping[str, ArtifactRef] | None = None,
        outputs: Mapping[str, ArtifactRef] | None = None,
        attribute: Callable[[Mapping[str, FileEntry]], Mapping[str, Any] | None] | None = None,
    ) -> SnapshotRecord | None:
        """Snapshot the workspace and the step's values, and record it.

        A failure here (the workspace outgrew the limit during the run, a database hiccup)
        is logged, never raised: the step's own result matters more than its snapshot.

        Args:
            step: the step.
            kind: before or after.
            inputs: its input values.
            outputs: its output values.
            attribute: given the files scanned, returns the manifest's ``changes``
                (`attribute_changes`); the files are in `last_files` afterwards too.
        """
        try:
            files = self._scan()
            changes = attribute(files) if attribute is not None and self.enabled else None
            if files != self._last_files or self._last_tree is None:
                tree = _put_json(
                    self.store, {"files": {p: e.to_json() for p, e in sorted(files.items())}}
                )
                self._last_files, self._last_tree = files, tree
            digest, count, size = store_manifest_of_tree(
                self.store,
                tree=self._last_tree,
                files=files,
                run_id=self.run_id,
                step=step,
                kind=kind,
                inputs=inputs,
                outputs=outputs,
                changes=changes,
            )
            record = self._record_of(step, kind, digest, count, size)
            self.record(record)
        except (CellpipeError, OSError) as exc:
            logger.warning("snapshot %s of step %s not taken: %s", kind.value, step, exc)
            return None
        return record

    def close(self) -> None:
        """Persist the stat cache for the next run."""
        self.scanner.save_cache()
