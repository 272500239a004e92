# Item 16: the "not installed" hint of an import whose distribution has another name names
# the right `pip install` (cv2 is opencv-python).

# %% tags=["imports"]
import cv2

# %% tags=["step:load"]
image = cv2.imread("image.png")

# %% tags=["pipeline-metrics"]
image
