"""A topic's output schema: stable columns and types across batches, no dropped field, and a reason for
every record that cannot be written.

Why: ``pa.Table.from_pylist`` infers a table's schema from its first record and per batch, so a field
missing from the first record vanished, and one column could be int64, double and string in different
files of a topic. Here a topic keeps one :class:`Schema` (in its state) that every batch starts from:

- **Never drop a field.** Every field of every accepted record is written; a field the schema does not know
  adds a nullable column (appended, in order of first appearance; existing columns keep their order).
- **Stable types.** A column's type is fixed by its first non-null value (or declared in the topics file).
  Inference: ``bool`` -> boolean, ``int`` -> int64, ``float`` -> double, ``str`` -> string, ``datetime`` ->
  timestamp (UTC, microseconds; a naive datetime *is* UTC), ``date`` -> date, ``Decimal`` -> string holding
  its exact text (declare ``decimal(P,S)`` to get a decimal column), ``dict``/``list`` (and tuple, set) ->
  json (compact JSON text). Only two widenings exist, for undeclared columns: ``null`` -> anything and int64
  -> double when a float arrives (ints are exact in a double up to 2**53; a bigger int in a double column is
  rejected). Anything else (a string in an int64 column, a number or a bool in a string column, a bool in a
  number column) is a conflict.
- **Declared columns never widen.** A value is converted to the declared type when that is lossless
  (:func:`conform` lists what each type accepts), else the record is rejected.
- **Quarantine with column and reason.** A record that cannot be written is rejected as a whole, with the
  first column at fault and why (``column 'speed': expected int64, got str 'N/A'``). A rejected record
  contributes nothing: neither its new fields nor its widening reach the schema, so the outcome only depends
  on the accepted records, in order.

Choices worth knowing:

- A column that has only seen nulls has the internal type ``null`` and is written as an Arrow/Parquet
  *null* column (Parquet ``INT32`` annotated ``UNKNOWN``), not as string: it claims no type, so readers that
  unify files by name (DuckDB ``union_by_name``, ``pyarrow.unify_schemas``) take the type of the files
  where it has values; a string column would turn them into strings.
- A timestamp column holds UTC instants: naive datetimes are taken as UTC, aware ones are converted.
  Declared timestamps also accept ISO 8601 strings (sub-microsecond digits are truncated, as the column
  holds microseconds) and epoch *seconds*.
- JSON Lines (:func:`encode_json_line`) write datetimes with ``isoformat()``: naive stays naive, aware keeps
  its offset; Decimals are written as JSON numbers with their exact digits.

pyarrow is imported inside the functions that need it: importing this module never imports pyarrow.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Context, Decimal, InvalidOperation
from json.encoder import encode_basestring
from operator import itemgetter
from typing import IO, TYPE_CHECKING, Any

from leanops.errors import ConfigError, SinkError

if TYPE_CHECKING:
    import pyarrow

__all__ = [
    "Column",
    "Conformed",
    "Rejected",
    "Schema",
    "UnwritableValue",
    "arrow_schema",
    "arrow_type",
    "conform",
    "encode_json_line",
    "merge_declared",
    "parse_declared",
    "write_parquet",
]

#: The types a topic may declare (besides ``decimal(P,S)``); ``null`` is internal only.
SIMPLE_TYPES = ("boolean", "int64", "double", "string", "timestamp", "date", "json")
NULL = "null"
MAX_DECIMAL_PRECISION = 38
#: Columns a topic's schema may hold: it travels in the run state (256 KB) and its state item (400 KB).
MAX_COLUMNS = 1000
ALLOWED_TYPES_TEXT = "boolean, int64, double, string, timestamp, date, decimal(P,S) (1<=P<=38, 0<=S<=P), json"
PARQUET_COMPRESSIONS = {"snappy": "snappy", "zstd": "zstd", "gzip": "gzip", "none": None}

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
#: Ints beyond this magnitude are not all exact in a double.
_EXACT_IN_DOUBLE = 2**53
_SHOWN_CHARS = 80
_DECIMAL_TYPE = re.compile(r"decimal\(\s*([0-9]+)\s*,\s*([0-9]+)\s*\)")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_DECIMAL_CONTEXT = Context(prec=2 * MAX_DECIMAL_PRECISION + 4)


def _refuse(value: object) -> None:
    raise TypeError(type(value).__name__)


def _plain(value: object) -> object:
    """What the JSON encoders write for the types json does not know, but Decimal (see _json_walk)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    raise TypeError(type(value).__name__)


