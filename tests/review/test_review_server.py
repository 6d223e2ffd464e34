"""The review app through Starlette's TestClient: token, routes, storage, resume, undo, limits, blinding."""

from __future__ import annotations

import io
import json
from contextlib import ExitStack
from pathlib import Path

import pytest
from PIL import Image
from review_data import add_memorisation_csv, review_folder
from starlette.testclient import TestClient

from dermdiff_lora.core.errors import ConfigError, DataError
from dermdiff_lora.review.command import ReviewOptions, open_session
from dermdiff_lora.review.server import MAX_BODY, create_app
from dermdiff_lora.review.storage import current_answers, read_records

TOKEN = "t0ken-for-tests"


@pytest.fixture()
def folder(tmp_path):
    return review_folder(tmp_path / "rebalanced")


@pytest.fixture()
def serve(folder):
    """serve(mode, reader) -> (client, session); every session is closed (its lock released) at the end."""
    with ExitStack() as stack:
        def start(mode="qc", reader="ana", **kw):
            session = stack.enter_context(open_session(ReviewOptions(str(folder), reader, mode, **kw)))
            return TestClient(create_app(session, TOKEN), raise_server_exceptions=False), session
        yield start


def _get(client, path, **kw):
    return client.get(path, headers={"X-Review-Token": TOKEN}, **kw)


def _post(client, path, body):
    return client.post(path, content=json.dumps(body), headers={"X-Review-Token": TOKEN})


def test_every_route_needs_the_token(serve):
    client, _ = serve()
    for path in ("/", "/api/state", "/api/item/0", "/image/0", "/static/review.js", "/nope"):
        assert client.get(path).status_code == 403, path
        assert client.get(path, params={"token": "wrong"}).status_code == 403, path
    assert client.post("/api/answer/0", json={"verdict": "accept"}).status_code == 403
    page = client.get("/", params={"token": TOKEN})
    assert page.status_code == 200 and "review.js" in page.text
    for asset in ("/static/review.js", "/static/review.css"):  # shipped in the package, no CDN
        text = client.get(asset, params={"token": TOKEN}).text
        assert len(text) > 500 and "http://" not in text and "https://" not in text
    assert "https://" not in page.text and "http://" not in page.text


def test_qc_answers_are_fsynced_lines_and_a_restart_resumes(serve, folder):
    client, session = serve()
    state = _get(client, "/api/state").json()
    assert state["n"] == 12 and state["position"] == 0 and len(state["reasons"]) == 7
    assert _get(client, "/api/item/0").json()["info"]["prompt"]
    assert _post(client, "/api/answer/0", {"verdict": "accept"}).json()["position"] == 1
    answered = _post(client, "/api/answer/1", {"verdict": "reject", "reasons": ["tone", "marks"]}).json()
    assert answered["answered"] == 2 and answered["position"] == 2
    records = read_records(session.log.path)
    assert [(r["position"], r["verdict"], r["reader"]) for r in records] == [(0, "accept", "ana"), (1, "reject", "ana")]
    assert records[0]["sha256"] == session.items[0].sha256 and "time" in records[0]
    session_path = session.log.path
    with open(session_path, "a") as f:  # a kill while appending leaves half a line: it is ignored
        f.write('{"type": "answer", "position": 2, "verd')
    with open_session(ReviewOptions(str(folder), "bo", "qc")) as other:  # two readers, two files
        assert other.log.path != session_path and other.log.first_unanswered(other.n) == 0
    client.close()


def test_restart_resumes_at_the_first_unanswered_image(folder):
    opts = ReviewOptions(str(folder), "ana", "qc")
    with open_session(opts) as session:
        client = TestClient(create_app(session, TOKEN))
        for p in (0, 1, 3):
            _post(client, f"/api/answer/{p}", {"verdict": "accept"})
    with open(session.log.path, "a") as f:
        f.write('{"type": "answer", "position": 2, "verd')  # killed mid-append
    with open_session(opts) as session:
        state = TestClient(create_app(session, TOKEN)).get("/api/state", params={"token": TOKEN}).json()
        assert state["position"] == 2 and state["answered"] == 3
        session.log.answer(2, session.items[2].sha256, {"verdict": "accept", "reasons": [], "note": ""})
    assert set(current_answers(read_records(session.log.path))) == {0, 1, 2, 3}  # the cut line did not swallow it


def test_undo_is_a_record_and_withdraws_the_latest_answer(serve):
    client, session = serve()
    _post(client, "/api/answer/0", {"verdict": "accept"})
    _post(client, "/api/answer/1", {"verdict": "accept"})
    undone = _post(client, "/api/undo", {}).json()
    assert undone["undone"] == 1 and undone["position"] == 1 and undone["answered"] == 1
    assert [r["type"] for r in read_records(session.log.path)] == ["answer", "answer", "undo"]
    assert _get(client, "/api/item/1").json()["answer"] is None


def test_same_reader_twice_is_refused(serve, folder):
    serve(reader="ana")
    with pytest.raises(ConfigError, match="in use"):
        with open_session(ReviewOptions(str(folder), "ana", "qc")):
            pass


