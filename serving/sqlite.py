"""SQLite as the service uses it: WAL, synced commits, and transactions that take the write lock
when they begin, so that read-then-write code is as safe as on PostgreSQL.

pysqlite, left alone, begins a transaction only before a write, so the reads before it ran
outside any transaction: two racing read-then-write transactions both saw the old row, and
`FOR UPDATE`, which does nothing on SQLite, could not stop them (two concurrent add-photos
calls recorded two rounds). Here the driver begins nothing, and each transaction is begun by
SQLAlchemy's events (the recipe in SQLAlchemy's SQLite dialect documentation):

- a session's `with session.begin():` block, where the code reads then writes, begins with
  BEGIN IMMEDIATE: it takes the write lock at once, so a second writer waits (busy_timeout),
  then reads what the first wrote;
- a session begun by a first read begins plainly: in WAL mode it never waits for a writer, and
  a read nested in a write (the result read back before the write's block ends) cannot wait
  for that write's own lock;
- a connection used without a session (migrations, inspection) begins plainly too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, SessionTransaction, SessionTransactionOrigin, sessionmaker

# Marks the connections of sessions, whose transactions the session's own event begins.
_SESSION_BEGINS = "touchstone_session_begins"


def sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _connect(connection: Any, _: Any) -> None:
        connection.isolation_level = None  # the driver begins nothing; see the module's note
        # WAL lets readers work during a write; FULL syncs each commit to disk, so a 201
        # survives a crash of the process or the machine.
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        if not connection.get_execution_options().get(_SESSION_BEGINS):
            connection.exec_driver_sql("BEGIN")

    return engine


def sqlite_sessionmaker(engine: Engine) -> sessionmaker:
    sessions = sessionmaker(
        engine.execution_options(**{_SESSION_BEGINS: True}), expire_on_commit=False
    )
    event.listen(sessions, "after_begin", _session_begin)
    return sessions


def _session_begin(_: Session, transaction: SessionTransaction, connection: Connection) -> None:
    if transaction.nested:
        return  # a SAVEPOINT inside the transaction begun below
    explicit = transaction.origin is SessionTransactionOrigin.BEGIN
    connection.exec_driver_sql("BEGIN IMMEDIATE" if explicit else "BEGIN")
