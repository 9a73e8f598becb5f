"""Text repair for published corpus tables: mixed cp1252/UTF-8 bytes, mojibake, cp1252 control characters.

The published MELD CSVs mix three accidents of encoding:

* UTF-8 text that was once decoded as cp1252 and re-encoded ("mojibake"): ``it’s`` appears as ``itâ€™s``,
  a no-break space as ``Â `` (the ``Â`` left behind when the space was normalised);
* cp1252 punctuation stored as C1 control characters: U+0092 instead of ``’``, U+0085 instead of ``…``;
* lines that are cp1252 bytes inside an otherwise UTF-8 file.

``decode_mixed`` reads bytes line by line (UTF-8, else cp1252); ``repair_text`` undoes the mojibake, maps the
control characters back to punctuation and normalises quotes to ASCII; ``read_csv_robust`` combines both
with clear errors for empty files and missing columns. ftfy does the same in general; this is the small part
of it these corpora need, and it leaves correct text (Russian, accented Latin) unchanged.

``decode_table`` also reads UTF-16 and UTF-32 tables (a byte-order mark, or UTF-16 without one, recognised by
the NUL bytes of its header line) and names a zip (Excel) file; cells may be as long as the file.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import os
import re
import unicodedata
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

# cp1252 assigns printable characters to bytes 0x80-0x9F except these five.
_CP1252_UNDEFINED = {0x81, 0x8D, 0x8F, 0x90, 0x9D}


def _char_to_cp1252_byte(ch: str) -> int | None:
    """The byte (>= 0x80) that ``ch`` stands for when bytes were shown as cp1252 (latin-1 for the gaps)."""
    o = ord(ch)
    if 0x80 <= o <= 0xFF and (o >= 0xA0 or o in _CP1252_UNDEFINED):
        return o  # latin-1 range; C1 controls only where cp1252 has no character
    try:
        b = ch.encode("cp1252")
    except UnicodeEncodeError:
        return None
    return b[0] if len(b) == 1 and b[0] >= 0x80 else None


def _utf8_len(lead: int) -> int:
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def fix_mojibake(text: str) -> str:
    """Undo UTF-8-read-as-cp1252: ``"itâ€™s"`` -> ``"it’s"``, ``"cafÃ©"`` -> ``"café"``.

    Only character runs that form *valid* UTF-8 byte sequences are replaced, so correct text (``"naïve"``,
    Cyrillic) stays as it is.
    """
    if not text or text.isascii():
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        lead = _char_to_cp1252_byte(text[i])
        size = _utf8_len(lead) if lead is not None else 0
        if size and i + size <= n:
            bs = [lead]
            for ch in text[i + 1:i + size]:
                b = _char_to_cp1252_byte(ch)
                if b is None or not 0x80 <= b <= 0xBF:
                    break
                bs.append(b)
            if len(bs) == size:
                try:
                    out.append(bytes(bs).decode("utf-8"))
                    i += size
                    continue
                except UnicodeDecodeError:
                    pass
        out.append(text[i])
        i += 1
    return "".join(out)


def _c1_to_cp1252(text: str) -> str:
    """C1 control characters (U+0080-U+009F) that cp1252 defines -> that character (U+0092 -> ’)."""
    if not any("\x80" <= ch <= "\x9f" for ch in text):
        return text
    chars = []
    for ch in text:
        o = ord(ch)
        if 0x80 <= o <= 0x9F:
            ch = bytes([o]).decode("cp1252", errors="ignore") if o not in _CP1252_UNDEFINED else ""
        chars.append(ch)
    return "".join(chars)


_ASCII_PUNCT = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
    "\u2026": "...",
    "\u00a0": " ", "\u2009": " ", "\u202f": " ",
    "\u200b": "", "\u200c": "", "\u200d": "", "\ufeff": "",
})
# A stray "Â" is what remains of a UTF-8 no-break space (C2 A0) after the A0 became a plain space.
_STRAY_A_CIRCUMFLEX = re.compile(r"Â(?![A-Za-zÀ-ÿ])")
_SPACES = re.compile(r"\s+")


def repair_text(text: object) -> str:
    """Clean one transcript: mojibake, cp1252 controls, typographic quotes -> ASCII, spaces collapsed.

    ``None``/NaN give ``""``. Dashes are kept as they are. Idempotent: ``repair_text(repair_text(s)) ==
    repair_text(s)``.
    """
    if text is None or (isinstance(text, float) and text != text):
        return ""
    s = str(text)
    s = fix_mojibake(s)
    s = _c1_to_cp1252(s)
    s = fix_mojibake(s)  # a control char may have been part of a mojibake sequence
    s = _STRAY_A_CIRCUMFLEX.sub("", s)
    s = unicodedata.normalize("NFC", s.translate(_ASCII_PUNCT))
    s = "".join(ch for ch in s if ch in "\t\n" or unicodedata.category(ch) != "Cc")
    return _SPACES.sub(" ", s).strip()


def decode_mixed(data: bytes, where: str = "file") -> tuple[str, list[int]]:
    """Decode bytes that are UTF-8 except for some cp1252 lines; returns (text, 1-based non-UTF-8 line numbers).

    A UTF-8 byte-order mark is dropped. Bytes that cp1252 leaves undefined are read as latin-1, so decoding
    never fails; the caller decides whether non-UTF-8 lines matter.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError:
        pass
    lines, bad = [], []
    for no, line in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            bad.append(no)
            lines.append("".join(bytes([b]).decode("cp1252") if b not in _CP1252_UNDEFINED else chr(b)
                                 for b in line))
    log.warning("%s: %d line(s) are not UTF-8 and were read as cp1252 (lines %s)", where, len(bad),
                ", ".join(map(str, bad[:10])) + (" …" if len(bad) > 10 else ""))
    return "\n".join(lines), bad


