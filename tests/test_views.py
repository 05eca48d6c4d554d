"""View labels with their own radius: parsed in one place, refused when malformed."""

from __future__ import annotations

import pytest

from ncrobust.views import ViewLabel, parse_label, view_label, views_of


def test_labels_round_trip_with_six_significant_digits() -> None:
    assert view_label("pgd", 2 / 255) == "pgd@eps=0.00784314"
    assert parse_label("pgd@eps=0.00784314") == ViewLabel("pgd", 0.00784314)
    assert parse_label("targeted@eps=0.25") == ViewLabel("targeted", 0.25)
    assert str(ViewLabel("targeted", 0.25)) == "targeted@eps=0.25"
    for plain in ("clean", "pgd", "train_adv", "gaussian", "targeted"):
        assert parse_label(plain) == ViewLabel(plain, None)
        assert view_label(plain) == plain


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("pgd@eps=abc", "expected a number or k/255"),
        ("pgd@eps=0", "eps must be a finite number > 0"),
        ("pgd@eps=nan", "eps must be a finite number > 0"),
        ("@eps=0.1", "unknown view ''"),
        ("clean@eps=0.1", "only pgd, targeted and ncc_adaptive take a radius"),
    ],
)
def test_malformed_labels_are_refused(label: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_label(label)


def test_views_of_one_kind_by_radius() -> None:
    labels = ["clean", "pgd", "pgd@eps=0.0156863", "pgd@eps=0.00784314", "targeted@eps=0.25"]
    assert views_of(labels, "pgd") == {
        0.00784314: "pgd@eps=0.00784314",
        0.0156863: "pgd@eps=0.0156863",
    }
    assert views_of(labels, "targeted") == {0.25: "targeted@eps=0.25"}
    assert views_of(["pgd@eps=bad"], "pgd") == {}
    # l_2 radii may exceed 1 (ImageNette's 1536/255): still a view with its own radius
    assert views_of(["pgd@eps=6.02353"], "pgd") == {6.02353: "pgd@eps=6.02353"}


def test_radii_are_shown_as_written_and_read_back() -> None:
    from ncrobust.views import format_pixels, parse_pixels

    shown = {v: format_pixels(v) for v in (8 / 255, 2 / 255, 128 / 255, 0.15, 0.2, 0.0375)}
    assert shown == {8 / 255: "8/255", 2 / 255: "2/255", 128 / 255: "128/255", 0.15: "0.15",
                     0.2: "0.2", 0.0375: "0.0375"}  # fmt: skip
    assert all(parse_pixels(text) == value for value, text in shown.items())
