from __future__ import annotations

import pytest

from cellpipe.notebook.packages import DISTRIBUTIONS, NAMESPACE_ROOTS, pip_name


@pytest.mark.parametrize(
    ("module", "dist"),
    [
        ("cv2", "opencv-python"),
        ("PIL", "Pillow"),
        ("yaml", "PyYAML"),
        ("sklearn", "scikit-learn"),
        ("bs4", "beautifulsoup4"),
        ("skimage", "scikit-image"),
        ("dateutil", "python-dateutil"),
        ("google.protobuf", "protobuf"),
        ("google.protobuf.json_format", "protobuf"),
        ("google.cloud.storage", "google-cloud-storage"),
        ("sklearn.model_selection", "scikit-learn"),
        ("numpy", "numpy"),
        ("pandas.api", "pandas"),
    ],
)
def test_pip_name(module, dist):
    assert pip_name(module) == dist


def test_a_namespace_root_alone_names_no_distribution():
    assert pip_name("google") == ""
    assert pip_name("google.something_unknown") == ""
    assert "google" in NAMESPACE_ROOTS


def test_the_table_only_lists_names_that_differ():
    assert len(DISTRIBUTIONS) >= 40
    assert all(module != dist for module, dist in DISTRIBUTIONS.items())
