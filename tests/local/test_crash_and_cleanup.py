"""Crashed replicas come back with backoff; no process outlives the provider or the add-on."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import textwrap
import time

import aiohttp

from tests.support.waiting import until

from .support import FIXTURE, REF, MakeProvider, alive, children_of


async def crash(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        with contextlib.suppress(aiohttp.ClientError):
            await session.get(url + "/crash")


async def test_a_crashed_replica_is_restarted_with_growing_backoff(make_provider: MakeProvider) -> None:
    provider = await make_provider()
    assert await provider.wait_ready(REF, timeout=10)
    first_pid = provider.replicas(REF)[0].pid
    restarted_after = []
    for _ in range(2):
        [url] = provider.endpoints(REF)
        crashed = time.monotonic()
        await crash(url)
        await until(lambda: provider.endpoints(REF) == [], within=5, what="the crash to be noticed")
        assert provider.get(REF).replicas == 1  # desired is unchanged: the provider owes a replica
        assert await provider.wait_ready(REF, timeout=10)
        restarted_after.append(time.monotonic() - crashed)
    [view] = provider.replicas(REF)
    assert view.restarts == 2
    assert view.pid != first_pid
    assert restarted_after[0] >= 0.3  # backoff_base
    assert restarted_after[1] >= 0.6  # doubled
    crashes = [e for e in provider.events() if e.reason == "ReplicaCrashed"]
    assert len(crashes) == 2
    assert all(e.warning and "exited with code 3" in e.message for e in crashes)


async def test_a_command_that_cannot_start_is_retried_and_the_event_says_why(
    make_provider: MakeProvider,
) -> None:
    provider = await make_provider(command="/nonexistent/function-binary")
    await until(lambda: len(provider.events()) >= 2, within=5, what="two failed starts")
    assert "cannot start '/nonexistent/function-binary'" in provider.events()[0].message
    assert provider.endpoints(REF) == []


async def test_closing_the_provider_leaves_no_process_behind(make_provider: MakeProvider) -> None:
    provider = await make_provider(replicas=2, env={"CHILD": "1"})
    await until(lambda: len(provider.endpoints(REF)) == 2, within=10, what="2 ready replicas")
    pids = [view.pid for view in provider.replicas(REF)]
    await until(lambda: all(children_of(pid) for pid in pids), within=5, what="the replicas' own children")
    grandchildren = [child for pid in pids for child in children_of(pid)]
    await provider.close()
    assert [pid for pid in pids + grandchildren if alive(pid)] == []


ADD_ON = textwrap.dedent(
    f"""
    import asyncio, sys
    from autoscaler.functionsfile import parse
    from autoscaler.interfaces import FunctionRef
    from autoscaler.providers.local import LocalProvider

    async def main():
        data = {{"functions": {{"echo": {{"command": "{sys.executable} {FIXTURE}", "replicas": 2}}}}}}
        provider = LocalProvider(functions=parse(data, source="t", base_dir="."))
        await provider.start()
        ref = FunctionRef("echo", "openfaas-fn")
        while len(provider.endpoints(ref)) < 2:
            await asyncio.sleep(0.05)
        print(" ".join(str(r.pid) for r in provider.replicas(ref)), flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
    """
)


async def test_no_replica_survives_the_add_on_being_killed_outright() -> None:
    # SIGKILL leaves no chance to clean up: the kernel stops the replicas (their own children,
    # if any, are out of its reach; a SIGTERM or a normal exit stops those too, as tested above).
    add_on = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ADD_ON, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert add_on.stdout is not None
        line = await asyncio.wait_for(add_on.stdout.readline(), timeout=20)
        pids = [int(pid) for pid in line.split()]
        assert len(pids) == 2
        add_on.send_signal(signal.SIGKILL)  # no handler, no exit hook: only the kernel can help
        await asyncio.wait_for(add_on.wait(), timeout=5)
        await until(lambda: not any(alive(pid) for pid in pids), within=5, what="the replicas to die")
    finally:
        if add_on.returncode is None:
            add_on.kill()
            await add_on.wait()
