"""Moved to `faceprov.faces.warp` (shared by cloak and recover); kept as an alias for old imports."""
from ..faces.warp import *  # noqa: F401,F403
from ..faces.warp import _theta, _to3  # noqa: F401
