"""KServe ``InferenceService`` manifests for a registered model version.

Owns: `kserve_manifest` (the manifest as a dict, the predictor chosen and why),
`inference_service` (just the dict), `render_manifest` (YAML with a comment header saying
what was chosen and what the user must set), `write_manifest`, the table `KSERVE_RELEASES`
(what each KServe release's runtime images ship) and the name checks.

Which predictor: KServe's sklearn runtime loads ``model.joblib`` with the scikit-learn of its
image, and a joblib pickle loads reliably only in the scikit-learn minor release that wrote
it. So a scikit-learn object stored with joblib gets the sklearn runtime, with
``modelFormat.version`` and ``runtimeVersion`` pinned to the newest KServe release (up to the
one targeted) whose image ships the same scikit-learn ``major.minor`` as the version's
recorded packages (or, when it records none, the scikit-learn installed here, said in the
header). A native ``xgboost.Booster`` / ``lightgbm.Booster`` gets the xgboost / lightgbm
runtime the same way (those load a saved model file, which newer library releases of the same
major read). Everything else (other objects with ``predict``, callables, scikit-learn objects
of another release, the scikit-learn wrappers of XGBoost and LightGBM, whose runtimes answer
with the booster's raw output instead of ``predict``) gets a custom predictor: a container
running ``cellpipe serve NAME:N`` (argument list) from the image ``cellpipe image --model``
builds, on KServe's port 8080 with readiness on ``/v2/health/ready``, serving the same version
number (`cellpipe.serving.image`).

Invariants: the resource name is a DNS-1035 label and leaves room for the ``-predictor``
suffix KServe adds (at most 53 characters), else `ServingError` naming the limit and
``--name``; output is deterministic (no timestamps); header comments never carry raw user
text (control characters are replaced).

Must not depend on: the runner, kfp, notebooks, config. PyYAML is optional: without it the
manifest is written as JSON, which is valid YAML.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cellpipe.errors import ServingError
from cellpipe.registry.model import ModelVersion
from cellpipe.serving.image import SERVE_PORT, TOKEN_VARIABLE, serve_command

__all__ = [
    "KSERVE_RELEASES",
    "MAX_NAME_LENGTH",
    "PLACEHOLDER_PREFIX",
    "PREDICTORS",
    "STORAGE_URI_PREFIXES",
    "TARGET_KSERVE",
    "KServeManifest",
    "KServeRelease",
    "inference_service",
    "kserve_manifest",
    "render_manifest",
    "resource_name",
    "write_manifest",
]

PLACEHOLDER_PREFIX = "s3://SET-ME"
"""The start of the placeholder ``storageUri``; replace it before applying the manifest."""

PREDICTOR_SUFFIX = "-predictor"
"""What KServe appends to the InferenceService name for the predictor's (Knative) Service."""

MAX_NAME_LENGTH = 63 - len(PREDICTOR_SUFFIX)
"""53: ``NAME-predictor`` must be a DNS label (at most 63 characters)."""

PREDICTORS = ("auto", "kserve", "custom")
"""``auto``: a KServe runtime when one loads the model, else custom; ``kserve``: a runtime or
an error saying why not; ``custom``: always the ``cellpipe serve`` container."""


@dataclass(frozen=True, slots=True)
class KServeRelease:
    """What one KServe release's runtime images ship, and the model format labels they declare.

    Read from github.com/kserve/kserve at each release tag: the library pins of
    ``python/*server/pyproject.toml`` and the ``supportedModelFormats`` versions of
    ``config/runtimes/*.yaml``.

    Attributes:
        tag: the release, also the runtime images' tag (``runtimeVersion``).
        sklearn: the scikit-learn ``major.minor`` of ``kserve/sklearnserver``.
        xgboost: the xgboost ``major.minor`` of ``kserve/xgbserver``.
        xgboost_format: the ``modelFormat.version`` ``kserve-xgbserver`` declares.
        lightgbm: the lightgbm ``major.minor`` of ``kserve/lgbserver``.
        lightgbm_format: the ``modelFormat.version`` ``kserve-lgbserver`` declares.
    """

    tag: str
    sklearn: str
    xgboost: str
    xgboost_format: str
    lightgbm: str
    lightgbm_format: str


def _releases(tags: str, *shipped: str) -> tuple[KServeRelease, ...]:
    return tuple(KServeRelease(tag, *shipped) for tag in tags.split())


