"""Temporary: until tests/conftest.py declares ``pytest_plugins`` for the peers."""

from tests.peers.postgres import postgres_server, postgres_url  # noqa: F401
from tests.peers.s3 import s3_server, s3_store  # noqa: F401
