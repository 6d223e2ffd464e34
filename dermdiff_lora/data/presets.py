"""Presets for public dermatology datasets: file layout, classes, benign/malignant mapping, tone, terms.

Each preset reads the dataset as its download looks (metadata file and image folders under ``data.dir``)
and adds the package's canonical columns to every row: ``benign_malignant`` (the dataset's own classes
mapped as documented below, for the paper's template), the tone group (``data.tone_column``) from the
dataset's Fitzpatrick column where it has one, and ``fitzpatrick`` (that column's raw value). Fitzpatrick
type (a questionnaire about burning and tanning) and ITA (a colour measurement) are different measures:
a preset maps types to the paper's groups only through ``data.fitzpatrick_groups`` (default I-II lighter,
III-IV brown, V-VI darker); an unknown type is left to the ITA audit (``data.unknown_tone``).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.config import PRESETS
from ..core.prompts import normalize_value

ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4, "V": 5, "VI": 6}


@dataclass(frozen=True)
class Licence:
    """The dataset's terms; ``per_image`` names a column holding each image's own licence."""

    name: str
    url: str
    non_commercial: bool
    citation: str
    per_image: str | None = None
    attribution: str | None = None


@dataclass(frozen=True)
class Layout:
    """One way the download can look: the metadata file and the image folders, relative to data.dir."""

    name: str
    metadata: str
    images: tuple[str, ...]
    duplicates: str | None = None  # a CSV whose image_name_2 column lists duplicates to drop


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    layouts: tuple[Layout, ...]
    file_column: str
    file_suffix: str  # appended to the file value ("" when the value has one)
    classes_column: str  # the dataset's own diagnosis classes
    malignancy_column: str  # the column the benign/malignant mapping reads
    malignancy: dict[str, str]  # lower-cased value -> benign | malignant ("" = neither: row left out)
    licence: Licence
    split_column: str | None  # patient (or lesion) id: keep it on one side of any split
    class_words: dict[str, str] = field(default_factory=dict)  # prompt words for classes_column
    tone_column: str | None = None  # Fitzpatrick type column
    missing_images: str = "error"  # "skip": images are not distributed (counted when absent)
    synthetic_column: str | None = None  # rows whose value says "synthetic" are never used as real
    malignancy_aliases: tuple[str, ...] = ()  # the malignancy column's name in older releases of the metadata
    choices: dict[str, str] = field(default_factory=dict)  # class value -> data.* setting: benign or leave_out
    notes: dict[str, str] = field(default_factory=dict)  # class value -> why its mapping is a choice

    def mapping(self, data_cfg) -> dict[str, str]:
        """The benign/malignant mapping a run uses: the preset's, with its settable classes as configured."""
        settings = {value: getattr(data_cfg, key) for value, key in self.choices.items()}
        return {**self.malignancy, **{v: "benign" if how == "benign" else "" for v, how in settings.items()}}

    def describe(self, mapping: dict[str, str] | None = None, column: str | None = None) -> dict:
        mapping = self.malignancy if mapping is None else mapping
        words = [f"{k} -> {v or 'left out'}" + (f" ({self.notes[k]})" if k in self.notes else "")
                 + (f" (data.{self.choices[k]})" if k in self.choices else "") for k, v in mapping.items()]
        return {"preset": self.name, "title": self.title, "classes_column": self.classes_column,
                "malignancy": f"{column or self.malignancy_column}: " + ", ".join(words),
                "fitzpatrick_column": self.tone_column, "split_column": self.split_column}

    def malignancy_column_in(self, columns: list[str]) -> str:
        """The malignancy column these metadata use: the current name, else an older one present."""
        return next((c for c in (self.malignancy_column, *self.malignancy_aliases) if c in columns),
                    self.malignancy_column)


PAD_PARTS = tuple(f"{top}imgs_part_{n}{inner}" for top in ("images/", "") for n in (1, 2, 3)
                  for inner in ("", f"/imgs_part_{n}"))
