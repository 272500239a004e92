from __future__ import annotations

import textwrap

import pytest

from cellpipe.notebook.analyze import BlockFacts


def facts(*cells: str) -> BlockFacts:
    block = BlockFacts()
    for number, code in enumerate(cells, 1):
        block.add_cell(number, textwrap.dedent(code))
    return block


# Each case: code, then the names it reads, binds and may mutate.
CASES = {
    "assign": ("y = x + 1", {"x"}, {"y"}, set()),
    "read-after-bind": ("x = 1\ny = x", set(), {"x", "y"}, set()),
    "self-update": ("x = x + 1", {"x"}, {"x"}, set()),
    "augassign": ("x += 1", {"x"}, {"x"}, {"x"}),
    "attr-store": ("m.coef = 1", {"m"}, set(), {"m"}),
    "subscript-store": ("d[k] = v", {"d", "k", "v"}, set(), {"d"}),
    "del-item": ("del d['a']", {"d"}, set(), {"d"}),
    "method-call": ("items.append(1)", {"items"}, set(), {"items"}),
    "chained-method": ("df.a.b.update(x)", {"df", "x"}, set(), {"df"}),
    "read-only-method": ("h = df.head()", {"df"}, {"h"}, set()),
    "inplace": ("df.sort_values('a', inplace=True)", {"df"}, set(), {"df"}),
    "inplace-on-readonly": ("df.drop(columns='a', inplace=True)", {"df"}, set(), {"df"}),
    "fit": ("model.fit(X, y)", {"model", "X", "y"}, set(), {"model"}),
    "for-target": ("for i in xs:\n    t = i", {"xs"}, {"i", "t"}, set()),
    "with-as": ("with open(p) as f:\n    s = f.read()", {"open", "p"}, {"f", "s"}, {"f"}),
    "except-as": ("try:\n    a = 1\nexcept E as e:\n    b = e", {"E"}, {"a", "b", "e"}, set()),
    "import": ("import os.path\nimport numpy as np\nfrom a import b as c", set(),
               {"os", "np", "c"}, set()),
    "def": ("def f(a, *r, k=d, **kw):\n    return a + g", {"d"}, {"f"}, set()),
    "class": ("class C(Base):\n    z = y\n    def m(self):\n        return w",
              {"Base", "y"}, {"C"}, set()),
    "walrus": ("if (n := len(x)) > 1:\n    pass", {"len", "x"}, {"n"}, set()),
    "walrus-in-comprehension": ("ys = [(last := v) for v in xs]", {"xs"}, {"ys", "last"},
                                set()),
    "comprehension-scope": ("ys = [v * k for v in xs if v]", {"xs", "k"}, {"ys"}, set()),
    "nested-comprehension": ("m = [[a * b for b in r] for a in q]", {"q", "r"}, {"m"}, set()),
    "lambda": ("f = lambda a, b=d: a + c", {"d"}, {"f"}, set()),
    "if-read-before-bind": ("if c:\n    x = 1\nprint(x)", {"c", "print", "x"}, {"x"}, set()),
    "if-else-binds": ("if c:\n    x = 1\nelse:\n    x = 2\nprint(x)", {"c", "print"}, {"x"},
                      set()),
    "read-in-loop-before-bind": ("for i in r:\n    total = total + i", {"r", "total"},
                                 {"i", "total"}, set()),
    "shadowed-builtin": ("list = [1]\nn = len(list)", {"len"}, {"list", "n"}, set()),
    "annotated": ("x: int = y", {"int", "y"}, {"x"}, set()),
    "match": ("match p:\n    case [a, *rest]:\n        q = a", {"p"}, {"a", "rest", "q"}, set()),
    "star-assign": ("a, *b = c", {"c"}, {"a", "b"}, set()),
    "delete-name": ("del x", {"x"}, set(), set()),
}  # fmt: skip


