"""Tables of calls whose effects reach beyond their return value, for the analysis.

Owns: which calls mutate an argument (`mutated_arguments`), seed a global random generator
(`is_seed_call`), may draw from one (`may_draw`), change process-wide settings
(`settings_change`, `settings_target`), or read or write a workspace file given by a literal
path (`file_access`). Calls are recognised by their dotted name as written (``np.random.seed``);
the usual import aliases (``np``, ``pd``, ``plt``, ``mpl``, ``sns``, ``tf``) are mapped to
their modules first, so ``numpy.random.seed`` and ``np.random.seed`` are the same call.

Invariants: pure functions over ``ast`` nodes; nothing here raises on user code; when a call
is not recognised, the answer is the safe one for its use (a call *may* draw, it does not
write a file that we cannot name).

Must not depend on: anything in cellpipe.
"""

from __future__ import annotations

import ast
import os

# The usual short names of the modules these tables talk about.
_ALIASES = {
    "np": "numpy",
    "pd": "pandas",
    "plt": "matplotlib.pyplot",
    "mpl": "matplotlib",
    "sns": "seaborn",
    "tf": "tensorflow",
}


def dotted(node: ast.expr) -> str | None:
    """Return the dotted name of a ``Name``/``Attribute`` chain, aliases expanded, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(_ALIASES.get(node.id, node.id))
    return ".".join(reversed(parts))


# -- arguments changed in place ------------------------------------------------------------

# Functions (by their last name part) that change their first argument in place.
_MUTATE_FIRST = frozenset(
    {
        "next", "shuffle", "heappush", "heappop", "heapify", "heappushpop", "heapreplace",
        "insort", "insort_left", "insort_right", "setattr", "delattr", "copyto",
        "fill_diagonal", "put", "place", "putmask", "put_along_axis",
    }
)  # fmt: skip
# ``shuffle`` of these modules returns a shuffled copy and leaves its arguments alone.
_COPYING_SHUFFLE = ("sklearn.utils.shuffle",)


def mutated_arguments(node: ast.Call) -> list[ast.expr]:
    """Return the argument expressions that the call changes in place.

    ``random.shuffle(x)``, ``np.random.shuffle(x)``, ``rng.shuffle(x)``, ``next(it)``,
    ``heapq.heappush(h, v)`` change their first argument; any call with ``out=x`` writes x.
    """
    found: list[ast.expr] = []
    if (
        last_name(node) in _MUTATE_FIRST
        and node.args
        and not isinstance(node.args[0], ast.Starred)
        and dotted(node.func) not in _COPYING_SHUFFLE
    ):
        found.append(node.args[0])
    for keyword in node.keywords:
        if keyword.arg == "out":
            found.append(keyword.value)
    return found


# -- global random state -------------------------------------------------------------------

_SEED_CALLS = frozenset(
    {
        "random.seed", "numpy.random.seed", "torch.manual_seed", "torch.cuda.manual_seed",
        "torch.cuda.manual_seed_all", "tensorflow.random.set_seed",
        "tensorflow.set_random_seed", "tensorflow.keras.utils.set_random_seed",
        "keras.utils.set_random_seed", "seed", "manual_seed", "set_random_seed",
    }
)  # fmt: skip


_SEED_LAST = frozenset(name.rpartition(".")[2] for name in _SEED_CALLS)


def last_name(node: ast.Call) -> str | None:
    """The called name's last part (``seed`` of ``np.random.seed``), the cheap first test."""
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def is_seed_call(node: ast.Call) -> bool:
    """Whether the call seeds a process-wide random generator (``np.random.seed(42)``)."""
    if last_name(node) not in _SEED_LAST:
        return False
    name = dotted(node.func)
    return name is not None and name in _SEED_CALLS


# Calls that never draw from a global generator: printing, containers, plotting, file I/O
# and the common read-only methods. Anything else may (an estimator built with
# random_state=None draws inside ``fit``), which is the safe answer.
_NO_DRAW_FUNCTIONS = frozenset(
    {
        "print", "len", "range", "str", "int", "float", "bool", "list", "dict", "set", "tuple",
        "sorted", "enumerate", "zip", "min", "max", "sum", "abs", "round", "isinstance",
        "type", "repr", "format", "open", "display", "getattr", "hasattr", "iter", "map",
        "filter", "any", "all", "reversed", "frozenset", "divmod", "pow", "hash", "id",
        "vars", "dir", "callable", "issubclass", "ord", "chr", "bytes", "bytearray",
    }
)  # fmt: skip
_NO_DRAW_METHODS = frozenset(
    {
        "head", "tail", "describe", "info", "keys", "values", "items", "copy", "format",
        "join", "split", "strip", "lower", "upper", "replace", "startswith", "endswith",
        "append", "extend", "update", "get", "to_csv", "to_json", "to_parquet", "to_pickle",
        "savefig", "show", "tolist", "astype", "reshape", "mean", "sum", "std", "min", "max",
        "read_csv", "read_parquet", "read_json", "read_excel", "set_index", "reset_index",
        "rename", "drop", "dropna", "fillna", "groupby", "merge", "concat", "value_counts",
        "unique", "nunique", "isna", "isnull", "notna", "corr", "plot", "title", "xlabel",
        "ylabel", "legend", "figure", "subplots", "close", "set_title", "set_xlabel",
        "set_ylabel", "grid", "tight_layout", "imshow", "scatter", "bar", "hist", "write",
        "read", "dump", "dumps", "load", "loads", "exists", "mkdir", "array", "asarray",
        "zeros", "ones", "arange", "linspace", "predict", "predict_proba", "transform",
        "score", "accuracy_score", "shape", "sort_values", "sort_index", "round", "abs",
        "count", "isin", "where", "dot", "argmax", "argmin", "flatten", "ravel", "squeeze",
        "transpose", "item", "to_numpy", "to_dict", "fit_transform_dummy",
    }
)  # fmt: skip


