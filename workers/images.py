"""Check an image classification data set: an archive of class folders, or of images and a labels file.

Layouts (inside a ZIP, a tar or a .tar.gz; one common top folder, as zipping a folder makes, is ignored):

- ``<class>/<image>``: the class is the first folder of the image's path (``cats/a.jpg`` is a cat).
- ``labels.csv`` (or any one ``.csv``/``.jsonl`` at the top) with a path column (``path``, ``image``,
  ``file`` or ``filename``) and a label column (``label`` or ``class``); paths are relative to it.

``run_image_validation(config, emit) -> ImageResult`` reads the archive as a stream, one member at a
time (the archive limits of ``workers.containers`` apply: size, ratio, entry count, unsafe paths and
links refused), decodes every image with Pillow (its declared size checked against ``max_pixels``
before any pixel is decoded), and reports every problem with the member's path (and the labels
file's line): files that are not images, truncated or damaged images, images too large, a wrong
layout, a labels file missing a column, a single class, duplicates (perceptual hash) within and
across classes and, with a split, between train and validation; class balance as a warning.
It writes ``manifest.jsonl`` (``{"image", "label"[, "split"]}`` per usable image) and a few small
JPEG thumbnails per class to ``output_dir``.
"""

import io
import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from workers.containers import (
    CSV,
    JSONL,
    ContainerError,
    Limits,
    archive_entries,
    archive_kind,
    archive_read,
    size_text,
    stream_records,
)
from workers.events import Emit, ValidationProgress, emit_nothing
from workers.grouping import Groups
from workers.report import WARNING, Issue, Report

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")
LABEL_SUFFIXES = {".csv": CSV, ".jsonl": JSONL}
PATH_COLUMNS = ("path", "image", "file", "filename")
LABEL_COLUMNS = ("label", "class")
HASH_BITS = 64
MiB = 1 << 20


@dataclass(frozen=True)
class ImageConfig:
    """One check of an image archive.

    path: local path of the archive (no default).
    filename: the name it was uploaded as; decides ZIP or tar (no default).
    output_dir: where ``manifest.jsonl`` and ``thumbnails/`` are written (no default).
    limits: the archive limits (size, ratio, ``max_archive_entries``); default ``Limits()``.
    max_pixels: width × height one image may declare (a decompression bomb beyond); default 89,478,485
        (Pillow's own).
    max_image_bytes: bytes of one image file; 64 MiB.
    thumbnails_per_class: thumbnails written per class for the report; 8.
    thumbnail_size: the longer side of a thumbnail, in pixels; 64.
    duplicate_distance: differing bits (of 64) under which two images' dHashes are duplicates; 4.
    max_imbalance: largest / smallest class count beyond which the balance is a warning; 10.
    validation_share: share of each class assigned to validation (0: no split); 0.
    seed: the split's random seed; 42.
    """

    path: str
    filename: str
    output_dir: str
    limits: Limits = field(default_factory=Limits)
    max_pixels: int = 89_478_485
    max_image_bytes: int = 64 * MiB
    thumbnails_per_class: int = 8
    thumbnail_size: int = 64
    duplicate_distance: int = 4
    max_imbalance: float = 10.0
    validation_share: float = 0.0
    seed: int = 42


@dataclass
class ImageResult:
    """The verdict: ``ok``, the container, usable images, the report (``Report.as_dict``), the
    statistics (classes, sizes, modes, duplicates, split) and the thumbnails written
    (``{"label", "image", "file"}``, ``file`` relative to ``output_dir``)."""

    ok: bool
    container: str
    images: int
    report: dict
    stats: dict
    thumbnails: list = field(default_factory=list)

    @property
    def summary(self) -> str:
        return self.report.get("summary", "")


@dataclass
class _Image:
    name: str
    label: str
    width: int
    height: int
    mode: str
    dhash: int
    split: str = "train"


class _Fatal(Exception):
    """The archive cannot be used as a whole; the issue has been added to the report."""


