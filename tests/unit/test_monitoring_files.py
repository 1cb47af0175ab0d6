"""The shipped monitoring files (infra/grafana, infra/prometheus): they parse, every alert rule
and panel is complete, they cover what operators need (API latency and errors, the outbox, the
relay, actor failures, AI spend), and every metric and label their PromQL names is one the
processes really export, as read from the code that defines them."""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import outbox_relay.metrics
import outbox_relay.probes
import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

import socialflow.ai.ledger
import socialflow.lib.http_metrics
import socialflow.workers.actors

INFRA = Path(__file__).resolve().parents[2] / "infra"
ALERTS = INFRA / "prometheus" / "alerts.yml"
SCRAPE_EXAMPLE = INFRA / "prometheus" / "prometheus.example.yml"
DASHBOARD = INFRA / "grafana" / "socialflow.json"

# Modules whose module-level metrics a process registers when it imports them.
METRIC_MODULES = (
    outbox_relay.metrics,
    socialflow.lib.http_metrics,
    socialflow.workers.actors,
    socialflow.ai.ledger,
)
# Labels Prometheus adds to every scraped series, and the series it writes per target itself.
TARGET_LABELS = frozenset({"job", "instance"})
SYNTHETIC = {"up": TARGET_LABELS}
# The sample names each kind of family is exposed under (`_created` only outside multiprocess).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}
SEVERITIES = frozenset({"info", "warning", "critical"})
DURATION = re.compile(r"(\d+(ms|[smhdwy]))+")

