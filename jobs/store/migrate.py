"""Applying the Alembic migrations from code, with no alembic.ini.

The configuration is built here and points at the installed `migrations` package, so
`descent migrate` works from a wheel as from a checkout. To write a new migration:

    python -c "from alembic import command; from jobs.store import alembic_config; \\
        command.revision(alembic_config('sqlite:///dev.db'), 'what changes', autogenerate=True)"

(after migrating dev.db to head), then edit the file it writes under migrations/versions.
"""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL

import migrations
from jobs.store.engine import normalize_url


def alembic_config(url: str | URL) -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files(migrations)))
    # The URL travels as an attribute, not a main option: Config's options pass through
    # configparser, which would read a '%' in a password as interpolation.
    config.attributes["url"] = normalize_url(url)
    return config


def migrate(url: str | URL) -> None:
    """Upgrades the database at `url` to the newest schema (`alembic upgrade head`); an
    empty database gets every table, an up-to-date one is left as it is."""
    command.upgrade(alembic_config(url), "head")