def run_image_validation(config: ImageConfig, emit: Emit = emit_nothing) -> ImageResult:
    """Check the archive at ``config.path``; see the module docstring."""
    report = Report(config.filename)
    out = Path(config.output_dir)
    (out / "thumbnails").mkdir(parents=True, exist_ok=True)
    state = {"container": "", "images": [], "thumbnails": [], "labels_file": ""}
    try:
        _check(config, report, state, emit)
    except ContainerError as exc:
        report.add(exc.issue)
    except _Fatal:
        pass
    images: list[_Image] = state["images"]
    stats = _stats(images, state["labels_file"], config)
    if report.ok and images:
        _duplicates_report(images, report, stats, config)
        with open(out / "manifest.jsonl", "w", encoding="utf-8") as manifest:
            for image in images:
                row = {"image": image.name, "label": image.label}
                if config.validation_share:
                    row["split"] = image.split
                manifest.write(json.dumps(row, ensure_ascii=False) + "\n")
    return ImageResult(ok=report.ok, container=state["container"], images=len(images) if report.ok else 0,
                       report=report.as_dict(), stats=stats, thumbnails=state["thumbnails"])


def _check(config: ImageConfig, report: Report, state: dict, emit: Emit) -> None:
    path = Path(config.path)
    with open(path, "rb") as handle:
        head = handle.read(512)
    kind = archive_kind(config.filename, head)
    state["container"] = kind
    entries = archive_entries(path, kind, config.limits)
    if not entries:
        _fatal(report, Issue("empty_archive", "the archive holds no files", "put class folders of images in it"))
    root = _common_root([e.name for e in entries])
    relative = {e.name: e.name[len(root):] for e in entries}
    labels_files = [e for e in entries if "/" not in relative[e.name]
                    and PurePosixPath(e.name).suffix.lower() in LABEL_SUFFIXES]
    if len(labels_files) > 1:
        names = ", ".join(e.name for e in labels_files)
        _fatal(report, Issue("archive_layout", f"the archive holds {len(labels_files)} labels files ({names})",
                             "keep one labels file (path,label) next to the images", field=labels_files[0].name))
    labels_file = labels_files[0] if labels_files else None
    labels: dict[str, str] = {}
    if labels_file is not None:
        state["labels_file"] = labels_file.name
        labels, lines = _labels_read(path, kind, config, labels_file.name, report)
        present = set(relative.values())
        for image in labels:
            if image not in present:
                report.add(Issue("labels_image_missing", f"{image} is not in the archive",
                                 "fix the path (relative to the labels file) or add the image",
                                 line=lines[image], field=labels_file.name))
    wanted: dict[str, str] = {}  # member → its class
    for entry in entries:
        if labels_file is not None and entry.name == labels_file.name:
            continue
        rel = relative[entry.name]
        if labels_file is not None:
            if rel not in labels:
                report.add(Issue("unlabelled_file", f"not listed in {labels_file.name}; left out",
                                 f"add a line for it to {labels_file.name}, or remove it",
                                 severity=WARNING, field=entry.name))
                continue
            wanted[entry.name] = labels[rel]
        elif "/" not in rel:
            report.add(Issue("archive_layout", "at the top of the archive, not in a class folder",
                             "put each image in a folder named after its class (cats/1.jpg), or add a labels.csv "
                             "with path,label columns", field=entry.name))
        else:
            wanted[entry.name] = rel.split("/", 1)[0]
    _images_read(path, kind, config, wanted, entries, report, state, emit)
    _classes_check(state["images"], report, config, root)


def _fatal(report: Report, issue: Issue) -> None:
    report.add(issue)
    raise _Fatal


def _common_root(names: list[str]) -> str:
    """``top/`` when every file lies under one top folder (as zipping a folder makes), else ""."""
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) == 1 and all("/" in name for name in names):
        top = tops.pop() + "/"
        rest = [name[len(top):] for name in names]
        # ``cats/1.jpg`` alone is one class folder, not a root: only strip when what is left keeps folders or
        # a labels file
        if any("/" in r for r in rest) or any(PurePosixPath(r).suffix.lower() in LABEL_SUFFIXES for r in rest):
            return top
    return ""


