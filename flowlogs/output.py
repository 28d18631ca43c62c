"""Terminal output shared by the commands."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_table(columns: list[str], rows: list[Any], title: str | None = None, console: Console | None = None) -> None:
    """Rows as a table (on stdout unless another console is given); numbers right-aligned with separators."""
    table = Table(title=title)
    for i, name in enumerate(columns):
        numeric = bool(rows) and isinstance(rows[0][i], (int, float))
        table.add_column(name, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row))
    (console or Console()).print(table)