ISIC_ATTRIBUTION = "International Skin Imaging Collaboration (ISIC), https://www.isic-archive.com"
_P = [
    Preset("isic_archive", "ISIC Archive (isic-cli download)",
           (Layout("isic-cli", "metadata.csv", (".",)),), "isic_id", ".jpg", "diagnosis_3", "diagnosis_1",
           {"benign": "benign", "malignant": "malignant", "indeterminate": ""},
           Licence("per image: CC-0, CC-BY or CC-BY-NC (column copyright_license)",
                   "https://www.isic-archive.com", False, ISIC_ATTRIBUTION, "copyright_license", "attribution"),
           "patient_id", tone_column="fitzpatrick_skin_type", synthetic_column="image_manipulation"),
    Preset("isic2020", "SIIM-ISIC Melanoma Classification 2020 (training set)",
           (Layout("challenge", "train.csv", ("jpeg/train",)),
            Layout("archive-v2", "ISIC_2020_Training_GroundTruth_v2.csv",
                   ("ISIC_2020_Training_JPEG/train", "ISIC_2020_Training_JPEG", "train"),
                   "ISIC_2020_Training_Duplicates.csv"),
            Layout("archive", "ISIC_2020_Training_GroundTruth.csv",
                   ("ISIC_2020_Training_JPEG/train", "ISIC_2020_Training_JPEG", "train"),
                   "ISIC_2020_Training_Duplicates.csv")),
           "image_name", ".jpg", "diagnosis", "benign_malignant", {"benign": "benign", "malignant": "malignant"},
           Licence("CC BY-NC 4.0", "https://challenge2020.isic-archive.com", True,
                   "Rotemberg V. et al., A patient-centric dataset of images and metadata for identifying "
                   "melanomas using clinical context, Sci Data 8, 34 (2021); " + ISIC_ATTRIBUTION),
           "patient_id"),
    # Dataverse serves HAM10000_metadata.tab (its tab-separated ingest, with a `dataset` column) and
    # HAM10000_images_part1.zip / part2.zip of flat JPEGs (unpacked into folders of those names, or straight
    # into data.dir); the Kaggle mirror has HAM10000_metadata.csv and HAM10000_images_part_1/, _part_2/.
    Preset("ham10000", "HAM10000",
           tuple(Layout(name, metadata, ("HAM10000_images_part1", "HAM10000_images_part2", "HAM10000_images_part_1",
                                         "HAM10000_images_part_2", "ham10000_images_part_1", "ham10000_images_part_2",
                                         "HAM10000_images", "."))
                 for name, metadata in (("dataverse", "HAM10000_metadata.tab"), ("kaggle", "HAM10000_metadata.csv"))),
           "image_id", ".jpg", "dx", "dx",
           {"mel": "malignant", "bcc": "malignant", "akiec": "malignant",
            "nv": "benign", "bkl": "benign", "df": "benign", "vasc": "benign"},
           Licence("CC BY-NC 4.0", "https://doi.org/10.7910/DVN/DBW86T", True,
                   "Tschandl P., Rosendahl C., Kittler H., The HAM10000 dataset, Sci Data 5, 180161 (2018)"),
           "lesion_id",
           {"akiec": "actinic keratosis", "bcc": "basal cell carcinoma", "bkl": "benign keratosis",
            "df": "dermatofibroma", "mel": "melanoma", "nv": "melanocytic nevus", "vasc": "vascular lesion"},
           notes={"akiec": "a choice: actinic keratoses and intraepithelial carcinoma (Bowen's disease), "
                           "pre-malignant or in situ"}),
    Preset("fitzpatrick17k", "Fitzpatrick17k",
           (Layout("github", "fitzpatrick17k.csv", ("images", ".")),), "md5hash", ".jpg", "label",
           "three_partition_label", {"malignant": "malignant", "benign": "benign", "non-neoplastic": "benign"},
           Licence("annotations CC BY-NC-SA 3.0; images belong to their source atlases (DermaAmin, Atlas "
                   "Dermatologico)", "https://github.com/mattgroh/fitzpatrick17k", True,
                   "Groh M. et al., Evaluating deep neural networks trained on clinical images in dermatology "
                   "with the Fitzpatrick 17k dataset, CVPR Workshops (2021)"),
           None, tone_column="fitzpatrick_scale", missing_images="skip",
           choices={"non-neoplastic": "non_neoplastic"},  # mostly inflammatory conditions, not benign neoplasms
           notes={"non-neoplastic": "mostly inflammatory conditions, not benign neoplasms"}),
    Preset("ddi", "Diverse Dermatology Images (DDI)",
           (Layout("aimi", "ddi_metadata.csv", ("images", ".")),), "DDI_file", "", "disease", "malignant",
           {"true": "malignant", "false": "benign", "1": "malignant", "0": "benign"},
           Licence("Stanford AIMI research use agreement (non-commercial research, no redistribution)",
                   "https://ddi-dataset.github.io", True,
                   "Daneshjou R. et al., Disparities in dermatology AI performance on a diverse, curated "
                   "clinical image set, Sci Adv 8, eabq6147 (2022)"),
           "DDI_ID", tone_column="skin_tone", malignancy_aliases=("malignancy(malig=1)",)),
    Preset("pad_ufes_20", "PAD-UFES-20",
           # images/imgs_part_{1,2,3}.zip unpacked in place, or a mirror's imgs_part_N/imgs_part_N/*.png
           (Layout("mendeley", "metadata.csv", ("images", *PAD_PARTS)),),
           "img_id", "", "diagnostic", "diagnostic",
           {"bcc": "malignant", "mel": "malignant", "scc": "malignant",
            "ack": "benign", "nev": "benign", "sek": "benign"},
           Licence("CC BY 4.0", "https://doi.org/10.17632/zr7vgbcyr2.1", False,
                   "Pacheco A. G. C. et al., PAD-UFES-20: a skin lesion dataset composed of patient data and "
                   "clinical images collected from smartphones, Data in Brief 32, 106221 (2020)"),
           "patient_id",
           {"ACK": "actinic keratosis", "BCC": "basal cell carcinoma", "MEL": "melanoma",
            "NEV": "nevus", "SCC": "squamous cell carcinoma", "SEK": "seborrheic keratosis"},
           tone_column="fitspatrick"),
]
PRESET_TABLE: dict[str, Preset] = {p.name: p for p in _P}
assert tuple(PRESET_TABLE) == PRESETS, "core.config.PRESETS and the preset table must list the same names"