def may_draw(node: ast.Call) -> bool:
    """Whether the call may draw from a global random generator (the safe answer is yes)."""
    func = node.func
    if isinstance(func, ast.Name):
        return func.id not in _NO_DRAW_FUNCTIONS
    if isinstance(func, ast.Attribute):
        return func.attr not in _NO_DRAW_METHODS
    return True


# -- process-wide settings -----------------------------------------------------------------

_SETTINGS_CALLS = frozenset(
    {
        "pandas.set_option", "pandas.reset_option", "numpy.set_printoptions", "numpy.seterr",
        "matplotlib.pyplot.style.use", "matplotlib.style.use", "matplotlib.pyplot.rc",
        "matplotlib.rc", "matplotlib.pyplot.rcParams.update", "matplotlib.rcParams.update",
        "matplotlib.use", "warnings.filterwarnings", "warnings.simplefilter",
        "warnings.resetwarnings", "seaborn.set_theme", "seaborn.set", "seaborn.set_style",
        "seaborn.set_context", "seaborn.set_palette", "os.environ.update",
        "os.environ.setdefault", "os.environ.pop", "os.putenv", "os.unsetenv", "os.chdir",
        "os.umask", "sys.path.append", "sys.path.insert", "sys.path.extend",
        "sys.setrecursionlimit", "torch.set_default_dtype", "torch.set_num_threads",
        "torch.set_printoptions", "torch.set_grad_enabled", "sklearn.set_config", "set_config",
        "logging.basicConfig", "tensorflow.config.set_visible_devices",
        "tensorflow.config.threading.set_intra_op_parallelism_threads",
        "tensorflow.config.threading.set_inter_op_parallelism_threads",
        "tensorflow.get_logger.setLevel", "locale.setlocale", "socket.setdefaulttimeout",
        "decimal.getcontext", "np.random.set_state",
    }
)  # fmt: skip
# Assignments to these (``os.environ["X"] = ...``, ``plt.rcParams["k"] = v``,
# ``pd.options.display.max_rows = 10``) change process state too.
_SETTINGS_TARGETS = (
    "os.environ",
    "matplotlib.pyplot.rcParams",
    "matplotlib.rcParams",
    "pandas.options",
    "sys.path",
)


_SETTINGS_LAST = frozenset(name.rpartition(".")[2] for name in _SETTINGS_CALLS)


def settings_change(node: ast.Call) -> str | None:
    """Return the dotted name of a call that changes process-wide settings, else None."""
    if last_name(node) not in _SETTINGS_LAST:
        return None
    name = dotted(node.func)
    return name if name in _SETTINGS_CALLS else None


def settings_target(node: ast.expr) -> str | None:
    """Return the settings object an assignment target changes (``os.environ``), else None."""
    while isinstance(node, ast.Subscript):
        node = node.value
    name = dotted(node)
    if name is None:
        return None
    for prefix in _SETTINGS_TARGETS:
        if name == prefix or name.startswith(prefix + "."):
            return prefix
    return None


# -- files read and written ----------------------------------------------------------------

_READ_CALLS = frozenset(
    {
        "read_csv", "read_table", "read_parquet", "read_json", "read_excel", "read_pickle",
        "read_feather", "read_hdf", "read_fwf", "read_orc", "read_stata", "read_sas",
        "read_spss", "read_xml", "load", "loadtxt", "genfromtxt", "fromfile", "imread",
        "read_text", "read_bytes", "load_npz", "read_file",
    }
)  # fmt: skip
_WRITE_CALLS = frozenset(
    {
        "to_csv", "to_parquet", "to_json", "to_excel", "to_pickle", "to_feather", "to_hdf",
        "to_orc", "to_stata", "to_xml", "save", "savez", "savez_compressed", "savetxt",
        "savefig", "dump", "imwrite", "imsave", "write_text", "write_bytes", "tofile",
        "save_npz", "to_file",
    }
)  # fmt: skip
_PATH_KEYWORDS = frozenset(
    {"path", "fname", "file", "filename", "filepath_or_buffer", "path_or_buf", "fp", "f"}
)
_WRITE_MODES = ("w", "a", "x", "+")


