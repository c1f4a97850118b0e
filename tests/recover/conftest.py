"""Shared fixtures of the recovery/detection tests."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from faceprov.data.landmarks import landmarks_for
from faceprov.faces import io as fio
from faceprov.recover.ism import align_face

DETECTOR_CROP = 96   # the small ISM crop the detector tests use


@pytest.fixture(scope="module")
def crops(lfw_root):
    """ISM-aligned crops (2,3,96,96 uint8) of two real LFW photos of different people."""
    rel = ["images/Aaron_Eckhart/Aaron_Eckhart_0001.jpg", "images/AJ_Cook/AJ_Cook_0001.jpg"]
    lms, failed = landmarks_for(lfw_root, rel)
    assert not failed
    out = [align_face(fio.read(lfw_root / p).rgb, lms[p], DETECTOR_CROP, 0.75)[0] for p in rel]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()
