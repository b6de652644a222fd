"""Tortoise's own CLI reads this (``tortoise -c creditline.tortoise_conf.TORTOISE_ORM makemigrations``)."""

import os

from creditline.db import tortoise_config

TORTOISE_ORM = tortoise_config(os.environ.get("CREDITLINE_DATABASE_URL", "sqlite://creditline.sqlite3"))
