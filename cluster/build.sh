#!/usr/bin/env bash
# Build the real control plane once: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and KWOK, from the Go modules pinned in cluster/go.mod (the one place
# the versions live). The binaries are cached outside the repo, keyed by those pins, so
# every clone on this machine shares one build. Prints the bin directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
command -v go >/dev/null || { echo "cluster/build.sh: Go is needed to build the control plane" >&2; exit 1; }

kube_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$here/go.mod")"
[ -n "$kube_version" ] || { echo "cluster/build.sh: no k8s.io/kubernetes version in go.mod" >&2; exit 1; }
pins="$(cat "$here/go.mod" "$here/go.sum" "$0" | sha256sum | cut -c1-12)"
cache="${POOLPILOT_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/poolpilot/cluster}"
bin="$cache/kubernetes-$kube_version-$pins/bin"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

have_all() { for b in "${binaries[@]}"; do [ -x "$bin/$b" ] || return 1; done; }
if have_all; then echo "$bin"; exit 0; fi

mkdir -p "$cache"
exec 9>"$cache/build.lock"
flock 9  # two clones building at once build once
if have_all; then echo "$bin"; exit 0; fi

echo "building Kubernetes $kube_version, etcd and KWOK into $bin (first time only; 7 to 10 minutes on 2 cores)" >&2
start=$(date +%s)
tmp="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
minor="${kube_version#v1.}"; minor="${minor%%.*}"
version_pkg=k8s.io/component-base/version
ldflags="-s -w -X $version_pkg.gitVersion=$kube_version -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=$minor"
ldflags="$ldflags -X $version_pkg.gitTreeState=clean -X $version_pkg.buildDate=1970-01-01T00:00:00Z"
(
  cd "$here"
  # One invocation, so the packages the components share are compiled once.
  CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "$ldflags" -o "$tmp/" \
    go.etcd.io/etcd/server/v3 \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    sigs.k8s.io/kwok/cmd/kwok
)
mv "$tmp/server" "$tmp/etcd"
mkdir -p "$(dirname "$bin")"
rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
echo "built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
