"""Where training rows come from: an imagefolder, a metadata file with image folders apart, a preset's
download, or a ``datasets`` dataset (``hubdata``). Each becomes a ``tables.Table``; nothing is written.

``data.metadata`` and ``data.images`` are relative to ``data.dir`` when it is set. Images named by a bare
stem (ISIC's ``image_name``) are found with any common image suffix; with several image folders the first
that holds the file wins.
"""

from __future__ import annotations

from pathlib import Path

from ..core.config import FITZPATRICK_GROUPS
from ..core.errors import DataError
from . import presets
from .duplicates import read_known_list
from .tables import FolderIndex, Table, check_keys, find_metadata, pick_file_column, read_table


def load_table(data_cfg) -> Table:
    """The rows of the configured source, each with its image (missing images: error or skip), only those
    of ``data.split_part`` when a ``data.split_file`` is set."""
    if data_cfg.dataset:
        from .hubdata import load_hub_table

        table = load_hub_table(data_cfg)
    elif data_cfg.preset:
        table = _from_preset(data_cfg)
    else:
        table = _from_metadata(data_cfg)
    if data_cfg.split_file:
        keep_split(table, data_cfg.split_file, data_cfg.split_part)
    return table


def keep_split(table: Table, split_file: str, part: str) -> None:
    """Keep the rows the split file puts in ``part``; a row the file does not list is an error (another
    dataset's split, or rows added since it was written)."""
    from .splits import read_split_file

    assignment = read_split_file(split_file).assignment
    unknown = [k for k in table.keys if k not in assignment]
    if unknown:
        raise DataError(f"split file {split_file} does not list {len(unknown)} row(s) of the data, e.g. "
                        f"{unknown[0]!r}: write the split for this dataset (dermdiff-lora split)")
    table.keep([assignment[k] == part for k in table.keys], f"not in the {part} split of {split_file}")
    table.origin["split"] = {"file": str(split_file), "part": part}


def resolve(base: Path | None, value: str) -> Path:
    """``value`` relative to ``base`` (data.dir) unless absolute; ``~`` expanded."""
    path = Path(value).expanduser()
    return path if path.is_absolute() or base is None else base / path


def _root(data_cfg) -> Path | None:
    return Path(data_cfg.dir).expanduser() if data_cfg.dir else None


def _from_metadata(data_cfg) -> Table:
    root = _root(data_cfg)
    if root is None and not data_cfg.metadata:
        raise DataError("data.dir is not set: point it at an imagefolder with metadata.csv/jsonl, or set "
                        "data.metadata (and data.images), data.preset or data.dataset")
    metadata = resolve(root, data_cfg.metadata) if data_cfg.metadata else find_metadata(root)
    rows = read_table(metadata)
    folders = [resolve(root, f) for f in data_cfg.images] or [root or metadata.parent]
    _check_folders(folders)
    file_col = pick_file_column(list(rows[0]), data_cfg.file_column, metadata)
    check_keys([r[file_col] for r in rows], metadata, file_col)
    table = Table(rows, [], [r[file_col] for r in rows], file_col,
                  origin={"kind": "metadata", "metadata": metadata.name, "images": [f.name for f in folders]})
    _attach_images(table, folders, "", skip=data_cfg.on_bad_image == "skip", counted=False)
    return table


