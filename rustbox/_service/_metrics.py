"""Counters and histograms, written in the Prometheus text exposition format (0.0.4).

The format is a few lines of text; a client library would bring a registry,
global state and a dependency for what fits in this file.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

#: Latency buckets (seconds): a hello-world is ~0.03 s, a judged Java or Rust ~1-10 s.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Histogram:
    def __init__(self, buckets: Sequence[float] = BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        value = max(0.0, value)
        self.sum += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break

    def lines(self, name: str) -> Iterable[str]:
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            cumulative += count
            yield f'{name}_bucket{{le="{_number(bound)}"}} {cumulative}'
        yield f'{name}_bucket{{le="+Inf"}} {self.count}'
        yield f"{name}_sum {_number(self.sum)}"
        yield f"{name}_count {self.count}"


class Metrics:
    """What /metrics reports; counts since this process started."""

    def __init__(self) -> None:
        self.runs: Counter[tuple[str, str]] = Counter()  # (status, verdict)
        self.http: Counter[str] = Counter()  # status code
        self.webhooks: Counter[str] = Counter()  # outcome
        self.purged = 0  #: submissions the retention purge deleted
        self.latency = Histogram()  #: created -> completed (what a client waits)
        self.run_time = Histogram()  #: started -> completed (the judge itself)

    def finished(self, status: str, verdict: str | None, latency: float, run: float | None) -> None:
        self.runs[(status, verdict or "none")] += 1
        self.latency.observe(latency)
        if run is not None:
            self.run_time.observe(run)

    def render(self, gauges: Sequence[tuple[str, str, float]]) -> str:
        """The exposition text; ``gauges`` are (name, help, value) read at scrape time."""
        out: list[str] = [
            "# HELP rustbox_runs_total Submissions that ended, by status and verdict.",
            "# TYPE rustbox_runs_total counter",
        ]
        for (status, verdict), n in sorted(self.runs.items()):
            out.append(
                f"rustbox_runs_total{_labels([('status', status), ('verdict', verdict)])} {n}"
            )
        for name, help_text, value in gauges:
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            out.append(f"{name} {_number(value)}")
        out += [
            "# HELP rustbox_submission_latency_seconds From submission to result "
            "(queue wait included).",
            "# TYPE rustbox_submission_latency_seconds histogram",
            *self.latency.lines("rustbox_submission_latency_seconds"),
            "# HELP rustbox_run_duration_seconds From a worker taking a submission to its result.",
            "# TYPE rustbox_run_duration_seconds histogram",
            *self.run_time.lines("rustbox_run_duration_seconds"),
            "# HELP rustbox_http_responses_total HTTP responses, by status code.",
            "# TYPE rustbox_http_responses_total counter",
        ]
        for code, n in sorted(self.http.items()):
            out.append(f"rustbox_http_responses_total{_labels([('code', code)])} {n}")
        out += [
            "# HELP rustbox_webhook_deliveries_total Webhook attempts, by outcome.",
            "# TYPE rustbox_webhook_deliveries_total counter",
        ]
        for outcome, n in sorted(self.webhooks.items()):
            out.append(f"rustbox_webhook_deliveries_total{_labels([('outcome', outcome)])} {n}")
        out += [
            "# HELP rustbox_submissions_purged_total Ended submissions deleted "
            "after the result TTL.",
            "# TYPE rustbox_submissions_purged_total counter",
            f"rustbox_submissions_purged_total {self.purged}",
        ]
        return "\n".join(out) + "\n"
