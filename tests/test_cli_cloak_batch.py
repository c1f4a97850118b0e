"""`faceprov cloak` on folders and many files: every photo it can cloak is written, the others
are listed with the reason, and the exit code says whether all were cloaked. ("Protected" is the
protection report's word, for what it measured against black-box recognizers.)"""
import json

import pytest
from PIL import Image

from tests.test_cli import last_json, run

EXIT_SOME = 3  # faceprov.cli.EXIT_SOME_NOT_CLOAKED


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    from faceprov.cloak.model import CloakConfig, CloakModel

    torch.manual_seed(0)
    m = CloakModel(CloakConfig(width=8, size=112, n_id=1, n_pert=1, n_feat=1, se_reduction=4))
    d = tmp_path_factory.mktemp("model")
    m.save_pretrained(d, metadata={"version": "cli-batch-test"})
    return d


@pytest.fixture(scope="module")
def photo(tmp_path_factory, sample_path):
    """sample1 at half size (faces ~100 px): quick to detect, still three faces."""
    img = Image.open(sample_path(1))
    p = tmp_path_factory.mktemp("photo") / "group.jpg"
    img.resize((img.width // 2, img.height // 2)).save(p, "JPEG", quality=90)
    return p


def cloak(*args, check_rc=None):
    return run("cloak", *args, "--no-record", check_rc=check_rc)


def test_folder_all_cloaked_exit_0_and_sub_folders_kept(tmp_path, photo, tiny_model):
    src = tmp_path / "in"
    for sub in ("a", "b"):  # the same file name twice: neither output may overwrite the other
        (src / sub).mkdir(parents=True)
        (src / sub / "p.jpg").write_bytes(photo.read_bytes())
    (src / ".hidden.jpg").write_text("a thumbnail cache, not a photo")
    (src / "notes.txt").write_text("not a photo")
    out = tmp_path / "out"
    p = cloak(src, "-o", out, "--model", tiny_model, "--json", check_rc=0)
    doc = last_json(p.stdout)
    assert doc["failed"] == 0 and doc["not_cloaked"] == [] and len(doc["results"]) == 2
    assert (out / "a" / "p.jpg").exists() and (out / "b" / "p.jpg").exists()
    assert {r["output"] for r in doc["results"]} == {str(out / "a" / "p.jpg"), str(out / "b" / "p.jpg")}
    for r in doc["results"]:
        assert r["detection"]["detectors"] == ["mtcnn", "yunet"]
        assert all(f["found_by"] for f in r["faces"])


def test_one_bad_photo_gives_exit_3_with_the_list(tmp_path, photo, tiny_model):
    src = tmp_path / "in"
    src.mkdir()
    (src / "good.jpg").write_bytes(photo.read_bytes())
    (src / "broken.jpg").write_text("this is not an image\n")
    Image.new("RGB", (320, 240), (90, 140, 200)).save(src / "wall.png")  # no face
    (src / "old.gif").write_bytes(b"GIF89a" + b"\x00" * 64)  # a format the decoder refuses: listed, not ignored
    out = tmp_path / "out"
    p = cloak(src, "-o", out, "--model", tiny_model, "--json", check_rc=EXIT_SOME)
    doc = last_json(p.stdout)
    assert doc["failed"] == 3
    bad = {n["input"].rsplit("/", 1)[-1]: n for n in doc["not_cloaked"]}
    assert set(bad) == {"broken.jpg", "wall.png", "old.gif"}
    assert bad["wall.png"]["code"] == "no_face" and "no face" in bad["wall.png"]["message"]
    assert bad["broken.jpg"]["code"] == "unsupported_type"
    assert (out / "good.jpg").exists() and not (out / "broken.jpg").exists() and not (out / "wall.png").exists()
    # the list is printed after the run, one line per photo with its reason
    tail = p.stderr[p.stderr.index("3 of 4 photos not cloaked"):]
    for name in ("broken.jpg", "wall.png", "old.gif"):
        assert name in tail
    assert "no face found" in tail


def test_many_files_none_cloaked_exit_2(tmp_path, tiny_model):
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_text("nope")
    b.write_bytes(b"")
    p = cloak(a, b, "-o", tmp_path / "out", "--model", tiny_model, check_rc=2)
    assert "2 of 2 photos not cloaked" in p.stderr and "a.jpg" in p.stderr and "b.jpg" in p.stderr
    assert "protected" not in p.stderr  # nothing was measured, so nothing may be called (un)protected


def test_one_photo_into_an_existing_folder(tmp_path, photo, tiny_model):
    out = tmp_path / "existing"
    out.mkdir()
    p = cloak(photo, "-o", out, "--model", tiny_model, "--json", check_rc=0)
    doc = last_json(p.stdout)
    assert doc["output"] == str(out / photo.name) and (out / photo.name).stat().st_size > 1000
    assert json.dumps(doc["detection"])  # the single-photo document carries the detection too


def test_one_photo_into_a_new_folder_with_a_trailing_slash(tmp_path, photo, tiny_model):
    out = tmp_path / "new" / "dir"
    p = cloak(photo, "-o", f"{out}/", "--model", tiny_model, "--json", check_rc=0)
    assert out.is_dir() and (out / photo.name).stat().st_size > 1000
    assert last_json(p.stdout)["output"] == str(out / photo.name)


def test_cloak_keeps_the_inputs_jpeg_layout(tmp_path, photo, tiny_model):
    """A 4:2:2 photo with its own quantisation tables comes out 4:2:2 with the same tables."""
    from PIL import JpegImagePlugin

    src = tmp_path / "in422.jpg"
    tables = [[max(1, v * 3 // 4) for v in range(2, 130, 2)], [12] * 64]  # no libjpeg quality makes these
    Image.open(photo).save(src, "JPEG", qtables=tables, subsampling=1)
    dest = tmp_path / "out.jpg"
    cloak(src, "-o", dest, "--model", tiny_model, check_rc=0)
    a, b = Image.open(src), Image.open(dest)
    assert JpegImagePlugin.get_sampling(a) == JpegImagePlugin.get_sampling(b) == 1
    assert a.quantization == b.quantization
