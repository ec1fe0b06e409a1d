"""``poolpilot simulate`` and ``poolpilot size``, as a person runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "manifests" / "examples" / "spot-fallback-pool.yaml"
FIELDS = {"cost_usd", "cost_per_mtok", "slo_attainment", "ttft_p50_s", "ttft_p99_s", "api_token_share",
          "lost_requests", "spot_replica_hours", "ondemand_replica_hours", "requests"}


def test_simulate_prints_one_json_object_with_every_policys_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", str(EXAMPLE), "--duration", "600", "--rate-scale", "0.5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["policies"]) == {"static-ondemand", "keda", "keda-spot", "skyserve", "api-only", "poolpilot",
                                       "oracle"}
    for name, figures in report["policies"].items():
        assert set(figures) >= FIELDS, name
        assert figures["requests"] == report["trace"]["requests"] > 0
        assert 0 <= figures["slo_attainment"] <= 1 and 0 <= figures["api_token_share"] <= 1
    assert report["policies"]["api-only"]["api_token_share"] == 1.0
    assert report["pool"] == "llama-8b" and report["profile"] == "llama-3.1-8b-l4"
    assert report["prices"]["spot_hourly"] == 0.45  # the example's cost block wins over the profile's prices


def test_simulate_prints_a_table_and_writes_the_timeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "timeline.png"
    assert main(["simulate", str(EXAMPLE), "--duration", "300", "--policies", "poolpilot,keda",
                 "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "policy" in out and "poolpilot" in out and "keda" in out and "skyserve" not in out
    assert f"Timeline written to {plot}" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_refuses_an_invalid_pool_with_the_field_and_changes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pool = tmp_path / "bad.yaml"
    pool.write_text(EXAMPLE.read_text().replace("max: 8", "max: 0"))
    assert main(["simulate", str(pool), "--duration", "60"]) == 2
    err = capsys.readouterr().err
    assert "spec.replicas.max" in err and "invalid" in err


@pytest.mark.parametrize(("args", "message"), [
    (["--trace", "nowhere.csv"], "trace file not found"),
    (["--policies", "poolpilot,magic"], "unknown policies magic"),
    (["--profile", "llama-3.1-8b-tpu"], "llama-3.1-8b-h100"),  # the known profiles are listed
])
def test_simulate_says_what_is_wrong_with_its_arguments(args: list[str], message: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", str(EXAMPLE), "--duration", "60", *args]) == 2
    assert message in capsys.readouterr().err


def test_size_says_what_one_replica_holds_and_warns_when_the_cache_is_small(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["size", str(EXAMPLE), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures  # the sizing module's own tests check the figures; here: the command wiring
    assert main(["size", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "KV cache" in out and "25856 tokens" in out  # an 8B model on one L4 (vllm-replica-model.md §2.3)
    assert "warning: memory for weights, none for the cache" in out


def test_size_warns_that_a_70b_model_does_not_fit_one_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pool = tmp_path / "big.yaml"
    pool.write_text(EXAMPLE.read_text().replace("Llama-3.1-8B-Instruct", "Llama-3.1-70B-Instruct"))
    assert main(["size", str(pool)]) == 0  # gpusPerReplica 1: no measured profile, one derived for its memory
    out = capsys.readouterr().out
    assert "warning: the model does not fit: 131.4 GiB of weights" in out
    assert main(["size", str(pool), "--profile", "llama-3.1-70b-h100-tp4"]) == 0
    out = capsys.readouterr().out
    assert "4 x H100" in out and "does not fit" not in out