# PromQL: string literals (blanked before looking at the code around them), metric names,
# selectors' label matchers, and the label lists of by/without/on/ignoring/group_*.
STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`""")
METRIC = re.compile(r"(?<![\w:$])((?:socialflow|dramatiq)_\w+|up)\b(?!\s*\()")
SELECTOR = re.compile(r"(?<![\w:$])((?:socialflow|dramatiq)_\w+|up)\s*\{([^}]*)\}")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")

# Each required alert, and the metric its expression must read.
REQUIRED_ALERTS = {
    "OutboxOldestDueAgeHigh": "socialflow_relay_outbox_oldest_due_age_seconds",
    "OutboxOldestDueAgeCritical": "socialflow_relay_outbox_oldest_due_age_seconds",
    "OutboxBacklogGrowing": "socialflow_relay_outbox_backlog",
    "RelayDeadLettersGrowing": "socialflow_relay_events_dead_lettered_total",
    "WorkerDeadLettersGrowing": "dramatiq_message_rejects_total",
    "ApiErrorRateHigh": "socialflow_api_requests_total",
    "ApiLatencyHigh": "socialflow_api_request_duration_seconds_bucket",
    "ActorRetriesHigh": "dramatiq_message_retries_total",
    "ActorFailuresHigh": "dramatiq_message_errors_total",
    "RelayBatchFailures": "socialflow_relay_batch_failures_total",
    "ApiDown": "up",
    "RelayDown": "up",
    "WorkerDown": "up",
}
# Each topic the dashboard must show: a metric one of its queries reads, and a fragment that
# query must contain (the 5xx filter for errors, a quantile for latency).
REQUIRED_TOPICS = {
    "API latency": ("socialflow_api_request_duration_seconds_bucket", "histogram_quantile("),
    "API errors": ("socialflow_api_requests_total", '"5..'),
    "outbox backlog": ("socialflow_relay_outbox_backlog", ""),
    "outbox age": ("socialflow_relay_outbox_oldest_due_age_seconds", ""),
    "relay throughput": ("socialflow_relay_events_dispatched_total", "rate("),
    "actor failures": ("dramatiq_message_errors_total", "by (actor_name"),
    "AI spend": ("socialflow_ai_cost_usd_total", ""),
}

Metrics = dict[str, frozenset[str]]  # sample name -> its label names


# -- what the code exports --------------------------------------------------------------


def _samples(name: str, kind: str, labels: Iterable[str]) -> Metrics:
    base = name.removesuffix("_total") if kind == "counter" else name
    return {
        base + suffix: frozenset(labels) | ({"le"} if suffix == "_bucket" else set())
        for suffix in SUFFIXES.get(kind, ("",))
    }


def _is_collector(value: object) -> bool:
    """A metric or custom collector (not a registry: that would collect every other one, some
    of them reading PostgreSQL; nor a proxy answering any attribute, like a lazy logger)."""
    if isinstance(value, type | ModuleType | CollectorRegistry):
        return False
    return any("collect" in vars(cls) for cls in type(value).__mro__)


def _module_metrics(module: ModuleType) -> Metrics:
    found: Metrics = {}
    for value in vars(module).values():
        if not _is_collector(value):
            continue
        # A labelled metric with no child yet exports no sample: its label names say what it
        # will export.
        declared = value._labelnames if isinstance(value, MetricWrapperBase) else ()
        for family in value.collect():
            found.update(_samples(family.name, family.type, declared))
            for sample in family.samples:
                found[sample.name] = found.get(sample.name, frozenset()) | set(sample.labels)
    return found


def _backlog_metrics() -> Metrics:
    """The relay's backlog gauges: its BacklogCollector reads PostgreSQL, and is registered only
    when the relay starts, so its names are read from the source."""
    source = inspect.getsource(outbox_relay.probes)
    names = re.findall(r'GaugeMetricFamily\(\s*"(\w+)"', source)
    return {name: frozenset() for name in names}


def _dramatiq_metrics() -> Metrics:
    """Dramatiq's Prometheus middleware creates its metrics when a worker process boots; read
    them from its source (without importing it: the import creates its multiprocess folder)."""
    spec = importlib.util.find_spec("dramatiq.middleware.prometheus")
    assert spec is not None
    assert spec.origin is not None
    source = Path(spec.origin).read_text()
    declared = re.findall(
        r'prom\.(Counter|Gauge|Histogram)\(\s*"(dramatiq_\w+)",\s*"[^"]*",\s*\[([^\]]*)\]', source
    )
    found: Metrics = {}
    for kind, name, labels in declared:
        found.update(_samples(name, kind.lower(), re.findall(r'"(\w+)"', labels)))
    return found


@cache
def _sources() -> dict[str, Metrics]:
    sources = {module.__name__: _module_metrics(module) for module in METRIC_MODULES}
    sources["outbox_relay.probes (BacklogCollector)"] = _backlog_metrics()
    sources["dramatiq.middleware.prometheus"] = _dramatiq_metrics()
    return sources


@cache
def _known() -> Metrics:
    known: Metrics = dict(SYNTHETIC)
    for metrics in _sources().values():
        for name, labels in metrics.items():
            known[name] = known.get(name, frozenset()) | labels | TARGET_LABELS
    return known


# -- what the files say --------------------------------------------------------------------


def _alert_rules() -> list[dict[str, Any]]:
    document: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def _panels() -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in _dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _queries() -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every dashboard query."""
    for panel in _panels():
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def _expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every expression in the alert rules and the dashboard."""
    return [(f"alert {rule['alert']}", rule["expr"]) for rule in _alert_rules()] + [
        (f"panel {title!r}", expr) for title, expr in _queries()
    ]


def _code(expr: str) -> str:
    """The expression with its string literals emptied, so nothing in them reads as code."""
    return STRING.sub('""', expr)


def _metrics_in(expr: str) -> set[str]:
    return set(METRIC.findall(_code(expr)))


def _unbalanced(expr: str) -> str | None:
    closing = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    code = _code(expr)
    for char in code:
        if char in "([{":
            stack.append(char)
        elif char in closing and (not stack or stack.pop() != closing[char]):
            return f"unexpected {char!r}"
    if stack:
        return f"unclosed {stack[-1]!r}"
    if any(quote in code.replace('""', "") for quote in "\"'`"):
        return "unterminated string"
    return None


# -- the tests -----------------------------------------------------------------------------


def test_every_source_of_metric_names_yields_some() -> None:
    # A source the code no longer matches comes back empty; say so here rather than as a
    # list of unknown metrics in the tests below.
    assert [source for source, metrics in _sources().items() if not metrics] == []


