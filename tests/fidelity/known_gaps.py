"""Where the embedded API server still differs from the real one: the one list of known gaps.

Each entry names a fidelity scenario (``tests/fidelity/scenarios.py``) and says why the
difference is tolerated for now and where it is covered on the real control plane. The
fidelity test marks these scenarios as strict expected failures: when the embedded server
learns the behaviour, the scenario passes, the strict mark fails the run, and the entry must
go. Anything not listed here must behave the same on both servers.
"""

from __future__ import annotations

KNOWN_GAPS: dict[str, str] = {
    "invalid_objects_are_refused_with_422": (
        "the embedded server does not validate built-in kinds (a Deployment without a selector, a name that is "
        "not a DNS subdomain are stored); the operator renders its objects from a validated spec, and tests/e2e "
        "applies every rendered object to the real server"),
    "orphan_propagation_keeps_dependents": (
        "garbage collection is immediate and propagationPolicy is ignored; the operator never orphans"),
    "foreground_deletion_waits_for_dependents": (
        "garbage collection is immediate and propagationPolicy is ignored; the operator relies on background "
        "collection only (owner_references_and_background_gc)"),
}
