"""Synthetic face swaps (training and test data for recovery).

Convention: **source** = the identity whose face is pasted in; **target** = the photo (pose,
expression, lighting, background) it is pasted into. Four methods that look different:
`landmark` (dlib 68 points, Delaunay warp, LAB colour transfer, Poisson blend), `affine`
(5-point similarity, histogram matching, feathered ellipse) and `lowres` (a 64-px rendering
upsampled, RGB mean/std colour match, soft rounded box: the look of learned swappers) and
`mesh` (68-point warp of the inner face only, RGB mean shift, Gaussian-feathered seam).
`make_triplets` writes data sets.
"""
from .affine_swap import affine_swap
from .landmark_swap import LandmarkError, SwapResult, landmark_swap, landmarks68
from .lowres_swap import lowres_swap
from .mesh_swap import mesh_swap
from .make import HEADER, METHODS, identity_check, make_triplets, pick_pairs, read_triplets, swap

__all__ = ["HEADER", "LandmarkError", "METHODS", "SwapResult", "affine_swap", "landmark_swap", "landmarks68", "lowres_swap", "mesh_swap",
           "identity_check", "make_triplets", "pick_pairs", "read_triplets", "swap"]
