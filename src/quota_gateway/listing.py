"""Filtered, paginated listings: the WHERE clause built with numbered parameters, the count and
one page fetched with it, and the page's JSON envelope. Tenant scoping is the first clause."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from .schema import Field, Int

PAGE_FIELDS: dict[str, Field] = {"page": Int(minimum=1, default=1), "pageSize": Int(minimum=1, maximum=500, default=50)}


class Where:
    """`column = $n AND ...`, with the values in `args` in parameter order."""

    def __init__(self, tenant_column: str, tenant_id: str) -> None:
        self.clauses = [f"{tenant_column} = $1"]
        self.args: list[Any] = [tenant_id]

    def param(self, value: Any) -> str:
        """A placeholder for `value`, to use in a clause."""
        self.args.append(value)
        return f"${len(self.args)}"

    def equals(self, column: str, value: Any) -> None:
        """Filter on `column` unless the value is absent (None)."""
        if value is not None:
            self.clauses.append(f"{column} = {self.param(value)}")

    def add(self, clause: str) -> None:
        self.clauses.append(clause)

    def __str__(self) -> str:
        return " AND ".join(self.clauses)


async def fetch_page(conn: asyncpg.Connection, *, count_from: str, select_from: str, where: Where, order_by: str,
                     page: int, page_size: int, item: Callable[[Any], dict]) -> dict:
    """`{"items", "page", "pageSize", "totalCount", "totalPages"}`: `count_from` and `select_from`
    are `SELECT count(*) FROM ...` and `SELECT ... FROM ...`, completed here with the filter."""
    total = await conn.fetchval(f"{count_from} WHERE {where}", *where.args)
    rows = await conn.fetch(f"{select_from} WHERE {where} ORDER BY {order_by} "
                            f"LIMIT {int(page_size)} OFFSET {(int(page) - 1) * int(page_size)}", *where.args)
    return {"items": [item(r) for r in rows], "page": page, "pageSize": page_size, "totalCount": total,
            "totalPages": (total + page_size - 1) // page_size}
