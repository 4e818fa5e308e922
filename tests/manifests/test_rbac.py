"""The RBAC rules grant exactly the Kubernetes API calls the code makes, each in the narrowest scope.

Three sources must agree: the rules in the kustomize base, the `API_CALLS` tuples the modules declare,
and the calls the modules' source actually contains (found by reading it: each kubernetes-asyncio API
method it names is resolved to its HTTP path and method through the client library's own code).
A verb the code needs and the role lacks fails in production as 403; a verb granted and never used is
privilege nobody needs. Both fail here.

Following namespaces by annotation (`--namespaces-annotated`) needs cluster-wide grants, so they are
not in the base: `overlays/openfaas-namespaces/rbac-annotated-namespaces.yaml` adds them, and the base
plus that file grant exactly the calls the code declares.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import kubernetes_asyncio.client as k8s
import yaml

from autoscaler import leader
from autoscaler.providers import kubernetes as provider
from tests.manifests.conftest import MANIFESTS, ROOT, Obj

Call = tuple[str, str, str]  # (api group, resource, verb)

DECLARED: dict[str, tuple[Call, ...]] = {
    # module whose source makes the calls -> the API_CALLS that declare them
    "autoscaler.providers.kubernetes": provider.API_CALLS,
    "autoscaler.leader": leader.API_CALLS,
}
_METHOD = re.compile(r"^(list|read|create|patch|replace|delete)_(namespaced_[a-z_]+|namespace)$")
_HTTP_VERB = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_PATH = re.compile(r"^/apis?/(?:(?P<group>[^/]+)/)?v\w+/namespaces/\{namespace\}/(?P<rest>.+)$")
_CLUSTER_PATH = re.compile(r"^/api/v\w+/(?P<rest>namespaces(?:/\{name\})?)$")
ANNOTATED_RBAC = MANIFESTS.parent / "overlays" / "openfaas-namespaces" / "rbac-annotated-namespaces.yaml"
# Made only when namespaces are followed by annotation: granted by ANNOTATED_RBAC, not by the base.
NAMESPACE_CALLS = {c for c in provider.API_CALLS if c[1] == "namespaces"}


def _resolve(api_classes: list[type], method: str) -> tuple[str, str]:
    """(path, HTTP method) of a kubernetes-asyncio API method, read from the client's own source."""
    owners = [cls for cls in api_classes if hasattr(cls, method)]
    assert len(owners) == 1, f"{method} belongs to {owners} among the module's API classes {api_classes}"
    source = inspect.getsource(getattr(owners[0], method + "_with_http_info"))
    found = re.search(r"call_api\(\s*'([^']+)',\s*'(\w+)'", source)
    assert found is not None, f"cannot find the path of {owners[0].__name__}.{method}"
    return found.group(1), found.group(2)


def calls_in_source(module: str) -> set[Call]:
    """The (group, resource, verb) triples the module's source (a package's: all its modules') calls
    through kubernetes-asyncio."""
    loaded = importlib.import_module(module)
    path = Path(loaded.__file__ or "")
    paths = sorted(path.parent.glob("*.py")) if hasattr(loaded, "__path__") else [path]
    body = [stmt for one in paths for stmt in ast.parse(one.read_text()).body]
    tree = ast.Module(body=body, type_ignores=[])
    classes = sorted(
        {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.endswith("Api")}
    )
    classes += sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id.endswith("Api")})
    api_classes = [
        getattr(k8s, name) for name in dict.fromkeys(classes) if re.fullmatch(r"\w+V\d\w*Api", name)
    ]
    watched = {
        kw.value.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        for kw in n.keywords
        if kw.arg == "watch_func" and isinstance(kw.value, ast.Attribute)
    }
    calls: set[Call] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _METHOD.match(node.attr)):
            continue
        url, http = _resolve(api_classes, node.attr)
        parsed = _PATH.match(url) or _CLUSTER_PATH.match(url)
        assert parsed is not None, url
        group, rest = parsed.groupdict().get("group") or "", parsed.group("rest")
        parts = rest.split("/")
        resource = parts[0] + ("/" + parts[2] if len(parts) > 2 else "")
        named = len(parts) > 1
        verb = "list" if http == "GET" and not named else _HTTP_VERB[http]
        calls.add((group, resource, verb))
        if node.attr in watched:
            calls.add((group, resource, "watch"))
    return calls


