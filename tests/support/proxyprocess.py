"""A wake-up proxy in its own process, for tests that need real signals (SIGTERM) or a separate loop.

Run `python -m tests.support.proxyprocess --ready-delay 1.5 --grace 10`. It serves one cold function
`sleepy` (in namespace openfaas-fn) from a FakeProvider whose replica is ready `--ready-delay`
seconds after the wake-up, prints one JSON line with the bound ports, and runs `serve_forever`; the
exit code is what `serve_forever` returns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from autoscaler.config import ProxySettings
from autoscaler.proxy import Proxy, serve_forever
from tests.support.fakeprovider import FakeProvider


async def main(*, ready_delay: float, grace: float, hold_timeout: float) -> int:
    provider = FakeProvider(ready_delay=ready_delay)
    await provider.add("sleepy", warm=False)
    settings = ProxySettings(host="127.0.0.1", port=0, admin_port=0, hold_timeout=hold_timeout)
    proxy = Proxy(settings=settings, provider=provider)
    try:
        await proxy.start()
        print(json.dumps({"port": proxy.port, "admin_port": proxy.admin_port}), flush=True)
        return await serve_forever(proxy, grace=grace)
    finally:
        await provider.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ready-delay", type=float, default=1.5)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--hold-timeout", type=float, default=60.0)
    args = parser.parse_args()
    sys.exit(
        asyncio.run(main(ready_delay=args.ready_delay, grace=args.grace, hold_timeout=args.hold_timeout))
    )
