from faceprov import recognizers as rec
from faceprov.cloak.evaluation import side_of


def test_white_black_related_same_weights():
    white = ["faceres", "dlib"]
    sides = {n: side_of(rec.get(n), white) for n in ("faceres", "faceres-deep", "dlib", "dlib-native", "mobileface")}
    assert sides == {"faceres": "white box", "faceres-deep": "related", "dlib": "white box",
                     "dlib-native": "same weights", "mobileface": "black box"}
    assert side_of(rec.get("dlib"), ["dlib-native"]) == "same weights"
    assert side_of(rec.get("faceres"), ["dlib"]) == "black box"


def test_training_eval_labels_agree_with_the_benchmark():
    from types import SimpleNamespace

    from faceprov.cloak.train import box_side

    dlib, fr = SimpleNamespace(family="dlib"), SimpleNamespace(family="faceres")
    white = {"dlib": dlib, "faceres-deep": fr}
    assert box_side("dlib", dlib, white) == "white"
    assert box_side("dlib-native", dlib, white) == "same weights"
    assert box_side("faceres", fr, white) == "related"
    assert box_side("mobileface", SimpleNamespace(family="mobileface"), white) == "black"


def test_known_families_match_the_recognizers_that_load_here():
    # the table stands in for a white-box recognizer this machine cannot load; wrong there, a
    # relative of it would be called black box
    from faceprov.cloak.sides import KNOWN_FAMILIES

    for n in rec.names():
        if n in KNOWN_FAMILIES and rec.available(n)[0]:
            assert rec.get(n).family == KNOWN_FAMILIES[n], n


def test_a_white_box_name_of_unknown_family_leaves_others_unknown():
    from faceprov.cloak.sides import side_of as shared

    assert shared is side_of  # report and benchmark use one function
    assert side_of(rec.get("mobileface"), ["dlib", "no-such-recognizer"]) == "unknown"
    assert side_of(rec.get("mobileface"), None) == "unknown"


def test_a_distilled_student_makes_its_teachers_related_not_the_black_boxes():
    # the student learnt from dlib and facenet only: a cloak trained against it alone has seen
    # them through it (related), while sface and mobileface stay black box
    from types import SimpleNamespace

    from faceprov.cloak.sides import KNOWN_FAMILIES
    from faceprov.cloak.train import box_side

    white = ["student"]
    fams = {n: SimpleNamespace(name=n, family=KNOWN_FAMILIES[n]) for n in ("dlib", "facenet", "sface", "mobileface")}
    assert {n: side_of(r, white) for n, r in fams.items()} == {
        "dlib": "related", "facenet": "related", "sface": "black box", "mobileface": "black box"}
    stu = {"student": SimpleNamespace(family=KNOWN_FAMILIES["student"])}
    assert box_side("facenet", fams["facenet"], stu) == "related"
    assert box_side("sface", fams["sface"], stu) == "black"