def _bound_rules(base: list[Obj]) -> dict[tuple[str, str, str], list[Obj]]:
    """Rules granted to the add-on's ServiceAccount, keyed by (binding kind, binding namespace, role)."""
    (account,) = [o for o in base if o["kind"] == "ServiceAccount"]
    me = ("ServiceAccount", account["metadata"]["name"], account["metadata"]["namespace"])
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in base}
    granted: dict[tuple[str, str, str], list[Obj]] = {}
    for binding in (o for o in base if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        subjects = {(s["kind"], s["name"], s.get("namespace")) for s in binding["subjects"]}
        if me not in subjects:
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace")
        role = roles[(ref["kind"], None if ref["kind"] == "ClusterRole" else namespace, ref["name"])]
        granted[(binding["kind"], namespace or "*", ref["name"])] = role["rules"]
    return granted


def _expand(rules: list[Obj]) -> set[Call]:
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_the_declared_api_calls_are_the_calls_the_source_makes() -> None:
    for module, declared in DECLARED.items():
        assert calls_in_source(module) == set(declared), module


def test_only_the_kubernetes_provider_and_the_elector_call_the_kubernetes_api() -> None:
    callers = set()
    for path in (ROOT / "autoscaler").rglob("*.py"):
        text = path.read_text()
        if re.search(r"\b\w+V\d\w*Api\(", text):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            callers.add(next((d for d in DECLARED if module.startswith(d + ".")), module))  # in a package
    assert callers == set(DECLARED), "a new caller of the Kubernetes API needs its API_CALLS in this test"


def annotated() -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(ANNOTATED_RBAC.read_text()) if doc]


def _granted(objects: list[Obj]) -> set[Call]:
    return set().union(*(_expand(rules) for rules in _bound_rules(objects).values()))


def test_the_roles_grant_exactly_the_calls_the_code_declares(base: list[Obj]) -> None:
    granted = _granted(base)
    needed = set().union(*DECLARED.values()) - NAMESPACE_CALLS
    assert not needed - granted, f"the code needs calls no role grants: {sorted(needed - granted)}"
    assert not granted - needed, f"roles grant calls the code never makes: {sorted(granted - needed)}"
    for rules in _bound_rules(base).values():
        for rule in rules:
            assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule


def test_following_annotated_namespaces_adds_exactly_the_namespace_watch_and_function_access(
    base: list[Obj],
) -> None:
    assert {("", "namespaces", "list"), ("", "namespaces", "watch")} == NAMESPACE_CALLS
    extra = annotated()
    assert {o["kind"] for o in extra} <= {"ClusterRole", "ClusterRoleBinding"}
    both = base + extra
    assert _granted(both) == set().union(*DECLARED.values())
    cluster_wide = set().union(
        *(
            _expand(rules)
            for (kind, _, _), rules in _bound_rules(both).items()
            if kind == "ClusterRoleBinding"
        )
    )
    functions = _expand(only_role(base, "autoscaler-functions"))
    assert cluster_wide == NAMESPACE_CALLS | functions, "cluster-wide: namespaces and function access only"
    assert not {c for c in cluster_wide if c[1] == "leases"}


def only_role(objects: list[Obj], name: str) -> list[Obj]:
    (role,) = [o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"] == name]
    rules: list[Obj] = role["rules"]
    return rules


def test_function_access_is_per_namespace_and_lease_access_only_in_the_add_on_namespace(
    base: list[Obj],
) -> None:
    (account,) = [o for o in base if o["kind"] == "ServiceAccount"]
    home = account["metadata"]["namespace"]
    bound = _bound_rules(base)
    assert not [k for k in bound if k[0] == "ClusterRoleBinding"], "no cluster-wide grant"
    for (_, namespace, role), rules in bound.items():
        leases = {c for c in _expand(rules) if c[1] == "leases"}
        if leases:
            assert namespace == home, f"{role} grants leases outside {home}"
            assert leases == _expand(rules), f"{role} mixes leases with function access"
        else:
            assert namespace != home, f"{role} grants function access in the add-on's own namespace"
    assert {c for c in leader.API_CALLS} <= set().union(
        *(_expand(r) for (_, ns, _), r in bound.items() if ns == home)
    )
