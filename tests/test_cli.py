"""The command line as a user runs it: real subprocesses, exit codes, no tracebacks."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import lfw_file

EXE = [sys.executable, "-m", "faceprov.cli"]


def run(*args, check_rc=None):
    p = subprocess.run([*EXE, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert "Traceback" not in p.stderr, p.stderr
    if check_rc is not None:
        assert p.returncode == check_rc, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    return p


def last_json(stdout: str):
    start = stdout.index("{") if stdout.lstrip().startswith("{") else stdout.index("[")
    return json.loads(stdout[start:])


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, sample_path):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("this is not an image\n")
    (d / "truncated.jpg").write_bytes(sample_path(1).read_bytes()[:15000])
    Image.new("L", (20000, 20000)).save(d / "huge.png")
    return d


@pytest.mark.parametrize("name,msg", [("empty.jpg", "empty"), ("text.jpg", "not a JPEG"),
                                      ("truncated.jpg", "truncated"), ("huge.png", "bomb"),
                                      ("missing.jpg", "no such file")])
def test_bad_input_clear_error(bad_files, name, msg):
    p = run("detect", bad_files / name, "--json")
    assert p.returncode == 2
    assert msg in p.stderr and "error" in p.stderr


def test_detect_json(sample_path):
    p = run("detect", sample_path(1), "--json", check_rc=0)
    doc = last_json(p.stdout)
    assert len(doc["faces"]) == 3 and len(doc["faces"][0]["landmarks"]) == 5


def test_no_face_is_reported(tmp_path):
    f = tmp_path / "wall.jpg"
    Image.new("RGB", (320, 240), (90, 140, 200)).save(f)
    p = run("detect", f, "--json", check_rc=0)
    assert last_json(p.stdout)["faces"] == [] and "no face" in p.stderr
    p = run("embed", f, "--recognizer", "dlib-native", "--json")
    assert p.returncode != 0 and "no usable face" in p.stderr


def test_embed_json(lfw_root):
    p = run("embed", lfw_file(lfw_root, "Aaron_Eckhart", 1), "--recognizer", "dlib-native", "--json", check_rc=0)
    doc = last_json(p.stdout)
    v = doc["faces"][0]["embedding"]
    assert len(v) == 128 and abs(sum(x * x for x in v) - 1) < 1e-3


def test_recognizers_json():
    rows = last_json(run("recognizers", "--json", check_rc=0).stdout)
    by = {r["name"]: r for r in rows}
    for n in ("faceres", "faceres-deep", "mobileface", "dlib", "dlib-native"):
        assert by[n]["available"], by[n]
    assert by["dlib"]["differentiable"] and not by["dlib-native"]["differentiable"]
    assert by["arcface-onnx"]["available"] is False and "FACEPROV_ARCFACE_ONNX" in by["arcface-onnx"]["reason"]


def test_eval_recognizers_small(lfw_root):
    p = run("eval", "recognizers", "--max-pairs", "40", "--recognizers", "dlib-native,mobileface", "--json",
            check_rc=0)
    doc = last_json(p.stdout)
    assert doc["pairs"] == 40
    for r in doc["recognizers"]:
        assert r["available"] and 0.5 < r["auc"] <= 1.0 and -1 <= r["threshold"] <= 1
        assert r["faces_per_s_forward"] > 0


def test_eval_identify_small(tmp_path, lfw_root):
    from faceprov.data import lfw

    # the first five peopleDevTest (report-side) people with 3 photos or more, photos 1-3 of each:
    # the same rule picks from the full LFW and from tests/data/lfw-mini
    people = [n for n, c in lfw.people("test") if c >= 3][:5]
    assert len(people) == 5
    tsv = tmp_path / "labels.tsv"
    rows = [f"images/{n}/{n}_{i:04d}.jpg\t{n}\n" for n in people for i in (1, 2, 3)]
    assert all(lfw_file(lfw_root, n, i).is_file() for n in people for i in (1, 2, 3))
    tsv.write_text("path\tidentity\n" + "".join(rows))
    doc = last_json(run("eval", "identify", "--labels", tsv, "--root", lfw_root, "--recognizer", "dlib-native",
                        "--json", check_rc=0).stdout)
    # gallery = photo 1 of each person, probes = photos 2 and 3
    assert doc["identities"] == 5 and doc["probes"] == 10 and doc["top1"] >= 0.6 and doc["top5"] == 1.0


def test_eval_identify_bad_tsv(tmp_path, lfw_root):
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("file,name\nx,y\n")
    p = run("eval", "identify", "--labels", tsv, "--root", lfw_root, "--recognizer", "dlib-native")
    assert p.returncode == 2 and "header" in p.stderr


def test_assets_list_json():
    rows = last_json(run("assets", "list", "--json", check_rc=0).stdout)
    assert {r["status"] for r in rows} == {"verified"}


def test_assets_path_prints_a_verified_file():
    p = run("assets", "path", "sample1", check_rc=0)
    from PIL import Image

    assert Image.open(p.stdout.strip()).size[0] > 100
    bad = run("assets", "path", "no-such-asset")
    assert bad.returncode == 2 and "unknown asset" in bad.stderr


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    from faceprov.cloak.model import CloakConfig, CloakModel

    torch.manual_seed(0)
    m = CloakModel(CloakConfig(width=8, size=112, n_id=1, n_pert=1, n_feat=1, se_reduction=4))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    d = tmp_path_factory.mktemp("model")
    m.save_pretrained(d, metadata={"version": "cli-test"})
    return d


def test_cloak_records_each_photo_and_reports(tmp_path, sample_path, tiny_model, bad_files):
    db = f"sqlite:///{tmp_path / 'fp.db'}"
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(sample_path(1).read_bytes())
    (src / "b.jpg").write_bytes((bad_files / "text.jpg").read_bytes())  # not an image: listed, not fatal
    out = tmp_path / "out"
    doc = last_json(run("cloak", src, "-o", out, "--model", tiny_model, "--db", db, "--owner", "carol",
                        "--report", tmp_path / "reports", "--json", check_rc=3).stdout)  # 3: b.jpg not protected
    ok = [r for r in doc["results"] if "error" not in r]
    assert doc["failed"] == 1 and len(ok) == 1 and len(ok[0]["faces"]) == 3
    assert (out / "a.jpg").exists() and not (out / "b.jpg").exists()
    html = (tmp_path / "reports" / "a.html").read_text()
    # this model records no training recognizers: three faces reported, and nothing claimed
    assert html.count("<div class='face'") == 3 and "no protection is claimed" in html
    assert "protected against" not in html
    assert ok[0]["report"]["black_box_total"] == 0 and ok[0]["protection"] == ok[0]["report"]["headline"]
    hist = last_json(run("audit", "history", "--owner", "carol", "--db", db, "--json", check_rc=0).stdout)
    assert [h["id"] for h in hist] == [ok[0]["record_id"]]
    assert hist[0]["output_sha256"] == ok[0]["output_sha256"]
    import hashlib

    assert hashlib.sha256((out / "a.jpg").read_bytes()).hexdigest() == ok[0]["output_sha256"]
    assert "landmarks" not in json.dumps(hist)
    run("audit", "verify-chain", "--db", db, check_rc=0)


def test_cloak_bad_input_exit_code(tmp_path, tiny_model, bad_files):
    p = run("cloak", bad_files / "truncated.jpg", "-o", tmp_path / "x.jpg", "--model", tiny_model, "--no-record")
    assert p.returncode == 2 and "truncated" in p.stderr and not (tmp_path / "x.jpg").exists()


# every "protected" the cloak command prints carries its black-box count
PROTECTED_WITH_COUNT = re.compile(r"protected against \d+ of \d+ black-box recognizers")


def _says_protected_only_with_a_count(line: str) -> bool:
    return "protected" not in PROTECTED_WITH_COUNT.sub("", line)


def test_cloak_line_counts_black_box_recognizers(tmp_path, sample_path):
    import torch

    from faceprov.cloak.model import CloakConfig, CloakModel

    torch.manual_seed(0)
    m = CloakModel(CloakConfig(width=8, size=112, n_id=1, n_pert=1, n_feat=1, se_reduction=4))
    model = tmp_path / "model"
    m.save_pretrained(model, metadata={"version": "cli-sides", "white_box": ["dlib", "faceres-deep"]})
    p = run("cloak", sample_path(1), "-o", tmp_path / "s1.jpg", "--model", model, "--no-record",
            "--report", tmp_path / "s1.html", check_rc=0)
    line = next(x for x in p.stderr.splitlines() if "s1.jpg:" in x)
    print(line)
    assert "3 face(s) cloaked" in line and ("black box" in line or "black-box" in line), line
    assert _says_protected_only_with_a_count(line), line
    assert not re.search(r"faces? (\(s\) )?protected", line), line
    html = (tmp_path / "s1.html").read_text()
    assert "white box" in html and "black box" in html and "id='overview'" in html
    if "still recognisable" in line:
        assert "what now: try --strength high and/or --refine 20" in p.stderr, p.stderr
    overview = Image.open(tmp_path / "s1.overview.png")
    assert overview.width == 1024
    # without a report nothing is measured, and the line says so
    p = run("cloak", sample_path(1), "-o", tmp_path / "s1b.jpg", "--model", model, "--no-record", check_rc=0)
    line = next(x for x in p.stderr.splitlines() if "s1b.jpg:" in x)
    assert "3 face(s) cloaked; protection not measured" in line and _says_protected_only_with_a_count(line), line
