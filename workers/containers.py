"""Read the rows of a training file in any supported container, streaming, within limits.

Containers: JSONL, a JSON array, CSV/TSV, Parquet (read one row group at a time), plain text
(one document a line), and a ZIP or gzip holding one of these. Nothing is read whole into
memory: a line, a JSON array element, a CSV row and a Parquet row group each have a limit, and
archives have a size and a compression-ratio limit. A file that cannot be read further raises
``ContainerError``; a single bad row becomes an ``Issue`` and reading goes on.
"""

import codecs
import csv
import gzip
import io
import json
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from workers.report import Issue

JSONL, JSON, CSV, TSV, PARQUET, TXT, ZIP, GZIP = "jsonl", "json", "csv", "tsv", "parquet", "txt", "zip", "gzip"
CONTAINERS = (JSONL, JSON, CSV, TSV, PARQUET, TXT, ZIP, GZIP)
ARCHIVES = (ZIP, GZIP)
EXTENSIONS = {
    ".jsonl": JSONL, ".ndjson": JSONL, ".json": JSON, ".csv": CSV, ".tsv": TSV, ".parquet": PARQUET,
    ".txt": TXT, ".zip": ZIP, ".gz": GZIP,
}
CONTAINER_NAMES = {
    JSONL: "JSONL (one JSON object per line)", JSON: "a JSON array", CSV: "CSV", TSV: "TSV",
    PARQUET: "Parquet", TXT: "plain text", ZIP: "a ZIP archive", GZIP: "gzip", "binary": "binary data",
}
SUFFIX_FOR = {JSONL: ".jsonl", JSON: ".json", CSV: ".csv", TSV: ".tsv", PARQUET: ".parquet", TXT: ".txt",
              ZIP: ".zip", GZIP: ".gz"}
CHUNK = 1 << 20
SNIFF_BYTES = 4096
MiB = 1 << 20

# A row, as the containers yield it: (row number, line number or None, value, issue or None).
Record = tuple[int, int | None, object, Issue | None]


@dataclass(frozen=True)
class Limits:
    """How much of anything one file may hold before it is refused.

    max_line_bytes: bytes in one line of JSONL/CSV/text, or one element of a JSON array; 32 MiB.
    max_field_bytes: characters in one string field (a CSV cell, a message's content); 16 MiB.
    max_depth: nesting of objects and lists in one row; 32.
    max_uncompressed_bytes: bytes an archive may expand to; 20 GiB.
    max_ratio: uncompressed / compressed size of an archive, checked past 1 MiB; 100.
    max_row_group_bytes: uncompressed bytes of one Parquet row group; 256 MiB.
    max_archive_entries: entries in a ZIP (folders included); 1000.
    """

    max_line_bytes: int = 32 * MiB
    max_field_bytes: int = 16 * MiB
    max_depth: int = 32
    max_uncompressed_bytes: int = 20 * 1024 * MiB
    max_ratio: int = 100
    max_row_group_bytes: int = 256 * MiB
    max_archive_entries: int = 1000


