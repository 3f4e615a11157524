"""nnexp.data's CSV loader: a byte-order mark is not part of a column name; a continuous (regression) target or a class
too rare to split is refused with one line naming dataset.target; which dataset reads which key."""

from __future__ import annotations

import numpy as np
import pytest

from nnexp.data import DATASET_KEYS, load, loader_keys

ROWS = "".join(f"{i},{i % 4 - 1.5},{'xy'[i % 2]}\n" for i in range(20))


def test_byte_order_mark_is_ignored(tmp_path):
    plain, bom = tmp_path / "plain.csv", tmp_path / "bom.csv"
    plain.write_text("a,b,label\n" + ROWS, encoding="utf-8")
    bom.write_text("a,b,label\n" + ROWS, encoding="utf-8-sig")
    assert bom.read_bytes()[:3] == b"\xef\xbb\xbf"
    d_plain, d_bom = (load("csv", path=str(p), target="label") for p in (plain, bom))
    assert d_bom.feature_names == ["a", "b"] == d_plain.feature_names
    np.testing.assert_array_equal(d_bom.X_train, d_plain.X_train)
    np.testing.assert_array_equal(d_bom.y_test, d_plain.y_test)
    # the first column, named with the mark stripped, is a target like any other
    bom.write_text("a,b,label\n" + "".join(f"{i % 2},{i},{i * 2}\n" for i in range(20)), encoding="utf-8-sig")
    assert load("csv", path=str(bom), target="a").n_classes == 2


@pytest.mark.parametrize("values,words", [
    ([f"{0.1 * i + 0.003 * i * i:.4f}" for i in range(30)], "looks continuous (30 distinct numbers in 30 rows)"),
    ([str(i % 12) for i in range(30)], "class '10' has 2 rows"),  # 12 classes of 2 or 3 rows
])
def test_regression_target_is_refused_naming_the_key(tmp_path, values, words):
    f = tmp_path / "reg.csv"
    f.write_text("a,y\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    with pytest.raises(ValueError) as e:
        load("csv", path=str(f), target="y")
    msg = str(e.value)
    assert msg.startswith("dataset.target='y'") and words in msg and "\n" not in msg and len(msg) < 300


def test_text_labels_with_many_classes_are_classes(tmp_path):
    f = tmp_path / "many.csv"
    f.write_text("a,label\n" + "".join(f"{i},k{i % 6}\n" for i in range(60)))
    d = load("csv", path=str(f), target="label")
    assert d.n_classes == 6 and d.task == "classification"
    assert sorted(np.bincount(d.y_test, minlength=6)) == [2] * 6  # stratified: 12 test rows, 2 per class


def test_which_dataset_reads_which_key():
    assert DATASET_KEYS == ("n_samples", "noise", "path", "target", "n_features", "n_outputs")
    assert {n: loader_keys(n) for n in ("csv", "moons", "circles", "spiral", "gaussian", "xor", "digits", "iris",
                                        "linear_teacher")} == {
        "csv": {"path", "target"}, "moons": {"n_samples", "noise"}, "circles": {"n_samples", "noise"},
        "spiral": {"n_samples", "noise"}, "gaussian": {"n_samples", "noise"}, "xor": set(), "digits": set(),
        "iris": set(), "linear_teacher": {"n_samples", "noise", "n_features", "n_outputs"}}