KSERVE_RELEASES: tuple[KServeRelease, ...] = (
    # read from github.com/kserve/kserve at each tag; sklearn's runtime declares version "1"
    *_releases("v0.11.0 v0.11.1 v0.11.2", "1.3", "1.7", "1", "3.3", "3"),
    *_releases("v0.12.0 v0.12.1 v0.13.0 v0.13.1", "1.3", "2.0", "1", "3.3", "3"),
    *_releases("v0.14.0 v0.14.1 v0.15.0 v0.15.1 v0.15.2 v0.16.0", "1.5", "2.1", "1", "4.5", "3"),
    *_releases("v0.17.0 v0.17.1 v0.18.0 v0.18.1 v0.19.0 v0.20.0", "1.5", "2.1", "2", "4.6", "4"),
)
"""Oldest first. Releases after the last one are assumed to ship what it ships."""

TARGET_KSERVE = KSERVE_RELEASES[-1].tag
"""The KServe release a manifest targets unless told (its runtimes' model format labels)."""

_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_RELEASE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
STORAGE_URI_PREFIXES = (
    "gs://", "s3://", "pvc://", "file://", "https://", "http://", "hdfs://", "webhdfs://",
    "oci://", "oci+native://", "oci+fetch://", "hf://",
)  # fmt: skip
"""What KServe's storage initializer accepts (its ``SupportedStorageURIPrefixList``)."""
_SECRET = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # a DNS-1123 subdomain
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True, slots=True, kw_only=True)
class KServeManifest:
    """A manifest and what was decided for it.

    Attributes:
        document: the ``InferenceService`` as a dict.
        predictor: ``sklearn``, ``xgboost``, ``lightgbm`` (a KServe runtime) or ``custom``.
        notes: why this predictor and what was pinned (the YAML header says them).
        warnings: what may still fail on some clusters (also in the header).
        image: the custom predictor's image, None for a runtime.
        storage_uri: the runtime's ``storageUri``, None for a custom predictor.
        placeholder: ``storage_uri`` is the ``s3://SET-ME`` placeholder.
    """

    document: dict[str, Any]
    predictor: str
    notes: tuple[str, ...]
    warnings: tuple[str, ...]
    image: str | None
    storage_uri: str | None
    placeholder: bool


def resource_name(text: str) -> str:
    """Return ``text`` as a DNS-1035 label: lowercase letters, digits and ``-``, from a letter.

    Not truncated: `kserve_manifest` refuses a name too long for KServe instead.
    """
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"model-{name}".rstrip("-")
    return name


def _label(text: str) -> str:
    return resource_name(text)[:63].rstrip("-")


def _check_name(name: str, namespace: str | None) -> list[str]:
    if len(name) > MAX_NAME_LENGTH:
        raise ServingError(
            f"the InferenceService name {name!r} has {len(name)} characters, but KServe names "
            f"the predictor's Service {name}{PREDICTOR_SUFFIX}, a DNS-1035 label of at most 63 "
            f"characters: the name may have at most {MAX_NAME_LENGTH}",
            hint=f"pass a shorter name with --name (at most {MAX_NAME_LENGTH} lowercase "
            "letters, digits and '-', starting with a letter)",
        )
    if not _DNS_1035.fullmatch(name):  # resource_name's output always matches; kept as a guard
        raise ServingError(f"invalid InferenceService name {name!r}", hint="use --name")
    warnings = []
    if namespace is not None:
        host = f"{name}{PREDICTOR_SUFFIX}-{namespace}"
        if len(host) > 63:
            warnings.append(
                f"in KServe's RawDeployment (Standard) mode the predictor's default host name "
                f"starts with {host} ({len(host)} characters), longer than a DNS label's 63: "
                f"use --name with at most {63 - len(PREDICTOR_SUFFIX) - 1 - len(namespace)} "
                "characters there"
            )
    return warnings


def _release_key(tag: str) -> tuple[int, int, int]:
    match = _RELEASE.fullmatch(tag)
    if match is None:
        raise ServingError(
            f"invalid KServe release {tag!r}",
            hint=f"name it like {TARGET_KSERVE} (the release installed on your cluster)",
        )
    return int(match[1]), int(match[2]), int(match[3])


def _target(kserve_version: str) -> tuple[KServeRelease, list[KServeRelease]]:
    """Return the release whose runtimes' labels apply, and the releases up to it."""
    wanted = _release_key(kserve_version)
    known = [r for r in KSERVE_RELEASES if _release_key(r.tag) <= wanted]
    if not known:
        raise ServingError(
            f"KServe {kserve_version} is older than the releases cellpipe knows "
            f"({KSERVE_RELEASES[0].tag} to {KSERVE_RELEASES[-1].tag})",
            hint="upgrade KServe, or use --predictor custom (any release can run it)",
        )
    return known[-1], known


