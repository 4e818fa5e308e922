"""What the proxy refuses, or owes a client, before it routes a request at all.

aiohttp's low-level server parses anything that looks like HTTP and hands it over, so two kinds of
request reach the proxy that it must not forward: CONNECT (a tunnel request: `CONNECT /function/f`
would otherwise be sent to the function as a CONNECT, and `CONNECT host:443` would ask the proxy to
open a tunnel; 405) and HTTP/0.9 (a request line without headers, so without Host or framing; 400).
Both are refused before routing, so they never hold, wake or count against a function.

A client that sends `Expect: 100-continue` waits for `100 Continue` before it sends its body
(curl waits one second, then sends anyway). aiohttp's low-level server never sends it (its web
application router does). Function bodies are read whole by the proxy, so the expectation is met
here, at the hop where the body is read, as Go's http.Server does when a handler first reads the
body; the function is not asked again (`Expect` is dropped from the forwarded request, see
`_forward`): the proxy already has the body and sends it at once with its Content-Length. A body
larger than `--max-body` is not invited: the proxy answers 413 without it (RFC 9110 10.1.1).
Requests passed through to the provider answer their expectation where their body is streamed.
"""

from __future__ import annotations

from aiohttp import HttpVersion10, HttpVersion11, web

from autoscaler.proxy._admin import error_response

# Methods the function routes take (anything but CONNECT is forwarded; these are the usual ones).
ALLOW = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
# Targets whose bodies are read whole by the proxy itself (the provider's stream their own).
_READ_WHOLE = ("/function/", "/async-function/")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def screen(request: web.BaseRequest) -> web.Response | None:
    """A refusal for a request the proxy never forwards, or None (after a `100 Continue` if owed)."""
    if request.method == "CONNECT":
        # Whatever follows a CONNECT head is tunnel data, not a next request: the connection closes.
        response = error_response(
            405, "CONNECT is not supported: the proxy forwards function calls, it opens no tunnels",
            headers={"Allow": ALLOW},
        )  # fmt: skip
    elif request.version < HttpVersion10:
        response = error_response(400, "HTTP/0.9 requests are not supported: send HTTP/1.0 or HTTP/1.1")
    else:
        if request.body_exists and request.version >= HttpVersion11:
            expect = request.headers.get("Expect")
            if expect is not None and expect.lower() == "100-continue":
                _continue(request)
        return None
    response.force_close()
    return response


def _continue(request: web.BaseRequest) -> None:
    length = request.content_length
    if length is not None and length > request.client_max_size:
        return  # it gets 413 without sending its body
    transport = request.transport
    if transport is not None and request.raw_path.startswith(_READ_WHOLE):
        # Nothing of this request's response has been written yet: the interim answer goes first.
        transport.write(_CONTINUE)
