"""Creating a Tiled catalog in this process, as ``tiled catalog init`` does (SQLite or PostgreSQL).

Below :mod:`.server` and :mod:`.postgres`, which both create catalogs: tiled's event loops and alembic's
``asyncio.run`` run in a thread of their own (:func:`in_own_thread`), so they never meet a running loop
such as IPython's.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

__all__ = ["in_own_thread", "initialize_catalog"]


def in_own_thread(func: Any) -> Any:
    """``func()`` run in a thread of its own, its result returned and its exception raised here: for tiled's
    event loops and alembic's ``asyncio.run``, which must not meet a running loop such as IPython's."""
    result: list[Any] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(func())
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(err)

    thread = threading.Thread(target=run, name="xfct-tiled-catalog")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def initialize_catalog(path: Path | str) -> None:
    """Create a new catalog at ``path`` (an SQLite file, or a PostgreSQL URI without password: see :mod:`.postgres`):
    tables and alembic stamp, as ``tiled catalog init`` does, in this process.

    The steps and tiled functions of tiled's ``commandline/_catalog.py``
    ``init``, run in a thread of their own (:func:`in_own_thread`).
    """

    def init() -> None:
        import asyncio

        from sqlalchemy.ext.asyncio import create_async_engine
        from tiled.alembic_utils import (
            UninitializedDatabase,
            check_database,
            stamp_head,
        )
        from tiled.catalog.alembic_constants import (
            ALEMBIC_DIR,
            ALEMBIC_INI_TEMPLATE_PATH,
        )
        from tiled.catalog.core import (
            ALL_REVISIONS,
            REQUIRED_REVISION,
            initialize_database,
        )
        from tiled.utils import ensure_specified_sql_driver

        uri = ensure_specified_sql_driver(path)

        async def setup() -> None:
            engine = create_async_engine(uri)
            try:
                await check_database(engine, REQUIRED_REVISION, ALL_REVISIONS)
            except UninitializedDatabase:
                await initialize_database(engine)
            finally:
                await engine.dispose()

        asyncio.run(setup())
        with warnings.catch_warnings():  # alembic on tiled's alembic.ini template (its subprocess shows none)
            warnings.filterwarnings("ignore", "No path_separator found", DeprecationWarning)
            stamp_head(ALEMBIC_INI_TEMPLATE_PATH, ALEMBIC_DIR, uri)

    in_own_thread(init)
