# Item 1: a loop over a literal tuple changes both frames in place.

# %% tags=["imports"]
import pandas as pd

# %% tags=["step:load"]
train = pd.DataFrame({"a": [1, 2, 3], "junk": [0, 0, 0]})
test = pd.DataFrame({"a": [4, 5], "junk": [9, 9]})

# %% tags=["step:clean", "prev:load"]
for d in (train, test):
    d.drop(columns=["junk"], inplace=True)

# %% tags=["step:report", "prev:clean"]
n_columns = len(train.columns) + len(test.columns)
print(list(train.columns), list(test.columns))

# %% tags=["pipeline-metrics"]
n_columns