class ContainerError(Exception):
    """The file cannot be read (further); ``issue`` says where, what and how to fix it."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(issue.message)
        self.issue = issue


def size_text(count: int) -> str:
    """A byte count for people: 1000 bytes, 16 MiB, 20 GiB."""
    for unit, size in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} bytes"


def _fail(kind: str, message: str, fix: str, *, line: int | None = None, row: int | None = None,
          field: str = "") -> ContainerError:
    return ContainerError(Issue(kind, message, fix, line=line, row=row, field=field))


def container_from_name(name: str) -> str:
    """The container a file name announces ("" when its extension is not one we read)."""
    return EXTENSIONS.get(PurePosixPath(name.lower()).suffix, "")


def sniff(head: bytes) -> str:
    """What the first bytes of a file look like: a container name, "text" or "binary"."""
    if head.startswith(b"PAR1"):
        return PARQUET
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return ZIP
    if head.startswith(b"\x1f\x8b"):
        return GZIP
    text = head.removeprefix(codecs.BOM_UTF8).lstrip()
    if b"\x00" in head:
        return "binary"
    if text.startswith(b"["):
        return JSON
    if text.startswith(b"{"):
        return JSONL
    return "text"


_FITS = {
    JSONL: {JSONL}, JSON: {JSON, JSONL}, CSV: {"text"}, TSV: {"text"}, TXT: {"text", JSONL, JSON},
    PARQUET: {PARQUET}, ZIP: {ZIP}, GZIP: {GZIP},
}


_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)  # UTF-32's LE mark begins like UTF-16's


def container_resolve(name: str, head: bytes, given: str = "") -> str:
    """The container to read: ``given`` when set, else the name's, which the content must match."""
    if given:
        if given not in CONTAINERS:
            raise _fail("unknown_container", f"container {given!r} is not one of {', '.join(CONTAINERS)}",
                        "leave container empty to detect it, or give one of the names listed")
        return given
    expected = container_from_name(name)
    if not expected:
        raise _fail("unsupported_extension", f"{PurePosixPath(name).suffix or 'no extension'} is not a "
                    "training file type we read", "name the file .jsonl, .json, .csv, .tsv, .parquet, .txt, "
                    ".zip or .gz after what it holds")
    if head.startswith(_UTF16_BOMS):  # Windows PowerShell's `>` writes UTF-16: say so, not "binary data"
        raise _fail("utf16_text", "the file is UTF-16 text, not UTF-8 (it starts with a UTF-16 byte order mark)",
                    "save it as UTF-8 (PowerShell: Out-File -Encoding utf8; an editor: Save as UTF-8)")
    if not head.removeprefix(codecs.BOM_UTF8).strip():
        if len(head) < SNIFF_BYTES:
            raise _fail("empty_file", "the file is empty", "upload a file with at least one row")
        return expected  # blank lines say nothing of the content: the reader finds rows or reports none
    found = sniff(head)
    if found not in _FITS[expected]:
        if found == "text":
            first = head.split(b"\n", 1)[0]
            found = TSV if b"\t" in first else CSV if b"," in first else TXT
        suggest = SUFFIX_FOR.get(found, "")
        fix = (f"rename it to *{suggest} or give container={found}" if suggest
               else f"check that this is the file you meant; a {SUFFIX_FOR[expected]} file holds "
                    f"{CONTAINER_NAMES[expected]}")
        raise _fail("wrong_extension", f"named {PurePosixPath(name).suffix} but the content looks like "
                    f"{CONTAINER_NAMES[found]} (it starts with {_preview(head)})", fix)
    return expected


def _preview(head: bytes) -> str:
    text = head[:24].decode("utf-8", errors="replace").strip().replace("\n", "\\n")
    return repr(text)


