import io
import math
import pickle
import socket
import sqlite3
import string
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellpipe.errors import SerializationError, StorageError
from cellpipe.storage.serializers import (
    SERIALIZERS,
    deserialize,
    get_serializer,
    serialize,
    serializer_versions,
    type_name,
)

HYPOTHESIS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def roundtrip(value: Any, tmp_path: Path) -> tuple[str, Any]:
    serializer, path = serialize(value, tmp_path)
    assert path.parent == tmp_path
    assert path.suffix == serializer.suffix
    return serializer.name, deserialize(serializer.name, path)


def test_registry_order_and_versions() -> None:
    assert [s.name for s in SERIALIZERS] == ["json", "npy", "parquet", "joblib", "cloudpickle"]
    assert serializer_versions() == {s.name: s.version for s in SERIALIZERS}
    # joblib 2: one plain pickle instead of joblib's own array layout (version 1)
    assert get_serializer("joblib").version == 2


def test_importing_storage_does_not_import_data_libraries() -> None:
    code = (
        "import sys, cellpipe.storage.serializers, cellpipe.storage.artifacts, "
        "cellpipe.storage.metadata\n"
        "heavy = ('numpy', 'pandas', 'pyarrow', 'joblib', 'sklearn')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- json -------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)


def same(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to NaN and checks exact types."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@HYPOTHESIS
@given(value=json_values)
def test_json_round_trips(value: Any, tmp_path: Path) -> None:
    name, back = roundtrip(value, tmp_path)
    assert name == "json"
    assert same(value, back)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ((1, 2), "cloudpickle"),
        ([1, (2, 3)], "cloudpickle"),
        ({1: "int key"}, "cloudpickle"),
        ({"s": {1, 2}}, "cloudpickle"),
        (10**5000, "cloudpickle"),
        (["x" * 600_000, "y" * 600_000], "cloudpickle"),
    ],
    ids=["tuple", "nested-tuple", "int-key", "set", "huge-int", "over-1MiB"],
)
def test_json_falls_through(value: Any, expected: str, tmp_path: Path) -> None:
    name, back = roundtrip(value, tmp_path)
    assert name == expected
    assert back == value
    assert type(back) is type(value)


def test_json_keeps_aliasing_by_falling_through(tmp_path: Path) -> None:
    shared: list[int] = [1]
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    name, back = roundtrip([shared, shared], tmp_path)
    assert name == "cloudpickle"
    assert back[0] is back[1]
    name, back = roundtrip(cyclic, tmp_path)
    assert name == "cloudpickle"
    assert back[0] is back


def test_json_special_floats(tmp_path: Path) -> None:
    name, back = roundtrip(
        {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "neg0": -0.0}, tmp_path
    )
    assert name == "json"
    assert math.isnan(back["nan"])
    assert back["inf"] == math.inf
    assert back["ninf"] == -math.inf
    assert math.copysign(1, back["neg0"]) == -1


# -- npy --------------------------------------------------------------------------------------

array_dtypes = (
    hnp.scalar_dtypes()
    | hnp.byte_string_dtypes()
    | hnp.unicode_string_dtypes()
    # .npy headers are latin-1; other field names fall through to joblib (tested below).
    | st.lists(
        st.tuples(st.text(string.ascii_letters, min_size=1, max_size=4), hnp.scalar_dtypes()),
        min_size=1,
        max_size=3,
        unique_by=lambda field: field[0],
    ).map(np.dtype)
)


