"""Row-sharded safetensors files: every process writes the rows it encoded, every process reads rows mapped.

A store is a folder of files ``rows-<start>-<stop>.safetensors``, each holding the same tensor names with
rows ``[start, stop)`` of the whole (first dimension). A shard is written chunk by chunk at its final offsets
(no process ever holds a whole shard), then renamed into place: a file either is complete or is absent.
``Rows`` reads one row at a time through ``safe_open``, a memory map: only the pages of the rows read come
into memory, as page cache that every process and DataLoader worker on the machine shares.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..core import killpoints
from ..core.errors import DataError
from ..core.fsutil import atomic_path

_NAME = re.compile(r"^rows-(\d+)-(\d+)\.safetensors$")
_DTYPES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64", "int64": "I64",
           "int32": "I32", "uint8": "U8"}


def shard_name(start: int, stop: int) -> str:
    return f"rows-{start:09d}-{stop:09d}.safetensors"


def split_chunks(chunks: list[tuple[int, int]], processes: int, index: int) -> list[tuple[int, int]]:
    """Process ``index``'s contiguous run of whole chunks (empty when there are fewer chunks than processes)."""
    n = len(chunks)
    return chunks[index * n // processes:(index + 1) * n // processes]


def shards(folder: Path) -> list[tuple[int, int, Path]]:
    """The complete shard files in ``folder`` as ``(start, stop, path)``, sorted."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), int(m.group(2)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def cover(folder: Path, n: int) -> list[tuple[int, int, Path]] | None:
    """Shards that together hold rows ``[0, n)`` exactly once (each the longest starting where the last one
    stopped), or None while some rows are missing."""
    by_start: dict[int, tuple[int, int, Path]] = {}
    for start, stop, path in shards(folder):
        if stop > by_start.get(start, (0, -1))[1]:
            by_start[start] = (start, stop, path)
    chain, at = [], 0
    while at < n:
        if at not in by_start:
            return None
        chain.append(by_start[at])
        at = by_start[at][1]
    return chain if at == n else None


def write_shard(path: Path, start: int, stop: int, chunks: Iterable[tuple[int, dict]],
                metadata: dict | None = None) -> Path:
    """Write rows ``[start, stop)`` from ``chunks`` — ``(first row, {name: tensor [k, ...]})`` in any order,
    together covering the range — into one safetensors file, each chunk at its offset as it comes."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        layout: dict[str, Any] | None = None
        written = 0
        for row, tensors in chunks:
            if layout is None:
                layout = _start_file(f, tensors, stop - start, metadata or {})
            for name, tensor in tensors.items():
                entry = layout[name]
                if tuple(tensor.shape[1:]) != entry["row_shape"] or not start <= row <= stop - len(tensor):
                    raise DataError(f"{path.name}: rows {row}..{row + len(tensor)} of {name} "
                                    f"{tuple(tensor.shape)} do not fit rows [{start}, {stop}) of {entry['row_shape']}")
                f.seek(entry["at"] + (row - start) * entry["row_bytes"])
                f.write(_bytes(tensor))
            written += len(next(iter(tensors.values())))
        if layout is None or written != stop - start:
            raise DataError(f"{path.name}: {written} rows written of {stop - start}")
        killpoints.reached("cache.writing")  # the shard is complete under its temporary name
    return path


def _bytes(tensor) -> Any:
    import torch

    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()  # bf16 included


def _start_file(f, tensors: dict, rows: int, metadata: dict) -> dict[str, Any]:
    """Write the header for ``rows`` rows shaped like ``tensors``' rows; size the file. The layout by name."""
    header: dict[str, Any] = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    layout, offset = {}, 0
    for name, tensor in tensors.items():
        row_shape = tuple(tensor.shape[1:])
        row_bytes = tensor.element_size() * int(_prod(row_shape))
        dtype = _DTYPES[str(tensor.dtype).removeprefix("torch.")]
        header[name] = {"dtype": dtype, "shape": [rows, *row_shape], "data_offsets": [offset, offset + rows * row_bytes]}
        layout[name] = {"row_shape": row_shape, "row_bytes": row_bytes, "at": offset}
        offset += rows * row_bytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    f.write(struct.pack("<Q", len(raw)) + raw)
    base = 8 + len(raw)
    for entry in layout.values():
        entry["at"] += base
    f.truncate(base + offset)
    return layout


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


class Rows:
    """Rows ``[0, n)`` of a store, read memory-mapped one row (or part of one) at a time.

    Picklable: the files are (re)opened in each process that reads, so DataLoader workers share the
    mapped pages instead of copies.
    """

    def __init__(self, folder: Path, n: int):
        self.folder, self.n = Path(folder), n
        chain = cover(self.folder, n)
        if chain is None:
            raise DataError(f"cache {self.folder} does not hold all {n} rows; delete it to rebuild it")
        self.starts = [s for s, _, _ in chain]
        self.paths = [p for _, _, p in chain]
        self._handles: list | None = None
        self._pid: int | None = None
        self.shapes = self._check()

    def _open(self) -> list:
        if self._handles is None or self._pid != os.getpid():
            from safetensors import safe_open

            handles = []
            for path in self.paths:
                try:
                    handles.append(safe_open(str(path), framework="pt"))
                except Exception as exc:  # safetensors raises its own types for truncated files
                    raise DataError(f"cache file {path} is unreadable ({exc}); delete {self.folder} to "
                                    "rebuild it") from None
            self._handles, self._pid = handles, os.getpid()
        return self._handles

    def _check(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        for handle, path, start, stop in zip(self._open(), self.paths, self.starts, [*self.starts[1:], self.n]):
            for name in handle.keys():
                shape = tuple(handle.get_slice(name).get_shape())
                if shape[0] != stop - start or shapes.setdefault(name, shape[1:]) != shape[1:]:
                    raise DataError(f"cache file {path}: {name} has shape {shape}, expected rows "
                                    f"[{start}, {stop}) of {shapes[name]}; delete {self.folder} to rebuild it")
        return {name: (self.n, *row) for name, row in shapes.items()}

    def get(self, name: str, row: int, *index: int):
        """Row ``row`` of tensor ``name`` (``index`` picks inside the row), as a new tensor."""
        if not 0 <= row < self.n:
            raise IndexError(f"row {row} of {self.n}")
        shard = bisect.bisect_right(self.starts, row) - 1
        return self._open()[shard].get_slice(name)[(row - self.starts[shard], *index)]

    def read(self, name: str):
        """The whole tensor ``name`` in memory (tests and small tables only)."""
        import torch

        return torch.cat([h.get_tensor(name) for h in self._open()])

    def metadata(self) -> dict:
        return self._open()[0].metadata() or {}

    def __len__(self) -> int:
        return self.n

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": None, "_pid": None}
