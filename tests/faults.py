"""Fault injection on both engines: make every update of one topic's jobs fail in the database.

SQLite gets a ``RAISE(ABORT)`` trigger, PostgreSQL a PL/pgSQL trigger raising the same
message; both fail the whole transaction that touches the topic, as a broken disk would.
"""

from __future__ import annotations

from sqlalchemy import create_engine, text

MESSAGE = "disk on fire"


def fail_updates_of(url: str, topic: str) -> None:
    """Every UPDATE of a job of ``topic`` fails with :data:`MESSAGE` until :func:`heal`."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.execute(text(
                    f"CREATE TRIGGER fail_{topic} BEFORE UPDATE ON jobrunner_jobs WHEN NEW.topic = '{topic}' "
                    f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
                ))
            else:
                conn.execute(text(
                    f"CREATE FUNCTION fail_{topic}() RETURNS trigger LANGUAGE plpgsql AS "
                    f"$$ BEGIN RAISE EXCEPTION '{MESSAGE}'; END $$"
                ))
                conn.execute(text(
                    f"CREATE TRIGGER fail_{topic} BEFORE UPDATE ON jobrunner_jobs FOR EACH ROW "
                    f"WHEN (NEW.topic = '{topic}') EXECUTE FUNCTION fail_{topic}()"
                ))
    finally:
        engine.dispose()


def heal(url: str, topic: str) -> None:
    """Undo :func:`fail_updates_of`."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.execute(text(f"DROP TRIGGER fail_{topic}"))
            else:
                conn.execute(text(f"DROP TRIGGER fail_{topic} ON jobrunner_jobs"))
                conn.execute(text(f"DROP FUNCTION fail_{topic}()"))
    finally:
        engine.dispose()
