"""`poolpilot explain-notice FILE|- [--json]`: the real CLI in a subprocess, on the shapes on-call engineers
paste: an SQS message body (EventBridge, SNS-wrapped), a Node or a Pod, as JSON or YAML."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

from tests.sources.test_interruptions import SPOT, STATE


def explain(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controller.cli", "explain-notice", *args], input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


def as_json(*args: str, stdin: str | None = None) -> Any:
    done = explain(*args, "--json", stdin=stdin)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_spot_warning_from_a_file(tmp_path: pathlib.Path) -> None:
    body = tmp_path / "message.json"
    body.write_text(json.dumps(SPOT))
    assert as_json(str(body)) == {"result": "notice", "kind": "spot-interruption",
                                  "instanceId": "i-0b662ef9931388ba0", "node": None, "pod": None,
                                  "deadline": "1970-01-01T00:02:00+00:00",
                                  "reason": "EC2 will terminate spot instance i-0b662ef9931388ba0 at "
                                            "1970-01-01T00:02:00+00:00"}
    text = explain(str(body))
    assert text.returncode == 0 and "spot-interruption (aws-sqs): instance i-0b662ef9931388ba0" in text.stdout
    assert "; a reclaim" in text.stdout


def test_an_sns_wrapped_body_on_stdin_and_an_ignored_state() -> None:
    wrapped = json.dumps({"Type": "Notification", "Message": json.dumps(STATE)})
    assert as_json("-", stdin=wrapped)["result"] == "ignored"
    assert "pending: not an interruption" in explain("-", stdin=wrapped).stdout


def test_a_tainted_node_as_yaml(tmp_path: pathlib.Path) -> None:
    node = tmp_path / "node.yaml"
    node.write_text("apiVersion: v1\nkind: Node\nmetadata:\n  name: ip-10-0-1-5\nspec:\n"
                    "  providerID: aws:///us-east-1a/i-0b662ef9931388ba0\n  taints:\n"
                    "  - key: karpenter.sh/disrupted\n    effect: NoSchedule\n")
    found = as_json(str(node))
    assert (found["result"], found["kind"], found["node"], found["instanceId"]) == (
        "notice", "node-disruption", "ip-10-0-1-5", "i-0b662ef9931388ba0")


def test_garbage_is_rejected_with_exit_zero_and_no_traceback() -> None:
    for garbage in ("{not json", "- just\n- a list\n", "kind: Service\nmetadata: {name: x}\n", ""):
        done = explain("-", "--json", stdin=garbage)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        assert json.loads(done.stdout)["result"] == "rejected"


def test_a_file_that_cannot_be_read_is_one_line_and_exit_one(tmp_path: pathlib.Path) -> None:
    done = explain(str(tmp_path / "missing.json"))
    assert done.returncode == 1 and "cannot read" in done.stderr and "Traceback" not in done.stderr
