"""Face cloaking: a NullSwap-style feed-forward network (model.py), its losses, Dynamic Loss
Weighting (dlw.py), training (train.py) and optional per-photo refinement (refine.py)."""
from .model import STRENGTHS, CloakConfig, CloakModel, load_default

__all__ = ["STRENGTHS", "CloakConfig", "CloakModel", "load_default"]