@HYPOTHESIS
@given(
    value=hnp.arrays(array_dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
)
def test_npy_round_trips(value: np.ndarray[Any, Any], tmp_path: Path) -> None:
    name, back = roundtrip(value, tmp_path)
    assert name == "npy"
    assert back.dtype == value.dtype
    assert back.shape == value.shape
    assert back.tobytes() == value.tobytes()


def test_npy_header_that_cannot_be_written_falls_through(tmp_path: Path) -> None:
    value = np.zeros(2, dtype=[("\u0100", "?")])
    name, back = roundtrip(value, tmp_path)
    assert name == "joblib"
    assert back.dtype == value.dtype


def test_npy_keeps_fortran_order(tmp_path: Path) -> None:
    value = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    _, back = roundtrip(value, tmp_path)
    assert back.flags.f_contiguous
    np.testing.assert_array_equal(back, value)


def test_npy_is_memory_mapped_copy_on_write(tmp_path: Path) -> None:
    value = np.arange(1000, dtype=np.int64)
    serializer, path = serialize(value, tmp_path)
    before = path.read_bytes()
    back = deserialize(serializer.name, path)
    assert isinstance(back, np.memmap)
    assert back.flags.writeable
    back[:] = -1  # user code may mutate its input ...
    assert path.read_bytes() == before  # ... without touching the stored file
    np.testing.assert_array_equal(deserialize(serializer.name, path), value)


def test_loaded_memmap_can_be_stored_again(tmp_path: Path) -> None:
    serializer, path = serialize(np.arange(5), tmp_path)
    loaded = deserialize(serializer.name, path)
    name, back = roundtrip(loaded, tmp_path)
    assert name == "npy"
    np.testing.assert_array_equal(back, np.arange(5))


def test_object_and_masked_arrays_use_joblib(tmp_path: Path) -> None:
    obj = np.array([1, "a", None], dtype=object)
    name, back = roundtrip(obj, tmp_path)
    assert name == "joblib"
    assert list(back) == [1, "a", None]
    masked = np.ma.masked_array([1, 2, 3], mask=[0, 1, 0])
    name, back = roundtrip(masked, tmp_path)
    assert name == "joblib"
    assert back.mask.tolist() == [False, True, False]


# -- parquet ----------------------------------------------------------------------------------


def test_dataframe_round_trips_index_and_dtypes(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "i": np.arange(3, dtype=np.int32),
            "u": np.array([1, 2, 3], dtype=np.uint8),
            "f": [1.5, np.nan, -0.0],
            "b": [True, False, True],
            "s": ["a", None, "c"],
            "cat": pd.Categorical(["x", "y", "x"], categories=["y", "x"], ordered=True),
            "tz": pd.date_range("2024-03-30", periods=3, freq="D", tz="Europe/Paris"),
            "naive": pd.to_datetime(["2024-01-01", None, "2024-01-03"]),
            "td": pd.to_timedelta([1, 2, 3], unit="s"),
            "nullable": pd.array([1, None, 3], dtype="Int64"),
        },
        index=pd.Index([10, 20, 30], name="key"),
    )
    df.attrs["source"] = "unit test"
    name, back = roundtrip(df, tmp_path)
    assert name == "parquet"
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    assert back.attrs == {"source": "unit test"}


def test_dataframe_multiindex_and_range_index(tmp_path: Path) -> None:
    multi = pd.DataFrame(
        {"v": [1.0, 2.0]},
        index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["k", "n"]),
    )
    ranged = pd.DataFrame({"v": [1, 2, 3]}, index=pd.RangeIndex(5, 8, name="r"))
    for df in (multi, ranged, pd.DataFrame()):
        name, back = roundtrip(df, tmp_path)
        assert name == "parquet"
        pd.testing.assert_frame_equal(back, df, check_exact=True)


@pytest.mark.parametrize(
    "df",
    [
        pd.DataFrame({"m": pd.Series([1, "a"], dtype=object)}),
        pd.DataFrame({"o": pd.Series(["a", "b"], dtype=object)}),
        pd.DataFrame([[1, 2]]),
        pd.DataFrame([[1, 2]], columns=["a", "a"]),
        pd.DataFrame({"c": pd.Categorical([1, 2, 1])}),
        pd.DataFrame({"l": pd.Series([[1], [2, 3]], dtype=object)}),
        pd.DataFrame({"s": pd.arrays.SparseArray([0, 0, 1])}),
    ],
    ids=["mixed-object", "object-str", "int-columns", "duplicate-columns", "int-categorical",
         "lists", "sparse"],
)  # fmt: skip
def test_dataframe_falls_through_when_parquet_would_change_it(
    df: pd.DataFrame, tmp_path: Path
) -> None:
    name, back = roundtrip(df, tmp_path)
    assert name == "joblib" if name != "cloudpickle" else True
    assert name != "parquet"
    pd.testing.assert_frame_equal(back, df, check_exact=True)