def _labels_read(path: Path, kind: str, config: ImageConfig, name: str,
                 report: Report) -> tuple[dict[str, str], dict[str, int]]:
    """``{relative path: label}`` and ``{relative path: line}`` from the labels file; a missing column or a
    bad line stops the check (each named with the file and line)."""
    container = LABEL_SUFFIXES[PurePosixPath(name).suffix.lower()]
    labels: dict[str, str] = {}
    lines: dict[str, int] = {}
    try:
        _labels_rows(path, kind, config, name, container, report, labels, lines)
    except ContainerError as exc:  # the labels file cannot be read further: name it
        issue = exc.issue
        _fatal(report, Issue(issue.kind, issue.message, issue.fix, line=issue.line, field=name))
    if not report.ok:
        raise _Fatal
    return labels, lines


def _labels_rows(path: Path, kind: str, config: ImageConfig, name: str, container: str, report: Report,
                 labels: dict[str, str], lines: dict[str, int]) -> None:
    for _, stream in archive_read(path, kind, config.limits, lambda member: member == name):
        for _row, line, value, issue in stream_records(stream, container, config.limits):
            if issue is not None:
                report.add(Issue(issue.kind, issue.message, issue.fix, line=line,
                                 field=name))
                continue
            if not isinstance(value, dict):
                report.add(Issue("labels_row", "not an object with path and label",
                                 'write {"path": "cats/1.jpg", "label": "cat"}', line=line, field=name))
                continue
            column_path = next((c for c in PATH_COLUMNS if c in value), None)
            column_label = next((c for c in LABEL_COLUMNS if c in value), None)
            if column_path is None or column_label is None:
                missing = "path (or image, file, filename)" if column_path is None else "label (or class)"
                where = 1 if container == CSV else line
                has = ", ".join(map(str, value)) or "none"
                _fatal(report, Issue("labels_column_missing", f"no {missing} column "
                                     f"(it has: {has})", f"give {name} a header line path,label" if container == CSV
                                     else 'give every line "path" and "label" keys', line=where, field=name))
            image, label = str(value[column_path] or "").strip(), str(value[column_label] or "").strip()
            image = image.removeprefix("./")
            if not image or not label:
                report.add(Issue("labels_row", f"the {'path' if not image else 'label'} is empty",
                                 "give every image a path and a label", line=line, field=name))
            elif image in labels:
                report.add(Issue("labels_row", f"{image} is listed twice (first on line {lines[image]})",
                                 "list each image once", line=line, field=name))
            else:
                labels[image] = label
                lines[image] = line


def _images_read(path: Path, kind: str, config: ImageConfig, wanted: dict[str, str], entries: list, report: Report,
                 state: dict, emit: Emit) -> None:
    from PIL import Image

    total = sum(e.size for e in entries if e.name in wanted) or 1
    done = 0
    thumbs: Counter = Counter()
    out = Path(config.output_dir)
    for entry, stream in archive_read(path, kind, config.limits, lambda member: member in wanted):
        label = wanted[entry.name]
        done += entry.size
        if entry.size > config.max_image_bytes:
            report.add(Issue("image_too_large", f"the image file is {size_text(entry.size)}", "resize it; the limit is "
                             f"{size_text(config.max_image_bytes)} (DATASET_VISION_MAX_IMAGE_BYTES)", field=entry.name))
            continue
        try:
            data = _read_at_most(stream, config.max_image_bytes)
        except ContainerError:
            raise
        except Exception as exc:  # a damaged member: report it and go on with the others
            report.add(Issue("broken_archive", f"cannot be read from the archive ({exc})",
                             "re-create the archive", field=entry.name))
            continue
        if data is None:  # its header understated its size
            report.add(Issue("image_too_large", f"the image file is larger than {size_text(config.max_image_bytes)}",
                             "resize it (DATASET_VISION_MAX_IMAGE_BYTES)", field=entry.name))
            continue
        image = _decode(data, entry.name, label, config, report, Image)
        if image is None:
            continue
        decoded, loaded = image
        state["images"].append(decoded)
        if thumbs[label] < config.thumbnails_per_class:
            thumbs[label] += 1
            file = f"thumbnails/{len(state['thumbnails']):05d}.jpg"
            thumbnail = loaded.convert("RGB")
            thumbnail.thumbnail((config.thumbnail_size, config.thumbnail_size))
            thumbnail.save(out / file, "JPEG", quality=80)
            state["thumbnails"].append({"label": label, "image": entry.name, "file": file})
        emit(ValidationProgress(bytes_done=done, bytes_total=total, rows=len(state["images"])))