def records_open(path: Path, name: str, limits: Limits, *, container: str = "",
                 work_dir: Path | None = None) -> tuple[str, str, Iterator[Record], Callable[[], int]]:
    """Open ``path`` (called ``name``) and return (container, inner container, records, position).

    ``inner`` is what an archive holds ("" for a plain file); ``position`` tells how many bytes
    of ``path`` have been read, for progress.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    outer = container_resolve(name, head, container)
    if outer == PARQUET:
        return outer, "", _parquet_records(path, limits), lambda: 0
    handle = open(path, "rb")  # closed by the records generator when it ends
    try:
        if outer == ZIP:
            inner_name, stream = _zip_member(handle, path, limits)
        elif outer == GZIP:
            stream = io.BufferedReader(_Bounded(gzip.GzipFile(fileobj=handle), limits, path.stat().st_size), CHUNK)
            inner_name = name[: -len(".gz")] if name.lower().endswith(".gz") else name
        else:
            inner_name, stream = "", io.BufferedReader(handle, CHUNK)
        inner = _inner_resolve(inner_name, stream) if inner_name else ""
    except BaseException:
        handle.close()
        raise
    return outer, inner, _records(inner or outer, stream, limits, work_dir, owner=handle), handle.tell


def _inner_resolve(inner_name: str, stream: io.BufferedReader) -> str:
    try:
        head = stream.peek(SNIFF_BYTES)[:SNIFF_BYTES]
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise _fail("broken_archive", f"the archive cannot be decompressed ({exc})",
                    "re-create the archive; the file may be truncated") from exc
    found = sniff(head)
    if not container_from_name(inner_name) and found in (JSONL, JSON, PARQUET, ZIP, GZIP):
        inner = found  # "data.gz" says nothing of what it holds: the content does
    else:
        inner = container_resolve(inner_name, head)
    if inner in ARCHIVES:
        raise _fail("nested_archive", f"{inner_name} is an archive inside an archive",
                    "put the training file itself in the ZIP or gzip, not another archive")
    return inner


def _records(container: str, stream, limits: Limits, work_dir: Path | None, owner) -> Iterator[Record]:
    try:
        if container == PARQUET:  # Parquet needs to seek: spill the (bounded) member to disk
            with tempfile.NamedTemporaryFile(dir=work_dir, suffix=".parquet") as spill:
                shutil.copyfileobj(stream, spill, CHUNK)
                spill.flush()
                yield from _parquet_records(Path(spill.name), limits)
        elif container == JSONL:
            yield from _jsonl_records(stream, limits)
        elif container == JSON:
            yield from _json_array_records(stream, limits)
        elif container in (CSV, TSV):
            yield from _csv_records(stream, limits, "\t" if container == TSV else ",")
        elif container == TXT:
            yield from _text_records(stream, limits)
    except (EOFError, zlib.error, gzip.BadGzipFile, zipfile.BadZipFile) as exc:
        raise _fail("broken_archive", f"the archive is damaged ({exc})",
                    "re-create the archive; the file may be truncated") from exc
    finally:
        owner.close()


class _Bounded(io.RawIOBase):
    """A decompressing stream that stops at the archive limits instead of filling the disk."""

    def __init__(self, source, limits: Limits, compressed: int) -> None:
        self.source = source
        self.limits = limits
        self.compressed = max(compressed, 1)
        self.produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.source.read(len(buffer))
        self.produced += len(data)
        if self.produced > self.limits.max_uncompressed_bytes:
            raise _fail("archive_too_large", f"the archive expands to more than "
                        f"{size_text(self.limits.max_uncompressed_bytes)}", "upload the file uncompressed, or "
                        "split it; the limit is DATASET_MAX_UNCOMPRESSED_BYTES")
        if self.produced > MiB and self.produced > self.compressed * self.limits.max_ratio:
            raise _fail("archive_ratio", f"the archive expands more than {self.limits.max_ratio} times "
                        "its size (a zip bomb?)", "upload the file uncompressed if it is genuine; the limit "
                        "is DATASET_MAX_COMPRESSION_RATIO")
        buffer[: len(data)] = data
        return len(data)


_DRIVE = re.compile(r"^[A-Za-z]:")


def archive_path_check(name: str, kind: str) -> None:
    """Refuse a member path that points outside the archive (absolute, ``..``, a drive, backslashes)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or name.startswith(("/", "\\")) or ".." in parts or _DRIVE.match(name) or "\\" in name:
        raise _fail("unsafe_archive_path", f"the {kind} holds an unsafe path {name!r} (it points outside "
                    "the archive)", f"re-create the {kind} from the files themselves, with relative paths")


def archive_path_skipped(name: str) -> bool:
    """Whether a member is an archiver's by-product (``__MACOSX/``, a hidden file), not data."""
    path = PurePosixPath(name)
    return path.parts[0] == "__MACOSX" or path.name.startswith(".")


