"""workers.images: an archive of labelled images checked one member at a time, every problem with its path."""

import io
import json
import struct
import tarfile
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest

from tests.factories import archive_bytes, image_bytes, image_set
from workers.containers import Limits
from workers.images import ImageConfig, duplicate_groups, run_image_validation


def _check(tmp_path: Path, files_or_bytes, name: str = "images.zip", **config):
    content = files_or_bytes if isinstance(files_or_bytes, bytes) else archive_bytes(
        files_or_bytes, "tar.gz" if name.endswith((".tar.gz", ".tgz")) else "tar" if name.endswith(".tar") else "zip")
    path = tmp_path / name
    path.write_bytes(content)
    return run_image_validation(ImageConfig(path=str(path), filename=name, output_dir=str(tmp_path / "out"), **config))


def _kinds(result, severity: str = "errors") -> dict[str, list[dict]]:
    return {group["kind"]: group["examples"] for group in result.report[severity]}


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` × ``height`` pixels (and holds almost none): a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("name", ["images.zip", "images.tar", "images.tar.gz"])
def test_class_folders_are_counted_with_sizes_modes_thumbnails_and_a_manifest(tmp_path, name):
    result = _check(tmp_path, image_set(root="photos/"), name, thumbnails_per_class=3)
    assert result.ok and result.images == 30, result.summary
    assert [(c["label"], c["count"]) for c in result.stats["classes"]] == [("birds", 8), ("cats", 12), ("dogs", 10)]
    assert result.stats["width"] == {"min": 32, "median": 32, "max": 32} and result.stats["modes"] == {"RGB": 30}
    assert len(result.thumbnails) == 9 and {t["label"] for t in result.thumbnails} == {"birds", "cats", "dogs"}
    first = tmp_path / "out" / result.thumbnails[0]["file"]
    assert first.read_bytes()[:3] == b"\xff\xd8\xff"  # a JPEG
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and {"image": "photos/cats/000.png", "label": "cats"} in rows


def test_a_corrupt_image_and_a_non_image_file_are_listed_with_their_paths(tmp_path):
    files = image_set()
    files["cats/broken.jpg"] = image_bytes("cats", 500, fmt="JPEG")[:300]  # truncated mid-file
    files["dogs/cut.png"] = image_bytes("dogs", 501)[:-40]  # the end of the pixel data is missing
    files["dogs/notes.txt"] = b"remember to add more dogs"
    result = _check(tmp_path, files)
    assert not result.ok
    kinds = _kinds(result)
    assert {e["field"] for e in kinds["corrupt_image"]} == {"cats/broken.jpg", "dogs/cut.png"}
    assert [e["field"] for e in kinds["not_an_image"]] == ["dogs/notes.txt"]
    assert "images.zip, cats/broken.jpg: not a readable image: truncated or damaged" in result.summary
    assert "images.zip, dogs/notes.txt: not an image (a .txt file)" in result.summary
    assert result.stats["images"] == 30  # the good ones are still counted for the report


def test_images_at_the_top_of_the_archive_are_a_wrong_layout(tmp_path):
    result = _check(tmp_path, {f"{i}.png": image_bytes("cats", i) for i in range(4)})
    assert not result.ok
    assert [e["field"] for e in _kinds(result)["archive_layout"]] == ["0.png", "1.png", "2.png", "3.png"]
    assert "0.png: at the top of the archive, not in a class folder" in result.summary


def test_a_single_class_is_refused_naming_its_folder(tmp_path):
    result = _check(tmp_path, image_set({"cats": 6}, root="data/"))
    assert not result.ok
    assert _kinds(result)["one_class"][0]["field"] == "data/cats/"
    assert "every image is of one class, 'cats'" in result.summary


def test_duplicates_within_and_across_classes_are_warnings_naming_both_paths(tmp_path):
    files = image_set()
    files["dogs/copy-of-a-cat.png"] = files["cats/003.png"]
    files["cats/again.png"] = files["cats/005.png"]
    result = _check(tmp_path, files)
    assert result.ok, result.summary
    warnings = _kinds(result, "warnings")
    across = warnings["duplicate_across_classes"][0]["message"]
    assert "cats/003.png" in across and "dogs/copy-of-a-cat.png" in across and "cats and dogs" in across
    assert "cats/005.png" in warnings["duplicate_images"][0]["message"]
    assert result.stats["duplicates"]["groups"] == 2 and result.stats["duplicates"]["across_classes"] == 1


def test_near_duplicate_hashes_are_grouped_by_bit_distance():
    assert duplicate_groups([0b1011, 0b1010, 1 << 63, 0xFFFF], 1) == [[0, 1]]
    assert duplicate_groups([0, (1 << 64) - 1], 4) == []
    assert duplicate_groups([7] * 50_000 + [(1 << 64) - 1], 4) == [list(range(50_000))]  # copies cost no pair checks


def test_a_labels_file_without_a_header_is_named(tmp_path):
    files = {f"img/{i}.png": image_bytes("cats", i) for i in range(2)}
    files["labels.csv"] = b"\n"
    result = _check(tmp_path, files)
    assert not result.ok and "images.zip, line 1, labels.csv: the first line must name the columns" in result.summary


def test_a_labels_csv_gives_the_labels(tmp_path):
    files = {f"img/{i}.png": image_bytes("cats" if i % 2 else "dogs", i) for i in range(8)}
    files["labels.csv"] = ("path,label\n" + "".join(f"img/{i}.png,{'cat' if i % 2 else 'dog'}\n"
                                                   for i in range(8))).encode()
    result = _check(tmp_path, files)
    assert result.ok, result.summary
    assert result.stats["layout"] == "labels_file" and result.stats["labels_file"] == "labels.csv"
    assert [(c["label"], c["count"]) for c in result.stats["classes"]] == [("cat", 4), ("dog", 4)]


def test_a_labels_csv_missing_the_label_column_names_the_file_and_line(tmp_path):
    files = {f"img/{i}.png": image_bytes("cats", i) for i in range(4)}
    files["labels.csv"] = b"path,category\n" + b"".join(f"img/{i}.png,cat\n".encode() for i in range(4))
    result = _check(tmp_path, files)
    assert not result.ok
    issue = _kinds(result)["labels_column_missing"][0]
    assert (issue["field"], issue["line"]) == ("labels.csv", 1)
    assert "images.zip, line 1, labels.csv: no label (or class) column (it has: path, category)" in result.summary


def test_a_labels_jsonl_line_without_a_label_and_a_listed_image_missing_are_named_by_line(tmp_path):
    files = {f"img/{i}.png": image_bytes("cats", i) for i in range(3)}
    files["labels.jsonl"] = (b'{"path": "img/0.png", "label": "cat"}\n{"path": "img/1.png", "label": "dog"}\n'
                             b'{"path": "img/9.png", "label": "dog"}\n{"path": "img/2.png"}\n')
    result = _check(tmp_path, files)
    assert not result.ok
    assert _kinds(result)["labels_column_missing"][0]["line"] == 4
    files["labels.jsonl"] = files["labels.jsonl"].rsplit(b"\n", 2)[0] + b"\n"  # without the line lacking a label
    result = _check(tmp_path, files)
    missing = _kinds(result)["labels_image_missing"][0]
    assert (missing["line"], missing["message"]) == (3, "img/9.png is not in the archive")


def test_a_decompression_bomb_is_refused_before_its_pixels_are_decoded(tmp_path):
    files = image_set()
    files["cats/bomb.png"] = png_declaring(100_000, 100_000)
    result = _check(tmp_path, files)
    assert not result.ok
    issue = _kinds(result)["image_too_many_pixels"][0]
    assert issue["field"] == "cats/bomb.png" and "decompression bomb" in issue["message"]
    # the setting decides, not only Pillow's own limit
    result = _check(tmp_path, image_set({"cats": 2, "dogs": 2}), max_pixels=32 * 32 - 1)
    assert [e["field"] for e in _kinds(result)["image_too_many_pixels"]][:1] == ["cats/000.png"]


def test_a_member_pointing_outside_the_archive_is_refused(tmp_path):
    files = image_set({"cats": 2, "dogs": 2})
    files["../../etc/evil.png"] = image_bytes("cats", 9)
    result = _check(tmp_path, files)
    assert not result.ok and "unsafe_archive_path" in _kinds(result)
    assert "'../../etc/evil.png' (it points outside the archive)" in result.summary


def test_links_are_refused_in_tars_and_zips(tmp_path):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in image_set({"cats": 2, "dogs": 2}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("cats/passwd.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    result = _check(tmp_path, out.getvalue(), "images.tar")
    assert not result.ok and "cats/passwd.png is a link" in result.summary
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        info = zipfile.ZipInfo("cats/passwd.png")
        info.external_attr = 0o120777 << 16
        archive.writestr(info, "/etc/passwd")
    assert "cats/passwd.png is a link" in _check(tmp_path, out.getvalue()).summary


def test_archives_over_the_limits_are_refused(tmp_path):
    files = image_set({"cats": 2, "dogs": 2})
    files["cats/zeros.png"] = b"\x00" * (20 << 20)  # 20 MiB that compress to ~20 KiB: a zip bomb
    result = _check(tmp_path, files)
    assert not result.ok and "archive_ratio" in _kinds(result)
    result = _check(tmp_path, image_set(), limits=Limits(max_archive_entries=10))
    assert not result.ok and "the ZIP holds 30 entries (at most 10)" in result.summary
    result = _check(tmp_path, image_set(), "images.tar.gz", limits=Limits(max_archive_entries=10))
    assert "more than 10 entries" in result.summary


def test_a_file_that_is_not_the_archive_it_is_named_is_refused(tmp_path):
    result = _check(tmp_path, b"path,label\n", "images.zip")
    assert not result.ok and "not a ZIP archive" in result.summary


def test_split_is_stratified_and_duplicates_across_the_parts_are_reported(tmp_path):
    files = image_set({"cats": 20, "dogs": 10, "birds": 5})
    files["birds/again.png"] = files["birds/000.png"]
    result = _check(tmp_path, files, validation_share=0.2)
    assert result.ok, result.summary
    parts = {c["label"]: (c["train"], c["validation"]) for c in result.stats["classes"]}
    assert parts == {"cats": (16, 4), "dogs": (8, 2), "birds": (5, 1)}
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert sum(r["split"] == "validation" for r in rows) == 7 == result.stats["split"]["validation"]
    again = _check(tmp_path, files, validation_share=0.2)
    assert (tmp_path / "out" / "manifest.jsonl").read_text().splitlines() == [json.dumps(r) for r in rows]  # seeded
    assert again.stats["split"] == result.stats["split"]
    # two copies in a class of two: one goes to each part, and that is reported
    pair = image_set({"cats": 3, "dogs": 3})
    pair["birds/a.png"] = pair["birds/b.png"] = image_bytes("birds", 1)
    result = _check(tmp_path, pair, validation_share=0.5)
    examples = _kinds(result, "warnings")["duplicate_across_splits"]
    assert "birds/a.png" in examples[0]["message"] and result.stats["duplicates"]["across_splits"] == 1


def test_members_are_read_one_at_a_time_never_the_whole_archive(tmp_path, monkeypatch):
    import random

    from PIL import Image

    def noise(seed: int) -> bytes:  # incompressible pictures: the archive is as large as its images
        picture = Image.frombytes("RGB", (256, 256), random.Random(seed).randbytes(256 * 256 * 3))
        out = io.BytesIO()
        picture.save(out, "PNG")
        return out.getvalue()

    files = {f"{label}/{i}.png": noise(hash((label, i))) for label in ("a", "b") for i in range(30)}
    content = archive_bytes(files)
    assert len(content) > 10_000_000
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "read", lambda *a, **k: pytest.fail("a member was read whole by name"))
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, member, *a, **k: opened.append(member) or real_open(
        self, member, *a, **k))
    tracemalloc.start()
    try:
        result = _check(tmp_path, content)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.ok and result.images == 60, result.summary
    assert len(opened) == 60  # one open per image, each read as a stream
    # what Python holds at most: a member and the read buffers (about 3 MiB), not the archive
    assert peak < len(content) / 3, f"peak {peak} bytes for a {len(content)} byte archive"