def _read_at_most(stream, limit: int) -> bytes | None:
    """The member's bytes, or None past ``limit`` (read in blocks: ``read(limit)`` would reserve it all)."""
    blocks, size = [], 0
    while block := stream.read(MiB):
        size += len(block)
        if size > limit:
            return None
        blocks.append(block)
    return b"".join(blocks)


def _decode(data: bytes, name: str, label: str, config: ImageConfig, report: Report, Image):
    """(the image's facts, the decoded image) or None with the problem reported."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides, below
            probe = Image.open(io.BytesIO(data))
            width, height, fmt = probe.width, probe.height, probe.format
    except Image.DecompressionBombError as exc:
        report.add(_too_many_pixels(name, str(exc), config))
        return None
    except Exception as exc:
        if PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES:  # named an image: its bytes are damaged
            report.add(Issue("corrupt_image", f"not a readable image: truncated or damaged ({type(exc).__name__})",
                             "export the image again, or remove it", field=name))
        else:
            suffix = PurePosixPath(name).suffix.lower() or "extensionless"
            report.add(Issue("not_an_image", f"not an image (a {suffix} file)",
                             "remove it, or replace it with a JPEG, PNG or WebP image", field=name))
        return None
    if width * height > config.max_pixels:
        report.add(_too_many_pixels(name, f"{width}×{height} pixels", config))
        return None
    if fmt not in IMAGE_FORMATS:
        report.add(Issue("unsupported_image", f"a {fmt} image", "convert it to JPEG, PNG or WebP",
                         field=name))
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            probe.verify()  # structure and checksums; the image must be opened again to decode
            loaded = Image.open(io.BytesIO(data))
            loaded.load()  # every pixel: a truncated file fails here
    except Exception as exc:
        report.add(Issue("corrupt_image", f"truncated or damaged ({exc})",
                         "export the image again, or remove it", field=name))
        return None
    return _Image(name=name, label=label, width=width, height=height, mode=loaded.mode, dhash=dhash(loaded)), loaded


def _too_many_pixels(name: str, detail: str, config: ImageConfig) -> Issue:
    return Issue("image_too_many_pixels", f"declares more than {config.max_pixels:,} pixels ({detail}); "
                 "refused as a possible decompression bomb", "resize it; the limit is DATASET_VISION_MAX_PIXELS",
                 field=name)


def dhash(image) -> int:
    """The 64-bit difference hash of an image: each bit says whether a pixel of the 9×8 greyscale
    thumbnail is brighter than its right neighbour. Near-identical pictures differ in few bits."""
    from PIL import Image

    small = image.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    pixels = small.tobytes()
    value = 0
    for row in range(8):
        for col in range(8):
            value = (value << 1) | (pixels[row * 9 + col] > pixels[row * 9 + col + 1])
    return value


def _classes_check(images: list[_Image], report: Report, config: ImageConfig, root: str) -> None:
    counts = Counter(image.label for image in images)
    if not images:
        if report.ok:
            report.add(Issue("no_images", "the archive holds no usable image",
                             "put JPEG, PNG or WebP images in class folders (cats/1.jpg, dogs/1.jpg)"))
        return
    if len(counts) == 1:
        label = next(iter(counts))
        folder = f"{root}{label}/"
        report.add(Issue("one_class", f"every image is of one class, {label!r} ({folder}): a classifier needs at "
                         "least two", "add a folder of images for every other class", field=folder))
        return
    largest, smallest = max(counts.values()), min(counts.values())
    if largest > smallest * config.max_imbalance:
        rare = min(counts, key=counts.get)
        report.add(Issue("class_imbalance", f"the largest class has {largest} images, {rare!r} only {smallest}",
                         "add images of the rare classes, or expect the model to favour the large ones",
                         severity=WARNING, field=f"{root}{rare}/"))
    if config.validation_share:
        _split_assign(images, config)


def _split_assign(images: list[_Image], config: ImageConfig) -> None:
    for index in split_indexes([image.label for image in images], config.validation_share, config.seed):
        images[index].split = "validation"


def split_indexes(labels: list[str], share: float, seed: int) -> set[int]:
    """The indexes of a stratified validation part: each class gives ``share`` of its items (at least
    one of a class of two or more, never all), drawn with ``seed``."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_label[label].append(index)
    rng = random.Random(seed)
    chosen: set[int] = set()
    for label in sorted(by_label):
        members = by_label[label]
        take = round(len(members) * share)
        if len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        chosen.update(rng.sample(members, take))
    return chosen