@pytest.mark.parametrize(("code", "reads", "binds", "mutates"), CASES.values(), ids=CASES.keys())
def test_reads_binds_and_mutations(code, reads, binds, mutates):
    result = facts(code)
    assert set(result.reads) == reads
    assert set(result.binds) == binds
    assert set(result.mutates) == mutates


def test_function_free_names_are_deferred_reads():
    result = facts("def f():\n    return model.predict(X) + len(y)\n")
    assert set(result.deferred) == {"model", "X", "len", "y"}
    assert set(result.reads) == set()
    assert set(result.functions["f"].reads) == {"model", "X", "len", "y"}


def test_closures_and_nested_functions():
    code = """
    def outer(a):
        b = 1
        def inner():
            return a + b + c
        return inner
    """
    result = facts(code)
    assert set(result.deferred) == {"c"}


def test_global_writes_in_functions():
    code = """
    def setup():
        global counter, cache
        counter = 0
        cache.clear()
    """
    result = facts(code)
    assert set(result.global_writes) == {"counter"}
    assert set(result.functions["setup"].writes) == {"counter"}
    assert set(result.functions["setup"].mutates) == {"cache"}
    assert set(result.mutates) == {"cache"}


def test_function_mutating_a_global():
    result = facts("def add(v):\n    results.append(v)\n")
    assert set(result.functions["add"].mutates) == {"results"}
    assert set(result.functions["add"].reads) == {"results"}


def test_method_free_names_skip_class_scope():
    code = """
    class C:
        x = 1
        def m(self):
            return x
    """
    result = facts(code)
    assert set(result.reads) == set()
    assert set(result.deferred) == {"x"}


def test_imports_anywhere_are_recorded_with_their_top_level_module():
    code = """
    import a.b
    from c.d import e
    from . import local
    def f():
        import g
    try:
        import h
    except ImportError:
        h = None
    """
    result = facts(code)
    assert set(result.imports) == {"a", "c", "g", "h"}


def test_star_import_is_recorded():
    result = facts("from math import *\n")
    assert result.star_imports == [(1, 1)]


def test_facts_flow_across_cells_with_locations():
    result = facts("x = 1", "y = x + z\nz = 2\nw = q")
    assert result.reads == {"z": (2, 1), "q": (2, 3)}
    assert result.binds["y"] == (2, 1)


def test_delete_at_end_and_rebind():
    assert facts("x = 1\ndel x").deleted_at_end == {"x"}
    assert facts("del x\nx = 2").deleted_at_end == set()


def test_syntax_error_is_recorded_not_raised():
    result = facts("x = 1", "def (:\n", "y = x")
    assert result.syntax_errors[0][0] == (2, 1)
    assert set(result.binds) == {"x", "y"}


def test_deep_nesting_is_recorded_not_raised():
    code = "x = " + "+".join(["a"] * 20000)
    result = facts(code)
    assert result.syntax_errors


# -- issue 9: aliases, mutating calls, effects ----------------------------------------------

ALIAS_CASES = {
    "loop-over-literal-tuple": (
        "for d in (train, test):\n    d.drop(columns='a', inplace=True)", {"train", "test"}),
    "loop-over-literal-list-enumerate": (
        "for i, d in enumerate([train, test]):\n    d['x'] = i", {"train", "test"}),
    "simple-assignment": ("d = train\nd['x'] = 1", {"train"}),
    "tuple-assignment": ("a, b = train, test\nb['x'] = 1", {"train", "test"}),
    "container-then-loop": ("dfs = [train, test]\nfor d in dfs:\n    d.fillna(0, inplace=True)",
                            {"train", "test"}),
    "dict-values": ("parts = {'a': train}\nfor d in parts.values():\n    d['x'] = 1", {"train"}),
    "augassign-through-alias": ("d = items\nd += [1]", {"items"}),
    "shuffle": ("random.shuffle(xs)", {"xs"}),
    "np-shuffle": ("np.random.shuffle(arr)", {"arr"}),
    "next": ("first = next(it)", {"it"}),
    "heappush": ("heapq.heappush(h, 3)", {"h"}),
    "out-keyword": ("np.add(a, b, out=c)", {"c"}),
}  # fmt: skip


