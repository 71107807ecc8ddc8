"""Engine and transactions for SQLite (one writer at a time) and PostgreSQL (many)."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

AfterCommit = Callable[[list[Any]], None]
BeforeCommit = Callable[[Session, list[Any]], None]
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
"""The files SQLite keeps beside a database; it creates them with the database file's mode."""
PRIVATE_FILE = 0o600


def private_sqlite_file(url: str) -> None:
    """Create the database file of a SQLite `url` owner-only before SQLite opens it.

    SQLite creates files 0644 (less the umask) and its -wal/-shm/-journal files with the
    database file's mode, so a database file that starts 0600 keeps all of them private.
    Files an older metalflow left readable to others are narrowed to 0600 too.
    """
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        os.close(os.open(database, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE))
    except OSError:
        return  # a missing directory or no write access: SQLite says so when it connects
    for path in (database, *(database + suffix for suffix in SQLITE_COMPANIONS)):
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(path, mode & ~0o077)


class Database:
    """Owns the engine; `write()` is the one way to change data.

    Writes are serialised in-process on SQLite (it allows one writer); PostgreSQL transactions
    run concurrently. Objects queued in `session.info["outbox"]` go to the `before_commit` hooks
    inside the transaction (write the events, NOTIFY other processes) and to `after_commit` once
    it is durable (the event bus publishes them), never for a rolled-back one.
    """

    def __init__(
        self,
        url: str,
        *,
        after_commit: AfterCommit | None = None,
        before_commit: list[BeforeCommit] | None = None,
        pool_size: int = 10,
    ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            private_sqlite_file(url)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            # No overflow: connections opened past the pool are closed again on return, and
            # PostgreSQL pays a backend start for each.
            kwargs.update(pool_size=pool_size, max_overflow=0, pool_pre_ping=True)
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_on_connect)
            event.listen(self.engine, "begin", _sqlite_on_begin)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.Lock() if self.is_sqlite else None
        self.after_commit = after_commit
        self.before_commit = before_commit or []

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._write_lock or nullcontext(), self._sessions() as session:
            outbox: list[Any] = []
            session.info["outbox"] = outbox
            with session.begin():
                yield session
                if outbox:
                    for hook in self.before_commit:
                        hook(session, outbox)
        if outbox and self.after_commit is not None:
            self.after_commit(outbox)

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_on_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")
