"""Keys in the real database (SQLite here; the e2e tests run PostgreSQL too), the per-worker
key cache, the first-start key, and the Redis limiter (real Redis; its fallback when down)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from decision_service.access import Principal
from decision_service.access.bootstrap import ensure_first_key
from decision_service.access.cache import KeyCache
from decision_service.access.keys import KeyRefused, create_key, key_hash, list_keys, revoke_key
from decision_service.access.limits import RedisLimiter, parse_rate
from decision_service.audit import create_tables, make_engine
from tests.conftest import REDIS_URL, require_redis


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'k.db'}")
    create_tables(engine)
    yield engine
    engine.dispose()


def test_only_the_hash_is_stored_and_names_are_never_reused(engine: sa.Engine) -> None:
    key = create_key(engine, "los-1", "decider")
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT * FROM api_key")).mappings().one()
    assert key not in str(dict(stored)) and stored["key_hash"] == key_hash(key)
    with pytest.raises(KeyRefused, match="exists"):
        create_key(engine, "los-1", "decider")
    revoke_key(engine, "los-1")
    with pytest.raises(KeyRefused, match="exists"):
        create_key(engine, "los-1", "decider")
    with pytest.raises(KeyRefused, match="role"):
        create_key(engine, "x", "root")
    with pytest.raises(KeyRefused, match="name"):
        create_key(engine, "no spaces", "admin")
    with pytest.raises(KeyRefused, match="no key"):
        revoke_key(engine, "nobody")


def test_cache_sees_new_and_revoked_keys_on_refresh_and_writes_last_used(
    engine: sa.Engine,
) -> None:
    cache = KeyCache(engine, engine, refresh=0.05, last_used=3600)
    cache.refresh()
    key = create_key(engine, "a1", "auditor")
    assert cache.lookup(key.encode()) is None  # not yet refreshed
    cache.refresh()
    assert cache.lookup(key.encode()) == Principal("a1", "auditor")
    assert cache.lookup(b"dsk_wrong") is None
    assert [k.last_used_at for k in list_keys(engine)] == [None]  # no write per request
    cache.flush_used()
    assert list_keys(engine)[0].last_used_at is not None
    revoke_key(engine, "a1")
    cache.refresh()
    assert cache.lookup(key.encode()) is None


def test_first_key_only_once(engine: sa.Engine, tmp_path: Path) -> None:
    path = tmp_path / "var" / "admin.key"
    assert ensure_first_key(engine, path) == path
    assert path.stat().st_mode & 0o777 == 0o600
    assert ensure_first_key(engine, path) is None
    assert [(k.name, k.role) for k in list_keys(engine)] == [("admin", "admin")]
    assert list(path.parent.glob(".*tmp")) == []
    cache = KeyCache(engine, engine)
    cache.refresh()
    assert cache.lookup(path.read_text().strip().encode()) == Principal("admin", "admin")


async def test_redis_buckets_are_one_per_key_across_limiters() -> None:
    require_redis()
    rate = parse_rate("3/hour")
    assert rate is not None
    a, b = RedisLimiter(REDIS_URL), RedisLimiter(REDIS_URL)  # two workers
    name = f"unit-{uuid.uuid4().hex[:8]}"
    try:
        waits = [await limiter.take(name, rate) for limiter in (a, b, a, b)]
    finally:
        await a.close()
        await b.close()
    assert waits[:3] == [0.0, 0.0, 0.0] and 1000 < waits[3] <= 1200


async def test_redis_down_falls_back_to_this_workers_buckets() -> None:
    rate = parse_rate("2/hour")
    assert rate is not None
    limiter = RedisLimiter("redis://127.0.0.1:9/0")  # nothing listens on port 9
    try:
        waits = [await limiter.take("k", rate) for _ in range(3)]
    finally:
        await limiter.close()
    assert waits[:2] == [0.0, 0.0] and waits[2] > 0  # still limited, never an error
