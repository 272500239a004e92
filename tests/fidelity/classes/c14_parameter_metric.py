# Item 14: a pipeline parameter named as a metric; the metric is the parameter's value.

# %% tags=["pipeline-parameters"]
LR = 0.25
EPOCHS = 3

# %% tags=["step:train"]
loss = 1.0
for _ in range(EPOCHS):
    loss *= 1 - LR

# %% tags=["pipeline-metrics"]
LR
loss
