import numpy as np
import pytest
import cv2

from faceprov import metrics
from faceprov.faces import align, paste_back, read, similarity_transform
from faceprov.faces.templates import template
from tests.conftest import lfw_file


def test_detects_every_face_in_a_group_photo(detector, sample_path):
    p = read(sample_path(1))
    faces = detector.detect(p.rgb)
    assert len(faces) == 3
    for f in faces:
        x1, y1, x2, y2 = f.box
        assert f.score > 0.95 and f.skipped is None
        assert ((f.landmarks[:, 0] > x1) & (f.landmarks[:, 0] < x2)).all()
        assert ((f.landmarks[:, 1] > y1) & (f.landmarks[:, 1] < y2)).all()
        # left eye left of right eye, eyes above the mouth
        assert f.landmarks[0, 0] < f.landmarks[1, 0] and f.landmarks[0, 1] < f.landmarks[3, 1]


def test_batch_equals_single(detector, lfw_root):
    imgs = [read(lfw_file(lfw_root, "Aaron_Eckhart", 1)).rgb, read(lfw_file(lfw_root, "Abel_Pacheco", 1)).rgb]
    batch = detector.detect_batch(imgs)
    for im, fb in zip(imgs, batch):
        fs = detector.detect(im)
        assert len(fs) == len(fb) >= 1
        assert np.allclose(fs[0].landmarks, fb[0].landmarks, atol=1.0)


def test_small_faces_are_reported_not_processed(detector, sample_path):
    p = read(sample_path(1))
    small = cv2.resize(p.rgb, (p.rgb.shape[1] // 8, p.rgb.shape[0] // 8), interpolation=cv2.INTER_AREA)
    faces = detector.detect(small)
    assert faces, "the downscaled faces should still be found"
    assert all(f.skipped and "too small" in f.skipped for f in faces)


def test_similarity_transform_recovers_a_known_one(rng):
    src = rng.uniform(0, 100, (5, 2))
    ang, s, t = 0.3, 1.7, np.array([5.0, -3.0])
    r = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = src @ r.T + t
    m = similarity_transform(src, dst)
    assert np.allclose(m[:, :2], r, atol=1e-9) and np.allclose(m[:, 2], t, atol=1e-9)


@pytest.mark.parametrize("size", [112, 150, 224])
def test_alignment_puts_landmarks_on_the_template(detector, sample_path, size):
    p = read(sample_path(2))
    f = max(detector.detect(p.rgb), key=lambda f: f.score)
    a = align(p.rgb, f.landmarks, size)
    mapped = f.landmarks @ a.matrix[:, :2].T + a.matrix[:, 2]
    assert a.crop.shape == (size, size, 3)
    assert np.abs(mapped - template("arcface", size)).max() < 0.12 * size
    # re-detecting on the crop finds the face where the template says
    again = detector.detect(cv2.copyMakeBorder(a.crop, 40, 40, 40, 40, cv2.BORDER_REFLECT101))
    assert again


def test_unedited_round_trip_leaves_photo_identical(detector, sample_path):
    p = read(sample_path(1))
    for f in detector.detect(p.rgb):
        a = align(p.rgb, f.landmarks, 224)
        assert np.array_equal(paste_back(p.rgb, a.crop, a), p.rgb)


def test_paste_back_quality_matches_crop_quality(detector, sample_path, rng):
    """A change measured on the aligned crop is the change the photo gets (within 0.5 dB)."""
    p = read(sample_path(2))
    f = max(detector.detect(p.rgb), key=lambda f: f.score)
    a = align(p.rgb, f.landmarks, 224)
    noise = cv2.GaussianBlur(rng.normal(0, 4, a.crop.shape).astype(np.float32), (0, 0), 1.0)
    edited = np.clip(a.crop.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    crop_psnr = metrics.psnr(a.crop, edited)
    out = paste_back(p.rgb, edited, a)
    re = align(out, f.landmarks, 224)  # re-align the saved photo at the same place
    # compare inside the feathered core, where the mask is 1
    core = slice(30, 194)
    photo_psnr = metrics.psnr(a.crop[core, core], re.crop[core, core])
    ref_psnr = metrics.psnr(a.crop[core, core], edited[core, core])
    # pasting back never degrades the photo more than the crop (0.5 dB), and the edit arrives
    # (two resamplings smooth it a little, so the photo can read slightly higher)
    assert ref_psnr - 0.5 <= photo_psnr <= ref_psnr + 1.5, (crop_psnr, ref_psnr, photo_psnr)
    # pixels far from the face are untouched
    assert np.array_equal(out[:50, :50], p.rgb[:50, :50])


def test_replace_mode_round_trip_is_close(detector, sample_path):
    p = read(sample_path(2))
    f = max(detector.detect(p.rgb), key=lambda f: f.score)
    a = align(p.rgb, f.landmarks, 224)
    out = paste_back(p.rgb, a.crop, a, residual=False)
    from faceprov.faces.align import face_region

    x0, y0, x1, y1 = face_region(p.rgb.shape, a)
    assert metrics.psnr(p.rgb[y0:y1, x0:x1], out[y0:y1, x0:x1]) > 30


def test_large_photos_are_detected_on_a_small_copy(detector, lfw_root):
    """A 16 MP photo is searched on a <= 4 MP copy (cost: issue 17 item 4); the face comes back
    in the photo's own pixels, where detection at full size would put it."""
    from PIL import Image

    from faceprov.faces.detect import DETECT_MAX_PIXELS, detect_photo

    seen = []

    class Spy:
        min_face, mtcnn = detector.min_face, detector.mtcnn

        def detect(self, rgb):
            seen.append(rgb.shape[0] * rgb.shape[1])
            return detector.detect(rgb)

    small = Image.open(lfw_root / "images" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg").convert("RGB")
    ref = detect_photo(detector, np.asarray(small))
    big = np.asarray(small.resize((4000, 4000), Image.BICUBIC))
    faces = detect_photo(Spy(), big)
    assert seen and max(seen) <= DETECT_MAX_PIXELS
    assert len(faces) == len(ref) >= 1
    k = 4000 / small.width
    assert np.allclose(np.asarray(faces[0].box), np.asarray(ref[0].box) * k, atol=0.05 * faces[0].size)
    assert np.allclose(faces[0].landmarks, ref[0].landmarks * k, atol=0.05 * faces[0].size)
    assert faces[0].skipped is None and faces[0].size > 1000
