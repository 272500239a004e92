from __future__ import annotations

import pytest

from cellpipe.notebook._imports import ImportBindings, same_import

SHARED = ImportBindings.from_code(
    [
        "import numpy as np\nimport os.path\nfrom sklearn.model_selection import train_test_split",
        "import pandas as pd\ndef helper():\n    import json as np\n    x = 1",
    ]
)


def bindings(code: str) -> ImportBindings:
    return ImportBindings.from_code([code])


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("np", "import numpy as np"),
        ("np", "if True:\n    import numpy as np\nimport numpy as np"),
        ("os", "import os"),
        ("os", "import os.path"),
        ("train_test_split", "from sklearn.model_selection import train_test_split"),
        ("pd", "try:\n    import pandas as pd\nexcept ImportError:\n    raise"),
        ("np", "def f():\n    np = 1\nimport numpy as np"),
    ],
)
def test_a_reimport_of_the_same_thing_is_the_same(name, code):
    assert same_import(name, SHARED, bindings(code))


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("np", "import numpy as np\nnp = np.float32"),
        ("np", "import jax.numpy as np"),
        ("np", "from numpy import np"),
        ("os", "import os as os2\nos = 1"),
        ("pd", "import pandas as pd\nfor pd in []: pass"),
        ("pd", "import pandas as pd\ndel pd"),
        ("pd", "import pandas as pd\n[pd := 1]"),
        ("pd", "def pd():\n    pass"),
        ("pd", "class pd:\n    pass"),
        ("pd", "try:\n    import pandas as pd\nexcept Exception as pd:\n    pass"),
        ("helper", "from mod import helper"),
        ("train_test_split", "from sklearn import train_test_split"),
        ("missing", "import missing"),
        ("np", "import numpy as np\nx = ("),
    ],
)
def test_anything_else_is_not_the_same(name, code):
    assert not same_import(name, SHARED, bindings(code))


def test_module_level_only():
    found = bindings("def f():\n    import numpy as np\nclass C:\n    import os")
    assert dict(found.sources) == {"f": None, "C": None}


def test_relative_imports_keep_their_dots():
    found = bindings("from . import util\nfrom ..pkg import mod as m")
    assert dict(found.sources) == {"util": ".:util", "m": "..pkg:mod"}


def test_match_captures_are_bindings():
    code = (
        "match v:\n    case [*np]:\n        pass\n    case {**pd}:\n        pass\n"
        "    case os:\n        pass"
    )
    found = bindings(code)
    assert dict(found.sources) == {"np": None, "pd": None, "os": None}
