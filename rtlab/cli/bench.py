"""``rtlab bench CORPUS``: the command line of :mod:`rtlab.eval.bench`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
from click.core import ParameterSource

from ..config import StreamConfig
from ..core.clock import CLOCK_MODES
from ..errors import RtlabError


def _parse_configs(texts: Sequence[str], grid: str | None) -> list[StreamConfig]:
    from ..eval.bench import load_grid

    configs: list[StreamConfig] = []
    for text in texts:
        try:
            configs.append(StreamConfig.parse(text))
        except (ValueError, RtlabError) as exc:
            raise click.UsageError(f"--config {text!r}: {exc}") from None
    if grid is not None:
        try:
            configs += load_grid(grid)
        except (ValueError, RtlabError, OSError) as exc:
            raise click.UsageError(f"--grid {grid}: {exc}") from None
    if not configs:
        configs = [StreamConfig()]
    labels = [c.label for c in configs]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise click.UsageError(f"configuration {duplicates[0]!r} is given twice; drop one or set name=...")
    return configs


@click.command()
@click.argument("corpus", type=click.Path(exists=True))
@click.option("--config", "config_texts", multiple=True, metavar="KEY=VALUE,...",
              help="A configuration, e.g. backend=faster-whisper,model=tiny.en,policy=local-agreement,"
                   "min_chunk=1 (repeat for more). Other keys go to the backend or the policy.")
@click.option("--grid", type=click.Path(exists=True, dir_okay=False),
              help="TOML file of configurations: defaults, a [grid] of lists, [[config]] tables.")
@click.option("--clock", type=click.Choice(CLOCK_MODES), default="simulated", show_default=True,
              help="simulated: as fast as compute allows, measured compute counted; modeled: compute from a "
                   "cost model (the same words every run); unaware: compute takes no time; wall: real time.")
@click.option("--cost-model", type=click.Path(dir_okay=False), default=None,
              help="The modeled clock's cost model (rtlab calibrate --out FILE; default: rtlab's reference CPU).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="results", show_default=True,
              help="Folder for results.jsonl and the PNG plots.")
@click.option("--normalizer", type=click.Choice(["auto", "whisper-english", "whisper-basic", "none"]),
              default="auto", show_default=True,
              help="Text normalizer for WER; auto: Whisper's English one for English, basic otherwise.")
@click.option("--long-form", is_flag=True, help="Join the corpus into one long stream (references joined).")
@click.option("--gap", type=click.FloatRange(min=0), default=0.5, show_default=True,
              help="Seconds of silence between clips with --long-form.")
@click.option("--language", default=None, help="Language of corpus files that do not name one.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when on a terminal).")
@click.option("--one-at-a-time", is_flag=True,
              help="Replay one configuration after another: slower, each pass's compute as it is alone.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Modeled and unaware clocks: passes of backends that batch share model calls, up to this "
                   "many per call (the same results, less CPU).")
def bench(corpus, config_texts, grid, clock, cost_model, out_dir, normalizer, long_form, gap, language, progress,
          one_at_a_time, batch) -> None:  # fmt: skip
    """Replay the corpus at CORPUS through every configuration at once and score them.

    CORPUS is a folder of audio files with same-name .txt references, a LibriSpeech folder,
    or a .jsonl manifest. Writes OUT/results.jsonl and PNG plots; prints one row per
    configuration: pooled WER, median and p95 commit latency over all words, median first-text
    latency over the streams, RTF (total compute over total audio).
    """
    from ..core.costs import cost_model_for_clock
    from ..eval.bench import BenchInterrupted, run_bench
    from ..backends import folders_removed_on_failure
    from .paths import check_writable

    if not long_form and click.get_current_context().get_parameter_source("gap") is not ParameterSource.DEFAULT:
        raise click.UsageError(
            "--gap is the silence between clips that --long-form joins: add --long-form, or leave --gap out"
        )
    configs = _parse_configs(config_texts, grid)
    check_writable(out_dir, "--out", folder=True)
    interrupted = None
    # --long-form joins the clips into OUT before the replay: a run that fails leaves no
    # --out folder it made (empty), as if it had not started.
    with folders_removed_on_failure(out_dir):
        try:
            cost_model = cost_model_for_clock(clock, cost_model)
            run = run_bench(
                corpus=corpus, configurations=configs, clock=clock, normalizer=normalizer,
                language=language, long_form=long_form, gap_seconds=gap, work_dir=out_dir,
                progress=progress, one_at_a_time=one_at_a_time, cost_model=cost_model, batch=batch,
                keep_partial=True, place_long_form=False,
            )  # fmt: skip
        except BenchInterrupted as exc:  # Ctrl-C: the clips already done are written, not lost
            run, interrupted = exc.run, exc
        except KeyboardInterrupt:
            click.echo("interrupted before any clip was done: nothing to write", err=True)
            raise SystemExit(130) from None
        except (ValueError, FileNotFoundError) as exc:
            raise click.UsageError(str(exc)) from None
        except RtlabError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:  # e.g. the long-form join into --out on a full disk
            raise click.ClickException(f"{exc.filename or out_dir}: {exc.strerror or exc}; "
                                       "nothing of this run was kept") from None
        try:
            # results.jsonl and long-form.wav together, or neither (an earlier run's stay).
            written = run.write(out_dir, plots=False)
        except OSError as exc:
            raise click.ClickException(f"cannot write {Path(out_dir) / 'results.jsonl'} ({exc.strerror or exc}): "
                                       "nothing of this run was kept; free some space or give another --out") from None
    plots_failed = None
    try:
        written += run.write_plots(out_dir)
    except ImportError as exc:
        click.echo(f"plots skipped: {exc}", err=True)
    except OSError as exc:
        plots_failed = exc
    click.echo(run.table())
    click.echo("wrote " + ", ".join(str(p) for p in written))
    if plots_failed is not None:
        click.echo(f"Error: cannot write the plots into {out_dir} ({plots_failed.strerror or plots_failed}): "
                   "results.jsonl is written, the plots are not (none are left there)", err=True)  # fmt: skip
    if interrupted is not None:
        click.echo(f"{interrupted}: the results above are of those clips alone (results.jsonl: \"interrupted\": true)",
                   err=True)  # fmt: skip
        raise SystemExit(130)  # what a shell reports for Ctrl-C
    if plots_failed is not None:
        raise SystemExit(1)