def _json_encoder(default: Callable[[Any], object]) -> Callable[[Any], str]:
    """Compact JSON (no NaN, no ASCII escaping), or TypeError/ValueError/RecursionError (then walk)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        return json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=default
        ).encode
    # What JSONEncoder.encode builds on every call, built once. No circular check (markers None): a cycle
    # raises RecursionError, and the slow walk names it.
    encode = make(None, default, encode_basestring, None, ":", ",", False, False, False)

    def fast(value: Any) -> str:
        return "".join(encode(value, 0))

    return fast


#: The fast path: what json itself writes. Then the types json does not know (but Decimal), then the walk.
_FAST_JSON = _json_encoder(_refuse)
_PLAIN_JSON = _json_encoder(_plain)


def _to_json(value: Any) -> str:
    """``value`` as compact JSON text, or _Bad (saying why and where)."""
    try:
        text: str = _FAST_JSON(value)
    except (TypeError, ValueError, RecursionError):
        try:
            text = _PLAIN_JSON(value)
        except (TypeError, ValueError, RecursionError):
            return _json_walk(value, set())
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return _json_walk(value, set())


# --------------------------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Column:
    """One column: its name, its type (see the module docstring) and whether the topics file declares it."""

    name: str
    type: str
    declared: bool = False


@dataclass(frozen=True)
class Schema:
    """A topic's columns, in their stable order; ``version`` grows by one whenever a batch adds or widens."""

    columns: tuple[Column, ...] = ()
    version: int = 0

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def column(self, name: str) -> Column | None:
        for column in self.columns:
            if column.name == name:
                return column
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "columns": [{"name": c.name, "type": c.type, "declared": c.declared} for c in self.columns],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Schema:
        """The schema :meth:`to_json` wrote (``None``: no schema yet); ValueError if ``data`` is not one."""
        if data is None:
            return cls()
        try:
            version = data["version"]
            raw_columns = data["columns"]
            if type(version) is not int or version < 0 or not isinstance(raw_columns, list):
                raise TypeError
            columns = []
            for raw in raw_columns:
                name, type_, declared = raw["name"], raw["type"], raw.get("declared", False)
                normal = _parse_type(type_) if isinstance(type_, str) else None
                if normal is None and type_ != NULL:
                    raise ValueError(f"unknown column type {type_!r}")
                if not isinstance(name, str) or not name or not isinstance(declared, bool):
                    raise TypeError
                columns.append(Column(name, normal or NULL, declared))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a stored schema: {_shown(data)}") from exc
        if len({c.name for c in columns}) != len(columns):
            raise ValueError(f"stored schema names a column twice: {_shown(data)}")
        return cls(tuple(columns), version)


@dataclass(frozen=True)
class Rejected:
    """A record :func:`conform` cannot write: its index in the input, the column at fault and why."""

    index: int
    column: str
    reason: str


@dataclass(frozen=True)
class Conformed:
    """What :func:`conform` returns: the rows to write, the schema to write them with (and keep), rejects."""

    rows: list[dict[str, Any]]
    schema: Schema
    rejected: list[Rejected]


class UnwritableValue(ValueError):
    """A value its format cannot hold: ``column`` is the record's top-level field, ``reason`` says why."""

    def __init__(self, column: str, reason: str) -> None:
        super().__init__(reason)
        self.column = column
        self.reason = reason


# ------------------------------------------------------------------------------------- declared schemas


def parse_declared(raw: object, where: str) -> Schema:
    """The schema a topic declares (its ``schema:`` mapping of column name to type): every column declared."""
    if not isinstance(raw, dict) or not raw:
        got = "an empty mapping" if isinstance(raw, dict) else type(raw).__name__
        raise ConfigError(
            f"{where}: schema must be a non-empty mapping of column name to type "
            f"(e.g. {{id: int64, note: string}}), got {got}; allowed types: {ALLOWED_TYPES_TEXT}"
        )
    if len(raw) > MAX_COLUMNS:
        raise ConfigError(
            f"{where}: schema declares {len(raw)} columns, over the {MAX_COLUMNS} a topic's schema may hold "
            "(it travels in the run state and the state table)"
        )
    columns = []
    for name, type_ in raw.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"{where}: column name {name!r} must be a non-empty string (quote it in YAML); "
                f"allowed types: {ALLOWED_TYPES_TEXT}"
            )
        if type_ == NULL:
            raise ConfigError(
                f"{where}: column {name!r} cannot be declared 'null' (internal: a column without values "
                f"yet); declare the type it will hold, one of: {ALLOWED_TYPES_TEXT}"
            )
        normal = _parse_type(type_) if isinstance(type_, str) else None
        if normal is None:
            raise ConfigError(
                f"{where}: column {name!r} has invalid type {_shown(type_, limit=60)}; "
                f"allowed types: {ALLOWED_TYPES_TEXT}"
            )
        columns.append(Column(name, normal, declared=True))
    return Schema(tuple(columns), 0)


