"""Tooling around uvxlan, never imported by the product: simulated hosts
(network namespaces), overlays on them, Linux's own vxlan as a peer, the
benchmark and the demo."""
