"""The real Kubernetes control plane PoolPilot's suites run on: test tooling, not the product.

``cluster/go.mod`` pins Kubernetes (kube-apiserver, kube-controller-manager, kube-scheduler),
etcd and KWOK; ``cluster/build.sh`` builds them once into a cache outside the repo;
``python -m cluster up|down|status`` starts and stops them on 127.0.0.1 (see ``controlplane``).
KWOK plays the kubelet: it keeps the nodes the tests ask for (``nodes``) Ready and takes
their pods through Running, Ready and graceful deletion, with pod IPs on loopback.
"""