def merge_declared(kept: Schema | None, declared: Schema | None) -> Schema:
    """The schema a batch starts from: the kept one with the declared columns applied.

    A declared column not kept yet is appended. A kept column that is declared takes the declared type if
    it is the kept one or the kept one widens safely to it (``null`` -> any type, int64 -> double); any
    other change raises ConfigError. A kept column no longer declared stays, undeclared (it may then widen
    like any inferred column). The version is the kept one's.
    """
    kept = kept if kept is not None else Schema()
    wanted = {c.name: c for c in declared.columns} if declared is not None else {}
    columns: list[Column] = []
    for column in kept.columns:
        want = wanted.pop(column.name, None)
        if want is None:
            columns.append(Column(column.name, column.type) if column.declared else column)
            continue
        if column.type != want.type and not _widens(column.type, want.type):
            raise ConfigError(
                f"schema: column {column.name!r} is declared {want.type} but was written as {column.type}; "
                f"declare a type compatible with what was written ({column.type}"
                f"{', or double' if column.type == 'int64' else ''}), or write the topic to a new sink"
            )
        columns.append(Column(column.name, want.type, declared=True))
    columns.extend(Column(c.name, c.type, declared=True) for c in wanted.values())
    merged = Schema(tuple(columns), kept.version)
    return kept if merged == kept else merged


def _widens(old: str, new: str) -> bool:
    return old == NULL or (old == "int64" and new == "double")


def _parse_type(text: str) -> str | None:
    """The normal spelling of a declarable type, or None."""
    text = text.strip().lower()
    if text in SIMPLE_TYPES:
        return text
    match = _DECIMAL_TYPE.fullmatch(text)
    if match:
        precision, scale = int(match[1]), int(match[2])
        if 1 <= precision <= MAX_DECIMAL_PRECISION and 0 <= scale <= precision:
            return f"decimal({precision},{scale})"
    return None


def _decimal_parts(type_: str) -> tuple[int, int]:
    match = _DECIMAL_TYPE.fullmatch(type_)
    assert match is not None, type_
    return int(match[1]), int(match[2])


# ---------------------------------------------------------------------------------------------- values


class _Bad(Exception):
    """A value cannot go in a column: ``message`` says why (without the column, added by the caller)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.path: list[str] = []


Converter = Callable[[Any], Any]


def _shown(value: object, limit: int = _SHOWN_CHARS) -> str:
    """A value's repr for a reason, cut to about ``limit`` characters (never fails, never huge)."""
    if type(value) is int and value.bit_length() > 256:
        return f"<int of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reason(column: object, bad: _Bad) -> str:
    """``column 'x': why``, with where inside a nested value (``(at x['a'][2])``) if not at the top."""
    path = bad.path[::-1]
    where = f" (at {column}{''.join(path[:8])}{'...' if len(path) > 8 else ''})" if path else ""
    return f"column {_shown(column)}: {bad.message}{where}"


def _got(value: object) -> str:
    return f"{type(value).__name__} {_shown(value)}"


def _expected(type_: str, value: object) -> _Bad:
    return _Bad(f"expected {type_}, got {_got(value)}")


def _check_text(value: str) -> str:
    if value.isascii() or _SURROGATE.search(value) is None:
        return value
    raise _Bad(f"string {_shown(value)} holds a lone surrogate (not valid UTF-8)")


def _int64(value: Any) -> int:
    if type(value) is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return value
    elif isinstance(value, int) and not isinstance(value, bool):
        return _int64(int(value))
    else:
        raise _expected("int64", value)
    raise _Bad(f"int {_shown(value)} is outside the int64 range [-2**63, 2**63-1]")


