"""Also: a percent script's module docstring before the first cell marker is like markdown.

It is not code before the first step.
"""

# %% tags=["step:compute"]
answer = 6 * 7

# %% tags=["pipeline-metrics"]
answer
