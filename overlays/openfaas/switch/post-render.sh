#!/bin/sh
# Helm post-renderer: the chart's objects on stdin, the same with gateway.yaml and queue-worker.yaml
# applied on stdout, so that `helm upgrade` keeps the gateway pointed at the proxy:
#   helm upgrade openfaas openfaas/openfaas -n openfaas --reuse-values \
#     --post-renderer overlays/openfaas/switch/post-render.sh
# Needs kubectl (kustomize v4 or later); KUBECTL names another binary.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/chart.yaml"
cp "$here/gateway.yaml" "$here/queue-worker.yaml" "$work/"
cat >"$work/kustomization.yaml" <<'KUSTOMIZATION'
resources: [chart.yaml]
patches:
  - path: gateway.yaml
    target: {kind: Deployment, name: gateway}
  - path: queue-worker.yaml
    target: {kind: Deployment, name: queue-worker}
KUSTOMIZATION
"${KUBECTL:-kubectl}" kustomize "$work"