def _double(value: Any) -> float:
    kind = type(value)
    if kind is float:
        return value
    if kind is int or (isinstance(value, int) and kind is not bool):
        if -_EXACT_IN_DOUBLE <= value <= _EXACT_IN_DOUBLE:
            return float(value)
        raise _Bad(f"int {_shown(value)} is not exact in a double column (|value| > 2**53)")
    if isinstance(value, float):
        return float(value)
    raise _expected("double", value)


def _boolean(value: Any) -> bool:
    if type(value) is bool:
        return value
    raise _expected("boolean", value)


def _string(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return value if value.isascii() else _check_text(value)
    if kind is Decimal:
        return str(value)
    if isinstance(value, str):
        return _check_text(str.__str__(value))
    if isinstance(value, Decimal):
        return str(value)
    raise _expected("string", value)


def _utc(value: datetime) -> datetime:
    tz = value.tzinfo
    if tz is UTC:
        return value
    if tz is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):  # e.g. 0001-01-01 at +05:00: before year 1 in UTC
        raise _Bad(f"{_got(value)} is out of range in UTC") from None


def _timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        return _utc(value)
    raise _expected("timestamp", value)


def _timestamp_declared(value: Any) -> datetime:
    if isinstance(value, datetime):
        return _utc(value)
    kind = type(value)
    if kind is str or isinstance(value, str):
        size = len(value)  # YYYY-MM-DD, alone or then T or space (fromisoformat checks the digits)
        if size >= 10 and value[4] == "-" and value[7] == "-" and (size == 10 or value[10] in "Tt "):
            try:
                return _utc(datetime.fromisoformat(value))
            except ValueError:
                pass
        raise _Bad(f"expected timestamp, got str {_shown(value)} (not an ISO 8601 date and time)")
    if kind is not bool and isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise _Bad(f"{_got(value)} is not a timestamp in epoch seconds (out of range)") from None
    raise _expected("timestamp", value)


def _date(value: Any) -> date:
    if type(value) is date or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    raise _expected("date", value)


def _date_declared(value: Any) -> date:
    if isinstance(value, str):
        if _ISO_DATE.fullmatch(value):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        raise _Bad(f"expected date, got str {_shown(value)} (not a date YYYY-MM-DD)")
    return _date(value)


def _json(value: Any) -> str:
    if type(value) in _JSON_KINDS or isinstance(value, _JSON_BASES):
        return _to_json(value)
    raise _expected("json", value)


#: A declared json column holds any value as JSON text.
_json_text = _to_json


_JSON_BASES = (dict, list, tuple, set, frozenset)
_JSON_KINDS = frozenset(_JSON_BASES)


def _decimal_converter(type_: str) -> Converter:
    precision, scale = _decimal_parts(type_)
    quantum = Decimal(1).scaleb(-scale)
    integer_digits = precision - scale

    def convert(value: Any) -> Decimal:
        kind = type(value)
        if kind is Decimal:
            number = value
        elif kind is int:
            number = Decimal(value)
        elif kind is str or isinstance(value, str):
            try:
                number = Decimal(value)
            except (InvalidOperation, ValueError):
                raise _Bad(f"expected {type_}, got str {_shown(value)} (not a number)") from None
        elif kind is float:
            number = Decimal(repr(value))
        elif isinstance(value, Decimal | int | float) and kind is not bool:
            number = Decimal(repr(float(value))) if isinstance(value, float) else Decimal(value)
        else:
            raise _expected(type_, value)
        if not number.is_finite():
            raise _Bad(f"{_got(value)} is not a finite number ({type_})")
        if number and number.adjusted() >= integer_digits:
            raise _Bad(f"{_got(value)} has more than {integer_digits} digits before the point ({type_})")
        exact = number.quantize(quantum, context=_DECIMAL_CONTEXT)
        if exact != number:
            raise _Bad(f"{_got(value)} would round to {scale} decimal places ({type_})")
        return exact

    return convert


def _null(value: Any) -> None:
    raise _expected(NULL, value)


#: What an undeclared column accepts: values whose inferred type is the column's (plus int in double).
_INFERRED: dict[str, Converter] = {
    NULL: _null,
    "boolean": _boolean,
    "int64": _int64,
    "double": _double,
    "string": _string,
    "timestamp": _timestamp,
    "date": _date,
    "json": _json,
}
#: What a declared column accepts: also the values that convert losslessly to its type.
_DECLARED: dict[str, Converter] = {
    **_INFERRED,
    "timestamp": _timestamp_declared,
    "date": _date_declared,
    "json": _json_text,
}
_DECIMAL_CONVERTERS: dict[str, Converter] = {}
#: Column types whose converter returns values of this Python type unchanged (see the loop in conform).
_PASSING: dict[str, type] = {"boolean": bool, "int64": int, "double": float, "string": str}


