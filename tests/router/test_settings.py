"""The router's fixed command line: parsed, checked, the key read once and never shown."""

from __future__ import annotations

import pathlib

import pytest

from controller.cli import main
from controller.router.settings import InvalidRouterSettings, parse_router_command_line

KEY = "sk-live-0123456789abcdef"
BASE = ["--namespace", "team-a", "--pool", "chat", "--served-model", "qwen"]


@pytest.fixture
def key_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "api-key"
    path.write_text(KEY + "\n")  # as `kubectl create secret --from-file` of an `echo`ed file holds it
    return path


def test_every_flag(key_file: pathlib.Path) -> None:
    settings = parse_router_command_line([
        *BASE, "--port", "9000", "--provider-url", "https://api.example.com/v1/", "--provider-model", "gpt-4o-mini",
        "--api-key-file", str(key_file), "--max-in-flight-per-replica", "8", "--max-body-bytes", "1024",
        "--kubeconfig", "kubeconf",
    ])
    assert (settings.namespace, settings.pool, settings.served_model, settings.port) == ("team-a", "chat", "qwen", 9000)
    assert settings.provider_url == "https://api.example.com/v1" and settings.provider_model == "gpt-4o-mini"
    assert settings.api_key == KEY  # the trailing newline is gone
    assert (settings.max_in_flight_per_replica, settings.max_body_bytes, settings.kubeconfig) == (8, 1024, "kubeconf")
    assert KEY not in repr(settings) and KEY not in str(settings)


def test_defaults() -> None:
    settings = parse_router_command_line(BASE)
    assert (settings.port, settings.max_in_flight_per_replica, settings.max_body_bytes) == (8080, 32, 4194304)
    assert settings.provider_url is None and settings.api_key is None and not settings.has_provider


@pytest.mark.parametrize(("extra", "message"), [
    (["--namespace", " "], "--namespace must not be empty"),
    (["--provider-url", "https://api.example.com/v1"], "go together"),
    (["--provider-model", "gpt-4o-mini"], "go together"),
    (["--api-key-file", "/nonexistent"], "needs --provider-url"),
    (["--provider-url", "ftp://api.example.com/v1", "--provider-model", "m"], "not an http"),
    (["--provider-url", "api.example.com/v1", "--provider-model", "m"], "not an http"),
    (["--provider-url", "https://api.example.com/v1?key=abc", "--provider-model", "m"], "must not carry"),
    (["--provider-url", "https://user:pw@api.example.com/v1", "--provider-model", "m"], "must not carry"),
])
def test_flags_that_do_not_fit_together(extra: list[str], message: str) -> None:
    with pytest.raises(InvalidRouterSettings, match=message):
        parse_router_command_line([*BASE, *extra])


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read"), ("\n", "is empty"), ("sk-one two\n", "whitespace"), ("sk-a\nsk-b\n", "whitespace"),
])
def test_bad_key_files_are_named_never_quoted(tmp_path: pathlib.Path, content: str | None, message: str) -> None:
    path = tmp_path / "key"
    if content is not None:
        path.write_text(content)
    provider = ["--provider-url", "https://api.example.com/v1", "--provider-model", "m", "--api-key-file", str(path)]
    with pytest.raises(InvalidRouterSettings, match=message) as raised:
        parse_router_command_line([*BASE, *provider])
    assert "sk-" not in str(raised.value)


@pytest.mark.parametrize("flags", [
    ["--port", "0"], ["--port", "70000"], ["--port", "http"], ["--max-body-bytes", "-1"],
    ["--max-in-flight-per-replica", "0"], ["--max-in-flight-per-replica", "1.5"],
])
def test_malformed_numbers_are_usage_errors(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["router", *BASE, *flags])
    assert exited.value.code == 2
    assert flags[0] in capsys.readouterr().err


def test_missing_required_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["router", "--namespace", "team-a", "--pool", "chat"])
    assert exited.value.code == 2 and "--served-model" in capsys.readouterr().err


def test_the_cli_says_what_is_wrong_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["router", *BASE, "--provider-model", "m"]) == 2
    assert "poolpilot router: --provider-url and --provider-model go together" in capsys.readouterr().err
