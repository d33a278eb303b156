"""``unbottle optimize``: baseline → candidates under an accuracy guard → verified winner, saved."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from unbottle.api import tuning
from unbottle.cli.common import GoalOpt, JsonOpt, QuietOpt, ThreadsOpt, err, handle_errors
from unbottle.cli.show import show_run
from unbottle.models import resolve
from unbottle.optimizer.config import OptimizeConfig, parse_duration, parse_workload
from unbottle.reporting.progress import Progress
from unbottle.store import Store

EXAMPLES = """
Examples:

  unbottle optimize                                   # smollm2-135m, decode tokens/s, perplexity ≤ +1%

  unbottle optimize smollm2-135m --time-budget 30m --task sports_understanding -o smol-fast

  unbottle optimize smollm2-135m --workload prompt=2048,new=128 --objective latency

  unbottle optimize ./my-model --objective size --goal perplexity:percent-max-degradation=3

  unbottle optimize tiny-llama --candidate wo-int8 --candidate "prune-structured + wo-int8" --max-trials 4
"""


_Model = Annotated[str, typer.Argument(help="Model name, HF folder, .gguf file or recipe folder.")]
_Objective = Annotated[str, typer.Option(help="decode latency ttft prefill throughput goodput size memory")]
_Workload = Annotated[
    str,
    typer.Option(
        help="The request to serve: prompt tokens in, new tokens out. Its prefill, decode and whole "
        "latency are each verified; a phase that gets slower is named in the verdict."
    ),
]
_Candidate = Annotated[
    list[str] | None,
    typer.Option(help="Passes to try, e.g. 'wo-int8 + compile'; repeat. [default: built-in]"),
]
_TimeBudget = Annotated[
    str,
    typer.Option(
        help="Wall time for the search, verification included: 900, 900s, 15m, 1h. "
        "Too little for one candidate and the verification is refused with the budget that fits."
    ),
]
_MaxTrials = Annotated[int | None, typer.Option(help="Candidate trials at most (1 or more).")]
_Task = Annotated[str | None, typer.Option(help="Multiple-choice task added to the guard.")]
_EvalText = Annotated[
    str | None,
    typer.Option(
        help="Your text for the perplexity guard (file or folder of .txt; selection on its first "
        "--eval-tokens tokens, verification on the next) [default: packaged Persuasion]."
    ),
]
_EvalTokens = Annotated[int, typer.Option(help="Perplexity tokens for finalists and verification.")]
_BatchSize = Annotated[int, typer.Option(help="Batch rows of the benchmark (throughput objective).")]
_Output = Annotated[Path | None, typer.Option("--output", "-o", help="Folder for the winner.")]
_Overwrite = Annotated[bool, typer.Option(help="Replace the output folder if it exists.")]
_MemoryLimit = Annotated[float | None, typer.Option(help="MiB per trial worker [default: 75% of RAM].")]
_SaveClosest = Annotated[
    bool,
    typer.Option(help="If no candidate keeps the guard, save the closest as OUTPUT.closest (exit code 3)."),
]
_Ray = Annotated[str | None, typer.Option(help="Run trials on a Ray cluster: auto, or the head's HOST:PORT.")]
_Report = Annotated[
    bool, typer.Option(help="Write report.html into the saved model's folder (beside it if none).")
]


@handle_errors
def optimize(
    model: _Model = "smollm2-135m",
    objective: _Objective = "auto",
    workload: _Workload = "prompt=256,new=64",
    goal: GoalOpt = None,
    candidate: _Candidate = None,
    time_budget: _TimeBudget = "13m",
    max_trials: _MaxTrials = None,
    task: _Task = None,
    eval_text: _EvalText = None,
    eval_tokens: _EvalTokens = 4096,
    batch_size: _BatchSize = 1,
    threads: ThreadsOpt = None,
    output: _Output = None,
    overwrite: _Overwrite = False,
    save_closest: _SaveClosest = False,
    memory_limit: _MemoryLimit = None,
    ray: _Ray = None,
    rate: Annotated[float, typer.Option(help="goodput: requests/s arriving (Poisson).")] = 1.0,
    report: _Report = True,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Find the fastest variant of MODEL that keeps accuracy, verify it by A/B test, and save it.

    The default objective is decode tokens/s; an encoder's is sequences/s, guarded by embedding cosine.

    Re-running the same command after an interruption continues the search where it stopped. Exit
    code 0: a verified winner is saved; 3: no candidate kept the accuracy guard (goal missed, nothing
    saved unless --save-closest); 2: bad input or a failure.
    """
    prompt_length, new_tokens = parse_workload(workload)
    config = OptimizeConfig(
        model=model,
        objective=objective,
        goals=tuple(goal or ()),
        candidates=tuple(candidate or ()),
        time_budget_s=parse_duration(time_budget, "--time-budget"),
        max_trials=max_trials,
        task=task,
        eval_text=eval_text,
        eval_tokens=eval_tokens,
        batch_size=batch_size,
        prompt_length=prompt_length,
        new_tokens=new_tokens,
        threads=threads,
        memory_limit_mib=memory_limit,
        ray=ray,
        rate=rate,
        model_task=resolve(model).probe_task(),
    )
    options = {"overwrite": overwrite, "save_closest": save_closest, "report": report}
    run_optimize(config, output or tuning.default_output(model), quiet, json_, options)


def log_line(quiet: bool, budget: Any = None) -> Any:
    """The search's log: ``[  12 s] line`` on stderr (above the bars on a terminal); each line also
    moves ``budget``, a clock task of ``reporting.progress`` over the time budget, if given."""
    start = time.monotonic()

    def log(line: str) -> None:
        if not quiet:
            err.print(f"[{time.monotonic() - start:6.0f} s] {line}", highlight=False, markup=False)
        if budget is not None:
            budget.tick()

    return log


GOAL_MISSED_EXIT = 3  # the search ran to its end but no candidate kept the accuracy guard


def run_optimize(config: Any, output: Path, quiet: bool, json_: bool, options: dict[str, Any]) -> None:
    """Run the search with progress and the log on stderr, print its result; exit 3 if the goal was
    missed. ``options``: the verb's ``overwrite``, ``save_closest`` and ``report``."""
    store = Store()
    with Progress(quiet) as progress:
        clock: list[Any] = []  # the time-budget bar, from when the search's clock starts
        log = log_line(quiet)

        def search_log(line: str) -> None:
            log(line)
            for budget in clock:
                budget.tick()

        def start_clock() -> None:
            clock.append(progress.task("optimize (time budget)", config.time_budget_s, "s", clock=True))

        doc = tuning.optimize(
            config=config, output=output, store=store, log=search_log, on_clock_start=start_clock, **options
        )
    show_run(store, doc["run_id"], json_, doc)
    path = tuning.report_path(output, doc["optimize"])
    if options["report"] and path.exists():
        err.print(f"report: {path}", highlight=False)
    if doc["optimize"]["outcome"] == "goal-missed":
        err.print(f"goal missed: no candidate kept the accuracy guard (exit code {GOAL_MISSED_EXIT})")
        raise typer.Exit(GOAL_MISSED_EXIT)