def _converter(column_type: str, declared: bool) -> Converter:
    if column_type.startswith("decimal("):
        convert = _DECIMAL_CONVERTERS.get(column_type)
        if convert is None:
            convert = _DECIMAL_CONVERTERS[column_type] = _decimal_converter(column_type)
        return convert
    return (_DECLARED if declared else _INFERRED)[column_type]


def _infer(value: Any) -> str:
    """The type of a new column whose first non-null value is ``value``."""
    kind = type(value)
    inferred = _INFERRED_TYPES.get(kind)
    if inferred is not None:
        return inferred
    for base, name in _INFERRED_BASES:
        if isinstance(value, base):
            return name
    raise _Bad(f"a value of type {kind.__name__} cannot be written ({_shown(value)})")


_INFERRED_TYPES: dict[type, str] = {
    bool: "boolean",
    int: "int64",
    float: "double",
    str: "string",
    datetime: "timestamp",
    date: "date",
    Decimal: "string",
    dict: "json",
    list: "json",
    tuple: "json",
    set: "json",
    frozenset: "json",
}
#: For subclasses, in the order that matters (bool before int, datetime before date).
_INFERRED_BASES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"),
    (int, "int64"),
    (float, "double"),
    (str, "string"),
    (datetime, "timestamp"),
    (date, "date"),
    (Decimal, "string"),
    ((dict, list, tuple, set, frozenset), "json"),
)


# --------------------------------------------------------------------------------------------- conform


def conform(records: list[dict[str, Any]], schema: Schema) -> Conformed:
    """Fit ``records`` to ``schema``: the rows to write, the resulting schema, and the records rejected.

    Undeclared columns accept values of their inferred type (int also in double); ``null`` columns take the
    type of their first value and int64 columns widen to double on a float (unless the batch already holds
    an int beyond 2**53 in that column: then the float's record is rejected). Declared columns accept:
    boolean: bool; int64: int; double: int (|v| <= 2**53) and float; string: str (and Decimal, as its text,
    as an undeclared string column does); timestamp: datetime, ISO 8601 strings (``YYYY-MM-DD``, then ``T``
    or a space and a time, ``Z`` or an offset; naive = UTC) and epoch seconds (int or float); date: date
    and ``YYYY-MM-DD``; decimal(P,S): int, Decimal, float (via its shortest repr) and numeric strings, if
    exact at S places and within P digits; json: any value, as JSON text. Strings with a lone surrogate
    (which ``json.loads`` makes from ``"\\ud800"``) are rejected: UTF-8 cannot hold them.

    Each row is a new dict holding every column of the returned schema (missing: None), valued as pyarrow
    takes it for the column's type (json: str, timestamp: aware UTC datetime, decimal: Decimal): rows are
    for :func:`write_parquet`; a JSON Lines sink encodes the accepted *records* instead. The returned schema
    is ``schema`` itself when no column was added or widened, else a new one with ``version + 1``.
    """
    types: dict[str, str] = {c.name: c.type for c in schema.columns}
    declared = {c.name for c in schema.columns if c.declared}
    converters: dict[str, Converter] = {c.name: _converter(c.type, c.declared) for c in schema.columns}
    # The tight loop: a value of its column's "passing" type goes through as it is (ints within int64, str
    # if ASCII, or else checked by the converter); everything else is left to the column's converter.
    passing: dict[str, type] = {c.name: _PASSING[c.type] for c in schema.columns if c.type in _PASSING}
    order = list(types)
    added: list[str] = []
    widened: set[str] = set()
    rows: list[dict[str, Any]] = []
    rejected: list[Rejected] = []
    get_converter = converters.get
    get_passing = passing.get
    int64_min, int64_max = _INT64_MIN, _INT64_MAX
    surrogate = _SURROGATE.search

    for index, record in enumerate(records):
        row: dict[str, Any] = {}
        pending: list[tuple[str, str]] | None = None  # (column, new type) if the record is accepted
        column = ""
        try:
            if type(record) is not dict and not isinstance(record, dict):
                raise _Bad(f"a record must be an object, got {_got(record)}")
            for column, value in record.items():
                kind = type(value)
                if kind is get_passing(column):
                    if kind is int:
                        if int64_min <= value <= int64_max:
                            row[column] = value
                            continue
                    elif kind is not str or value.isascii() or surrogate(value) is None:
                        row[column] = value
                        continue
                convert = get_converter(column)
                if convert is not None:
                    if value is None:
                        row[column] = None
                        continue
                    try:
                        row[column] = convert(value)
                        continue
                    except _Bad as conflict:
                        new_type = _widening(column, types[column], value, declared, rows, conflict)
                elif type(column) is not str or not column:
                    raise _Bad(f"field name {_shown(column)} is not a non-empty string")
                elif len(types) + sum(1 for name, _ in pending or () if name not in types) >= MAX_COLUMNS:
                    raise _Bad(
                        f"a new column would pass the {MAX_COLUMNS} a topic's schema may hold (it travels in "
                        "the run state and the state table): nest such fields in one json field"
                    )
                elif value is None:
                    new_type = NULL
                else:
                    new_type = _infer(value)
                if new_type != NULL:
                    row[column] = _converter(new_type, False)(value)
                else:
                    row[column] = None
                if pending is None:
                    pending = []
                pending.append((column, new_type))
        except _Bad as bad:
            rejected.append(Rejected(index, str(column), _reason(column, bad)))
            continue
        if pending is not None:
            for name, new_type in pending:
                if name in types:
                    widened.add(name)
                else:
                    added.append(name)
                    order.append(name)
                types[name] = new_type
                converters[name] = _converter(new_type, name in declared)
                if new_type in _PASSING:
                    passing[name] = _PASSING[new_type]
                else:
                    passing.pop(name, None)
        rows.append(row)

    if not added and not widened:
        result = schema
    else:
        by_name = {c.name: c for c in schema.columns}
        result = Schema(
            tuple(
                Column(name, types[name], name in declared)
                if name not in by_name or types[name] != by_name[name].type
                else by_name[name]
                for name in order
            ),
            schema.version + 1,
        )
        for name in widened:
            if types[name] == "double":  # rows accepted while it was int64 hold ints
                for row in rows:
                    value = row.get(name)
                    if type(value) is int:
                        row[name] = float(value)
    width = len(order)
    for row in rows:
        if len(row) != width:
            for name in order:
                if name not in row:
                    row[name] = None
    return Conformed(rows, result, rejected)


