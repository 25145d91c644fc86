"""The throwaway databases of the outbox benchmarks: a schema of its own in PostgreSQL's ``test`` database on
127.0.0.1:5432, or a SQLite file in a temporary directory, dropped at the end either way."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def scratch_database(kind: str, prefix: str) -> Iterator[tuple[Engine, str, str]]:
    """An engine on a new PostgreSQL schema named after ``prefix`` (``kind`` ``"postgresql"``) or a new SQLite
    file; yields the engine, the database URL and the schema ("" for SQLite). Processes started on the URL select
    the schema with ``-csearch_path=<schema>`` in their connection options, as the engine does."""
    if kind == "postgresql":
        schema = f"{prefix}_{uuid.uuid4().hex[:6]}"
        engine = create_engine(POSTGRES, connect_args={"options": f"-csearch_path={schema}"})
        with engine.begin() as connection:
            connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        try:
            yield engine, POSTGRES, schema
        finally:
            with engine.begin() as connection:
                connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            engine.dispose()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / (prefix + '.db')}"
            engine = create_engine(url)
            try:
                yield engine, url, ""
            finally:
                engine.dispose()