def _from_preset(data_cfg) -> Table:
    preset = presets.PRESET_TABLE[data_cfg.preset]
    root = _root(data_cfg)
    given = resolve(root, data_cfg.metadata) if data_cfg.metadata else None
    base = root or given.parent  # type: ignore[union-attr]
    if root is not None and not root.is_dir():
        raise DataError(f"data.dir {root} does not exist: point it at your {preset.title} download")
    layout = presets.detect_layout(preset, base, given)
    metadata = given or base / layout.metadata
    if not metadata.is_file():
        expected = " or ".join(lay.metadata for lay in preset.layouts)
        raise DataError(f"{base} has no {expected}: is data.dir the {preset.title} download "
                        f"(data.preset={preset.name})? Or name the file with data.metadata")
    rows = read_table(metadata)
    malignancy_column = preset.malignancy_column_in(list(rows[0]))
    _check_preset_columns(preset, list(rows[0]), metadata, malignancy_column)
    check_keys([r[preset.file_column] for r in rows], metadata, preset.file_column)
    mapping = preset.mapping(data_cfg)
    table = Table(rows, [], [r[preset.file_column] for r in rows], preset.file_column,
                  origin={"kind": "preset", **preset.describe(mapping, malignancy_column), "layout": layout.name,
                          "metadata": metadata.name, **{key: getattr(data_cfg, key) for key in preset.choices.values()}})
    _canonical(table, preset, data_cfg, mapping, malignancy_column)
    if preset.synthetic_column:
        table.keep(["synthetic" not in r.get(preset.synthetic_column, "").lower() for r in table.rows],
                   f"synthetic image ({preset.synthetic_column}): never used as a real one")
    if layout.duplicates and (base / layout.duplicates).is_file():
        _drop_duplicates(table, base / layout.duplicates)
    folders = [resolve(root, f) for f in data_cfg.images] or [base / f for f in layout.images]
    folders = [f for f in folders if f.is_dir()] or folders[:1]
    table.origin["images"] = [f.relative_to(base).as_posix() if f.is_relative_to(base) else f.name
                              for f in folders]
    skip = preset.missing_images == "skip" or data_cfg.on_bad_image == "skip"
    _attach_images(table, folders, preset.file_suffix, skip=skip, counted=preset.missing_images == "skip")
    return table


def _check_preset_columns(preset: presets.Preset, columns: list[str], metadata: Path, malignancy_column: str) -> None:
    needed = [preset.file_column, malignancy_column] + ([preset.tone_column] if preset.tone_column else [])
    missing = [c for c in dict.fromkeys(needed) if c not in columns]
    if missing:
        raise DataError(f"{metadata}: column(s) {', '.join(missing)} of the {preset.title} metadata not found "
                        f"(available: {', '.join(columns)}); is data.preset={preset.name} the right preset?")


def _canonical(table: Table, preset: presets.Preset, data_cfg, mapping: dict[str, str], column: str) -> None:
    """Add benign_malignant (``column`` read through ``mapping``), the tone group (from the Fitzpatrick
    column) and ``fitzpatrick`` to each row."""
    groups = {**FITZPATRICK_GROUPS, **data_cfg.fitzpatrick_groups}
    for row in table.rows:
        raw_class = row.get(column, "")
        row["benign_malignant"] = mapping.get(raw_class.lower(), "")
        if preset.tone_column:
            raw_tone = row.get(preset.tone_column, "")
            row["fitzpatrick"] = raw_tone
            row[data_cfg.tone_column] = presets.tone_group(raw_tone, groups)
    if preset.tone_column:
        table.origin["tone_given_by"] = (f"Fitzpatrick type ({preset.tone_column}) mapped by "
                                         "data.fitzpatrick_groups: " + presets.describe_groups(groups))


def _drop_duplicates(table: Table, path: Path) -> None:
    """Drop the second image of every pair listed in ISIC 2020's duplicates file."""
    dupes = {p.id_b for p in read_known_list(path)}
    table.keep([k not in dupes for k in table.keys], f"duplicate image (listed in {path.name})")


def _check_folders(folders: list[Path]) -> None:
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise DataError(f"image folder(s) {', '.join(missing)} do not exist (check data.dir / data.images)")


def _attach_images(table: Table, folders: list[Path], suffix: str, *, skip: bool, counted: bool) -> None:
    """Find every row's image; missing ones raise, or are dropped (``counted``: under left_out, else
    listed in ``table.missing`` like unreadable images)."""
    index = FolderIndex(folders)
    found = [index.find(key, suffix) for key in table.keys]
    missing = [k for k, p in zip(table.keys, found) if p is None]
    if missing and not skip:
        listed = table.origin.get("metadata", "the metadata")
        raise DataError(f"image {folders[0] / missing[0]} not found: {len(missing)} of {len(found)} image(s) "
                        f"listed in {listed} are not in {', '.join(map(str, folders))} (first: "
                        f"{', '.join(missing[:3])}); fix the {table.file_column!r} column, data.images, or set "
                        "data.on_bad_image=skip to skip them")
    if not counted:
        table.missing.update({k: f"image {folders[0] / k} not found" for k in missing})
    table.images = found  # type: ignore[assignment]
    table.keep([p is not None for p in found], "image not downloaded" if counted else None)
    if not table.rows:
        raise DataError(f"no image listed in {table.origin.get('metadata', 'the metadata')} was found in "
                        f"{', '.join(map(str, folders))}: check data.dir / data.images")
