"""A Tiled catalog in PostgreSQL, for a facility: its URI, its checks, its initialisation.

``xfct-bluesky serve --catalog postgresql://USER@HOST:PORT/DATABASE`` (and
:func:`~xfct_bluesky.storage.server.embedded_server` with ``catalog=``) keep
the catalog (every run's metadata, the start documents searched) *and* the
tables (the events' scalar columns) in that database; the arrays (zarr,
``<data>/tiled/data``) and the external files (HDF5 spectra, ``<data>/assets``)
stay in the data folder, which the server must be able to read.

- :func:`check_catalog_uri` checks a catalog URI's form, without I/O.
- :func:`redact` is a URI fit for a log or an error (no password).
- :func:`check_catalog` checks, writing nothing, that the server answers,
  the database exists, the credentials are accepted and the database holds
  a catalog of this tiled's schema or nothing; :func:`prepare_catalog` then
  initialises a new database's catalog as ``tiled catalog init`` does
  (idempotent: a catalog of this tiled's schema is left as it is).
- :func:`tables_uri` is the URI tiled's table storage is given.

The password is never part of the URI (it would be visible to every local
user in ``ps`` and kept in the shell's history): it is read by PostgreSQL's
clients themselves (asyncpg for the catalog, libpq through ADBC for the
tables) from ``PGPASSWORD`` or from the password file (``~/.pgpass``, or the
file named by ``PGPASSFILE``), as ``psql`` reads it.

Tiled internals this module relies on (tiled 0.2.20): the catalog URI goes to
``tiled.catalog.from_uri`` (``postgresql+asyncpg`` through SQLAlchemy);
``tiled.storage.RemoteSQLStorage`` builds its libpq URI as
``f"{username}:{password}@host"`` whenever one of them is set, so a URI with
a user and no password would send the password ``"None"``: the user goes into
the query (``?user=``) of the table storage's URI instead, where libpq reads
it; the alembic revision check of ``tiled.alembic_utils.check_database``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlparse, urlunparse

from .errors import DataFolderError

logger = logging.getLogger(__name__)

#: URI schemes of a PostgreSQL catalog (``postgres`` is libpq's alias).
SCHEMES = ("postgresql", "postgres")
#: Seconds to wait for the PostgreSQL server to accept a connection.
CONNECT_TIMEOUT = 10.0

_FORM = "postgresql://USER@HOST:PORT/DATABASE"
_PASSWORD_FIX = "PGPASSWORD, or a line HOST:PORT:DATABASE:USER:PASSWORD in ~/.pgpass (mode 0600; or the file $PGPASSFILE)"


class CatalogURIError(DataFolderError):
    """A catalog URI that cannot be used (its form, or the server it names); the message names the fix."""


def is_postgres(uri: Any) -> bool:
    """Whether ``uri`` names a PostgreSQL catalog (rather than the data folder's SQLite one)."""
    return isinstance(uri, str) and urlparse(uri).scheme.split("+", 1)[0] in SCHEMES


def redact(uri: str) -> str:
    """``uri`` with its password, if any, shown as ``***``."""
    parsed = urlparse(uri)
    if parsed.password is None:
        return uri
    user = parsed.username or ""
    host = parsed.netloc.rsplit("@", 1)[1]
    return urlunparse(parsed._replace(netloc=f"{user}:***@{host}"))


def check_catalog_uri(uri: str, *, option: str = "catalog") -> str:
    """The catalog URI ``uri`` in its normal form (scheme ``postgresql``), or :class:`CatalogURIError`.

    Parameters
    ----------
    uri : str
        ``postgresql://USER@HOST:PORT/DATABASE``, libpq query parameters
        allowed (``?sslmode=require``); ``postgres://`` is accepted. ``USER``
        defaults to the login name and ``PORT`` to 5432, as in libpq.
    option : str, optional
        The name the errors give the value (``"--catalog"`` on the command line).

    Raises
    ------
    CatalogURIError
        If the scheme is not PostgreSQL's, the host or the database is
        missing, the port is not a number in 1-65535, or the URI holds a
        password (give it in ``PGPASSWORD`` or ``~/.pgpass``).
    """
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+", 1)
    if scheme[0] not in SCHEMES:
        raise CatalogURIError(f"{option} {redact(uri)}: not a PostgreSQL URI (scheme {parsed.scheme or 'none'!r}); "
                              f"give {_FORM}, or leave {option} out for the data folder's SQLite catalog")
    if len(scheme) > 1 and scheme[1] != "asyncpg":
        raise CatalogURIError(f"{option} {redact(uri)}: the driver {scheme[1]!r} is not the one tiled uses; "
                              f"give {_FORM} (tiled connects with asyncpg)")
    if parsed.password is not None:
        raise CatalogURIError(
            f"{option} {redact(uri)}: the URI holds a password, which every local user could read (ps, the shell "
            f"history); give the URI without it and the password in {_PASSWORD_FIX}"
        )
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise CatalogURIError(f"{option} {uri}: the port is not a number in 1-65535; give {_FORM}, e.g. "
                              "postgresql://tiled@db.example.org:5432/xfct")
    if not parsed.hostname:
        raise CatalogURIError(f"{option} {uri}: no host; give the PostgreSQL server's host name, {_FORM} "
                              "(e.g. 127.0.0.1 for a server on this machine)")
    database = unquote(parsed.path.lstrip("/"))
    if not database or "/" in database:
        raise CatalogURIError(f"{option} {uri}: no database name (the path after the host); give {_FORM}, the "
                              "database created for the catalog (createdb)")
    return urlunparse(parsed._replace(scheme="postgresql"))


def tables_uri(uri: str) -> str:
    """The URI of tiled's table storage in the catalog's database: the user, if any, in the query (see the module
    notes on tiled's ``RemoteSQLStorage``); the password, as for the catalog, from libpq's environment."""
    parsed = urlparse(uri)
    query = parse_qsl(parsed.query, keep_blank_values=True)
    if parsed.username is not None and not any(key == "user" for key, _ in query):
        query.append(("user", unquote(parsed.username)))
    netloc = parsed.netloc.rsplit("@", 1)[-1]
    return urlunparse(parsed._replace(netloc=netloc, query=urlencode(query, quote_via=quote)))


def _connect_error(uri: str, err: BaseException) -> CatalogURIError:
    """The error to give for a connection to the catalog's server that failed with ``err``."""
    import asyncpg

    parsed = urlparse(uri)
    where = f"catalog {redact(uri)}"
    database = unquote(parsed.path.lstrip("/"))
    user = parsed.username or "(the login name)"
    if isinstance(err, asyncpg.InvalidCatalogNameError):
        return CatalogURIError(f"{where}: the PostgreSQL server has no database {database!r}; create it "
                               f"(createdb -h {parsed.hostname} -p {parsed.port or 5432} -U {user} {database}) "
                               "or ask the database administrator")
    if isinstance(err, (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)):
        return CatalogURIError(f"{where}: the PostgreSQL server refused the user {user} ({err}); give that user's "
                               f"password in {_PASSWORD_FIX}")
    if isinstance(err, asyncpg.InsufficientPrivilegeError):
        return CatalogURIError(f"{where}: the user {user} may not create the catalog's tables ({err}); use the "
                               f"database's owner, or have it granted CREATE on {database!r}")
    if isinstance(err, (OSError, asyncio.TimeoutError)):
        detail = str(err) or type(err).__name__
        return CatalogURIError(f"{where}: no PostgreSQL server answers at {parsed.hostname}:{parsed.port or 5432} "
                               f"within {CONNECT_TIMEOUT:g} s ({detail}); start it, or correct the host and port")
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    return CatalogURIError(f"{where}: the PostgreSQL server could not be used ({type(err).__name__}: "
                           f"{redact(first)[:200]})")


def _asyncpg_error(err: BaseException) -> BaseException:
    """The asyncpg exception behind an SQLAlchemy one (``orig``, then its cause), else ``err`` itself."""
    seen = err
    for _ in range(3):
        inner = getattr(seen, "orig", None) or seen.__cause__
        if inner is None:
            break
        seen = inner
    return seen


def check_server(uri: str) -> None:
    """Connect once to the catalog's database (at most :data:`CONNECT_TIMEOUT` s): the server answers, the
    database exists, the credentials are accepted. Writes nothing. Raises :class:`CatalogURIError`."""
    import asyncpg

    from ._catalog_init import in_own_thread

    async def probe() -> None:
        connection = await asyncpg.connect(uri, timeout=CONNECT_TIMEOUT)
        await connection.close()

    try:
        in_own_thread(lambda: asyncio.run(probe()))
    except Exception as err:  # noqa: BLE001 - every failure is told in one line, by its kind
        raise _connect_error(uri, err) from None


_USER_TABLES = (
    "SELECT table_schema || '.' || table_name FROM information_schema.tables "
    "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1 LIMIT 3"
)


def catalog_state(uri: str) -> tuple[str | None, list[str]]:
    """The alembic revision of the catalog in the database at ``uri`` (None if it has none: a new database, or
    another application's), and up to three of the database's tables."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from tiled.alembic_utils import get_current_revision
    from tiled.catalog.core import ALL_REVISIONS
    from tiled.utils import ensure_specified_sql_driver

    from ._catalog_init import in_own_thread

    async def read() -> tuple[str | None, list[str]]:
        engine = create_async_engine(ensure_specified_sql_driver(uri), connect_args={"timeout": CONNECT_TIMEOUT})
        try:
            revision = await get_current_revision(engine, ALL_REVISIONS)
            async with engine.connect() as connection:
                tables = [row[0] for row in await connection.execute(text(_USER_TABLES))]
            return revision, tables
        finally:
            await engine.dispose()

    return in_own_thread(lambda: asyncio.run(read()))


def check_catalog(uri: str) -> bool:
    """Check the PostgreSQL catalog at ``uri`` without writing anything: True if the database is new (empty).

    Connects (:func:`check_server`), then reads the database's alembic stamp
    and whether it holds tables.

    Raises
    ------
    CatalogURIError
        If the URI is malformed (:func:`check_catalog_uri`), the server does
        not answer, the database is missing, the credentials are refused,
        the database holds another application's tables, or a catalog of
        another tiled schema (with the ``tiled catalog upgrade-database``
        command to run).
    """
    from tiled.alembic_utils import UnrecognizedDatabase
    from tiled.catalog.core import ALL_REVISIONS, REQUIRED_REVISION

    uri = check_catalog_uri(uri)
    check_server(uri)
    try:
        revision, tables = catalog_state(uri)
    except UnrecognizedDatabase as err:
        raise CatalogURIError(f"catalog {redact(uri)}: {err}; give a database of its own for the catalog") from None
    except Exception as err:  # noqa: BLE001 - as in check_server
        raise _connect_error(uri, _asyncpg_error(err)) from None
    if revision is None and tables:
        raise CatalogURIError(
            f"catalog {redact(uri)}: the database holds tables ({', '.join(tables)}, ...) but no Tiled catalog: it "
            "belongs to another application, or a catalog's initialisation was interrupted; give an empty database "
            "of its own (createdb), or drop and re-create this one"
        )
    if revision is not None and revision != REQUIRED_REVISION:
        if revision in ALL_REVISIONS:
            raise CatalogURIError(f"catalog {redact(uri)} was made by an older tiled (schema {revision}); back the "
                                  f"database up (pg_dump), then run `tiled catalog upgrade-database {redact(uri)}`")
        raise CatalogURIError(f"catalog {redact(uri)} was made by a newer tiled (schema {revision}, this tiled knows "
                              f"up to {REQUIRED_REVISION}); upgrade tiled in this environment")
    return revision is None


def prepare_catalog(uri: str, *, new: bool | None = None) -> str:
    """Check the PostgreSQL catalog at ``uri`` (:func:`check_catalog`) and initialise it if the database is new;
    its normal URI.

    Idempotent: a database holding a catalog of this tiled's schema is left
    as it is (its runs kept); a new, empty one gets tiled's tables and alembic
    stamp (:func:`~xfct_bluesky.storage._catalog_init.initialize_catalog`, tiled's
    own functions, as ``tiled catalog init`` runs them). ``new``, the answer
    of a :func:`check_catalog` already made, skips the check.

    Raises
    ------
    CatalogURIError
        As :func:`check_catalog`, or if the initialisation fails.
    """
    uri = check_catalog_uri(uri)
    if new is None:
        new = check_catalog(uri)
    if new:
        from ._catalog_init import initialize_catalog

        logger.info("Initialising a new Tiled catalog in %s", redact(uri))
        try:
            initialize_catalog(uri)
        except Exception as err:  # noqa: BLE001 - as in check_server (SQLAlchemy's error wraps asyncpg's)
            raise _connect_error(uri, _asyncpg_error(err)) from None
    return uri