def test_every_alert_rule_has_a_name_expression_duration_severity_and_summary() -> None:
    rules = _alert_rules()
    assert rules
    for rule in rules:
        assert isinstance(rule.get("alert"), str), rule
        assert isinstance(rule.get("expr"), str), rule["alert"]
        assert rule["expr"].strip(), rule["alert"]
        assert DURATION.fullmatch(str(rule.get("for"))), rule["alert"]
        assert rule.get("labels", {}).get("severity") in SEVERITIES, rule["alert"]
        assert rule.get("annotations", {}).get("summary"), rule["alert"]
        assert rule["annotations"].get("description"), rule["alert"]


def test_alert_names_are_unique() -> None:
    names = [rule["alert"] for rule in _alert_rules()]
    assert sorted(names) == sorted(set(names))


@pytest.mark.parametrize(("alert", "metric"), REQUIRED_ALERTS.items())
def test_each_required_alert_exists_and_reads_its_metric(alert: str, metric: str) -> None:
    rules = {rule["alert"]: rule for rule in _alert_rules()}
    assert alert in rules
    assert metric in _metrics_in(rules[alert]["expr"])


def test_the_jobs_the_alerts_name_are_the_example_scrape_configs_which_loads_the_rules() -> None:
    example: dict[str, Any] = yaml.safe_load(SCRAPE_EXAMPLE.read_text())
    jobs = {job["job_name"] for job in example["scrape_configs"]}
    named = {
        job for rule in _alert_rules() for job in re.findall(r'\bjob\s*=\s*"([^"]+)"', rule["expr"])
    }
    assert named == jobs == {"socialflow-api", "socialflow-relay", "socialflow-worker"}
    assert example["rule_files"] == [ALERTS.name]


def test_the_dashboard_has_its_uid_and_queries_a_datasource_chosen_on_import() -> None:
    dashboard = _dashboard()
    uids = {json.loads(path.read_text())["uid"] for path in DASHBOARD.parent.glob("*.json")}
    assert dashboard["uid"] == "socialflow-overview"
    assert len(uids) == len(list(DASHBOARD.parent.glob("*.json")))
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")
    for panel in _panels():
        if panel["type"] == "row":
            continue
        wanted = {"type": "prometheus", "uid": "${datasource}"}
        assert panel["datasource"] == wanted, panel["title"]
        assert all(target["datasource"] == wanted for target in panel["targets"]), panel["title"]


def test_dashboard_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in _panels()]
    assert sorted(ids) == sorted(set(ids))


def test_every_dashboard_panel_has_a_title_and_a_query() -> None:
    panels = [panel for panel in _panels() if panel["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel.get("title"), panel["id"]
        assert panel.get("targets"), panel["title"]
        assert all(target.get("expr", "").strip() for target in panel["targets"]), panel["title"]


@pytest.mark.parametrize(("topic", "wanted"), REQUIRED_TOPICS.items())
def test_the_dashboard_shows_each_required_topic(topic: str, wanted: tuple[str, str]) -> None:
    metric, fragment = wanted
    assert any(metric in _metrics_in(expr) and fragment in expr for _, expr in _queries()), topic


def test_every_metric_the_files_query_is_one_the_processes_export() -> None:
    unknown = {
        (where, name)
        for where, expr in _expressions()
        for name in _metrics_in(expr)
        if name not in _known()
    }
    assert not unknown


def test_every_label_the_files_query_is_one_their_metrics_have() -> None:
    known = _known()
    wrong: set[tuple[str, str]] = set()
    for where, expr in _expressions():
        code = _code(expr)
        for name, matchers in SELECTOR.findall(code):
            wrong |= {
                (where, f"{name}{{{label}}}")
                for label in MATCHER.findall(matchers)
                if label not in known.get(name, frozenset()) | {"__name__"}
            }
        # A grouping label must be on one of the expression's metrics (at least).
        labels = frozenset().union(*(known.get(name, frozenset()) for name in _metrics_in(expr)))
        for listed in GROUPING.findall(code):
            wrong |= {(where, label) for label in re.findall(r"\w+", listed) if label not in labels}
    assert not wrong


def test_every_expression_has_balanced_brackets_and_closed_strings() -> None:
    expressions = _expressions()
    assert expressions
    assert {where: _unbalanced(expr) for where, expr in expressions if _unbalanced(expr)} == {}