def _zip_member(handle, path: Path, limits: Limits) -> tuple[str, io.BufferedReader]:
    try:
        archive = zipfile.ZipFile(handle)
        entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise _fail("broken_archive", f"not a readable ZIP archive ({exc})",
                    "re-create the ZIP; the file may be truncated") from exc
    if len(entries) > limits.max_archive_entries:
        raise _fail("archive_entries", f"the ZIP holds {len(entries)} entries",
                    "put the one training file in the ZIP")
    members = []
    for entry in entries:
        name = entry.filename
        archive_path_check(name, "ZIP")
        if entry.is_dir() or archive_path_skipped(name):
            continue
        members.append(entry)
    if len(members) != 1:
        names = ", ".join(m.filename for m in members[:5]) or "none"
        raise _fail("archive_members", f"the ZIP must hold exactly one training file, it holds "
                    f"{len(members)} ({names})", "upload one file per ZIP, or each file on its own")
    member = members[0]
    if member.flag_bits & 0x1:
        raise _fail("encrypted_archive", f"{member.filename} is encrypted", "upload it without a password")
    if member.file_size > limits.max_uncompressed_bytes:
        raise _fail("archive_too_large", f"{member.filename} expands to {size_text(member.file_size)}",
                    "upload the file uncompressed, or split it")
    if member.file_size > MiB and member.file_size > max(member.compress_size, 1) * limits.max_ratio:
        raise _fail("archive_ratio", f"{member.filename} expands {member.file_size // max(member.compress_size, 1)}"
                    f" times its size (a zip bomb?)", "upload the file uncompressed if it is genuine")
    try:
        raw = archive.open(member)
    except (NotImplementedError, zipfile.BadZipFile, RuntimeError) as exc:
        raise _fail("broken_archive", f"cannot open {member.filename} in the ZIP ({exc})",
                    "re-create the ZIP with ordinary (deflate) compression") from exc
    # Declared sizes can lie: the stream itself is bounded too.
    return member.filename, io.BufferedReader(_Bounded(raw, limits, max(member.compress_size, 1)), CHUNK)


def _too_long(limits: Limits, line: int, row: int) -> Issue:
    return Issue("line_too_long", f"the line is longer than {size_text(limits.max_line_bytes)}",
                 "split the row or shorten its text; the limit is DATASET_MAX_LINE_BYTES", line=line, row=row)


def _skip_line(stream) -> None:
    """Read past the rest of an over-long line, a chunk at a time."""
    while True:
        piece = stream.readline(CHUNK)
        if not piece or piece.endswith(b"\n"):
            return


def _jsonl_records(stream, limits: Limits) -> Iterator[Record]:
    readline, loads, limit, depth = stream.readline, json.loads, limits.max_line_bytes, limits.max_depth
    line = row = 0
    while True:
        raw = readline(limit + 1)
        if not raw:
            return
        line += 1
        if len(raw) > limit and not raw.endswith(b"\n"):
            row += 1
            _skip_line(stream)
            yield row, line, None, _too_long(limits, line, row)
            continue
        if line == 1:  # a UTF-8 BOM (Notepad, Excel) is no part of the first row; json.loads(bytes) skips it too
            raw = raw.removeprefix(codecs.BOM_UTF8)
        if raw.isspace() or not raw:
            continue
        row += 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield row, line, None, Issue("invalid_utf8", f"not valid UTF-8 (byte {exc.start})",
                                         "save the file as UTF-8", line=line, row=row)
            continue
        try:
            value = loads(text)
        except json.JSONDecodeError as exc:
            yield row, line, None, Issue("invalid_json", f"invalid JSON ({exc.msg} at column {exc.colno})",
                                         "write one JSON object per line", line=line, row=row)
            continue
        except RecursionError:
            value = None
        if value is None or (raw.count(b"{") + raw.count(b"[") > depth and nesting(value) > depth):
            yield row, line, None, _too_deep(limits, line, row)
            continue
        if b"\\u" in raw and _SURROGATE_ESCAPE_BYTES.search(raw):  # cheap tests first: most lines have none
            issue = _unencodable_check(value, line, row)
            if issue is not None:
                yield row, line, None, issue
                continue
        yield row, line, value, None


# A JSON escape of a UTF-16 surrogate (\ud800-\udfff): a pair is one character, but one alone is text
# that cannot be encoded as UTF-8, which every later step (a page, the trainer's reader) fails on.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(_SURROGATE_ESCAPE.pattern.encode())


def unencodable_field(value) -> str | None:
    """The field (``messages[1].content``, or a key's own path) of the first string in ``value`` that
    cannot be encoded as UTF-8, i.e. holds a lone surrogate; None when every string can be."""
    stack = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                return path
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                key_path = f"{path}.{_readable(key)}" if path else _readable(key)
                if isinstance(key, str) and not _encodable(key):
                    return key_path
                children.append((child, key_path))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend(reversed([(child, f"{path}[{index}]") for index, child in enumerate(item)]))
    return None


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _readable(key) -> str:
    """A key as report text: a lone surrogate written as its escape, so the report itself can be stored."""
    return str(key).encode("utf-8", "backslashreplace").decode("utf-8")


