"""The search's baseline: measured in its own worker, checked for a busy host before it is believed,
and recorded (so a resumed search reuses it) only when the host was quiet; a disturbed measurement
is recorded under its own key and measured once more after a pause."""

from __future__ import annotations

import time
from typing import Any

from unbottle.core.errors import BenchError, ConfigError
from unbottle.core.naming import opt
from unbottle.optimizer import host

REMEASURE_PAUSE_S = 10.0  # between a disturbed baseline and its second measurement


def measure(search: Any) -> dict[str, Any]:
    """The baseline's result: read back when an earlier run kept it, else measured (twice when
    the first measurement looks disturbed; see ``unbottle.optimizer.host``); ``check_load`` passed."""
    result = _measure(search)
    check_load(search.cfg, result)
    return result


def _measure(search: Any) -> dict[str, Any]:
    if "baseline" in search.recorded:  # only a quiet baseline is ever recorded under this key
        search.base_trial = search.trial("baseline", "baseline", {}, here=True)
        return search.base_trial["result"]
    for attempt in (1, 2):
        data = _checked(search, search.trial("baseline", "baseline", {}, record=False, here=True))
        busy = search.disturbance(data["result"])
        if busy is None:
            search.record("baseline", data)
            break
        n = 1 + sum(k.startswith("baseline:disturbed") for k in {*search.recorded, *search.trials})
        search.record(
            f"baseline:disturbed-{n}", {**data, "key": f"baseline:disturbed-{n}", "host_busy": busy}
        )
        why = "; ".join(busy["reasons"])
        if attempt == 1:
            search.log(f"the baseline looks disturbed ({why}); measuring it again in {REMEASURE_PAUSE_S:g} s")
            time.sleep(REMEASURE_PAUSE_S)
        else:
            search.host_busy = {**busy, "advice": host.advice(busy, search.cfg.threads is not None)}
            search.log(
                f"WARNING: the host is busy ({why}), in both baseline measurements; going on, but "
                f"speeds measured now are unreliable and this baseline is not kept for later runs; "
                f"{search.host_busy['advice']}"
            )
    search.base_trial = data
    return data["result"]


def _checked(search: Any, data: dict[str, Any] | None) -> dict[str, Any]:
    if data is None or data["status"] == "timeout":
        raise ConfigError(
            f"the time budget ({search.cfg.time_budget_s:g} s) ran out while measuring the baseline; "
            f"give a larger {opt('time_budget_s', flag='--time-budget')} (the default model needs about "
            "2 minutes for it)"
        )
    if data["status"] != "ok":
        raise BenchError(f"measuring the baseline failed: {data['reason']}")
    return data


def check_load(cfg: Any, base: dict[str, Any]) -> None:
    """A goodput objective needs a baseline that serves some requests within the objectives."""
    if cfg.objective == "goodput" and not base["rates"].get("serve.goodput"):
        limits = f"time to first token ≤ {cfg.slo_ttft_s:g} s, per output token ≤ {cfg.slo_tpot_s:g} s"
        raise ConfigError(
            f"the baseline met the latency objectives ({limits}) for no request at {cfg.rate:g} "
            f"requests/s (goodput 0), so no gain over it can be measured; give a lower "
            f"{opt('rate')} or looser objectives (slo_ttft_s, slo_tpot_s), or --objective latency"
        )