def fitzpatrick_types(raw: str) -> tuple[int, ...]:
    """The Fitzpatrick types a value names: ``"IV"`` → (4,), ``"3"`` → (3,), DDI's ``"56"`` → (5, 6);
    unknown (``""``, ``-1``, anything else) → ()."""
    text = normalize_value(raw).upper().removeprefix("TYPE ").strip()
    if text in ROMAN:
        return (ROMAN[text],)
    if text.isdigit() and all(c in "123456" for c in text) and len(set(text)) == len(text):
        return tuple(int(c) for c in text)
    return ()


def tone_group(raw: str, groups: dict[str, str]) -> str:
    """The tone group of a Fitzpatrick value under ``groups`` (type → group); ``""`` when unknown or when
    its types fall in different groups."""
    found = {groups[str(t)] for t in fitzpatrick_types(raw)}
    return found.pop() if len(found) == 1 else ""


def describe_groups(groups: dict[str, str]) -> str:
    """``"I-II lighter, III-IV brown, V-VI darker"`` for a type → group map (runs of one group joined)."""
    names = list(ROMAN)
    runs: list[list] = []
    for t in range(1, 7):
        group = groups[str(t)]
        if runs and runs[-1][2] == group and runs[-1][1] == t - 1:
            runs[-1][1] = t
        else:
            runs.append([t, t, group])
    return ", ".join((names[a - 1] if a == b else f"{names[a - 1]}-{names[b - 1]}") + f" {g}" for a, b, g in runs)


def detect_layout(preset: Preset, root: Path, metadata: Path | None) -> Layout:
    """The layout whose metadata file is ``metadata`` (by name) or exists under ``root``; else the first."""
    if metadata is not None:
        return next((lay for lay in preset.layouts if Path(lay.metadata).name == metadata.name), preset.layouts[0])
    return next((lay for lay in preset.layouts if (root / lay.metadata).is_file()), preset.layouts[0])


def licence_summary(preset: Preset, rows: list[dict[str, str]]) -> dict:
    """The terms that bind a model trained on ``rows``: the dataset's, or per image with counts and
    attributions; ``non_commercial`` is true when any image's licence is non-commercial."""
    info = {k: v for k, v in asdict(preset.licence).items() if v is not None}
    info["dataset"] = preset.title
    if preset.licence.per_image:
        counts = Counter(r.get(preset.licence.per_image) or "unknown" for r in rows)
        info["per_image"] = dict(counts.most_common())
        info["non_commercial"] = any(re.search(r"\bNC\b", name.upper().replace("-", " ")) for name in counts)
        if preset.licence.attribution:
            info["attributions"] = dict(Counter(r.get(preset.licence.attribution) or "unknown"
                                                for r in rows).most_common())
    return info
