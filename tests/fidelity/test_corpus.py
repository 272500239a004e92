"""Real public notebooks (corpus/, origins in corpus/SOURCES.md), run in Jupyter and as pipelines.

Each notebook is tagged as a user would tag it and must give the metrics and printed output it
gives in Jupyter (see fidelity_harness).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fidelity_harness import run_both

CORPUS = Path(__file__).parent / "corpus"

pytestmark = [pytest.mark.fidelity, pytest.mark.slow, pytest.mark.e2e]


NOTEBOOKS = [
    "sklearn/plot_cost_complexity_pruning.py",
    "sklearn/plot_cv_diabetes.py",
    "sklearn/plot_cv_predict.py",
    "sklearn/plot_feature_selection_pipeline.py",
    "sklearn/plot_lasso_and_elasticnet.py",
    "sklearn/plot_monotonic_constraints.py",
    "sklearn/plot_pcr_vs_pls.py",
    "sklearn/plot_svm_anova.py",
    "sklearn/plot_voting_regressor.py",
    "kale/candies_sharing/candies_sharing.ipynb",
    "kale/parameters_and_metrics/parameters_and_metrics.ipynb",
    "kale/serving_iris/serving_iris.ipynb",
    "kale/titanic/titanic.ipynb",
]


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_corpus_notebook_computes_what_jupyter_computes(notebook: str, kernels: Path) -> None:
    comparison = run_both(CORPUS / notebook, kernels)
    assert comparison.differences == [], "\n".join(comparison.differences)
