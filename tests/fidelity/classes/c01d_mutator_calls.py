# Item 1: well-known mutators called with a variable: random.shuffle, list.sort through an
# argument, next(iterator).

# %% tags=["imports"]
import random

# %% tags=["functions"]
def sort_in_place(values):
    values.sort()

# %% tags=["step:load"]
deck = list(range(10))
scores = [3, 1, 2]
stream = iter(["header", "row1", "row2"])

# %% tags=["step:prepare", "prev:load"]
rng = random.Random(4)
rng.shuffle(deck)
sort_in_place(scores)
next(stream)

# %% tags=["step:report", "prev:prepare"]
first_card = deck[0]
first_score = scores[0]
first_row = next(stream)
print(first_card, first_score, first_row)

# %% tags=["pipeline-metrics"]
first_card
first_score
first_row
