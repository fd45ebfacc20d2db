"""``db.transaction()`` blocks that overlap in time: blocks run side by side
in one async view (``asyncio.gather``), and a process forked inside a block."""

from __future__ import annotations

import asyncio
import os
import select
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .conftest import AppFactory, Item, stored_keys

IDENTIFY = {
    "sqlite": "SELECT 1",
    "postgresql": "SELECT pg_backend_pid()",
    "mariadb": "SELECT CONNECTION_ID()",
}


def test_blocks_gathered_in_an_async_view_each_have_their_own_outcome(
    make_app: AppFactory, observer: Engine
) -> None:
    """Both blocks are open at once; the one that ends normally is stored
    even though the other, which started first, raises."""
    app, db = make_app()

    @app.post("/gather")
    async def gather() -> dict[str, Any]:
        first_open, second_done = asyncio.Event(), asyncio.Event()
        sessions: dict[str, Any] = {}

        async def first() -> None:
            with db.transaction() as session:
                first_open.set()
                await second_done.wait()  # the second block opens and ends meanwhile
                sessions["first"] = db.session
                session.add(Item(key="first-raised"))
                session.flush()
                raise ValueError("first block fails")

        async def second() -> None:
            await first_open.wait()
            with db.transaction() as session:
                sessions["second"] = db.session
                session.add(Item(key="second-committed"))
            second_done.set()

        results = await asyncio.gather(first(), second(), return_exceptions=True)
        return {
            "results": [repr(result) for result in results],
            "own sessions": sessions["first"] is not sessions["second"],
        }

    response = app.test_client().post("/gather")
    assert stored_keys(observer) == ["second-committed"]
    assert response.json == {
        "results": ["ValueError('first block fails')", "None"],
        "own sessions": True,
    }
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_a_block_nested_inside_a_gathered_task_is_a_savepoint_of_that_tasks_block(
    make_app: AppFactory, observer: Engine
) -> None:
    app, db = make_app()

    @app.post("/gather")
    async def gather() -> str:
        async def task(name: str) -> None:
            with db.transaction() as outer:
                await asyncio.sleep(0)  # the other task opens its block meanwhile
                outer.add(Item(key=f"{name}-outer"))
                with pytest.raises(ValueError), db.transaction() as inner:
                    assert inner is outer
                    inner.add(Item(key=f"{name}-inner-undone"))
                    inner.flush()
                    await asyncio.sleep(0)
                    raise ValueError("only the savepoint is undone")
                await asyncio.sleep(0)

        # One task after the other on SQLite, which lets one writer at a time.
        if db.engine.dialect.name == "sqlite":
            for name in ("a", "b"):
                await task(name)
        else:
            await asyncio.gather(task("a"), task("b"))
        return "ok"

    assert app.test_client().post("/gather").status_code == 200
    assert stored_keys(observer) == ["a-outer", "b-outer"]


def test_blocks_nested_in_one_block_from_two_tasks_at_once_are_refused(
    make_app: AppFactory, observer: Engine
) -> None:
    """Two SAVEPOINTs of one transaction cannot be ended independently: the
    second task's block is refused with a clear error before it runs, and
    the first one's work is kept."""
    app, db = make_app()

    @app.post("/gather")
    async def gather() -> dict[str, str]:
        first_open, second_tried = asyncio.Event(), asyncio.Event()

        async def first() -> None:
            with db.transaction() as inner:
                first_open.set()
                await second_tried.wait()
                inner.add(Item(key="first"))

        async def second() -> None:
            await first_open.wait()
            try:
                with db.transaction() as inner:
                    inner.add(Item(key="second"))
            finally:
                second_tried.set()

        with db.transaction() as outer:
            outer.add(Item(key="outer"))
            results = await asyncio.gather(first(), second(), return_exceptions=True)
        return {"second": str(results[1])}

    response = app.test_client().post("/gather")
    assert response.status_code == 200
    assert response.json is not None
    assert "asyncio task" in response.json["second"]
    assert stored_keys(observer) == ["first", "outer"]
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_a_block_that_ends_while_a_task_has_a_block_nested_in_it_open_commits_nothing(
    make_app: AppFactory, observer: Engine
) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.post("/early")
    async def early() -> dict[str, str]:
        inner_open, outer_ended = asyncio.Event(), asyncio.Event()

        async def child() -> None:
            with db.transaction() as inner:
                inner.add(Item(key="inner"))
                inner.flush()
                inner_open.set()
                await outer_ended.wait()

        try:
            with db.transaction() as outer:
                outer.add(Item(key="outer"))
                task = asyncio.ensure_future(child())
                await inner_open.wait()
        except RuntimeError as error:
            message = str(error)
        outer_ended.set()
        await task
        return {"error": message}

    response = app.test_client().post("/early")
    assert response.json is not None
    assert "still open in another asyncio task" in response.json["error"]
    assert stored_keys(observer) == []
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_a_task_that_outlives_its_block_uses_the_requests_session_again(
    make_app: AppFactory, observer: Engine
) -> None:
    app, db = make_app()

    @app.post("/late")
    async def late() -> str:
        block_ended = asyncio.Event()

        async def straggler() -> None:
            await block_ended.wait()
            db.session.add(Item(key="request"))  # committed with the request

        with db.transaction() as session:
            task = asyncio.ensure_future(straggler())
            session.add(Item(key="block"))
        block_ended.set()
        await task
        return "ok"

    assert app.test_client().post("/late").status_code == 200
    assert stored_keys(observer) == ["block", "request"]
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_child_forked_inside_a_block_never_uses_the_parents_connection(
    make_app: AppFactory, observer: Engine, backend: str
) -> None:
    """The child's own block commits on a connection of its own; leaving the
    parent's block in the child neither commits nor rolls back the parent's
    transaction, which stays the parent's to end."""
    app, db = make_app()

    @app.post("/fork")
    def fork() -> dict[str, int]:
        to_parent_read, to_parent_write = os.pipe()
        to_child_read, to_child_write = os.pipe()
        child = -1
        try:
            with db.transaction() as parent_block:
                parent_id = int(parent_block.scalar(sa.text(IDENTIFY[backend])))
                child = os.fork()
                if child == 0:  # pragma: no cover - runs in the child
                    try:
                        with db.transaction() as own:
                            child_id = int(own.scalar(sa.text(IDENTIFY[backend])))
                            own.add(Item(key="child"))
                        os.write(to_parent_write, str(child_id).encode())
                        select.select([to_child_read], [], [], 30)  # the parent writes meanwhile
                    except BaseException:
                        os._exit(1)
                else:
                    try:
                        child_id = int(os.read(to_parent_read, 100) or -1)
                        parent_block.add(Item(key="parent-rolled-back"))
                        parent_block.flush()
                    finally:
                        os.write(to_child_write, b"go")
                        _, status = os.waitpid(child, 0)
                    assert status == 0
                    raise LookupError("the parent's block fails")
        except LookupError:
            pass
        finally:
            if child == 0:  # pragma: no cover - the child left the parent's block
                os._exit(0)
            for end in (to_parent_read, to_parent_write, to_child_read, to_child_write):
                os.close(end)
        with db.transaction() as session:
            session.add(Item(key="parent"))
        return {"parent": parent_id, "child": child_id}

    ids = app.test_client().post("/fork").json
    assert ids is not None
    if backend != "sqlite":
        assert ids["child"] != ids["parent"]
    assert stored_keys(observer) == ["child", "parent"]
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