@pytest.mark.parametrize(("code", "mutated"), ALIAS_CASES.values(), ids=ALIAS_CASES.keys())
def test_changes_through_another_name_are_mutations(code, mutated):
    assert mutated <= set(facts(code).mutates)


def test_rebinding_ends_an_alias():
    result = facts("d = train\nd = other.copy()\nd['x'] = 1")
    assert "train" not in result.mutates


def test_sklearn_shuffle_returns_copies():
    # (a bare ``shuffle(X)`` is taken as random.shuffle: safe, as X may have changed)
    result = facts("import sklearn\nX3 = sklearn.utils.shuffle(X)")
    assert "X" not in result.mutates


def test_function_parameters_changed_in_place_are_recorded():
    result = facts(
        """
        def add_col(df, name, *, value=1):
            view = df
            view[name] = value
        def keep(df):
            return df.head()
        add_col(data, 'r')
        """
    )
    assert result.functions["add_col"].param_mutates == frozenset({"df"})
    assert result.functions["add_col"].params == ("df", "name")
    assert result.functions["keep"].param_mutates == frozenset()
    (call,) = [c for c in result.calls if c.callee == "add_col"]
    assert call.args == (frozenset({"data"}), frozenset())


def test_seeds_draws_settings_and_imports_are_recorded():
    result = facts(
        """
        import numpy as np
        from sklearn.ensemble import RandomForestClassifier as RF
        np.random.seed(42)
        rng = np.random.default_rng(0)
        pd.set_option("display.max_rows", 10)
        os.environ["MODE"] = "fast"
        plt.rcParams["figure.dpi"] = 80
        """
    )
    assert set(result.seeds) == {"numpy.random.seed"}
    assert result.draws is not None
    assert set(result.settings) == {"pandas.set_option", "os.environ", "matplotlib.pyplot.rcParams"}
    assert result.import_binds == {
        "np": ("import numpy as np", (1, 2)),
        "RF": ("from sklearn.ensemble import RandomForestClassifier as RF", (1, 3)),
    }


def test_printing_does_not_draw():
    assert facts("print(len(xs))\nx = sorted(ys)").draws is None


def test_literal_file_paths_are_recorded():
    result = facts(
        """
        OUT = "out/data.csv"
        df.to_csv(OUT, index=False, sep=";")
        x = pd.read_csv("data/raw.csv")
        with open("notes.txt", "w") as f:
            f.write("a")
        text = open("notes.txt").read()
        joblib.dump(model, "model.joblib")
        Path("a/b.txt").write_text("x")
        plt.savefig(os.path.join("figs", "loss.png"))
        arr = np.load(Path("cache") / "arr.npy")
        frame = pd.read_csv(url_variable)
        """
    )
    found = {(f.kind, f.path) for f in result.files}
    assert found == {
        ("write", ("name", "OUT")),
        ("read", ("literal", "data/raw.csv")),
        ("write", ("literal", "notes.txt")),
        ("read", ("literal", "notes.txt")),
        ("write", ("name", "model")),
        ("write", ("literal", "model.joblib")),
        ("write", ("literal", "a/b.txt")),
        ("write", ("literal", "figs/loss.png")),
        ("read", ("literal", "cache/arr.npy")),
        ("read", ("name", "url_variable")),
    }
    assert result.constants == {"OUT": "out/data.csv"}


def test_pandas_accessors_do_not_change_the_frame():
    result = facts(
        "df.plot.bar()\nlow = s.str.lower()\nyear = t.dt.year\nfor i, r in df.iterrows():\n    pass"
    )
    assert set(result.mutates) == set()