def _minor(version: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


def _normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _library_version(distribution: str, packages: Mapping[str, str]) -> tuple[str | None, str]:
    """Return (version, where it came from) of ``distribution`` for this model version."""
    for name, version in packages.items():
        if _normalized(name) == _normalized(distribution):
            return str(version), "recorded with the version"
    try:
        return importlib.metadata.version(distribution), (
            "installed here when the manifest was written; the version records no packages"
        )
    except importlib.metadata.PackageNotFoundError:
        return None, "neither recorded with the version nor installed here"


@dataclass(frozen=True, slots=True)
class _Choice:
    predictor: str  # sklearn | xgboost | lightgbm | custom
    runtime: KServeRelease | None
    format_version: str | None
    notes: tuple[str, ...]


def _runtime_for(
    kind: str,
    version: ModelVersion,
    packages: Mapping[str, str],
    target: KServeRelease,
    known: list[KServeRelease],
) -> _Choice:
    """The KServe runtime that loads this sklearn/xgboost/lightgbm model, or custom and why."""
    distribution = {"sklearn": "scikit-learn", "xgboost": "xgboost", "lightgbm": "lightgbm"}[kind]
    found, source = _library_version(distribution, packages)
    seen = f"{distribution} {found or '(unknown)'} ({source})"
    wanted = _minor(found) if found else None
    if wanted is None:
        return _Choice("custom", None, None, (f"{seen}: no KServe runtime can be matched",))

    def fits(release: KServeRelease) -> bool:
        shipped = _minor(getattr(release, kind))
        assert shipped is not None
        if kind == "sklearn":  # a joblib pickle: the same minor release
            return shipped == wanted
        return shipped[0] == wanted[0] and shipped[1] >= wanted[1]  # a saved model file

    fitting = [r for r in known if fits(r)]
    if not fitting:
        shipped = sorted({getattr(r, kind) for r in known})
        return _Choice(
            "custom",
            None,
            None,
            (
                f"{seen}: KServe's {kind} runtime images up to {target.tag} ship {distribution} "
                f"{', '.join(shipped)}, which cannot load this model",
            ),
        )
    runtime = fitting[-1]
    label = {"sklearn": "1", "xgboost": target.xgboost_format, "lightgbm": target.lightgbm_format}
    return _Choice(
        kind,
        runtime,
        label[kind],
        (
            f"{seen}; runtimeVersion {runtime.tag}: KServe's {kind} image that ships "
            f"{distribution} {getattr(runtime, kind)}; modelFormat version {label[kind]} is "
            f"the label of KServe {target.tag}'s {kind} runtime",
        ),
    )


def _choose(version: ModelVersion, packages: Mapping[str, str], kserve_version: str) -> _Choice:
    type_name = version.artifact.type_name
    module = type_name.split(".", 1)[0]
    target, known = _target(kserve_version)
    if module == "sklearn" and version.artifact.serializer == "joblib":
        return _runtime_for("sklearn", version, packages, target, known)
    if type_name == "xgboost.core.Booster":
        return _runtime_for("xgboost", version, packages, target, known)
    if type_name == "lightgbm.basic.Booster":
        return _runtime_for("lightgbm", version, packages, target, known)
    if module == "sklearn":
        why = (
            f"a {type_name} stored with {version.artifact.serializer} (it holds notebook "
            "code), which KServe's sklearn runtime cannot load"
        )
    elif module in ("xgboost", "lightgbm"):
        why = (
            f"a {type_name}: KServe's {module} runtime loads a native Booster file and "
            "answers with Booster.predict's raw output, not this object's predict"
        )
    else:
        why = f"a {type_name}, which no KServe runtime loads"
    return _Choice("custom", None, None, (f"{version.ref} is {why}",))


def _comment(text: str) -> str:
    return _CONTROL.sub(" ", text)


def kserve_manifest(
    version: ModelVersion,
    *,
    storage_uri: str | None = None,
    name: str | None = None,
    namespace: str | None = None,
    predict_proba: bool = False,
    predictor: str = "auto",
    image: str | Callable[[], str] | None = None,
    packages: Mapping[str, str] | None = None,
    kserve_version: str = TARGET_KSERVE,
    token_secret: str | None = None,
) -> KServeManifest:
    """Return the KServe ``InferenceService`` of ``version`` and what was decided for it.

    Args:
        version: a registered version.
        storage_uri: for a KServe runtime, the folder holding the model file; default a
            ``s3://SET-ME/...`` placeholder.
        name: the resource name (default: the model name as a DNS label).
        namespace: the Kubernetes namespace (default: none, kubectl's current one).
        predict_proba: make KServe's sklearn runtime answer with ``predict_proba``
            (its ``PREDICT_PROBA`` environment variable).
        predictor: ``auto``, ``kserve`` or ``custom`` (see `PREDICTORS`).
        image: the custom predictor's image (the tag ``cellpipe image --model`` prints), or
            a function returning it (called only when the predictor is custom); needed then.
        packages: distribution -> version the model needs (default: the version's recorded
            packages).
        kserve_version: the KServe release of the cluster (whose runtimes' model format labels
            the manifest must match).
        token_secret: ``SECRET`` or ``SECRET:KEY`` (default key ``token``): the custom
            predictor's ``cellpipe serve`` requires that Kubernetes Secret's value as a bearer
            token (``CELLPIPE_SERVE_TOKEN`` from a ``secretKeyRef``; the value never appears in
            the manifest). The health probes stay open.

    Raises:
        ServingError: a name too long for KServe or not a DNS label, an invalid namespace,
            ``predictor="kserve"`` for a model no runtime loads, ``predict_proba`` without
            the sklearn runtime, a custom predictor without ``image``, ``token_secret``
            malformed or given without a custom predictor, or a ``storage_uri`` KServe
            cannot download from.
    """
    if predictor not in PREDICTORS:
        raise ServingError(
            f"unknown predictor {predictor!r}", hint=f"use one of {', '.join(PREDICTORS)}"
        )
    resource = resource_name(name or version.name)
    if namespace is not None and not (len(namespace) <= 63 and _DNS_1123.fullmatch(namespace)):
        raise ServingError(
            f"invalid namespace {namespace!r}",
            hint="a Kubernetes namespace is at most 63 lowercase letters, digits and '-'",
        )
    warnings = _check_name(resource, namespace)
    recorded = version.packages
    choice = _choose(version, recorded if packages is None else packages, kserve_version)
    notes = list(choice.notes)
    if predictor == "kserve" and choice.predictor == "custom":
        raise ServingError(
            f"no KServe runtime serves {version.ref}: {choice.notes[0]}",
            hint="use --predictor auto (a custom predictor running cellpipe serve)",
        )
    if predictor == "custom" and choice.predictor != "custom":
        notes = [f"custom predictor as asked (KServe's {choice.predictor} runtime would fit)"]
        choice = _Choice("custom", None, None, tuple(notes))
    if predict_proba:
        if choice.predictor != "sklearn":
            raise ServingError(
                f"--predict-proba sets KServe's sklearn runtime's PREDICT_PROBA, but "
                f"{version.ref} gets a {choice.predictor} predictor",
                hint="with cellpipe serve, ask for the output by name: "
                '"outputs": [{"name": "predict_proba"}]',
            )
        outputs = version.signature.outputs if version.signature else None
        if outputs is not None and len(outputs) < 2:
            raise ServingError(
                f"--predict-proba: {version.ref} has no predict_proba output "
                f"(its outputs: {', '.join(o.name for o in outputs) or 'none'})",
                hint="leave --predict-proba off for models without predict_proba",
            )
    metadata: dict[str, Any] = {"name": resource}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = {
        "app.kubernetes.io/managed-by": "cellpipe",
        "cellpipe.dev/model": _label(version.name),
        "cellpipe.dev/version": str(version.version),
    }
    annotations = {
        "cellpipe.dev/model-version": version.ref,
        "cellpipe.dev/artifact": str(version.artifact.digest),
        "cellpipe.dev/artifact-type": version.artifact.type_name,
        "cellpipe.dev/predictor": choice.predictor,
    }
    if version.run_id:
        annotations["cellpipe.dev/run"] = version.run_id
    metadata["annotations"] = annotations
    if choice.predictor == "custom":
        if image is None:
            raise ServingError(
                f"{version.ref} needs a custom predictor, whose image was not given",
                hint=f"build it with `cellpipe image --model {version.ref}` and pass its tag "
                "as image=",
            )
        chosen_image = image if isinstance(image, str) else image()
        container = _container(version, chosen_image)
        if token_secret is not None:
            container["env"] = [_token_env(token_secret)]
        spec: dict[str, Any] = {"predictor": {"containers": [container]}}
        uri = None
    else:
        chosen_image = None
        if token_secret is not None:
            raise ServingError(
                f"--token-secret protects cellpipe serve, but {version.ref} gets KServe's "
                f"{choice.predictor} runtime, which takes no token",
                hint="use --predictor custom, or protect the service in the cluster "
                "(e.g. an AuthorizationPolicy)",
            )
        if storage_uri is not None and not storage_uri.startswith(STORAGE_URI_PREFIXES):
            raise ServingError(
                f"KServe cannot download a model from {storage_uri!r}",
                hint=f"give a folder URI starting with one of {', '.join(STORAGE_URI_PREFIXES)}",
            )
        uri = storage_uri or f"{PLACEHOLDER_PREFIX}/models/{version.name}/{version.version}"
        assert choice.runtime is not None
        model: dict[str, Any] = {
            "modelFormat": {"name": choice.predictor, "version": choice.format_version},
            "protocolVersion": "v2",
            "runtimeVersion": choice.runtime.tag,
            "storageUri": uri,
        }
        if predict_proba:
            model["env"] = [{"name": "PREDICT_PROBA", "value": "true"}]
        spec = {"predictor": {"model": model}}
    return KServeManifest(
        document={
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": metadata,
            "spec": spec,
        },
        predictor=choice.predictor,
        notes=tuple(notes),
        warnings=tuple(warnings),
        image=chosen_image,
        storage_uri=uri,
        placeholder=uri is not None and storage_uri is None,
    )


def _token_env(token_secret: str) -> dict[str, Any]:
    secret, _, key = token_secret.partition(":")
    key = key or "token"
    if not _SECRET.fullmatch(secret) or not _SECRET_KEY.fullmatch(key):
        raise ServingError(
            f"invalid --token-secret {token_secret!r}",
            hint="name a Kubernetes Secret and optionally its key: SECRET or SECRET:KEY "
            "(lowercase letters, digits, '-' and '.')",
        )
    return {"name": TOKEN_VARIABLE, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _container(version: ModelVersion, image: str) -> dict[str, Any]:
    command = serve_command(version)
    probe = {"httpGet": {"path": "/v2/health/ready", "port": SERVE_PORT}}
    return {
        "name": "kserve-container",
        "image": image,
        "command": command[:1],
        "args": command[1:],
        "ports": [{"containerPort": SERVE_PORT, "protocol": "TCP"}],
        "readinessProbe": probe,
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": SERVE_PORT}},
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def inference_service(version: ModelVersion, **options: Any) -> dict[str, Any]:
    """Return just the ``InferenceService`` dict of `kserve_manifest` (same options)."""
    return kserve_manifest(version, **options).document


def render_manifest(manifest: KServeManifest) -> str:
    """Return the manifest as YAML text with a header comment (JSON if PyYAML is missing)."""
    annotations = manifest.document["metadata"]["annotations"]
    ref = annotations["cellpipe.dev/model-version"]
    header = [f"KServe InferenceService for {ref}, written by cellpipe."]
    if manifest.predictor == "custom":
        header += [
            f"The predictor runs `cellpipe serve {ref}` in the image {manifest.image},",
            f"built from `cellpipe image --model {ref}` (push it where the cluster pulls from",
            "and set the image's name here if it changes).",
        ]
    else:
        file = {"sklearn": "model.joblib", "xgboost": "model.json", "lightgbm": "model.bst"}
        how = {
            "sklearn": f"this version's artifact {annotations['cellpipe.dev/artifact']}",
            "xgboost": "the Booster saved with booster.save_model('model.json')",
            "lightgbm": "the Booster saved with booster.save_model('model.bst')",
        }
        header += [
            "storageUri must be the folder (s3://, gs://, pvc://, https://) holding",
            f"{how[manifest.predictor]} as {file[manifest.predictor]}.",
        ]
        if manifest.placeholder:
            header.append("SET storageUri BEFORE APPLYING: it is a placeholder.")
    header += manifest.notes
    header += [f"WARNING: {w}" for w in manifest.warnings]
    header.append("Apply with: kubectl apply -f THIS_FILE")
    try:
        import yaml  # PyYAML is optional (the kfp extra); JSON is valid YAML too
    except ImportError:
        body = json.dumps(manifest.document, indent=2) + "\n"
    else:
        body = yaml.safe_dump(manifest.document, sort_keys=False, default_flow_style=False)
    return "".join(f"# {_comment(line)}\n" for line in header) + body


def write_manifest(version: ModelVersion, path: str | Path, **options: Any) -> Path:
    """Write the KServe ``InferenceService`` of ``version`` to ``path`` as YAML.

    Args:
        version: a registered version.
        path: the file to write (its folder must exist).
        **options: those of `kserve_manifest`.

    Returns:
        The path written.

    Raises:
        ServingError: see `kserve_manifest`, or the file cannot be written.
    """
    manifest = kserve_manifest(version, **options)
    target = Path(path)
    try:
        target.write_text(render_manifest(manifest), encoding="utf-8")
    except OSError as exc:
        raise ServingError(f"cannot write the manifest {target}: {exc.strerror or exc}") from exc
    return target
