from faceprov import recognizers as rec
from faceprov.cloak.evaluation import side_of


def test_white_black_related_same_weights():
    white = ["faceres", "dlib"]
    sides = {n: side_of(rec.get(n), white) for n in ("faceres", "faceres-deep", "dlib", "dlib-native", "mobileface")}
    assert sides == {"faceres": "white box", "faceres-deep": "related", "dlib": "white box",
                     "dlib-native": "same weights", "mobileface": "black box"}
    assert side_of(rec.get("dlib"), ["dlib-native"]) == "same weights"
    assert side_of(rec.get("faceres"), ["dlib"]) == "black box"