def test_series_uses_joblib(tmp_path: Path) -> None:
    s = pd.Series([1.0, 2.0], name="x", index=pd.Index(["a", "b"]))
    name, back = roundtrip(s, tmp_path)
    assert name == "joblib"
    pd.testing.assert_series_equal(back, s)


RICH_FRAME_CODE = """
import numpy as np, pandas as pd
df = pd.DataFrame(
    {
        "f": [1.5, np.nan, -0.0],
        "s": ["a", None, "c"],
        "cat": pd.Categorical(["x", "y", "x"], categories=["y", "x"], ordered=True),
        "tz": pd.date_range("2024-03-30", periods=3, freq="D", tz="Europe/Paris"),
        "nullable": pd.array([1, None, 3], dtype="Int64"),
    },
    index=pd.MultiIndex.from_tuples([("a", 1), ("b", 2), ("c", 3)], names=["k", "n"]),
)
df.attrs["source"] = "unit test"
"""


def test_parquet_loads_what_pandas_read_parquet_loads(tmp_path: Path) -> None:
    ns: dict[str, Any] = {}
    exec(RICH_FRAME_CODE, ns)
    serializer, path = serialize(ns["df"], tmp_path)
    assert serializer.name == "parquet"
    ours, theirs = deserialize("parquet", path), pd.read_parquet(path, engine="pyarrow")
    pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
    assert ours.attrs == theirs.attrs == {"source": "unit test"}


