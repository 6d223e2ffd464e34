"""Row-sharded safetensors files: every process writes the rows it encoded, every process reads rows mapped.

A store is a folder of files ``rows-<start>-<stop>.safetensors``, each holding the same tensor names with
rows ``[start, stop)`` of the whole (first dimension). A shard is written chunk by chunk at its final offsets
(no process ever holds a whole shard), then renamed into place: a file either is complete or is absent.
``Rows`` reads one row at a time with positional reads: the files stay in the OS page cache, one copy per
machine that every process and DataLoader worker shares, and no process holds more than the rows it reads.
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
    """The fewest shards that hold rows ``[0, n)`` end to end (shards left by runs with other process
    counts may overlap), or None while some rows are missing."""
    chains: dict[int, list[tuple[int, int, Path]]] = {0: []}
    for start, stop, path in shards(folder):  # by start: every chain ending at ``start`` is known by now
        if start in chains and stop <= n and (stop not in chains or len(chains[start]) + 1 < len(chains[stop])):
            chains[stop] = [*chains[start], (start, stop, path)]
    return chains.get(n) if n > 0 else None


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
    """Rows ``[0, n)`` of a store, read one row (or part of one) at a time with positional reads.

    Only the bytes asked for are copied into this process; the files' pages stay in the OS page cache,
    one copy per machine shared by every process and DataLoader worker, and never count in a process's
    resident memory. (A memory map would: each row read stays resident in every process that read it, up
    to the whole cache per process after one epoch; measured in tests/data/test_cache_shards.py.)
    Picklable: each process opens the files itself.
    """

    def __init__(self, folder: Path, n: int):
        self.folder, self.n = Path(folder), n
        chain = cover(self.folder, n)
        if chain is None:
            raise DataError(f"cache {self.folder} does not hold all {n} rows; delete it to rebuild it")
        self.starts = [s for s, _, _ in chain]
        self.paths = [p for _, _, p in chain]
        self.headers = [self._header(path, stop - start) for start, stop, path in chain]
        self.shapes = {name: (n, *entry["shape"][1:]) for name, entry in self.headers[0].items()
                       if name != "__metadata__"}
        self._files: list | None = None
        self._pid: int | None = None

    def _header(self, path: Path, rows: int) -> dict:
        """The safetensors header of ``path`` with absolute offsets; DataError if it does not match."""
        try:
            with open(path, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length)) if length < 1 << 26 else None
            size = path.stat().st_size
            ok = isinstance(header, dict) and all(
                e["shape"][0] == rows and e["dtype"] in _DTYPES.values() and 8 + length + e["data_offsets"][1] <= size
                for k, e in header.items() if k != "__metadata__")
        except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error):
            ok = False
        if not ok:
            raise DataError(f"cache file {path} is unreadable or incomplete; delete {self.folder} to rebuild it")
        for name, entry in header.items():
            if name != "__metadata__":
                entry["at"] = 8 + length + entry["data_offsets"][0]
        return header

    def _open(self) -> list:
        if self._files is None or self._pid != os.getpid():
            self._files = [open(path, "rb") for path in self.paths]  # noqa: SIM115 - kept for the run
            self._pid = os.getpid()
        return self._files

    def get(self, name: str, row: int, *index: int):
        """Row ``row`` of tensor ``name`` (``index`` picks inside the row), as a new tensor."""
        import torch

        if not 0 <= row < self.n:
            raise IndexError(f"row {row} of {self.n}")
        shard = bisect.bisect_right(self.starts, row) - 1
        entry = self.headers[shard][name]
        dtype = _torch_dtype(entry["dtype"])
        row_shape = entry["shape"][1:]
        inner = row_shape[len(index):]
        position = row - self.starts[shard]
        for i, size in zip(index, row_shape):
            if not 0 <= i < size:
                raise IndexError(f"index {index} of a row shaped {row_shape}")
            position = position * size + i
        count = _prod(tuple(inner))
        width = torch.empty((), dtype=dtype).element_size()
        data = _pread(self._open()[shard], count * width, entry["at"] + position * count * width)
        return torch.frombuffer(bytearray(data), dtype=dtype).reshape(inner)

    def read(self, name: str):
        """The whole tensor ``name`` in memory (tests and small tables only)."""
        import torch

        return torch.stack([self.get(name, row) for row in range(self.n)])

    def metadata(self) -> dict:
        return self.headers[0].get("__metadata__", {})

    def __len__(self) -> int:
        return self.n

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": None, "_pid": None}


def _torch_dtype(name: str):
    import torch

    return next(getattr(torch, k) for k, v in _DTYPES.items() if v == name)


def _pread(f, size: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        data = os.pread(f.fileno(), size, offset)
    else:  # Windows: no pread; one file object per process, so seek + read is safe
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise DataError(f"cache file {f.name} is truncated; delete its folder to rebuild it")
    return data