def test_bad_input_is_a_4xx_never_a_traceback(serve):
    client, _ = serve()
    cases = [({"verdict": "maybe"}, 400), ({"verdict": "reject"}, 400), ({"verdict": "reject", "reasons": ["x"]}, 400),
             ([1, 2], 400), ({"verdict": "accept", "note": "n" * 600}, 400)]
    for body, status in cases:
        r = _post(client, "/api/answer/0", body)
        assert r.status_code == status and "error" in r.json(), body
    for raw in (b"{not json", b"[" * 3000, b"\xff\xfe"):
        assert client.post("/api/answer/0", content=raw, headers={"X-Review-Token": TOKEN}).status_code == 400
    assert _post(client, "/api/answer/99", {"verdict": "accept"}).status_code == 404
    assert _get(client, "/api/item/-1").status_code == 404 and _get(client, "/image/abc").status_code == 404
    assert _get(client, "/image/..%2Fmetadata.csv").status_code == 404
    big = client.post("/api/answer/0", content=b"x" * (MAX_BODY + 1), headers={"X-Review-Token": TOKEN})
    assert big.status_code == 413
    assert _get(client, "/nearest/0").status_code == 404  # no memorisation.csv: nothing to show


def test_bad_reader_mode_and_folder_are_clear_errors(folder, tmp_path):
    with pytest.raises(ConfigError, match="reader name"):
        with open_session(ReviewOptions(str(folder), "../x", "qc")):
            pass
    with pytest.raises(DataError, match="does not exist"):
        with open_session(ReviewOptions(str(tmp_path / "none"), "ana", "qc")):
            pass


def _jpeg_header(data: bytes) -> bytes:
    """The bytes before the first scan (markers, tables, frame): everything but the pixels' entropy code."""
    return data[: data.index(b"\xff\xda")]


def test_study_mode_is_blind_except_for_pixels(serve):
    client, session = serve(mode="study", reader="cy", repeat_share=0.25)
    kinds = [it.synthetic for it in session.items]
    assert sum(kinds) == 12 + sum(it.synthetic for it in session.items if it.repeat) and any(it.repeat for it in session.items)
    state = _get(client, "/api/state").json()
    assert set(state) == {"mode", "reader", "n", "answered", "position", "diagnoses", "tones"}
    assert state["tones"] == ["lighter", "brown", "darker"]
    views, headers, images = [], [], []
    for p in range(session.n):
        views.append(_get(client, f"/api/item/{p}").json())
        r = _get(client, f"/image/{p}")
        headers.append({k: v for k, v in r.headers.items() if k != "content-length"})
        images.append(r.content)
    assert all(set(v) == {"position", "answer"} for v in views)
    assert all(h == headers[0] for h in headers)  # no header differs
    real, syn = kinds.index(False), kinds.index(True)
    assert _jpeg_header(images[real]) == _jpeg_header(images[syn])  # one encoder, one size, no metadata
    for data in images:
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "JPEG" and im.size == (384, 384)
            assert not im.getexif() and "icc_profile" not in im.info and "comment" not in im.info
    page = client.get("/", params={"token": TOKEN}).text
    assert page == client.get("/", params={"token": TOKEN}).text  # one page for every image


def test_study_answers_are_checked_and_logged_with_the_truth(serve):
    client, session = serve(mode="study", reader="cy")
    good = {"source": "synthetic", "confidence": 4, "realism": 2, "diagnosis": "malignant", "tone": "darker"}
    for bad in ({**good, "source": "fake"}, {**good, "confidence": 6}, {**good, "realism": True},
                {**good, "tone": "purple"}, {**good, "diagnosis": None}):
        assert _post(client, "/api/answer/0", bad).status_code == 400, bad
    assert _post(client, "/api/answer/0", good).status_code == 200
    rec = read_records(session.log.path)[-1]
    assert rec["synthetic"] == session.items[0].synthetic and rec["sha256"] == session.items[0].sha256
    assert _get(client, "/api/item/0").json()["answer"] == good


def test_study_order_depends_on_the_reader(folder):
    orders = {}
    for reader in ("ana", "bo", "ana"):
        with open_session(ReviewOptions(str(folder), reader, "study")) as s:
            orders.setdefault(reader, []).append([it.sha256 for it in s.items])
    assert orders["ana"][0] == orders["ana"][1] and orders["ana"][0] != orders["bo"][0]


def test_qc_shows_the_nearest_training_image_from_memorisation_csv(folder, serve):
    import csv

    rows = {Path(r["generated_file"]).name: r for r in csv.DictReader(open(add_memorisation_csv(folder)))}
    client, session = serve()
    view = _get(client, "/api/item/0").json()
    row = rows[view["info"]["file"]]
    assert view["has_nearest"] and view["info"]["nearest"] == Path(row["train_file"]).name
    assert view["info"]["cosine"] == pytest.approx(float(row["cosine"]))
    r = _get(client, "/nearest/0")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"


def test_a_host_other_than_loopback_warns(caplog):
    from dermdiff_lora.review.command import _bind

    for host, warned in (("127.0.0.1", False), ("0.0.0.0", True)):
        caplog.clear()
        sock = _bind(host, 0)
        sock.close()
        assert ("not only this machine" in caplog.text) == warned