def test_parquet_round_trip_does_not_import_pyarrow_dataset(tmp_path: Path) -> None:
    # pd.read_parquet imports pyarrow.dataset (about 20 ms in every fresh step process).
    code = RICH_FRAME_CODE + (
        "import sys\n"
        "from pathlib import Path\n"
        "from cellpipe.storage.serializers import deserialize, serialize\n"
        f"s, p = serialize(df, Path({str(tmp_path)!r}))\n"
        "back = deserialize(s.name, p)\n"
        "assert s.name == 'parquet' and back.equals(df), s.name\n"
        "assert 'pyarrow.dataset' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- joblib / cloudpickle ---------------------------------------------------------------------


def test_sklearn_estimator_round_trips(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    model = LogisticRegression().fit(x, y)
    name, back = roundtrip(model, tmp_path)
    assert name == "joblib"
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    np.testing.assert_array_equal(back.coef_, model.coef_)


def test_sklearn_with_lambda_falls_back_to_cloudpickle(tmp_path: Path) -> None:
    from sklearn.preprocessing import FunctionTransformer

    tr = FunctionTransformer(lambda x: x * 2)
    name, back = roundtrip(tr, tmp_path)
    assert name == "cloudpickle"
    assert back.func(3) == 6


def test_lambda_and_closure_round_trip(tmp_path: Path) -> None:
    k = 3
    name, back = roundtrip(lambda x: x + k, tmp_path)
    assert name == "cloudpickle"
    assert back(1) == 4


NOTEBOOK_CODE = """
import numpy as np

class Scaler:
    def __init__(self, factor):
        self.factor = factor
        self.weights = np.ones(3)

    def apply(self, x):
        return x * self.factor

def double(x):
    return 2 * x

scaler = Scaler(5)
"""


def test_notebook_defined_class_and_function_round_trip(tmp_path: Path) -> None:
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(NOTEBOOK_CODE, "<cell>", "exec"), ns)
    name, back = roundtrip(ns["scaler"], tmp_path)
    # joblib would pickle __main__.Scaler by reference, which no other process can load.
    assert name == "cloudpickle"
    assert back.apply(2) == 10
    assert back.weights.tolist() == [1.0, 1.0, 1.0]
    name, fn = roundtrip(ns["double"], tmp_path)
    assert name == "cloudpickle"
    assert fn(4) == 8


def test_notebook_class_loads_in_a_fresh_process(tmp_path: Path) -> None:
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(NOTEBOOK_CODE, "<cell>", "exec"), ns)
    serializer, path = serialize(ns["scaler"], tmp_path)
    code = (
        "from pathlib import Path\n"
        "from cellpipe.storage.serializers import deserialize\n"
        f"s = deserialize({serializer.name!r}, Path({str(path)!r}))\n"
        "assert s.apply(2) == 10, s"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_joblib_files_are_plain_pickles_that_joblib_also_reads(tmp_path: Path) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression

    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    model = LogisticRegression().fit(x, np.array([0, 0, 1, 1]))
    serializer, path = serialize(model, tmp_path)
    assert (serializer.name, serializer.version) == ("joblib", 2)
    with path.open("rb") as f:
        by_pickle = pickle.load(f)  # the format `cellpipe artifacts get` promises: .joblib
    for back in (by_pickle, joblib.load(path), deserialize("joblib", path)):
        assert type(back) is LogisticRegression
        np.testing.assert_array_equal(back.coef_, model.coef_)
        np.testing.assert_array_equal(back.predict(x), model.predict(x))


def test_joblib_version_1_files_still_load(tmp_path: Path) -> None:
    # What version 1 wrote: joblib's NumpyPickler, arrays as raw bytes after their wrappers,
    # which pickle.load cannot read.
    from joblib import numpy_pickle

    value = {"w": np.arange(6.0).reshape(2, 3), "names": np.array(["a", None], dtype=object)}
    path = tmp_path / "old.joblib"
    with path.open("wb") as f:
        numpy_pickle.NumpyPickler(f, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    with path.open("rb") as f, pytest.raises(Exception):  # noqa: B017, PT011
        pickle.load(f)
    back = deserialize("joblib", path)
    np.testing.assert_array_equal(back["w"], value["w"])
    assert back["names"].tolist() == ["a", None]


def test_joblib_output_is_deterministic(tmp_path: Path) -> None:
    from sklearn.ensemble import RandomForestClassifier

    x = np.arange(40.0).reshape(20, 2)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, np.arange(20) % 2)
    _, first = serialize(forest, tmp_path)
    _, second = serialize(forest, tmp_path)
    assert first.read_bytes() == second.read_bytes()  # artifacts are addressed by content


def test_joblib_arrays_load_writable_and_in_memory(tmp_path: Path) -> None:
    frozen = np.arange(4.0)
    frozen.flags.writeable = False
    mapped = np.memmap(tmp_path / "m.dat", dtype=np.int32, mode="w+", shape=(3,))
    mapped[:] = [7, 8, 9]
    name, back = roundtrip([frozen, mapped, frozen], tmp_path)
    assert name == "joblib"
    assert type(back[0]) is np.ndarray
    assert back[0].flags.writeable  # user code may mutate its inputs
    np.testing.assert_array_equal(back[0], frozen)
    assert back[2] is back[0]  # shared references stay shared
    assert type(back[1]) is np.ndarray  # not a memmap without a file
    assert back[1].tolist() == [7, 8, 9]
    assert frozen.flags.writeable is False  # the value itself is untouched


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_joblib_keeps_exact_array_types_and_byte_order(tmp_path: Path) -> None:
    big_endian = np.arange(3, dtype=">i4")
    matrix = np.matrix([[1, 2], [3, 4]])
    name, back = roundtrip((big_endian, matrix), tmp_path)
    assert name == "joblib"
    assert back[0].dtype == np.dtype(">i4")
    assert back[0].tolist() == [0, 1, 2]
    assert type(back[1]) is np.matrix
    assert back[1].tolist() == [[1, 2], [3, 4]]


def test_references_into_main_fall_through_to_cloudpickle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In a step, the notebook's namespace is sys.modules["__main__"]: plain pickle would find
    # these by reference there and write a file no other process can load.
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(NOTEBOOK_CODE, "<cell>", "exec"), ns)
    main = sys.modules["__main__"]
    for attr in ("Scaler", "double"):
        monkeypatch.setattr(main, attr, ns[attr], raising=False)
    for value in ([np.zeros(2), ns["double"]], {"a": np.zeros(2), "cls": ns["Scaler"]}):
        serializer, path = serialize(value, tmp_path)
        assert serializer.name == "cloudpickle"
        code = (
            "from pathlib import Path\n"
            "from cellpipe.storage.serializers import deserialize\n"
            f"v = deserialize('cloudpickle', Path({str(path)!r}))\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True)


def test_joblib_load_imports_joblib_only_for_version_1_files(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import pandas as pd\n"
        "from cellpipe.storage.serializers import deserialize, serialize\n"
        f"s, p = serialize(pd.Series([1.0, 2.0]), Path({str(tmp_path)!r}))\n"
        "back = deserialize(s.name, p)\n"
        "assert s.name == 'joblib' and back.tolist() == [1.0, 2.0]\n"
        "assert 'joblib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- values that cannot be stored -------------------------------------------------------------


def test_open_file_message_is_pinned(tmp_path: Path) -> None:
    with (tmp_path / "data.txt").open("w") as f, pytest.raises(SerializationError) as info:
        serialize(f, tmp_path, variable="f", step="load")
    err = info.value
    assert err.message == (
        "step 'load' output 'f' is an open file (io.TextIOWrapper) and cannot be stored"
    )
    assert err.hint == "return its contents or a path instead"
    assert str(err) == (
        "step 'load' output 'f' is an open file (io.TextIOWrapper) and cannot be stored\n"
        "  hint: return its contents or a path instead"
    )
    assert list(tmp_path.iterdir()) == [tmp_path / "data.txt"]


def _generator() -> Any:
    yield 1


@pytest.mark.parametrize(
    ("make", "what", "tname"),
    [
        (lambda: io.BytesIO(b"x"), "an open file", "io.BytesIO"),
        (_generator, "a generator", "generator"),
        (lambda: socket.socket(), "a network socket", "socket.socket"),
        (lambda: sqlite3.connect(":memory:"), "a database connection", "sqlite3.Connection"),
        (threading.Lock, "a lock", "_thread.lock"),
    ],
    ids=["bytesio", "generator", "socket", "sqlite", "lock"],
)
def test_unstorable_values_name_their_type(
    make: Any, what: str, tname: str, tmp_path: Path
) -> None:
    value = make()
    try:
        with pytest.raises(
            SerializationError, match=rf"^step 's' output 'v' is {what} \({tname}\)"
        ):
            serialize(value, tmp_path, variable="v", step="s")
    finally:
        close = getattr(value, "close", None)
        if close is not None:
            close()


def test_nested_unstorable_value_names_the_outer_type(tmp_path: Path) -> None:
    expected = r"^output 'cfg' \(dict\) cannot be stored: "
    with (tmp_path / "x").open("w") as f, pytest.raises(SerializationError, match=expected):
        serialize({"file": f}, tmp_path, variable="cfg")
    assert list(tmp_path.iterdir()) == [tmp_path / "x"]


def test_unknown_serializer_name(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="unknown serializer 'arrow2'"):
        deserialize("arrow2", tmp_path / "x")


def test_type_name() -> None:
    assert type_name(1) == "int"
    assert type_name(np.zeros(1)) == "numpy.ndarray"
    assert type_name(pd.DataFrame()) == "pandas.DataFrame"