class TableError(ValueError):
    """A corpus table that cannot be used; the message names the file (and row)."""


_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
              (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def _bomless_utf16(data: bytes, path: str | os.PathLike) -> str | None:
    """``"utf-16-le"``/``"utf-16-be"`` for a file without byte-order mark whose header line has NUL bytes at odd
    / even offsets only (ASCII in UTF-16), None when the header line has none (a NUL in a UTF-8 cell is just a
    character); ``TableError`` for NULs at both (UTF-32 without mark, or a binary file)."""
    end = data.find(b"\n")
    line = data if end < 0 else data[:end]  # the header line (with UTF-16-BE's NUL before its newline)
    even, odd = line[0::2].count(0), line[1::2].count(0)
    if not even and not odd:
        return None
    if even and odd:
        raise TableError(f"{path}: NUL bytes in the header line: not a UTF-8 or UTF-16 CSV (UTF-32 without "
                         f"byte-order mark, or a binary file?); save it as CSV (UTF-8) or Parquet")
    return "utf-16-le" if odd else "utf-16-be"


def decode_table(data: bytes, path: str | os.PathLike) -> str:
    """The text of a table file: UTF-32/UTF-16 (byte-order mark, or UTF-16 recognised by its NUL bytes), else
    UTF-8 with cp1252 lines (``decode_mixed``). ``TableError`` for a zip (Excel) file or invalid UTF-16/32."""
    if data.startswith(b"PK\x03\x04"):
        raise TableError(f"{path}: a zip file (an Excel workbook?), not a CSV; save it as CSV (UTF-8) or Parquet")
    enc, start = next(((e, len(b)) for b, e in _WIDE_BOMS if data.startswith(b)), (None, 0))
    enc = enc or (_bomless_utf16(data, path) if b"\x00" in data else None)
    if enc is None:
        return decode_mixed(data, where=str(path))[0]
    try:
        return data[start:].decode(enc)
    except UnicodeDecodeError as exc:
        raise TableError(f"{path}: looks like {enc.upper()} but byte {start + exc.start} is not valid {enc.upper()} "
                         f"(truncated or mixed file?); convert it, e.g. iconv -f {enc.upper()} -t UTF-8") from None


def check_field_counts(text: str, path: str | os.PathLike) -> None:
    """Raise ``TableError`` naming the first line whose field count differs from the header's (e.g. times
    written with unquoted commas): pandas would otherwise shift such rows into the index, silently."""

    reader = csv.reader(io.StringIO(text))
    # a cell may be as long as the file (a long transcript is a valid row); the limit is process-wide: restored
    old_limit = csv.field_size_limit(max(csv.field_size_limit(), min(len(text) + 1, 2**31 - 1)))
    try:
        _check_rows(csv, reader, path)
    finally:
        csv.field_size_limit(old_limit)


def _check_rows(csv, reader, path) -> None:
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        return
    n, line = len(header), reader.line_num + 1
    try:
        for row in reader:
            if row and len(row) != n:
                raise TableError(f"{path} line {line}: {len(row)} fields but the header has {n} (an unquoted "
                                 f"comma in a value?); fix the file, the columns would be shifted")
            line = reader.line_num + 1
    except csv.Error as exc:
        raise TableError(f"{path} line {line}: not a readable CSV row ({exc})") from None


def read_table_bytes(path: Path) -> bytes:
    """The bytes of a table file; ``TableError`` for a missing file, a folder or an unreadable file."""
    if path.is_dir():
        raise TableError(f"{path}: is a folder, not a table file (give the CSV or Parquet file inside it)")
    if not path.is_file():
        raise TableError(f"{path}: file not found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TableError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not data.strip():
        raise TableError(f"{path}: the file is empty")
    return data


def read_csv_robust(path: str | os.PathLike, required: list[str] | tuple[str, ...] = ()):
    """Read a corpus CSV whatever its mix of UTF-8 and cp1252 (or UTF-16/32: ``decode_table``); all columns as
    strings, cells of any length.

    Raises ``TableError`` naming the file for a missing, empty or unparsable file, a folder, or missing columns.
    Column names are stripped of spaces and a byte-order mark.
    """
    path = Path(path)
    return csv_frame(read_table_bytes(path), path, required)


def csv_frame(data: bytes, path: str | os.PathLike, required: list[str] | tuple[str, ...] = ()):
    """The bytes of a CSV file as a DataFrame of strings (``read_csv_robust`` once the file is read)."""

    text = decode_table(data, path)
    if not text.strip():
        raise TableError(f"{path}: the file is empty")
    check_field_counts(text, path)
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises several parser errors
        raise TableError(f"{path}: not a readable CSV ({' '.join(str(exc).split())})") from exc
    df.columns = [str(c).strip().lstrip("\ufeff") for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise TableError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    if df.empty:
        raise TableError(f"{path}: the table has a header but no rows")
    return df
