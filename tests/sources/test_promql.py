"""PromQL escaping: hostile namespace and pool names cannot change a query.

The text checks pin what we generate; the checks against the real Prometheus prove that
the engine reads it as we mean it: each hostile value selects exactly its own series,
regex metacharacters match only themselves, and an injection attempt selects nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from controller.sources.metrics.prometheus import build_queries
from controller.sources.metrics.promql import (
    Matcher,
    aggregate,
    quote,
    regex_alternatives,
    regex_escape,
    selector,
    validate_label_name,
)
from devkube.fakevllm import FakeVLLMFleet
from devkube.prometheus import PrometheusNotInstalled, PrometheusServer, ScrapeTarget

__all__: list[str] = []

INJECTION = '"} or vector(1) #'
HOSTILE = [
    'quo"te',
    "back\\slash",
    "trailing\\",
    INJECTION,
    'x"} or vector(1) #',
    ".*",
    "a.b",
    "a|b",
    "new\nline",
    "tab\tand\x01control\x7f",
    "$(){}[]^+?",
    "\\d+",
    "ünïcødé ✓",
]
DECOYS = ["aXb", "a", "b", "x", "", "anything"]  # what a wrongly escaped regex would also match


# --- text ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "quoted"), [
    ("plain", '"plain"'),
    ('quo"te', '"quo\\"te"'),
    ("back\\slash", '"back\\\\slash"'),
    ("new\nline\r\t", '"new\\nline\\r\\t"'),
    ("bell\x07del\x7f", '"bell\\u0007del\\u007f"'),
    ("ünï ✓", '"ünï ✓"'),
    (INJECTION, '"\\"} or vector(1) #"'),
])
def test_quote_text(value: str, quoted: str) -> None:
    assert quote(value) == quoted


@pytest.mark.parametrize("value", [*HOSTILE, *DECOYS])
def test_quote_round_trips_and_stays_one_literal(value: str) -> None:
    quoted = quote(value)
    assert json.loads(quoted) == value  # the escapes used are a subset of both Go's and JSON's
    inner = quoted[1:-1]
    assert "\n" not in inner and "\r" not in inner
    # every '"' inside is escaped, i.e. preceded by an odd number of backslashes
    for i, char in enumerate(inner):
        if char == '"':
            backslashes = len(inner[:i]) - len(inner[:i].rstrip("\\"))
            assert backslashes % 2 == 1, (value, quoted)


def test_quote_refuses_lone_surrogates() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        quote("bad\ud800")


def test_regex_escape_text() -> None:
    assert regex_escape("a.b|c*") == "a\\.b\\|c\\*"
    assert regex_escape("\\d+") == "\\\\d\\+"
    assert regex_escape("$(){}[]^+?") == "\\$\\(\\)\\{\\}\\[\\]\\^\\+\\?"
    assert regex_escape("plain-name_1") == "plain-name_1"


def test_regex_alternatives_dedupes_sorts_and_refuses_empty() -> None:
    assert regex_alternatives(["b", "a.b", "b"]) == "a\\.b|b"
    with pytest.raises(ValueError):
        regex_alternatives([])


def test_matcher_and_selector_text() -> None:
    assert str(Matcher.one_of("namespace", ["team-b", "team.a"])) == 'namespace=~"team-b|team\\\\.a"'
    assert selector("vllm:num_requests_waiting", [Matcher("poolpilot_io_pool", "!=", "")]) == (
        'vllm:num_requests_waiting{poolpilot_io_pool!=""}')
    assert aggregate("sum", ["namespace", "pool"], "x") == "sum by (namespace, pool) (x)"


@pytest.mark.parametrize("name", ["", "1abc", "with-dash", "pool.io/x", 'a"', "a b", "a\n"])
def test_label_names_are_validated(name: str) -> None:
    with pytest.raises(ValueError):
        validate_label_name(name)
    with pytest.raises(ValueError):
        Matcher(name, "=", "x")


def test_operators_and_metric_names_are_validated() -> None:
    with pytest.raises(ValueError):
        Matcher("namespace", "==", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        selector('vllm:x{a="b"} or vector(1)')


def test_source_queries_carry_hostile_namespaces_only_escaped() -> None:
    queries = build_queries(pool_label="poolpilot_io_pool", namespace_label="namespace", namespaces=[INJECTION, ".*"])
    # values sorted, regex-escaped ('}' too), then quoted: each regex backslash doubled, the quote escaped
    expected_matcher = 'namespace=~"\\"\\\\} or vector\\\\(1\\\\) #|\\\\.\\\\*"'
    for query in queries.all().values():
        assert expected_matcher in query
        assert "\n" not in query


# --- the real engine ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def labelled() -> Iterator[PrometheusServer]:
    """One fake replica per hostile or decoy value, scraped with namespace = pool = that value."""
    values = [*HOSTILE, *[d for d in DECOYS if d]]
    with FakeVLLMFleet.in_thread(len(values)) as fleet:
        try:
            prom = PrometheusServer(scrape_interval_seconds=1)
            prom.start()
        except PrometheusNotInstalled as e:
            pytest.fail(str(e))
        try:
            targets = []
            for index, (replica, value) in enumerate(zip(fleet.replicas, values, strict=True)):
                replica.set(waiting=index + 1)
                targets.append(ScrapeTarget(replica.address, {"namespace": value, "poolpilot_io_pool": value}))
            prom.set_targets(targets)
            prom.wait_for_samples("vllm:num_requests_waiting", timeout=20, min_series=len(values))
            yield prom
        finally:
            prom.stop()


def _pools_selected(prom: PrometheusServer, *matchers: Matcher) -> set[str]:
    rows = prom.query(aggregate("sum", ["poolpilot_io_pool"], selector("vllm:num_requests_waiting", matchers)))
    return {row["metric"]["poolpilot_io_pool"] for row in rows}


@pytest.mark.parametrize("value", HOSTILE)
def test_each_hostile_value_selects_exactly_its_own_series(labelled: PrometheusServer, value: str) -> None:
    assert _pools_selected(labelled, Matcher("poolpilot_io_pool", "=", value)) == {value}
    assert _pools_selected(labelled, Matcher.one_of("namespace", [value])) == {value}
    series = labelled.series(selector("vllm:num_requests_waiting", [Matcher("namespace", "=", value)]))
    assert {s["namespace"] for s in series} == {value}


def test_regex_alternatives_match_only_the_listed_values(labelled: PrometheusServer) -> None:
    wanted = [".*", "a.b", "a|b", "\\d+", "$(){}[]^+?"]
    assert _pools_selected(labelled, Matcher.one_of("namespace", wanted)) == set(wanted)


def test_injection_selects_nothing_when_no_series_has_that_name(labelled: PrometheusServer) -> None:
    for attempt in ['nope"} or vector(1) #', 'nope"}) or vector(1) #', "nope\\", "nope\n"]:
        query = f"sum({selector('vllm:num_requests_waiting', [Matcher('namespace', '=', attempt)])})"
        assert labelled.query(query) == [], query
        assert _pools_selected(labelled, Matcher.one_of("namespace", [attempt])) == set()


def test_source_queries_with_hostile_namespaces_run_and_scope(labelled: PrometheusServer) -> None:
    queries = build_queries(pool_label="poolpilot_io_pool", namespace_label="namespace",
                            namespaces=[INJECTION, ".*", "new\nline"])
    rows = labelled.query(queries.queue)
    assert {(r["metric"]["namespace"], r["metric"]["poolpilot_io_pool"]) for r in rows} == {
        (INJECTION, INJECTION), (".*", ".*"), ("new\nline", "new\nline")}
    for query in queries.all().values():
        labelled.query(query)  # parses and runs (an error status raises)