def _duplicates_report(images: list[_Image], report: Report, stats: dict, config: ImageConfig) -> None:
    """Groups of near-identical images (dHash within ``duplicate_distance`` bits), as warnings."""
    groups = duplicate_groups([image.dhash for image in images], config.duplicate_distance)
    across_classes = across_splits = 0
    for group in groups:
        members = [images[i] for i in group]
        names = ", ".join(m.name for m in members[:5]) + (f" and {len(members) - 5} more" if len(members) > 5 else "")
        labels = sorted({m.label for m in members})
        if len(labels) > 1:
            across_classes += 1
            report.add(Issue("duplicate_across_classes", f"the same picture is labelled {' and '.join(labels)}: "
                             f"{names}", "keep it in one class only", severity=WARNING, field=members[0].name))
        else:
            report.add(Issue("duplicate_images", f"near-identical images in {labels[0]!r}: {names}",
                             "remove the copies", severity=WARNING, field=members[0].name))
        if config.validation_share and len({m.split for m in members}) > 1:
            across_splits += 1
            report.add(Issue("duplicate_across_splits", f"the same picture is in train and validation: {names}",
                             "remove the copies; validation scores are inflated otherwise", severity=WARNING,
                             field=members[0].name))
    stats["duplicates"] = {"groups": len(groups), "images": sum(len(g) for g in groups),
                           "across_classes": across_classes, "across_splits": across_splits}


def duplicate_groups(hashes: list[int], distance: int) -> list[list[int]]:
    """Indexes of hashes within ``distance`` bits of each other, grouped (groups of two or more).

    Equal hashes are grouped first (many copies of one picture cost nothing more); then the 64 bits
    are cut into ``distance + 1`` bands: two hashes that differ in at most ``distance`` bits agree on
    at least one band, so only distinct hashes sharing a band are compared.
    """
    same: dict[int, list[int]] = defaultdict(list)
    for index, value in enumerate(hashes):
        same[value].append(index)
    values = list(same)
    bands = distance + 1
    width = -(-HASH_BITS // bands)
    found = Groups(len(values))
    for band in range(bands):
        buckets: dict[int, list[int]] = defaultdict(list)
        for position, value in enumerate(values):
            buckets[(value >> (band * width)) & ((1 << width) - 1)].append(position)
        for bucket in buckets.values():
            for a_pos, a in enumerate(bucket):
                for b in bucket[a_pos + 1:]:
                    if not found.together(a, b) and (values[a] ^ values[b]).bit_count() <= distance:
                        found.join(a, b)
    groups = [[index for position in group for index in same[values[position]]] for group in found.members()]
    return [sorted(g) for g in groups if len(g) > 1]


def _stats(images: list[_Image], labels_file: str, config: ImageConfig) -> dict:
    counts = Counter(image.label for image in images)
    classes = []
    for label in sorted(counts):
        item = {"label": label, "count": counts[label]}
        if config.validation_share:
            item["validation"] = sum(1 for i in images if i.label == label and i.split == "validation")
            item["train"] = counts[label] - item["validation"]
        classes.append(item)
    widths = sorted(i.width for i in images)
    heights = sorted(i.height for i in images)

    def spread(values: list[int]) -> dict:
        return {"min": values[0], "median": values[len(values) // 2], "max": values[-1]} if values else {}

    stats = {"images": len(images), "classes": classes, "layout": "labels_file" if labels_file else "folders",
             "labels_file": labels_file, "width": spread(widths), "height": spread(heights),
             "modes": dict(Counter(i.mode for i in images).most_common()),
             "duplicates": {"groups": 0, "images": 0, "across_classes": 0, "across_splits": 0}}
    if config.validation_share:
        stats["split"] = {"validation_share": config.validation_share, "seed": config.seed,
                          "train": sum(1 for i in images if i.split == "train"),
                          "validation": sum(1 for i in images if i.split == "validation")}
    return stats
