"""Reading applications in chunks (JSONL, CSV, Parquet) and writing decisions (same formats).

JSONL lines are decoded by the very decoder /decide uses (decoding is validation). Parquet and
CSV arrive as columns; they are validated column-wise against the model card (the source of the
request type's constraints) and every row found invalid gets the messages /decide would give
(`field_errors` on that row as JSON). Memory is bounded by the chunk size, whatever the file.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from decision_service.batch.columns import ApplicationColumns, Col
from decision_service.scoring.application import FieldError, decode_application, field_errors
from decision_service.scoring.card import FeatureSpec

FORMATS = ("jsonl", "csv", "parquet")
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"


class BatchInputError(Exception):
    """The file as a whole cannot be read as applications (nothing was decided)."""


@dataclass
class Chunk:
    apps: ApplicationColumns  # the valid rows
    lines: np.ndarray  # their line (JSONL, CSV) or row (Parquet) numbers, 1-based
    errors: list[tuple[int, str | None, list[FieldError]]]  # (line, application_id, errors)
    requests: list[bytes] | None = None  # JSONL: each valid row's exact bytes
    arrow: pa.RecordBatch | None = None  # Parquet/CSV: the valid rows as read
    size: int = field(default=0)  # rows read (valid + invalid)


def input_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson", "json"):
        return "jsonl"
    if suffix in ("csv", "parquet"):
        return suffix
    if path.is_dir():
        return "parquet"  # a data-lake directory of Parquet files
    raise BatchInputError(f"{path}: unknown input format (use .jsonl, .csv or .parquet)")


def parquet_files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(path.rglob("*.parquet"))


def total_rows(path: Path, fmt: str) -> int:
    """Rows to decide (for the progress bar): Parquet metadata, else a count of lines."""
    if fmt == "parquet":
        return sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(path))
    lines = 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            lines += block.count(b"\n")
    return max(lines - (fmt == "csv"), 0)


def raw_batches(path: Path, chunk_rows: int) -> Iterator[tuple[pa.RecordBatch, int]]:
    """Parquet or CSV rows as read, not yet validated, with the line of their first row."""
    if input_format(path) == "parquet":
        start = 1
        for file in parquet_files(path):
            for batch in pq.ParquetFile(file).iter_batches(batch_size=chunk_rows):
                yield batch, start
                start += batch.num_rows
        return
    start = 2  # line 1 is the header
    for batch in _csv_batches(path, chunk_rows):
        yield batch, start
        start += batch.num_rows


def read_chunks(
    path: Path, app_type: type, specs: tuple[FeatureSpec, ...], chunk_rows: int
) -> Iterator[Chunk]:
    if input_format(path) == "jsonl":
        yield from _jsonl(path, app_type, specs, chunk_rows)
        return
    for batch, start in raw_batches(path, chunk_rows):
        yield arrow_chunk(batch, app_type, specs, start)


def _jsonl(path: Path, app_type: type, specs, chunk_rows: int) -> Iterator[Chunk]:
    apps: list[Any] = []
    requests: list[bytes] = []
    lines: list[int] = []
    errors: list[tuple[int, str | None, list[FieldError]]] = []
    size = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            body = raw.rstrip(b"\r\n")
            if not body.strip():
                continue
            size += 1
            try:
                apps.append(decode_application(app_type, body))
                requests.append(body)
                lines.append(number)
            except (msgspec.ValidationError, msgspec.DecodeError):
                errors.append((number, _id_of(body), field_errors(app_type, body)))
            if size >= chunk_rows:
                yield _struct_chunk(apps, requests, lines, errors, specs, size)
                apps, requests, lines, errors, size = [], [], [], [], 0
    if size:
        yield _struct_chunk(apps, requests, lines, errors, specs, size)


def _struct_chunk(apps, requests, lines, errors, specs, size) -> Chunk:
    cols = ApplicationColumns.from_structs(apps, specs)
    return Chunk(cols, np.asarray(lines, np.int64), errors, requests=requests, size=size)


def _id_of(body: bytes) -> str | None:
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    ident = value.get("application_id") if isinstance(value, dict) else None
    return ident if isinstance(ident, str) else None


def _csv_batches(path: Path, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """CSV as text columns (empty = missing); typed per column in `arrow_chunk`."""
    read = pcsv.ReadOptions(block_size=max(1 << 20, chunk_rows * 200))
    with path.open("rb") as f:
        header = f.readline().decode("utf-8").strip().split(",")
    convert = pcsv.ConvertOptions(
        column_types={name: pa.string() for name in header}, strings_can_be_null=True
    )
    reader = pcsv.open_csv(path, read_options=read, convert_options=convert)
    for batch in reader:
        yield from (batch.slice(i, chunk_rows) for i in range(0, batch.num_rows, chunk_rows))


# -- column-wise validation ----------------------------------------------------------------------


def _typed(name: str, spec: FeatureSpec | None, column: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The column in its field's Arrow type, and a mask of rows whose value has a wrong type."""
    bad = np.zeros(len(column), bool)
    if spec is None:
        target: pa.DataType = pa.string()
    else:
        target = {
            "integer": pa.int64(),
            "number": pa.float64(),
            "boolean": pa.bool_(),
            "category": pa.string(),
        }[spec.type]
    t = column.type
    if pa.types.is_dictionary(t):
        column, t = column.dictionary_decode(), column.type.value_type
    if t == target:
        return column, bad
    text = pa.types.is_string(t) or pa.types.is_large_string(t)
    compatible = (
        (target == pa.int64() and pa.types.is_integer(t))
        or (target == pa.float64() and (pa.types.is_integer(t) or pa.types.is_floating(t)))
        or (target == pa.string() and pa.types.is_large_string(t))
    )
    if compatible:
        return column.cast(target), bad
    if not text:
        raise BatchInputError(f"column {name!r} is {t}; the application field needs {target}")
    try:  # CSV: text columns
        return pc.cast(column, target), bad
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = []
        for i, v in enumerate(column.to_pylist()):
            try:
                values.append(None if v is None else _parse(v, target))
            except ValueError:
                values.append(None)
                bad[i] = True
        return pa.array(values, target), bad


