"""``rtlab calibrate``: fit the modeled clock's cost model for one backend on this machine."""

from __future__ import annotations

import click

from ..config import DEFAULT_BACKEND, DEFAULT_POLICY
from .display import error_message

#: Below this R² a calibration is reported as poor.
POOR_FIT = 0.6


@click.command()
@click.option("--backend", default=DEFAULT_BACKEND, show_default=True, help="Backend plugin to calibrate.")
@click.option("--model", default=None, help="Model for the backend (default: the backend's).")
@click.option("--backend-option", "-b", multiple=True, metavar="KEY=VALUE", help="Backend option; repeatable.")
@click.option("--policy", default=DEFAULT_POLICY, show_default=True, help="Policy whose passes are timed.")
@click.option("--policy-option", "-p", multiple=True, metavar="KEY=VALUE", help="Policy option; repeatable.")
@click.option("--audio", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Speech to stream (repeatable; default: rtlab's bundled clip, three times).")
@click.option("--repeats", default=1, show_default=True, type=click.IntRange(1, 20),
              help="Stream the audio this many times at each min_chunk.")
@click.option("--out", default="rtlab-costs.json", show_default=True, type=click.Path(dir_okay=False),
              help="Cost-model file to add the calibration to (created if missing).")
@click.option("--note", default="", help="What the file's hardware is, in words (recorded in the file).")
def calibrate(backend, model, backend_option, policy, policy_option, audio, repeats, out, note) -> None:
    """Time a few dozen passes of one backend configuration and fit its cost model.

    The modeled clock (--clock modeled --cost-model FILE) then adds the compute this
    model predicts for each pass instead of the measured compute: the same audio and
    configuration give the same events on every run.
    """
    import asyncio

    from ..config import StreamConfig, parse_pairs
    from ..core.costs import describe_key
    from ..errors import RtlabError
    from ..eval.calibrate import calibrate_async, cost_model_to_extend, save_calibration
    from .paths import check_writable

    check_writable(out, "--out", folder=False)
    try:
        config = StreamConfig(
            backend=backend,
            model=model,
            backend_options=parse_pairs(backend_option, source="--backend-option"),
            policy=policy,
            policy_options=parse_pairs(policy_option, source="--policy-option"),
        ).validate()
        cost_model = cost_model_to_extend(out)  # a wrong --out is refused before minutes of timing
        calibration = asyncio.run(calibrate_async(config, audio=audio, repeats=repeats))
        save_calibration(calibration, out, note, model=cost_model)
    except RtlabError as error:
        raise click.ClickException(error_message(error)) from None
    except OSError as error:
        raise click.ClickException(f"cannot write {out} ({error.strerror or error}): give another --out") from None
    quality = calibration.fit
    weights = ", ".join(f"{name} {weight:.5f}" for name, weight in calibration.weights.items())
    click.echo(f"{describe_key(calibration.key)}: {quality['passes']} passes, R² {quality['r2']}, "
               f"median error {quality['median_abs_error_seconds'] * 1000:.1f} ms, "
               f"p95 {quality['p95_abs_error_seconds'] * 1000:.1f} ms "
               f"(mean pass {quality['mean_measured_seconds'] * 1000:.0f} ms)")
    click.echo(f"seconds per feature: {weights}")
    click.echo(f"wrote {out}")
    if quality["r2"] is not None and quality["r2"] < POOR_FIT:
        click.echo(
            f"warning: the fit is poor (R² {quality['r2']}): passes took times their features do not explain, "
            f"which is what other work on the machine does; calibrate again on a quiet machine", err=True,
        )
