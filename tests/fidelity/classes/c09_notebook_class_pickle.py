# Item 9: classes defined in the notebook pickle in a later step, as in Jupyter (__main__).

# %% tags=["imports"]
import pickle

# %% tags=["functions"]
class Scaler:
    def __init__(self, factor):
        self.factor = factor

    def apply(self, value):
        return value * self.factor

# %% tags=["step:fit"]
model = Scaler(2.5)


class Offset:
    def __init__(self, by):
        self.by = by


shift = Offset(3)

# %% tags=["step:save", "prev:fit"]
with open("model.pkl", "wb") as f:
    pickle.dump(model, f)
with open("shift.pkl", "wb") as f:
    pickle.dump(shift, f)

# %% tags=["step:load", "prev:save"]
with open("model.pkl", "rb") as f:
    restored = pickle.load(f)
with open("shift.pkl", "rb") as f:
    restored_shift = pickle.load(f)
result = restored.apply(4) + restored_shift.by
print(type(restored).__name__, result)

# %% tags=["pipeline-metrics"]
result
