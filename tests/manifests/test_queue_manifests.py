"""The asynchronous overlays: the queue-worker Deployment, the proxy's NATS settings, a small JetStream.

`overlays/async/` adds the queue-worker and the proxy's async settings to the standalone topology,
both reading one ConfigMap of NATS settings; `overlays/nats-jetstream/` adds a nats-server StatefulSet
and points both at it. Flags are parsed by the CLI and env by the settings classes the processes use,
so a manifest that the program would refuse fails here; the shipped nats.conf is started by a real
nats-server, which must come up with JetStream.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import urllib.request
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yarl

from autoscaler.cli import _parser
from autoscaler.config import QueueSettings, QueueWorkerSettings
from autoscaler.queue._jetstream import NatsLink
from tests.manifests.conftest import ROOT, Obj, only
from tests.manifests.conftest import build as kustomize
from tests.manifests.crd_schemas import BY_KIND
from tests.support.child import free_port
from tests.support.nats import require_binary
from tests.support.waiting import until

OVERLAYS = ROOT / "overlays"
WORKER = "autoscaler-queue-worker"
QUEUE = "faas-request"


def _container(objects: list[Obj], kind: str, name: str) -> Obj:
    (container,) = only(objects, kind, name)["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def _env(objects: list[Obj], container: Obj) -> dict[str, str]:
    """What the process sees: envFrom ConfigMaps first, then env values over them (Kubernetes' order)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(only(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def _queue_settings(env: dict[str, str]) -> QueueSettings:
    fields = {k.removeprefix("AUTOSCALER_").lower(): v for k, v in env.items() if k.startswith("AUTOSCALER_")}
    return QueueSettings.model_validate({k: v for k, v in fields.items() if k in QueueSettings.model_fields})


def _args(container: Obj) -> argparse.Namespace:
    return _parser().parse_args(container["args"])


def _worker_settings(container: Obj) -> QueueWorkerSettings:
    """The worker's settings from the flags it is given, as the CLI parses them (None: not given)."""
    args = vars(_args(container))
    return QueueWorkerSettings.model_validate(
        {name: args[name] for name in QueueWorkerSettings.model_fields if args.get(name) is not None}
    )


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture
def async_overlay() -> list[Obj]:
    return kustomize(OVERLAYS / "async")


@pytest.fixture
def jetstream() -> list[Obj]:
    return kustomize(OVERLAYS / "nats-jetstream")


@pytest.mark.slow
@pytest.mark.parametrize("overlay", ["async", "nats-jetstream"])
def test_each_async_overlay_builds_and_every_object_validates_against_the_schemas(overlay: str) -> None:
    objects = kustomize(OVERLAYS / overlay)
    for obj in objects:
        if obj["kind"] in BY_KIND:
            jsonschema.validate(obj, BY_KIND[obj["kind"]])
        else:
            kubernetes_validate.validate(obj, "1.33", strict=True)
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {
        ("Deployment", "autoscaler-proxy"),
        ("Deployment", WORKER),
        ("ConfigMap", "autoscaler-nats"),
    } <= names
    assert (("StatefulSet", "autoscaler-nats") in names) == (overlay == "nats-jetstream")


def test_the_queue_worker_is_hardened_mounts_no_token_and_is_probed_on_its_admin_port(
    async_overlay: list[Obj],
) -> None:
    spec = only(async_overlay, "Deployment", WORKER)["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False  # it calls no Kubernetes API
    assert "serviceAccountName" not in spec
    assert spec["securityContext"]["runAsNonRoot"] is True
    (container,) = spec["containers"]
    context = container["securityContext"]
    assert (context["readOnlyRootFilesystem"], context["allowPrivilegeEscalation"]) == (True, False)
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert container["args"][1] == "queue-worker"
    settings = _worker_settings(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["admin"] == settings.admin_port
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "admin"}
    assert spec["terminationGracePeriodSeconds"] > settings.shutdown_grace


def test_the_worker_invokes_through_the_proxy_service_and_both_share_one_valid_nats_setting(
    async_overlay: list[Obj],
) -> None:
    worker = _container(async_overlay, "Deployment", WORKER)
    proxy = _container(async_overlay, "Deployment", "autoscaler-proxy")
    settings = _worker_settings(worker)
    url = yarl.URL(settings.proxy_url)
    service = only(async_overlay, "Service", "autoscaler-proxy")
    assert url.host == f"{service['metadata']['name']}.{service['metadata']['namespace']}"
    assert url.port in [p["port"] for p in service["spec"]["ports"] if p["name"] == "http"]

    worker_queue, proxy_queue = (
        _queue_settings(_env(async_overlay, worker)),
        _queue_settings(_env(async_overlay, proxy)),
    )
    assert worker_queue == proxy_queue
    assert worker_queue.servers() == ["nats://nats.openfaas:4222"]
    assert _env(async_overlay, proxy)["AUTOSCALER_GATEWAY_METRICS"] == "true"  # standalone kept
    assert int(_env(async_overlay, proxy)["AUTOSCALER_ASYNC_MAX_BODY"]) == 1024 * 1024


def test_the_service_monitor_scrapes_the_queue_worker_s_admin_port(async_overlay: list[Obj]) -> None:
    monitor = only(async_overlay, "ServiceMonitor", "autoscaler")
    service = only(async_overlay, "Service", WORKER)
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    pods = only(async_overlay, "Deployment", WORKER)["spec"]["template"]["metadata"]["labels"]
    assert _selects(service["spec"]["selector"], pods)
    others = [o for o in async_overlay if o["kind"] == "Deployment" and o["metadata"]["name"] != WORKER]
    assert not any(
        _selects(service["spec"]["selector"], o["spec"]["template"]["metadata"]["labels"]) for o in others
    )
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}


def test_the_jetstream_overlay_points_proxy_and_worker_at_its_own_server(jetstream: list[Obj]) -> None:
    statefulset = only(jetstream, "StatefulSet", "autoscaler-nats")
    service = only(jetstream, "Service", "autoscaler-nats")
    headless = only(jetstream, "Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert _selects(service["spec"]["selector"], labels)
    assert _selects(headless["spec"]["selector"], labels)
    for name in ("autoscaler-proxy", WORKER):
        (server,) = _queue_settings(_env(jetstream, _container(jetstream, "Deployment", name))).servers()
        url = yarl.URL(server)
        assert url.host == "autoscaler-nats.openfaas"
        assert url.port in [p["port"] for p in service["spec"]["ports"]]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config = only(jetstream, "ConfigMap", "autoscaler-nats-config")["data"]["nats.conf"]
    assert re.search(r"store_dir:\s*(\S+)", config)[1] == mounts["data"]  # type: ignore[index]
    assert [t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]] == ["data"]


def _serve(config: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    client, monitor = free_port(), free_port()
    text = config.replace("/data", str(tmp_path / "store"))
    text = re.sub(r"^port: \d+", f"listen: 127.0.0.1:{client}", text, flags=re.M)
    text = re.sub(r"^http_port: \d+", f"http: 127.0.0.1:{monitor}", text, flags=re.M)
    (tmp_path / "nats.conf").write_text(text)
    log = (tmp_path / "nats.log").open("wb")
    process = subprocess.Popen([require_binary(), "-c", str(tmp_path / "nats.conf")], stdout=log, stderr=log)
    return process, client, monitor


@pytest.mark.nats
async def test_the_shipped_nats_config_starts_a_real_server_with_jetstream_and_room_for_a_1_mib_call(
    jetstream: list[Obj], tmp_path: Path
) -> None:
    config = only(jetstream, "ConfigMap", "autoscaler-nats-config")["data"]["nats.conf"]
    process, client, monitor = _serve(config, tmp_path)
    try:

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true") as r:
                    return bool(r.status == 200)
            except OSError:
                return process.poll() is not None  # exited: stop waiting, the assertion below says so

        await until(healthy, within=20, what=lambda: (tmp_path / "nats.log").read_text())
        assert process.poll() is None, (tmp_path / "nats.log").read_text()
        # The queue's own streams (work-queue retention, file storage) on it, and a 1 MiB call stored.
        link = NatsLink(settings=QueueSettings(nats_url=f"nats://127.0.0.1:{client}"), name="manifest-test")
        await link.start()
        try:
            assert await link.wait_connected(10)
            await link.ensure_streams()
            # A 1 MiB body (--async-max-body) and room for the call's method, path and headers.
            ack = await link.jetstream().publish(f"{QUEUE}.fn.openfaas-fn", b"x" * (1024 * 1024 + 16 * 1024))
            assert (ack.stream, ack.seq) == (QUEUE, 1)
        finally:
            await link.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
