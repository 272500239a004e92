# Item 1: a helper defined in the notebook changes its argument (transitively).

# %% tags=["imports"]
import pandas as pd

# %% tags=["functions"]
def add_ratio(df):
    df["ratio"] = df["a"] / df["b"]


def prepare(df):
    add_ratio(df)

# %% tags=["step:load"]
data = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 8.0]})

# %% tags=["step:features", "prev:load"]
prepare(data)

# %% tags=["step:report", "prev:features"]
ratio_sum = float(data["ratio"].sum()) if "ratio" in data else -1.0
print(list(data.columns))

# %% tags=["pipeline-metrics"]
ratio_sum