def _parse(text: str, target: pa.DataType) -> Any:
    if target == pa.int64():
        return int(text)
    if target == pa.float64():
        return float(text)
    if target == pa.bool_():
        lowered = text.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise ValueError(text)
    return text


def arrow_chunk(
    batch: pa.RecordBatch, app_type: type, specs: tuple[FeatureSpec, ...], first_line: int
) -> Chunk:
    """Validate a batch of rows column-wise; the valid ones become ApplicationColumns."""
    by_name = {s.name: s for s in specs}
    names = batch.schema.names
    unknown = [n for n in names if n != "application_id" and n not in by_name]
    if unknown:
        raise BatchInputError(
            f"unknown column(s) {', '.join(unknown)}: an application has application_id and "
            f"{', '.join(by_name)}"
        )
    n = batch.num_rows
    if "application_id" not in names:
        raise BatchInputError("column 'application_id' is missing")
    invalid = np.zeros(n, bool)
    typed: dict[str, pa.Array] = {}
    for name in ["application_id", *by_name]:
        spec = by_name.get(name)
        if name not in names:
            if spec is not None and spec.missing != "allow":
                raise BatchInputError(f"column {name!r} is missing (the field is required)")
            typed[name] = pa.nulls(n, pa.string() if spec is None else _arrow_type(spec))
            continue
        column, bad = _typed(name, spec, batch.column(name))
        invalid |= bad
        typed[name] = column
        invalid |= _invalid(name, spec, column)
    ids = typed["application_id"]
    errors = []
    rows = np.flatnonzero(invalid)
    if len(rows):
        raw = batch.take(pa.array(rows)).to_pylist()
        for i, row in zip(rows, raw, strict=True):
            body = msgspec.json.encode({k: v for k, v in row.items() if v is not None})
            found = field_errors(app_type, body) or _own_errors(row)
            ident = row.get("application_id")
            errors.append((first_line + int(i), ident if isinstance(ident, str) else None, found))
    valid = np.flatnonzero(~invalid)
    index = pa.array(valid)
    cols = {}
    for spec in specs:
        column = typed[spec.name].take(index)
        cols[spec.name] = _col(spec, column)
    kept = pa.RecordBatch.from_arrays(
        [typed[k].take(index) for k in ["application_id", *by_name]],
        names=["application_id", *by_name],
    )
    apps = ApplicationColumns(ids.take(index).to_pylist(), cols)
    return Chunk(apps, valid + first_line, errors, arrow=kept, size=n)


