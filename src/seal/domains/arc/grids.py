"""ARC grids: an immutable, hashable grid type, validation, and grid <-> text.

A grid is a tuple of rows, each a tuple of ints. Tuples (not numpy arrays) are
used so that grids, and the tasks built from them, can be compared, hashed and
deduplicated directly, and so that every geometric transform is a one-line
tuple manipulation.

Text parsing returns ``None`` on malformed text instead of raising: the text
comes from a model, and "could not read a grid" is an ordinary outcome there,
not a programming error.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass

Grid = tuple[tuple[int, ...], ...]

MAX_SIDE = 30
NUM_COLOURS = 10
_DIGITS = frozenset("0123456789")


def make_grid(rows: Iterable[Iterable[int]], max_side: int = MAX_SIDE) -> Grid:
    """Convert nested lists / numpy arrays to a ``Grid``, validating it.

    Raises ``ValueError`` unless the grid is rectangular, has 1..``max_side``
    rows and columns, and every cell is an integer colour in 0..9.
    """
    try:
        grid = tuple(tuple(row) for row in rows)
    except TypeError as exc:
        raise ValueError(f"grid must be a sequence of rows: {exc}") from None
    if not grid or not grid[0]:
        raise ValueError("grid must have at least one row and one column")
    height, width = len(grid), len(grid[0])
    if height > max_side or width > max_side:
        raise ValueError(f"grid is {height}x{width}; each side must be at most {max_side}")
    out = []
    for r, row in enumerate(grid):
        if len(row) != width:
            raise ValueError(f"grid is not rectangular: row {r} has {len(row)} cells, row 0 has {width}")
        out.append(tuple(_colour(cell, r, c) for c, cell in enumerate(row)))
    return tuple(out)


def _colour(cell: object, r: int, c: int) -> int:
    """Return ``cell`` as a plain int colour, or raise ``ValueError`` naming the cell."""
    try:
        if isinstance(cell, bool):
            raise TypeError
        value = operator.index(cell)
    except TypeError:
        raise ValueError(f"cell ({r}, {c}) is {cell!r}; colours must be integers") from None
    if not 0 <= value < NUM_COLOURS:
        raise ValueError(f"cell ({r}, {c}) is {value}; colours must be in 0..{NUM_COLOURS - 1}")
    return value


def shape(grid: Grid) -> tuple[int, int]:
    """(height, width) of a grid."""
    return len(grid), len(grid[0]) if grid else 0


@dataclass(frozen=True)
class GridFormat:
    """How a grid is written as text.

    Each row is ``row_prefix + cell_sep.join(digits) + row_suffix`` and rows are
    joined by ``row_sep``. The default writes rows of bare digits, one per line,
    which tokenises compactly.
    """

    cell_sep: str = ""
    row_sep: str = "\n"
    row_prefix: str = ""
    row_suffix: str = ""

    def __post_init__(self) -> None:
        if not self.row_sep:
            raise ValueError("row_sep must be non-empty")
        if any(ch in _DIGITS for ch in self.cell_sep + self.row_sep + self.row_prefix + self.row_suffix):
            raise ValueError("separators must not contain digits")


DEFAULT_FORMAT = GridFormat()


def grid_to_text(grid: Grid, fmt: GridFormat = DEFAULT_FORMAT) -> str:
    """Write a grid as text in ``fmt`` (validating it first)."""
    grid = make_grid(grid)
    return fmt.row_sep.join(
        fmt.row_prefix + fmt.cell_sep.join(str(cell) for cell in row) + fmt.row_suffix for row in grid
    )


def text_to_grid(text: str, fmt: GridFormat = DEFAULT_FORMAT) -> Grid | None:
    """Read a grid written in ``fmt`` from the start of ``text``; ``None`` if there is none.

    Blank chunks before the grid and whitespace around each row are ignored.
    Reading stops at the first chunk that is not a row of the same width, so
    prose or a truncated row after the grid is dropped. Returns ``None`` when no
    row can be read or the grid is larger than ``MAX_SIDE``.
    """
    chunks = text.split(fmt.row_sep)
    while chunks and not chunks[0].strip():
        chunks.pop(0)
    rows: list[tuple[int, ...]] = []
    for chunk in chunks:
        row = _parse_row(chunk, fmt)
        if row is None or (rows and len(row) != len(rows[0])):
            break
        rows.append(row)
    if not rows or len(rows) > MAX_SIDE or len(rows[0]) > MAX_SIDE:
        return None
    return tuple(rows)


def _parse_row(chunk: str, fmt: GridFormat) -> tuple[int, ...] | None:
    """One row of digits in ``fmt``, or ``None`` if ``chunk`` is not one."""
    body = chunk.strip()
    prefix, suffix = fmt.row_prefix.strip(), fmt.row_suffix.strip()
    if not (body.startswith(prefix) and body.endswith(suffix)) or len(body) < len(prefix) + len(suffix):
        return None
    body = body[len(prefix) : len(body) - len(suffix)]
    sep = fmt.cell_sep.strip()
    if not fmt.cell_sep:
        cells = list(body)
    elif not sep:  # whitespace separator: any run of whitespace separates cells
        cells = body.split()
    else:
        cells = [cell.strip() for cell in body.split(sep)]
    if not cells or any(len(cell) != 1 or cell not in _DIGITS for cell in cells):
        return None
    return tuple(int(cell) for cell in cells)