PathSpec = tuple[str, str]
"""("literal", "data/x.csv") or ("name", "DATA_PATH"): a path as the code gives it."""


def path_of(node: ast.expr) -> PathSpec | None:
    """Return the path an expression names when it is literal enough to know, else None.

    Handles ``"x.csv"``, ``NAME`` (resolved later against constants), ``Path("x.csv")``,
    ``os.path.join("data", "x.csv")`` and ``Path("data") / "x.csv"`` of such parts.
    """
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
        if not text or "://" in text or "\n" in text or "\0" in text:
            return None
        return ("literal", text)
    if isinstance(node, ast.Name):
        return ("name", node.id)
    if isinstance(node, ast.Call):
        name = dotted(node.func)
        if name in ("Path", "pathlib.Path", "PurePath") and len(node.args) == 1:
            return path_of(node.args[0])
        if name in ("os.path.join", "Path", "pathlib.Path") and node.args:
            return _joined([path_of(a) for a in node.args])
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return _joined([path_of(node.left), path_of(node.right)])
    return None


def _joined(parts: list[PathSpec | None]) -> PathSpec | None:
    if any(p is None or p[0] != "literal" for p in parts):
        return None
    return ("literal", os.path.join(*(p[1] for p in parts if p is not None)))  # noqa: PTH118


def looks_like_file(spec: PathSpec) -> bool:
    """Whether a path argument names a file (a name is resolved later, so it may)."""
    # A literal argument of a write or read call is a file name if it has a suffix or a
    # folder part: ``sep=";"`` or ``orient="records"`` are not.
    if spec[0] == "name":
        return True
    text = spec[1]
    base = os.path.basename(text)  # noqa: PTH119
    return "/" in text or ("." in base.strip(".") and " " not in base)


def file_access(node: ast.Call) -> tuple[str, list[PathSpec]] | None:
    """Return ("read" | "write", paths) for a call that reads or writes named files, else None.

    ``open(p)``/``open(p, "w")``, ``Path(p).read_text()``/``.write_text()``, pandas
    ``read_*``/``to_*``, ``np.save``/``np.load``, ``joblib``/``pickle``/``torch``
    ``dump``/``load``, ``savefig`` and the like, with literal paths only.
    """
    func = node.func
    if isinstance(func, ast.Name) and func.id == "open" and node.args:
        mode_node = node.args[1] if len(node.args) > 1 else None
        for keyword in node.keywords:
            if keyword.arg == "mode":
                mode_node = keyword.value
        mode = "r"
        if mode_node is not None:
            if not (isinstance(mode_node, ast.Constant) and isinstance(mode_node.value, str)):
                return None
            mode = mode_node.value
        spec = path_of(node.args[0])
        if spec is None:
            return None
        kind = "write" if any(m in mode for m in _WRITE_MODES) else "read"
        return (kind, [spec])
    last = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    if last in _READ_CALLS:
        kind = "read"
    elif last in _WRITE_CALLS:
        kind = "write"
    elif last == "open" and isinstance(func, ast.Attribute):
        # the open method of a path object
        spec = path_of(func.value)
        mode_arg = node.args[0] if node.args else None
        if spec is None or (mode_arg is not None and not isinstance(mode_arg, ast.Constant)):
            return None
        text = str(mode_arg.value) if isinstance(mode_arg, ast.Constant) else "r"
        return ("write" if any(m in text for m in _WRITE_MODES) else "read", [spec])
    else:
        return None
    specs: list[PathSpec] = []
    if isinstance(func, ast.Attribute) and last in (
        "read_text", "read_bytes", "write_text", "write_bytes"
    ):  # fmt: skip
        spec = path_of(func.value)
        if spec is not None and spec[0] == "literal":
            specs.append(spec)
        return (kind, specs) if specs else None
    for arg in node.args:
        spec = path_of(arg)
        if spec is not None and looks_like_file(spec):
            specs.append(spec)
    for keyword in node.keywords:
        if keyword.arg in _PATH_KEYWORDS:
            spec = path_of(keyword.value)
            if spec is not None and looks_like_file(spec):
                specs.append(spec)
    # Names (``pd.read_csv(DATA)``) are kept as candidates: the analysis keeps those bound
    # to a string constant that looks like a file name.
    return (kind, specs) if specs else None


# The last name parts of every call these tables know: a call named otherwise (and without
# keywords, for ``out=``) has none of these effects, which spares the analysis most lookups.
NOTABLE = (
    _MUTATE_FIRST | _SEED_LAST | _SETTINGS_LAST | _READ_CALLS | _WRITE_CALLS | frozenset({"open"})
)


def normalise(path: str) -> str:
    """Return the path as compared between steps (``./data//x.csv`` -> ``data/x.csv``)."""
    return os.path.normpath(path).replace(os.sep, "/")