def unencodable_issue(field: str, line: int | None, row: int | None) -> Issue:
    return Issue("invalid_text", "holds text that cannot be encoded as UTF-8: a lone UTF-16 surrogate "
                 "(a \\ud800-\\udfff escape without its pair)",
                 "write the character whole (both halves of the pair) or remove it", line=line, row=row, field=field)


def _unencodable_check(value, line: int | None, row: int) -> Issue | None:
    field = unencodable_field(value)
    return None if field is None else unencodable_issue(field, line, row)


def _too_deep(limits: Limits, line: int | None, row: int | None) -> Issue:
    return Issue("too_deeply_nested", f"the row nests objects or lists more than {limits.max_depth} levels deep",
                 "flatten the row; training rows need at most a few levels", line=line, row=row)


def nesting(value) -> int:
    """How deeply ``value`` nests lists and objects (1 for a flat object), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in item if isinstance(child, dict | list))
    return deepest


def _json_array_records(stream, limits: Limits) -> Iterator[Record]:
    """Elements of one top-level JSON array, decoded a buffer at a time."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8-sig")()
    state = {"buf": "", "eof": False}
    line, pos, row = 1, 0, 0

    def more(size: int = CHUNK) -> bool:
        if state["eof"]:
            return False
        data = stream.read(size)
        try:
            state["buf"] += utf8.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise _fail("invalid_utf8", f"not valid UTF-8 (byte {exc.start} of a block)",
                        "save the file as UTF-8", line=line + state["buf"].count("\n", pos)) from exc
        state["eof"] = not data
        return True

    def skip_space() -> str:
        nonlocal pos, line
        while True:
            buf = state["buf"]
            while pos < len(buf) and buf[pos] in " \t\r\n":
                line += buf[pos] == "\n"
                pos += 1
            if pos < len(buf):
                return buf[pos]
            if not more():
                return ""

    if skip_space() != "[":
        raise _fail("invalid_json", "a .json file must hold one JSON array of rows", "write [ {...}, {...} ] "
                    "or save the rows as JSONL", line=line)
    pos += 1
    first = True
    while True:
        char = skip_space()
        if char == "]":
            pos += 1
            if skip_space():
                raise _fail("invalid_json", "text after the end of the array", "remove it", line=line)
            return
        if not first:
            if char != ",":
                raise _fail("invalid_json", f"expected ',' or ']' between rows, found {char!r}" if char
                            else "the array is not closed (the file ends inside it)",
                            "fix the JSON; the file may be truncated", line=line, row=row or None)
            pos += 1
            char = skip_space()
        first = False
        row += 1
        value, end = _decode_element(decoder, state, more, pos, limits, line, row)
        if end is None:  # the decoder gave up: the array cannot be read past this row
            raise ContainerError(_too_deep(limits, line, row))
        buf = state["buf"]
        too_deep = buf.count("{", pos, end) + buf.count("[", pos, end) > limits.max_depth
        escapes = buf.find("\\u", pos, end) != -1 and _SURROGATE_ESCAPE.search(buf, pos, end) is not None
        start_line = line
        line += buf.count("\n", pos, end)
        pos = end
        if pos > CHUNK:  # drop what has been read so the buffer stays small
            state["buf"] = buf[pos:]
            pos = 0
        if too_deep and nesting(value) > limits.max_depth:
            yield row, start_line, None, _too_deep(limits, start_line, row)
        elif escapes and (issue := _unencodable_check(value, start_line, row)) is not None:
            yield row, start_line, None, issue
        else:
            yield row, start_line, value, None


def _decode_element(decoder, state, more, pos, limits, line, row):
    size = CHUNK
    while True:
        buf = state["buf"]
        try:
            value, end = decoder.raw_decode(buf, pos)
            if end < len(buf) or state["eof"]:
                return value, end
        except json.JSONDecodeError as exc:
            if state["eof"] or len(buf) - pos > limits.max_line_bytes:
                at = line + buf.count("\n", pos, exc.pos)
                if len(buf) - pos > limits.max_line_bytes:
                    raise ContainerError(_too_long(limits, line, row)) from exc
                raise _fail("invalid_json", f"invalid JSON ({exc.msg})", "fix the JSON; the file may be truncated",
                            line=at, row=row) from exc
        except RecursionError:
            return None, None
        more(size)  # the element continues past the buffer: read more and parse again
        size = max(size, len(state["buf"]) - pos)


