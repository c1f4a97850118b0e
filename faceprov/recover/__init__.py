"""Recovery of face swaps: ISM (is it fake, where), and the recovery models built on it."""
from .ism import ISM, ISMConfig, align_face, ism_template

__all__ = ["ISM", "ISMConfig", "align_face", "ism_template"]
