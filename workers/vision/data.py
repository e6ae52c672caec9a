"""The images a vision run reads: the manifest a check wrote (``workers.images``), the archive's images
decoded and resized, and the dataset's summary the strategies decide on."""

import json
from dataclasses import dataclass, field
from pathlib import Path

from workers.containers import Limits, archive_kind, archive_read
from workers.images import split_indexes

# The archive passed its check (``workers.images``) before any run reads it; these bound a re-read only.
READ_LIMITS = Limits(max_archive_entries=10_000_000)


@dataclass(frozen=True)
class DatasetSummary:
    """What a strategy may look at before training: the classes (sorted), images per class, whether the
    dataset has its own train/validation split, and the median of the images' shorter sides (0: unknown)."""

    classes: tuple[str, ...]
    counts: dict = field(default_factory=dict)
    has_split: bool = False
    image_side: int = 0

    @property
    def images(self) -> int:
        return sum(self.counts.values())


def summary_from_manifest(rows: list[dict], *, image_side: int = 0) -> DatasetSummary:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["label"]] = counts.get(row["label"], 0) + 1
    return DatasetSummary(
        classes=tuple(sorted(counts)),
        counts=dict(sorted(counts.items())),
        has_split=any("split" in row for row in rows),
        image_side=image_side,
    )


def summary_from_stats(stats: dict) -> DatasetSummary:
    """From a vision dataset's statistics (``ImageResult.stats``): no image is read."""
    counts = {item["label"]: item["count"] for item in stats.get("classes", [])}
    sides = [value for value in (stats.get("width", {}).get("median"), stats.get("height", {}).get("median")) if value]
    return DatasetSummary(
        classes=tuple(sorted(counts)),
        counts=dict(sorted(counts.items())),
        has_split="split" in stats,
        image_side=min(sides) if sides else 0,
    )


def manifest_read(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return manifest_rows(handle)


def manifest_rows(lines) -> list[dict]:
    """The manifest's rows from its lines (text or bytes, e.g. a file open in storage)."""
    return [json.loads(line) for line in lines if line.strip()]


def images_load(archive_path: str, archive_name: str, names: list[str], size: int):
    """The images ``names`` of the archive, each converted to RGB and resized to ``size`` × ``size``, as one
    uint8 tensor (N × 3 × size × size) in the order of ``names``. The archive is read once, as a stream."""
    import io

    import numpy as np
    import torch
    from PIL import Image

    wanted = {name: index for index, name in enumerate(names)}
    pixels = np.zeros((len(names), size, size, 3), dtype=np.uint8)
    found = set()
    with open(archive_path, "rb") as handle:
        kind = archive_kind(archive_name, handle.read(512))
    for entry, stream in archive_read(Path(archive_path), kind, READ_LIMITS, lambda member: member in wanted):
        with Image.open(io.BytesIO(stream.read())) as image:
            pixels[wanted[entry.name]] = np.asarray(image_prepare(image, size))
        found.add(entry.name)
    missing = [name for name in names if name not in found]
    if missing:
        raise FileNotFoundError(f"{len(missing)} images of the manifest are not in {archive_name}, e.g. {missing[0]}")
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()


def image_prepare(image, size: int):
    """One image as the network sees it: RGB, resized (squashed) to ``size`` × ``size``."""
    from PIL import Image

    return image.convert("RGB").resize((size, size), Image.BILINEAR)


def split_rows(rows: list[dict], *, share: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) indexes: the manifest's own split when it has one, else each class gives
    ``share`` of its images to validation (``workers.images.split_indexes``, seeded)."""
    if any("split" in row for row in rows):
        validation = {i for i, row in enumerate(rows) if row.get("split") == "validation"}
    else:
        validation = split_indexes([row["label"] for row in rows], share, seed) if share else set()
    return [i for i in range(len(rows)) if i not in validation], sorted(validation)