def _widening(
    column: str, old: str, value: Any, declared: set[str], rows: list[dict[str, Any]], conflict: _Bad
) -> str:
    """The type ``column`` widens to for ``value``, or raises ``conflict`` (why it cannot)."""
    if column in declared:
        raise conflict
    if old == NULL:
        return _infer(value)
    if old == "int64" and isinstance(value, float):
        for row in rows:
            held = row.get(column)
            if type(held) is int and not -_EXACT_IN_DOUBLE <= held <= _EXACT_IN_DOUBLE:
                raise _Bad(
                    f"{conflict.message} (cannot widen to double: this batch holds int {_shown(held)}, "
                    f"not exact in a double)"
                )
        return "double"
    raise conflict


# ---------------------------------------------------------------------------------------------- Parquet


def arrow_type(column_type: str) -> pyarrow.DataType:
    """The Arrow type of a column type."""
    import pyarrow as pa

    simple = {
        NULL: pa.null,
        "boolean": pa.bool_,
        "int64": pa.int64,
        "double": pa.float64,
        "string": pa.string,
        "json": pa.string,
        "date": pa.date32,
    }.get(column_type)
    if simple is not None:
        return simple()
    if column_type == "timestamp":
        return pa.timestamp("us", tz="UTC")
    if column_type.startswith("decimal("):
        return pa.decimal128(*_decimal_parts(column_type))
    raise ValueError(f"unknown column type {column_type!r}")


def arrow_schema(schema: Schema) -> pyarrow.Schema:
    """The exact Arrow schema of ``schema``: its columns, in order, all nullable."""
    import pyarrow as pa

    return pa.schema([pa.field(c.name, arrow_type(c.type), nullable=True) for c in schema.columns])


