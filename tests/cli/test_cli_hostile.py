"""Property tests: whatever overrides, YAML or metadata rows a user gives, the CLI answers with one line
(exit 1) or goes on; no traceback escapes without --debug, and main() catches only the package's errors."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dermdiff_lora.cli import app
from dermdiff_lora.core import config
from dermdiff_lora.core.errors import ConfigError, DermDiffError


def _keys() -> list[str]:
    cfg = config.Config()
    return [f"{s.name}.{f.name}" for s in dataclasses.fields(cfg) for f in dataclasses.fields(getattr(cfg, s.name))]


KEYS = _keys()
VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["[", "]", "{a: [", "!!python/object:os.system", "1e999", "-1", "nan", ".inf", "null", "~",
                     "[1, 2]", "{a: 1}", "yes", "off", "0x10", "'", '"', ": :", "- a\n- b", "\t", "&a *a"]),
    st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True).map(str),
)
OVERRIDE = st.one_of(
    st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.tuples(st.text(max_size=15), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=20),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OVERRIDE, max_size=4))
def test_any_overrides_give_a_config_or_one_config_error(overrides):
    try:
        config.load(None, overrides)
    except ConfigError as exc:
        assert str(exc).strip()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=200), st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=10).map(lambda obj: __import__("yaml").safe_dump(obj))))
def test_any_yaml_file_gives_a_config_or_one_config_error(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    try:
        config.load(path, [])
    except ConfigError as exc:
        assert str(path) in str(exc) or "config error" in str(exc)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(OVERRIDE, min_size=1, max_size=3))
def test_cli_train_prints_one_line_for_bad_overrides(monkeypatch, capsys, overrides):
    from dermdiff_lora.training import train

    monkeypatch.setattr(train, "train", lambda cfg: {"validated": True})  # stop after validation
    capsys.readouterr()  # each example reads only its own output
    overrides = [o for o in overrides if not o.startswith("-")] or ["x"]  # "-x" is an option: argparse's usage
    code = app.main(["train", "demo", *overrides])
    err = capsys.readouterr().err
    assert code in (0, 1)
    if code == 1:
        assert err.startswith("error:") and "Traceback" not in err


def test_main_catches_only_the_packages_errors(monkeypatch, capsys):
    """A bug is a traceback (so it gets reported); a user error is one line; Ctrl-C exits 130."""
    def bug(args):
        raise RuntimeError("a bug, not a user error")

    monkeypatch.setattr(app, "cmd_train", bug)
    with pytest.raises(RuntimeError):
        app.main(["train", "demo"])

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(app, "cmd_train", interrupted)
    assert app.main(["train", "demo"]) == 130
    assert issubclass(ConfigError, DermDiffError)


CELL = st.one_of(st.text(max_size=12), st.sampled_from(["", " ", "../x.png", "/abs.png", "a.png", "ISIC_1",
                                                         "benign", "malignant", "0", "2", "nan", "\x00", '"']))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.fixed_dictionaries({"image_name": CELL, "benign_malignant": CELL, "skin_tone": CELL}),
                     max_size=5),
       sep=st.sampled_from([",", ";", "\t"]), junk=st.binary(max_size=8))
def test_any_metadata_rows_index_or_give_one_data_error(tmp_path_factory, rows, sep, junk):
    """Whatever the rows (empty, odd names, bad values, stray bytes), indexing gives records or one error
    of the package's own, never a traceback from csv, PIL or pathlib."""
    import csv as csv_mod
    import io

    from PIL import Image

    from dermdiff_lora.core.prompts import from_config
    from dermdiff_lora.data.dataset import index_dataset

    folder = tmp_path_factory.mktemp("meta")
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    text = io.StringIO()
    writer = csv_mod.DictWriter(text, fieldnames=["image_name", "benign_malignant", "skin_tone"], delimiter=sep)
    writer.writeheader()
    writer.writerows(rows)
    (folder / "metadata.csv").write_bytes(text.getvalue().encode() + junk)
    cfg = config.load(None, [f"data.dir={folder}"])
    try:
        index_dataset(cfg.data, from_config(cfg.prompts))
    except DermDiffError as exc:
        assert str(exc).strip()