def _text_lines(stream, limits: Limits, first_line: int = 0) -> Iterator[tuple[int, str | None, Issue | None]]:
    line = first_line
    while True:
        raw = stream.readline(limits.max_line_bytes + 1)
        if not raw:
            return
        line += 1
        if len(raw) > limits.max_line_bytes and not raw.endswith(b"\n"):
            _skip_line(stream)
            yield line, None, _too_long(limits, line, None)
            continue
        try:
            yield line, raw.decode("utf-8"), None
        except UnicodeDecodeError as exc:
            yield line, None, Issue("invalid_utf8", f"not valid UTF-8 (byte {exc.start})", "save the file as UTF-8",
                                    line=line)


def _text_records(stream, limits: Limits) -> Iterator[Record]:
    row = 0
    for line, text, issue in _text_lines(stream, limits):
        if text is not None and not text.strip():
            continue
        row += 1
        if issue:
            yield row, line, None, Issue(issue.kind, issue.message, issue.fix, line=line, row=row)
        else:
            yield row, line, {"text": text.removesuffix("\n").removesuffix("\r").lstrip("\ufeff")}, None


def _csv_records(stream, limits: Limits, delimiter: str) -> Iterator[Record]:
    position = {"line": 0}

    def lines() -> Iterator[str]:
        for line, text, issue in _text_lines(stream, limits, position["line"]):
            position["line"] = line
            if issue:  # a CSV row cannot be skipped safely (quotes span lines): stop here
                raise ContainerError(Issue(issue.kind, issue.message + " (a field or a row this large is refused)",
                                           issue.fix, line=line))
            yield text

    csv.field_size_limit(limits.max_field_bytes)
    reader = csv.reader(lines(), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise _fail("missing_header", "the first line must name the columns",
                        "add a header line, e.g. prompt,completion", line=1)
        header = [h.strip().lstrip("\ufeff") for h in header]
        duplicates = sorted({h for h in header if header.count(h) > 1})
        if duplicates or "" in header:
            raise _fail("bad_header", f"column names must be unique and non-empty (header: {header})",
                        "rename the columns", line=1)
        row = 0
        start = position["line"] + 1
        for values in reader:
            row += 1
            if not values or values == [""]:
                row -= 1
            elif len(values) != len(header):
                yield row, start, None, Issue("wrong_column_count", f"has {len(values)} columns, the header "
                                              f"has {len(header)}", "quote fields holding the delimiter",
                                              line=start, row=row)
            else:
                yield row, start, dict(zip(header, values, strict=True)), None
            start = position["line"] + 1
    except csv.Error as exc:
        raise _fail("bad_csv", f"{exc} (a field larger than {size_text(limits.max_field_bytes)} is refused)"
                    if "field limit" in str(exc) else f"not readable as CSV ({exc})",
                    "shorten the field or fix the quoting", line=position["line"]) from exc


def _parquet_records(path: Path, limits: Limits) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        metadata = parquet.metadata
    except (pa.ArrowException, OSError) as exc:
        raise _fail("unreadable_parquet", f"not a complete Parquet file ({str(exc).splitlines()[0]})",
                    "export the file again; it may be truncated") from exc
    row = 0
    for index in range(parquet.num_row_groups):
        size = metadata.row_group(index).total_byte_size
        if size > limits.max_row_group_bytes:
            raise _fail("row_group_too_large", f"row group {index} is {size_text(size)}",
                        f"write the file with smaller row groups (at most {size_text(limits.max_row_group_bytes)}, "
                        "e.g. row_group_size=10000)", row=row + 1)
        try:
            table = parquet.read_row_group(index)
        except (pa.ArrowException, OSError) as exc:
            raise _fail("unreadable_parquet", f"row group {index} cannot be read ({str(exc).splitlines()[0]})",
                        "export the file again; it may be damaged", row=row + 1) from exc
        for batch in table.to_batches(max_chunksize=4096):
            for value in batch.to_pylist():
                row += 1
                yield row, None, value, None
        del table


# --- archives of many files (image data sets) ----------------------------------------------------

def stream_records(stream, container: str, limits: Limits) -> Iterator[Record]:
    """The rows of a JSONL or CSV stream already open (a labels file inside an archive)."""
    if container == JSONL:
        return _jsonl_records(stream, limits)
    if container == CSV:
        return _csv_records(stream, limits, ",")
    raise ValueError(f"stream_records reads JSONL or CSV, not {container}")


TAR = "tar"
MANY_FILES_SUFFIXES = {".zip": ZIP, ".tar": TAR, ".tar.gz": TAR, ".tgz": TAR}


@dataclass(frozen=True)
class ArchiveEntry:
    """One regular file of an archive: its path inside it, and its declared (uncompressed) size."""

    name: str
    size: int


def archive_kind(name: str, head: bytes) -> str:
    """ZIP or TAR for an archive of many files, from its name (``.zip``, ``.tar``, ``.tar.gz``, ``.tgz``),
    which its first bytes must match; ``ContainerError`` otherwise."""
    lower = name.lower()
    kind = next((k for suffix, k in MANY_FILES_SUFFIXES.items() if lower.endswith(suffix)), "")
    if not kind:
        raise _fail("unsupported_extension", f"{PurePosixPath(name).suffix or 'no extension'} is not an archive we "
                    "read", "upload a .zip, .tar, .tar.gz or .tgz of class folders")
    looks_zip = head.startswith((b"PK\x03\x04", b"PK\x05\x06"))
    looks_tar = head.startswith(b"\x1f\x8b") or head[257:262] == b"ustar"
    if (kind == ZIP and not looks_zip) or (kind == TAR and not looks_tar):
        raise _fail("wrong_extension", f"named {PurePosixPath(name).suffix} but the content is not "
                    f"{'a ZIP' if kind == ZIP else 'a tar'} archive (it starts with {_preview(head)})",
                    "check that this is the archive you meant, or re-create it")
    return kind


def archive_entries(path: Path, kind: str, limits: Limits) -> list[ArchiveEntry]:
    """The regular files of a ZIP or tar, checked before any is read: the entry count, the declared
    sizes (in all, and against the compressed size), paths pointing outside the archive, links and
    device files, encryption. Folders, ``__MACOSX/`` and hidden files are left out.
    A tar is read as a stream (gzip-compressed or not), its headers only."""
    compressed = max(Path(path).stat().st_size, 1)
    entries: list[ArchiveEntry] = []
    total = 0
    with _many_open(path, kind, limits) as members:
        for count, (info, _) in enumerate(members, start=1):
            if count > limits.max_archive_entries:
                raise _fail("archive_entries", f"the archive holds more than {limits.max_archive_entries} entries",
                            "split it into smaller archives; the limit is DATASET_VISION_MAX_FILES")
            name, size, kind_of = info
            archive_path_check(name, kind.upper())
            if kind_of == "link":
                raise _fail("archive_link", f"{name} is a link (links are refused: they can point outside the "
                            "archive)", "archive the files themselves, not links to them")
            if kind_of == "special":
                raise _fail("archive_special_file", f"{name} is not a regular file (a device or a pipe)",
                            "archive only the images and the labels file")
            if kind_of == "encrypted":
                raise _fail("encrypted_archive", f"{name} is encrypted", "upload it without a password")
            if kind_of == "dir" or archive_path_skipped(name):
                continue
            total += size
            if total > limits.max_uncompressed_bytes:
                raise _fail("archive_too_large", f"the archive expands to more than "
                            f"{size_text(limits.max_uncompressed_bytes)}", "split it into smaller archives; "
                            "the limit is DATASET_MAX_UNCOMPRESSED_BYTES")
            entries.append(ArchiveEntry(name, size))
    if total > MiB and total > compressed * limits.max_ratio:
        raise _fail("archive_ratio", f"the archive expands more than {limits.max_ratio} times its size "
                    "(a zip bomb?)", "upload it uncompressed if it is genuine; the limit is "
                    "DATASET_MAX_COMPRESSION_RATIO")
    return entries


def archive_read(path: Path, kind: str, limits: Limits,
                 wanted: Callable[[str], bool]) -> Iterator[tuple[ArchiveEntry, io.BufferedReader]]:
    """The files ``wanted`` accepts (call ``archive_entries`` first), in archive order, each as a
    decompressing stream bounded by the archive limits; only one is open at a time, and a stream is
    no longer readable once the next one is yielded."""
    with _many_open(path, kind, limits) as members:
        for (name, size, kind_of), opener in members:
            if kind_of != "file" or archive_path_skipped(name) or not wanted(name):
                continue
            stream = opener()
            try:
                yield ArchiveEntry(name, size), stream
            finally:
                stream.close()


class _many_open:
    """Iterate ``((name, size, kind), opener)`` over a ZIP's or tar's entries; ``kind`` is file, dir,
    link, special or encrypted; ``opener()`` returns the file's bounded stream."""

    def __init__(self, path: Path, kind: str, limits: Limits) -> None:
        self.path, self.kind, self.limits = Path(path), kind, limits
        self.handle = None

    def __enter__(self):
        self.handle = open(self.path, "rb")
        try:
            return self._zip() if self.kind == ZIP else self._tar()
        except BaseException:
            self.handle.close()
            raise

    def __exit__(self, *exc) -> None:
        self.handle.close()

    def _zip(self):
        try:
            archive = zipfile.ZipFile(self.handle)
            infos = archive.infolist()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise _fail("broken_archive", f"not a readable ZIP archive ({exc})",
                        "re-create the ZIP; the file may be truncated") from exc
        if len(infos) > self.limits.max_archive_entries:  # counted before walking a huge directory
            raise _fail("archive_entries", f"the ZIP holds {len(infos)} entries (at most "
                        f"{self.limits.max_archive_entries})", "split it into smaller archives; the limit is "
                        "DATASET_VISION_MAX_FILES")

        def entries():
            for info in infos:
                mode = info.external_attr >> 16
                kind = ("dir" if info.is_dir() else "link" if stat.S_ISLNK(mode)
                        else "special" if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR)
                        else "encrypted" if info.flag_bits & 0x1 else "file")
                yield (info.filename, info.file_size, kind), lambda info=info: self._zip_stream(archive, info)

        return entries()

    def _zip_stream(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> io.BufferedReader:
        if info.file_size > MiB and info.file_size > max(info.compress_size, 1) * self.limits.max_ratio:
            raise _fail("archive_ratio", f"{info.filename} expands {info.file_size // max(info.compress_size, 1)}"
                        " times its size (a zip bomb?)", "upload it uncompressed if it is genuine")
        try:
            raw = archive.open(info)
        except (NotImplementedError, zipfile.BadZipFile, RuntimeError) as exc:
            raise _fail("broken_archive", f"cannot open {info.filename} in the ZIP ({exc})",
                        "re-create the ZIP with ordinary (deflate) compression") from exc
        return io.BufferedReader(_Bounded(raw, self.limits, max(info.compress_size, 1)), CHUNK)

    def _tar(self):
        head = self.handle.read(2)
        self.handle.seek(0)
        source = gzip.GzipFile(fileobj=self.handle) if head == b"\x1f\x8b" else self.handle
        # The whole stream is bounded: a gzip bomb stops at the limits, whatever the headers declare.
        bounded = io.BufferedReader(_Bounded(source, self.limits, self.path.stat().st_size), CHUNK)
        try:
            archive = tarfile.open(fileobj=bounded, mode="r|")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise _fail("broken_archive", f"not a readable tar archive ({exc})",
                        "re-create the archive; the file may be truncated") from exc

        def entries():
            try:
                for info in archive:
                    kind = ("dir" if info.isdir() else "link" if info.issym() or info.islnk()
                            else "file" if info.isfile() else "special")
                    yield (info.name, info.size, kind), lambda info=info: io.BufferedReader(
                        archive.extractfile(info), CHUNK)
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise _fail("broken_archive", f"the tar archive is damaged ({exc})",
                            "re-create the archive; the file may be truncated") from exc

        return entries()
