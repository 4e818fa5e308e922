"""Two trees' proxies, interleaved in one run: CPU per request and latency, round after round.

On a shared machine whose load moves every figure by tens of percent from one minute to the next,
two full `proxy_bench.py` runs minutes apart cannot tell a 10 % change from the noise. Here this
tree's proxy and another tree's (`--against DIR`, a checkout or `git worktree` of the code before a
change: `git worktree add --detach /tmp/before HEAD~1`) run side by side against one nginx function,
each in its own process started by its own tree's `proxy_bench.py` (so each imports its own
`autoscaler`), both pinned to the same CPU; every round runs `wrk -c CONNECTIONS` on one then on
the other (the order alternating), and nginx as a proxy in the same round as the baseline. The
medians over the rounds and the ratio of the medians are printed; so is each round's ratio, whose
spread is the noise.

Run: `python bench/proxy_ab_bench.py --against /tmp/before [--rounds 7] [--seconds 3]`
(needs `nginx` and `wrk`, as `proxy_bench.py`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy_bench import (
    BODY,
    FUNCTION_CONF,
    LOAD_CPU,
    PROXY_CONF,
    PROXY_CPU,
    load_average,
    nginx,
    pinned,
    wait_port,
    wrk,
)

from tests.support.prometheus import free_port  # proxy_bench put the project on the path


def start(tree: Path, function_url: str) -> tuple[subprocess.Popen[str], int]:
    """The proxy of `tree` (its own proxy_bench.py and autoscaler) on a free port, pinned."""
    script = tree / "bench" / "proxy_bench.py"
    process = subprocess.Popen(
        pinned(PROXY_CPU, [sys.executable, str(script), "--serve-proxy", "--function-url", function_url,
                           "--port", str(free_port()), "--admin-port", str(free_port())]),
        cwd=tree, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    port: int = json.loads(process.stdout.readline())["port"]
    return process, port


Runs = dict[str, list[tuple[float, float]]]  # per target: (CPU us per request, c=1 p50 ms) each round


def rounds(urls: dict[str, tuple[str, int]], args: argparse.Namespace) -> Runs:
    """Per target, (CPU us per request, c=1 p50 ms) of each round; the order alternates per round."""
    got: Runs = {name: [] for name in urls}
    names = list(urls)
    for url, _ in urls.values():  # warm up pools and caches
        wrk(url, connections=args.connections, seconds=1)
    for index in range(args.rounds):
        order = names if index % 2 == 0 else [names[0], *reversed(names[1:])]
        for name in order:
            url, pid = urls[name]
            loaded = wrk(url, connections=args.connections, seconds=args.seconds, watch={"proxy": pid})
            single = wrk(url, connections=1, seconds=max(2, args.seconds // 2))
            assert loaded.cpu_us is not None
            got[name].append((loaded.cpu_us["proxy"], single.p50_ms))
        line = "   ".join(f"{name} {got[name][-1][0]:6.1f} us" for name in names)
        print(f"  round {index + 1}: {line}", flush=True)
    return got


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--against", type=Path, required=True, help="the other tree (a checkout)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=int, default=3, help="duration of each wrk -c run")
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    if not (args.against / "bench" / "proxy_bench.py").is_file():
        print(f"--against {args.against}: no bench/proxy_bench.py there; give a checkout of the project")
        return 2
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (Debian package `{tool}`); it is needed for this benchmark")
            return 2
    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="proxy-ab-") as tmp:
        prefix = Path(tmp)
        (prefix / "logs").mkdir()
        fn_port, ngx_port = free_port(), free_port()
        fn_conf = FUNCTION_CONF.format(prefix=prefix, port=fn_port, body=BODY.replace("\n", "\\n"))
        px_conf = PROXY_CONF.format(prefix=prefix, port=ngx_port, function_port=fn_port)
        with (
            nginx(prefix, "function", fn_conf, cpu=LOAD_CPU),
            nginx(prefix, "proxy", px_conf, cpu=PROXY_CPU) as px,
        ):
            wait_port(fn_port)
            wait_port(ngx_port)
            function_url = f"http://127.0.0.1:{fn_port}"
            this, this_port = start(here, function_url)
            other, other_port = start(args.against.resolve(), function_url)
            try:
                print(f"load average at start: {load_average()}")
                got = rounds(
                    {
                        "nginx": (f"http://127.0.0.1:{ngx_port}/function/hello/", px.pid),
                        "this": (f"http://127.0.0.1:{this_port}/function/hello/", this.pid),
                        "other": (f"http://127.0.0.1:{other_port}/function/hello/", other.pid),
                    },
                    args,
                )
                report(got, args)
                print(f"load average at the end: {load_average()}")
            finally:
                for process in (this, other):
                    process.terminate()
                    process.wait(timeout=15)
    return 0


def report(got: Runs, args: argparse.Namespace) -> None:
    cpu = {name: statistics.median(r[0] for r in runs) for name, runs in got.items()}
    p50 = {name: statistics.median(r[1] for r in runs) for name, runs in got.items()}
    print(f"\nmedians over {args.rounds} rounds (wrk -c{args.connections} {args.seconds}s; c=1 for p50):")
    for name, label in (("nginx", "nginx as proxy"), ("this", "this tree"), ("other", f"{args.against}")):
        print(f"    {label:28s} CPU {cpu[name]:6.1f} us/request   c=1 p50 {p50[name]:.3f} ms")
    print(f"ratio CPU this / other = {cpu['this'] / cpu['other']:.3f}")
    print(f"ratio CPU this / nginx = {cpu['this'] / cpu['nginx']:.2f}x   other / nginx = "
          f"{cpu['other'] / cpu['nginx']:.2f}x")  # fmt: skip
    each = [t[0] / o[0] for t, o in zip(got["this"], got["other"], strict=True)]
    print("each round's this / other: " + ", ".join(f"{r:.3f}" for r in each))


if __name__ == "__main__":
    sys.exit(main())