def _arrow_type(spec: FeatureSpec) -> pa.DataType:
    return {"integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_()}.get(
        spec.type, pa.string()
    )


def _invalid(name: str, spec: FeatureSpec | None, column: pa.Array) -> np.ndarray:
    null = column.is_null().to_numpy(zero_copy_only=False)
    if spec is None:  # application_id: 1..64 characters of the id alphabet
        length = pc.utf8_length(column).fill_null(0).to_numpy(zero_copy_only=False)
        ok = pc.match_substring_regex(column, ID_PATTERN).fill_null(False)
        return null | (length < 1) | (length > 64) | ~ok.to_numpy(zero_copy_only=False)
    bad = null if spec.missing != "allow" else np.zeros(len(column), bool)
    if spec.type in ("integer", "number"):
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
        with np.errstate(invalid="ignore"):
            wrong = ~np.isfinite(values)
            if spec.range is not None:
                wrong |= (values < spec.range[0]) | (values > spec.range[1])
        bad = bad | (wrong & ~null)
    elif spec.type == "category":
        found = pc.is_in(column, value_set=pa.array(spec.categories or (), pa.string()))
        bad = bad | (~found.to_numpy(zero_copy_only=False) & ~null)
    return bad


def _own_errors(row: dict[str, Any]) -> list[FieldError]:
    """Values JSON cannot carry (NaN, infinities) never reach msgspec: say so ourselves."""
    return [
        FieldError(f"$.{k}", "not a finite number")
        for k, v in row.items()
        if isinstance(v, float) and not math.isfinite(v)
    ] or [FieldError("$", "invalid application")]


def _col(spec: FeatureSpec, column: pa.Array) -> Col:
    known = column.is_valid().to_numpy(zero_copy_only=False)
    if spec.type in ("integer", "number"):
        values = column.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
        return Col("number", values, known, spec.type == "integer")
    if spec.type == "boolean":
        return Col("boolean", column.fill_null(False).to_numpy(zero_copy_only=False), known)
    vocab = tuple(spec.categories or ())
    codes = pc.index_in(column, value_set=pa.array(vocab, pa.string()))
    codes = codes.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int16)
    return Col("category", codes, known, False, vocab)


# -- writing ---------------------------------------------------------------------------------------


class Writer:
    """Decisions to a file in chunks: Parquet (nested reasons), CSV (lists joined by ';') or
    JSONL (one Decision per line, exactly what /decide answers)."""

    def __init__(self, path: Path, fmt: str, schema: pa.Schema) -> None:
        self.path, self.fmt = path, fmt
        self._parquet: pq.ParquetWriter | None = None
        self._csv: pcsv.CSVWriter | None = None
        self._file = path.open("wb") if fmt == "jsonl" else None
        self._schema = schema

    def write_table(self, table: pa.Table) -> None:
        if self.fmt == "parquet":
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            self._parquet.write_table(table)
        else:
            flat = flatten(table)
            if self._csv is None:
                self._csv = pcsv.CSVWriter(self.path, flat.schema)
            self._csv.write_table(flat)

    def write_lines(self, lines: list[bytes]) -> None:
        assert self._file is not None
        self._file.write(b"".join(lines))

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        elif self.fmt == "parquet":
            pq.write_table(self._schema.empty_table(), self.path)
        if self._csv is not None:
            self._csv.close()
        elif self.fmt == "csv":
            pcsv.write_csv(flatten(self._schema.empty_table()), self.path)
        if self._file is not None:
            self._file.close()


def flatten(table: pa.Table) -> pa.Table:
    """Lists joined by ';' (reason codes, rules fired), as `audit export --format csv` does."""
    reasons = table.column("reasons").combine_chunks()
    codes = pa.ListArray.from_arrays(reasons.offsets, pc.struct_field(reasons.values, "code"))
    rules = table.column("rules_fired").combine_chunks()
    table = table.set_column(
        table.schema.get_field_index("reasons"), "reasons", pc.binary_join(codes, ";")
    )
    return table.set_column(
        table.schema.get_field_index("rules_fired"), "rules_fired", pc.binary_join(rules, ";")
    )
