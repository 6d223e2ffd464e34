"""``data.reviewed``: the review columns decide which synthetic rows are used (accepted only by default)."""

from __future__ import annotations

from dermdiff_lora.data.reviewed import filter_reviewed, review_state


def test_without_review_columns_every_row_is_kept():
    rows = [{"file_name": "a.png"}, {"file_name": "b.png"}]
    assert filter_reviewed(rows) == (rows, None)


def test_accepted_only_unless_unreviewed_are_included_and_rejected_never(caplog):
    rows = [{"f": "a", "review": "accepted", "review_rule": "all"}, {"f": "b", "review": "rejected", "review_rule": "all"},
            {"f": "c", "review": "", "review_rule": "all"}, {"f": "d", "review": " Accepted ", "review_rule": "all"}]
    kept, summary = filter_reviewed(rows, where="reb")
    assert [r["f"] for r in kept] == ["a", "d"]
    assert summary["counts"] == {"accepted": 2, "rejected": 1, "unreviewed": 1} and summary["rule"] == "all"
    assert "reb: clinician review found: using 2 accepted" in caplog.text
    kept, summary = filter_reviewed(rows, include_unreviewed=True)
    assert [r["f"] for r in kept] == ["a", "c", "d"] and summary["n_used"] == 3
    assert review_state({"review": "maybe"}) == "unreviewed"


def test_items_are_filtered_through_their_row():
    items = [("x", {"review": "accepted"}), ("y", {"review": "rejected"})]
    kept, _ = filter_reviewed(items, row=lambda item: item[1])
    assert kept == [items[0]]