def write_parquet(out: IO[bytes], rows: list[dict[str, Any]], schema: Schema, compression: str) -> None:
    """Write ``rows`` (from :func:`conform`) as one Parquet file whose schema is exactly ``arrow_schema``.

    ``compression``: snappy, zstd, gzip or none. Raises SinkError if a value does not fit its column (rows
    not made by :func:`conform` with this schema).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if compression not in PARQUET_COMPRESSIONS:
        raise ValueError(f"unknown Parquet compression {compression!r}: snappy, zstd, gzip or none")
    target = arrow_schema(schema)
    arrays = []
    for field in target:
        name = field.name
        try:
            try:
                values = list(map(itemgetter(name), rows))  # conform's rows hold every column
            except KeyError:
                values = [row.get(name) for row in rows]
            arrays.append(pa.array(values, type=field.type))
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise SinkError(f"column {name!r} cannot be written as {field.type}: {exc}") from exc
    table = pa.Table.from_arrays(arrays, schema=target)
    pq.write_table(table, out, compression=PARQUET_COMPRESSIONS[compression])


# ------------------------------------------------------------------------------------------- JSON Lines


def encode_json_line(record: dict[str, Any]) -> str:
    """``record`` as one compact JSON line (no newline), or UnwritableValue naming the field at fault.

    datetime and date: ``isoformat()`` (a naive datetime stays naive, an aware one keeps its offset);
    Decimal: a JSON number with its exact digits; set, frozenset and tuple: arrays (sets sorted when their
    items sort). NaN and infinities (anywhere), lone surrogates in strings and other types are refused.
    """
    try:
        line: str = _FAST_JSON(record)
    except (TypeError, ValueError, RecursionError):
        try:
            line = _PLAIN_JSON(record)
        except (TypeError, ValueError, RecursionError):
            return _encode_record(record)
    if line.isascii() or _SURROGATE.search(line) is None:
        return line
    return _encode_record(record)


def _encode_record(record: dict[str, Any]) -> str:
    """The slow path: field by field, to write what the fast paths cannot and to name the field at fault."""
    if not isinstance(record, dict):
        raise UnwritableValue("", f"a record must be an object, got {_got(record)}")
    parts = []
    for key, value in record.items():
        column = key if isinstance(key, str) else str(key)
        try:
            parts.append(f"{_json_key(key)}:{_to_json(value)}")
        except _Bad as bad:
            raise UnwritableValue(column, _reason(column, bad)) from None
    return "{" + ",".join(parts) + "}"


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return encode_basestring(_check_text(str.__str__(key)))
    if key is True or key is False:
        return '"true"' if key else '"false"'
    if key is None:
        return '"null"'
    if isinstance(key, int):
        return f'"{int.__repr__(key)}"'
    if isinstance(key, float):
        if math.isfinite(key):
            return f'"{float.__repr__(key)}"'
        raise _Bad(f"key {_shown(key)} is not valid JSON")
    raise _Bad(f"a key of type {type(key).__name__} cannot be written ({_shown(key)})")


def _json_walk(value: Any, active: set[int]) -> str:
    """``value`` as JSON text, or _Bad (with the path to the value at fault)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return encode_basestring(_check_text(str.__str__(value)))
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return float.__repr__(value)
        name = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        raise _Bad(f"{name} is not valid JSON")
    if isinstance(value, Decimal):
        if value.is_finite():
            return str(value)
        raise _Bad(f"Decimal {str(value)!r} is not valid JSON")
    if isinstance(value, datetime | date):
        return f'"{value.isoformat()}"'
    if isinstance(value, _JSON_BASES):
        if id(value) in active:
            raise _Bad("circular reference")
        active.add(id(value))
        key: Any = None
        try:
            if isinstance(value, dict):
                parts = []
                for key, item in value.items():
                    parts.append(f"{_json_key(key)}:{_json_walk(item, active)}")
                return "{" + ",".join(parts) + "}"
            items: Any = value
            if isinstance(value, set | frozenset):
                try:
                    items = sorted(value)
                except TypeError:
                    items = list(value)
            parts = []
            for key, item in enumerate(items):  # noqa: B007 (key names the item at fault)
                parts.append(_json_walk(item, active))
            return "[" + ",".join(parts) + "]"
        except _Bad as bad:
            bad.path.append(f"[{key!r}]")
            raise
        except RecursionError:
            raise _Bad("nested too deeply") from None
        finally:
            active.discard(id(value))
    raise _Bad(f"a value of type {type(value).__name__} cannot be written as JSON ({_shown(value)})")
