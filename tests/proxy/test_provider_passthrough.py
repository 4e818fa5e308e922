"""Behind an OpenFaaS gateway, every path but /function/ goes to the real provider untouched.

The OpenFaaS gateway (openfaas/faas gateway/main.go, handlers/forwarding_proxy.go) sends everything
it forwards to one `functions_provider_url`: `/function/NAME[.NAMESPACE]/...` as it received it
(with `direct_functions=false`), `/system/...` with its basic-auth header, and `/healthz` for its own
probes. The proxy, as that URL, holds and wakes `/function/` itself and passes the rest to faas-netes
(`--provider-url`). faas-netes is played here by a real aiohttp server answering the routes that
faas-netes's `main.go` registers through openfaas/faas-provider `serve.go` (`Serve`): /system/functions
(GET, POST, PUT, DELETE), /system/function/{name} (GET), /system/scale-function/{name} (POST),
/system/info, /system/secrets, /system/logs (a stream), /system/namespaces, /function/{name}... and
/healthz.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from autoscaler.config import ProxySettings
from tests.proxy.conftest import MakeProxy, base
from tests.support.fakeprovider import FakeProvider
from tests.support.prometheus import free_port
from tests.support.upstream import pattern
from tests.support.virtual_time import virtual_loop
from tests.support.waiting import until

MIB = 1024 * 1024


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: dict[str, str]
    size: int
    sha256: str
    first_bytes_at: float | None  # monotonic time the first body byte arrived (None: no body)


@dataclass
class FaasNetes:
    """A stand-in for faas-netes on 127.0.0.1, recording what reached it."""

    seen: list[Seen] = field(default_factory=list)
    function_calls: list[str] = field(default_factory=list)  # its own /function/ route: must stay empty
    body_started: asyncio.Event = field(default_factory=asyncio.Event)
    logs_gate: asyncio.Event = field(default_factory=asyncio.Event)
    download_written: int = 0
    download_done: bool = False  # all of it written
    download_ended: bool = False  # the handler is over, whichever way
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        routes = [
            ("GET", "/system/functions", self._functions),
            ("POST", "/system/functions", self._functions),
            ("PUT", "/system/functions", self._functions),
            ("DELETE", "/system/functions", self._functions),
            ("GET", "/system/function/{name}", self._record),
            ("POST", "/system/scale-function/{name}", self._record),
            ("GET", "/system/info", self._record),
            ("*", "/system/secrets", self._record),
            ("GET", "/system/logs", self._logs),
            ("GET", "/system/namespaces", self._record),
            ("GET", "/system/download", self._download),  # not faas-netes: a large answer to stall on
            ("*", "/function/{tail:.*}", self._function),
            ("GET", "/healthz", self._record),
            ("*", "/{tail:.*}", self._not_found),  # Go's http.NotFound for anything else
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _read(self, request: web.Request) -> Seen:
        digest = hashlib.sha256()
        size = 0
        first: float | None = None
        async for chunk in request.content.iter_any():
            if first is None:
                first = time.monotonic()
                self.body_started.set()
            digest.update(chunk)
            size += len(chunk)
        seen = Seen(request.method, request.raw_path, dict(request.headers), size, digest.hexdigest(), first)
        self.seen.append(seen)
        return seen

    async def _record(self, request: web.Request) -> web.Response:
        seen = await self._read(request)
        return web.json_response({"size": seen.size})

    async def _not_found(self, request: web.Request) -> web.Response:
        await self._read(request)
        return web.Response(status=404, text="404 page not found\n")

    async def _functions(self, request: web.Request) -> web.Response:
        seen = await self._read(request)
        if request.method == "GET":
            return web.json_response([{"name": "echo", "namespace": "openfaas-fn", "replicas": 1}])
        response = web.json_response({"received": seen.size, "sha256": seen.sha256}, status=202)
        response.headers["Connection"] = "X-Hop"
        response.headers["X-Hop"] = "provider-private"
        response.headers["Keep-Alive"] = "timeout=5"
        return response

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        await self._read(request)
        out = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        out.enable_chunked_encoding()
        await out.prepare(request)
        await out.write(b'{"text":"first"}\n')
        await self.logs_gate.wait()
        await out.write(b'{"text":"second"}\n')
        await out.write_eof()
        return out

    async def _download(self, request: web.Request) -> web.StreamResponse:
        await self._read(request)
        total = 64 * MIB
        out = web.StreamResponse(headers={"Content-Length": str(total)})
        await out.prepare(request)
        block = b"x" * (64 * 1024)
        try:
            while self.download_written < total:
                await out.write(block)
                self.download_written += len(block)
            self.download_done = True
        except (ConnectionError, RuntimeError):
            pass  # the client went away and the proxy closed its upstream connection
        finally:
            self.download_ended = True
        return out

    async def _function(self, request: web.Request) -> web.Response:
        self.function_calls.append(request.raw_path)
        return web.Response(text="faas-netes served a function call: the proxy let it through")


@pytest.fixture
async def faas_netes() -> AsyncIterator[FaasNetes]:
    stand_in = FaasNetes()
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


# -- /system and every other path reach the provider as they came --------------------------------


async def test_listing_functions_reaches_the_provider_with_method_raw_path_query_and_auth(
    faas_netes: FaasNetes, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    proxy = await make_proxy(provider_url=faas_netes.url)
    url = base(proxy) + "/system/functions?namespace=openfaas-fn&x=%2F%20y"
    headers = {"Authorization": "Basic YWRtaW46c2VjcmV0", "X-Custom": "kept", "Proxy-Authorization": "no"}
    async with client.get(URL(url, encoded=True), headers=headers) as response:
        assert response.status == 200
        assert await response.json() == [{"name": "echo", "namespace": "openfaas-fn", "replicas": 1}]
    (seen,) = faas_netes.seen
    assert (seen.method, seen.raw_path) == ("GET", "/system/functions?namespace=openfaas-fn&x=%2F%20y")
    assert seen.headers["Authorization"] == "Basic YWRtaW46c2VjcmV0"
    assert seen.headers["X-Custom"] == "kept"
    assert "Proxy-Authorization" not in seen.headers
    assert seen.headers["X-Forwarded-For"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/system/function/echo?namespace=openfaas-fn"),
        ("POST", "/system/scale-function/echo?namespace=openfaas-fn"),
        ("GET", "/system/info"),
        ("DELETE", "/system/secrets"),
        ("GET", "/system/namespaces"),
        ("GET", "/healthz"),
    ],
)
async def test_each_provider_route_the_gateway_uses_is_passed_through(
    faas_netes: FaasNetes, make_proxy: MakeProxy, client: aiohttp.ClientSession, method: str, path: str
) -> None:
    proxy = await make_proxy(provider_url=faas_netes.url)
    async with client.request(method, base(proxy) + path) as response:
        assert response.status == 200, await response.text()
    assert [(s.method, s.raw_path) for s in faas_netes.seen] == [(method, path)]


async def test_a_path_the_provider_does_not_know_gets_the_provider_s_own_answer(
    faas_netes: FaasNetes, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    proxy = await make_proxy(provider_url=faas_netes.url)
    paths = ["/", "/ui/", "/function", "/functions/echo", "/async-function/echo"]
    for path in paths:
        async with client.post(base(proxy) + path, data=b"x") as response:
            assert response.status == 404, path
            assert await response.text() == "404 page not found\n"  # faas-netes said it, not the proxy
    assert [(s.raw_path, s.size) for s in faas_netes.seen] == [(path, 1) for path in paths]


async def test_a_provider_base_path_is_put_before_each_target(
    faas_netes: FaasNetes, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    proxy = await make_proxy(provider_url=faas_netes.url + "/system/")
    async with client.get(base(proxy) + "/functions") as response:
        assert response.status == 200
    assert [s.raw_path for s in faas_netes.seen] == ["/system/functions"]


async def test_hop_by_hop_response_headers_of_the_provider_are_dropped(
    faas_netes: FaasNetes, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    proxy = await make_proxy(provider_url=faas_netes.url)
    async with client.put(base(proxy) + "/system/functions", data=b"{}") as response:
        assert response.status == 202
        assert "X-Hop" not in response.headers
        assert "Keep-Alive" not in response.headers
        assert response.headers["Content-Type"].startswith("application/json")


# -- bodies are streamed both ways, never read whole ------------------------------------------


async def _upload(size: int, *, started: asyncio.Event, piece: int = 256 * 1024) -> AsyncIterator[bytes]:
    body = pattern(size)
    yield body[:piece]
    # The rest only once the provider has bytes: a proxy that read the body whole would wait forever.
    await asyncio.wait_for(started.wait(), timeout=5)
    for at in range(piece, size, piece):
        yield body[at : at + piece]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_5_mib_deploy_is_streamed_to_the_provider_before_the_client_has_sent_it_all(
    faas_netes: FaasNetes, make_proxy: MakeProxy, client: aiohttp.ClientSession, framing: str
) -> None:
    size = 5 * MIB
    # The limit for function bodies (read whole) does not apply: this body is never held in memory.
    proxy = await make_proxy(provider_url=faas_netes.url, max_body=MIB)
    headers = {"Content-Length": str(size)} if framing == "content-length" else {}
    async with asyncio.timeout(20):
        upload = _upload(size, started=faas_netes.body_started)
        async with client.post(base(proxy) + "/system/functions", data=upload, headers=headers) as response:
            assert response.status == 202, await response.text()
            answer = await response.json()
    assert answer == {"received": size, "sha256": hashlib.sha256(pattern(size)).hexdigest()}
    (seen,) = faas_netes.seen
    if framing == "content-length":
        assert seen.headers["Content-Length"] == str(size)
    else:
        assert seen.headers["Transfer-Encoding"] == "chunked"


async def test_a_client_waiting_for_100_continue_gets_it_and_its_body_goes_through(
    faas_netes: FaasNetes, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    proxy = await make_proxy(provider_url=faas_netes.url)
    async with asyncio.timeout(10):
        async with client.post(
            base(proxy) + "/system/functions", data=b"{}" * 1000, expect100=True
        ) as response:
            assert response.status == 202
            assert (await response.json())["received"] == 2000


async def test_a_chunked_stream_from_the_provider_reaches_the_client_piece_by_piece(
    faas_netes: FaasNetes, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    proxy = await make_proxy(provider_url=faas_netes.url)
    async with asyncio.timeout(10):
        async with client.get(base(proxy) + "/system/logs?name=echo&follow=true") as response:
            assert response.status == 200
            assert response.headers["Transfer-Encoding"] == "chunked"
            # The second line is not written yet: the first must already be here.
            assert await response.content.readline() == b'{"text":"first"}\n'
            faas_netes.logs_gate.set()
            assert await response.content.read() == b'{"text":"second"}\n'


async def test_a_client_that_reads_nothing_stalls_the_provider_instead_of_filling_memory(
    faas_netes: FaasNetes, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy(provider_url=faas_netes.url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", proxy.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET /system/download HTTP/1.1\r\nHost: gateway\r\n\r\n")
    await writer.drain()
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    # Read nothing more: the provider must come to a stop with a bounded amount written (socket
    # buffers and the proxy's high-water mark), far below the 64 MiB it would send unhindered.
    last = -1
    async with asyncio.timeout(10):
        while faas_netes.download_written != last:
            last = faas_netes.download_written
            await asyncio.sleep(0.5)
    assert not faas_netes.download_done
    assert faas_netes.download_written < 24 * MIB
    writer.close()
    # The client went away: the proxy drops its upstream connection, which ends the provider's answer.
    await until(lambda: faas_netes.download_ended, within=5, what="the provider's answer to be cut off")
    assert not faas_netes.download_done


# -- a provider that is down or stuck gives a clear answer, never a hang -------------------------


async def test_a_provider_that_is_down_gives_a_502_naming_it_at_once(
    make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    proxy = await make_proxy(provider_url=down)
    started = time.monotonic()
    async with client.post(base(proxy) + "/system/functions", data=b"{}") as response:
        assert response.status == 502
        text = await response.text()
    assert time.monotonic() - started < 3
    assert f"the provider at {down}" in text
    assert "unreachable" in text


@pytest.mark.virtual_time
async def test_a_provider_that_never_answers_gives_a_504_at_the_shipped_upstream_timeout(
    make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel does), never answers
    upstream_timeout = ProxySettings().upstream_timeout  # 300 s
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        proxy = await make_proxy(provider_url=url)
        loop = virtual_loop()
        started = loop.time()
        no_client_timeout = aiohttp.ClientTimeout(total=None)  # aiohttp's own 300 s would race the proxy's
        async with client.get(base(proxy) + "/system/functions", timeout=no_client_timeout) as response:
            assert response.status == 504
            assert (
                f"did not answer within the upstream timeout ({upstream_timeout:g} s)"
                in await response.text()
            )
        waited = loop.time() - started
        assert upstream_timeout <= waited <= upstream_timeout + 1.0, waited  # one sweep late at most
    finally:
        silent.close()


# -- /function stays the proxy's own: held, woken, counted, never leaked to the provider ---------


async def test_function_calls_are_served_by_the_proxy_and_never_reach_the_provider(
    faas_netes: FaasNetes, provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("echo")
    proxy = await make_proxy(provider_url=faas_netes.url)
    for path in ("/function/echo", "/function/echo.openfaas-fn/a?b=1"):
        async with client.post(base(proxy) + path, data=b"hi") as response:
            assert response.status == 200
    async with client.get(base(proxy) + "/function/missing") as response:
        assert response.status == 404
    replica = provider.upstream(ref)
    assert replica is not None
    assert [r.raw_path for r in replica.received] == ["/", "/a?b=1"]
    assert faas_netes.function_calls == []
    assert faas_netes.seen == []
    assert proxy.invocation_stats()["echo.openfaas-fn"].started_total == 2


async def test_system_calls_are_not_counted_as_invocations(
    faas_netes: FaasNetes, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    proxy = await make_proxy(provider_url=faas_netes.url)
    async with client.get(base(proxy) + "/system/function/echo") as response:
        assert response.status == 200
    assert proxy.invocation_stats() == {}


@pytest.mark.parametrize(
    "target",
    [
        "/system/../function/echo",
        "/system/%2e%2e/function/echo",
        "//function/echo",
        "/system\\..\\function/x",
    ],
)
async def test_a_path_that_would_normalise_onto_a_function_route_is_refused(
    faas_netes: FaasNetes, make_proxy: MakeProxy, target: str
) -> None:
    proxy = await make_proxy(provider_url=faas_netes.url)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert faas_netes.seen == []
    assert faas_netes.function_calls == []


async def test_an_absolute_url_target_is_never_relayed(faas_netes: FaasNetes, make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(provider_url=faas_netes.url)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(
        b"GET http://example.com/system/info HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
    )
    answer = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert faas_netes.seen == []


async def test_a_cold_function_is_still_held_woken_and_answered(
    faas_netes: FaasNetes, provider: FakeProvider, make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    ref = await provider.add("sleepy", warm=False, ready_delay=0.3)
    proxy = await make_proxy(provider_url=faas_netes.url)
    async with asyncio.timeout(10):
        async with client.post(base(proxy) + "/function/sleepy.openfaas-fn/job", data=b"payload") as response:
            assert response.status == 200
            assert (await response.json())["body"] == "payload"
    assert provider.scale_calls == [(ref, 1)]
    assert faas_netes.seen == []
    assert faas_netes.function_calls == []


async def test_without_a_provider_url_other_paths_stay_404(
    make_proxy: MakeProxy, client: aiohttp.ClientSession
) -> None:
    proxy = await make_proxy()
    async with client.get(base(proxy) + "/system/functions") as response:
        assert response.status == 404
        assert "no such route" in await response.text()


# -- a wrong --provider-url is refused before anything starts ------------------------------------


@pytest.mark.parametrize(
    "value",
    ["faas-netes.openfaas:8081", "ftp://faas-netes:21", "http://", "http://h:8081/?x=1", "http://u:p@h/"],
)
def test_a_wrong_provider_url_flag_exits_2_with_a_one_line_reason(value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "autoscaler", "proxy", "--provider-url", value],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "--provider-url (env AUTOSCALER_PROVIDER_URL)" in line
    assert "http:// or https:// URL with a host" in line or "no user, password, query or fragment" in line


def test_a_wrong_provider_url_in_the_environment_exits_2_naming_the_variable() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "autoscaler", "proxy"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "AUTOSCALER_PROVIDER_URL": "not a url"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "AUTOSCALER_PROVIDER_URL" in done.stderr
    assert "'not a url'" in done.stderr
