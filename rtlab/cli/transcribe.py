"""``rtlab transcribe FILE...``: stream files through one configuration, show the transcript."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Iterator

import click
from click.core import ParameterSource

from ..config import DEFAULT_BACKEND, DEFAULT_DECODER, DEFAULT_POLICY
from ..core.clock import CLOCK_MODES
from .display import error_message

if TYPE_CHECKING:
    import asyncio  # imported where it runs: `rtlab --help` does not load asyncio


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--backend", default=DEFAULT_BACKEND, show_default=True, help="Backend plugin (see 'rtlab plugins').")
@click.option("--model", default=None, help="Model for the backend (faster-whisper: tiny.en, base, a folder…).")
@click.option("--policy", default=DEFAULT_POLICY, show_default=True, help="Streaming policy.")
@click.option("--decoder", default=DEFAULT_DECODER, show_default=True, help="Decoder plugin the file's bytes go through.")
@click.option("--language", default=None, help="Language code or name (de, German); default: en for .en models, else detected.")
@click.option("--clock", type=click.Choice(CLOCK_MODES), default="wall", show_default=True,
              help="wall: paced in real time; simulated: as fast as compute allows, measured compute counted; "
                   "modeled: compute from a cost model (the same words every run); unaware: compute takes no time.")
@click.option("--cost-model", type=click.Path(dir_okay=False), default=None,
              help="The modeled clock's cost model (rtlab calibrate --out FILE; default: rtlab's reference CPU).")
@click.option("--format", "output_format", type=click.Choice(["text", "jsonl", "srt", "vtt"]), default="text",
              show_default=True, help="srt, vtt: subtitles, each cue printed once it is finished.")
@click.option("--cue-chars", type=int, default=84, show_default=True, help="srt, vtt: a cue's most characters.")
@click.option("--cue-seconds", type=float, default=7.0, show_default=True, help="srt, vtt: a cue's longest duration.")
@click.option("--cue-gap", type=float, default=1.0, show_default=True,
              help="srt, vtt: a pause at least this long (seconds) ends a cue.")
@click.option("--min-chunk", type=float, default=None, help="Seconds of new audio between passes (policy option).")
@click.option("--backend-option", "-b", multiple=True, metavar="KEY=VALUE", help="Backend option; repeatable.")
@click.option("--policy-option", "-p", multiple=True, metavar="KEY=VALUE", help="Policy option; repeatable.")
@click.option("--decoder-option", "-d", multiple=True, metavar="KEY=VALUE", help="Decoder option; repeatable.")
def transcribe(files, backend, model, policy, decoder, language, clock, cost_model, output_format, cue_chars,
               cue_seconds, cue_gap, min_chunk, backend_option, policy_option, decoder_option) -> None:  # fmt: skip
    """Stream FILES through a backend and show the transcript as it is committed.

    A FILE of - reads standard input: audio piped in, from a microphone (e.g. ffmpeg -f
    pulse -i default -f wav - | rtlab transcribe -) or a file, sent as it arrives and held
    to real time on the wall clock. On the wall clock and from standard input, Ctrl-C ends
    the input where it is: the tail is committed and the summary printed (exit status 130
    when a file or files were left unstreamed); a second Ctrl-C aborts.

    Text mode prints committed text live, with the partial text dimmed and a progress bar on
    a terminal. jsonl mode prints one event per line: partial, commit, and a final summary.
    Option values are typed as in every rtlab KEY=VALUE: true/false, null, JSON numbers and
    lists, else text.
    """
    import asyncio
    import sys
    from pathlib import Path

    from ..config import StreamConfig, parse_pairs
    from ..core.costs import cost_model_for_clock
    from ..errors import RtlabError

    if output_format in ("srt", "vtt") and len(files) > 1:
        raise click.ClickException(f"--format {output_format} writes one stream's subtitles; give one FILE")
    cue_limits = _cue_limits(output_format, cue_chars=cue_chars, cue_seconds=cue_seconds, cue_gap=cue_gap)
    if files.count("-") > 1:
        raise click.ClickException("-: standard input can be read once; give - one time")
    if "-" in files and sys.stdin.isatty():
        raise click.ClickException(
            "-: standard input is a terminal; pipe audio into it, e.g. ffmpeg -f pulse -i default -f wav - | "
            "rtlab transcribe -"
        )
    for file in files:
        if file != "-" and not Path(file).is_file():
            raise click.ClickException(f"{file}: no such file; give the path of an audio file")
    try:
        policy_options = parse_pairs(policy_option, source="--policy-option")
        if min_chunk is not None:
            policy_options["min_chunk"] = min_chunk
        config = StreamConfig(
            backend=backend,
            model=model,
            backend_options=parse_pairs(backend_option, source="--backend-option"),
            policy=policy,
            policy_options=policy_options,
            decoder=decoder,
            decoder_options=parse_pairs(decoder_option, source="--decoder-option"),
            language=language,
        ).validate()  # names, options and values, before any work starts
        cost_model = cost_model_for_clock(clock, cost_model)  # loaded once, for every file
        failed, interrupted = asyncio.run(_transcribe_files(files, config, clock, cost_model, output_format, cue_limits))
    except RtlabError as error:
        raise click.ClickException(error_message(error)) from None
    except KeyboardInterrupt:
        raise click.Abort() from None
    if interrupted:
        click.echo(f"Error: {failed}", err=True)
        sys.exit(130)
    if failed:
        raise click.ClickException(failed)


def _cue_limits(output_format: str, **given: float) -> dict[str, float]:
    """The subtitle cues' limits (``Cues`` options) from the ``--cue-*`` options, checked
    before any work: above 0, and given only with subtitles."""
    ctx = click.get_current_context()
    names = {"cue_chars": "max_chars", "cue_seconds": "max_seconds", "cue_gap": "max_gap"}
    for option, value in given.items():
        flag = "--" + option.replace("_", "-")
        if output_format not in ("srt", "vtt") and ctx.get_parameter_source(option) is not ParameterSource.DEFAULT:
            raise click.ClickException(f"{flag} shapes subtitle cues: add --format srt or --format vtt, or leave it out")
        if value <= 0:
            raise click.ClickException(f"{flag} must be above 0, not {value:g}")
    return {names[option]: value for option, value in given.items()}


async def _transcribe_files(files, config, clock, cost_model, output_format, cue_limits) -> tuple[str | None, bool]:
    """Stream each file; returns what failed, if anything, and whether Ctrl-C ended the
    input before all of it was streamed (the message then says what was left). Of several
    files, each failure is printed as it happens and the message counts them."""
    import functools
    import os
    import sys

    from ..core.feeding import stream_file, stream_reader
    from .display import LiveText

    failures: list[tuple[str, str]] = []  # (file, why) for each file that could not be transcribed
    for index, file in enumerate(files):
        display = LiveText(label=file) if output_format == "text" else None
        captions = _Captions(output_format, cue_limits) if output_format in ("srt", "vtt") else None
        # jsonl: a stream's error event waits for its end, where Ctrl-C before any audio was
        # sent tells an interruption (nothing printed, as in the other formats) from a failure.
        held: list[dict] = []

        def show(event, file=file, display=display, captions=captions, held=held):
            if display is not None:
                display.event(event)
            elif captions is not None:
                captions.event(event)
            elif event["type"] == "error":
                held.append(event)
            else:
                _print_jsonl(event, file if len(files) > 1 else None)

        sent = [0.0]  # of the file's bytes: Ctrl-C after the last one cut nothing short
        with _ctrl_c_ends_input(clock == "wall" or file == "-") as stop:
            if file == "-":
                # The descriptor, not sys.stdin.buffer: a reader thread still waiting in the
                # buffered object's read at exit would hold its lock, and Python aborts.
                read = functools.partial(os.read, sys.stdin.fileno())
                events = await stream_reader(read, config, clock=clock, cost_model=cost_model, stop=stop,
                                             on_event=show)  # fmt: skip
            else:
                def progress(fraction: float, display=display, sent=sent) -> None:
                    sent[0] = fraction
                    if display is not None:
                        display.set_progress(fraction)

                events = await stream_file(file, config, clock=clock, cost_model=cost_model, on_event=show,
                                           on_progress=progress, stop=stop)  # fmt: skip
        if display is not None:
            display.close()
        last = events[-1] if events else {"type": "error", "message": "no events"}
        cut_short = file != "-" and sent[0] < 1.0
        # Ctrl-C before any of a file was sent (while its duration is measured, by an FFmpeg
        # the terminal's Ctrl-C reaches too) ends a stream with no audio: not a bad file.
        unsent = stop.is_set() and cut_short and sent[0] == 0.0
        if not unsent:
            for event in held:
                _print_jsonl(event, file if len(files) > 1 else None)
        if last["type"] == "error" and not unsent:
            failures.append((file, last["message"]))
            if len(files) > 1:
                click.echo(f"Error: {_about(file, last['message'])}", err=True)  # now: the files after it go on
        elif last["type"] != "error" and display is not None and not last["text"]:
            click.echo(f"{file}: no speech was recognised", err=True)
        left = len(files) - index - 1
        if stop.is_set() and (cut_short or left):
            # A file cut short, or files left: not all of the input was transcribed.
            why = f"interrupted: {file} was not streamed to its end" if cut_short else "interrupted"
            if left:
                why += f"; {left} more file{'s' if left > 1 else ''} not streamed"
            if failures:
                why = _failed(failures, 1) if len(files) == 1 else f"{why}; {_failed(failures, len(files))}"
            return why, True
    return (_failed(failures, len(files)) if failures else None), False


def _print_jsonl(event: dict, file: str | None) -> None:
    """Print ``event`` as one line of JSON, with its ``file`` (of several files) named."""
    import sys

    click.echo(json.dumps(event if file is None else {**event, "file": file}))
    sys.stdout.flush()  # one event a line, as it happens, also into a pipe


def _about(file: str, why: str) -> str:
    """``why`` about ``file``, named once: a message that names the file already (the
    decoder's "FFmpeg could not decode FILE ...") is not prefixed with it again."""
    return why if file != "-" and file in why else f"{file}: {why}"


def _failed(failures: list[tuple[str, str]], count: int) -> str:
    """The message for the files that failed, of ``count`` files: of one, its failure; of
    several (each failure was printed as it came), how many and which."""
    if count == 1:
        return _about(*failures[0])
    return f"{len(failures)} of {count} files could not be transcribed: {', '.join(file for file, _ in failures)}"



@contextlib.contextmanager
def _ctrl_c_ends_input(handle: bool) -> Iterator[asyncio.Event]:
    """An event the first Ctrl-C sets (when ``handle``): the stream's input ends there, the
    tail is committed and the summary printed. A second Ctrl-C aborts, as usual."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def end_input() -> None:
        click.echo("stopping: committing the tail (Ctrl-C again to abort)", err=True)
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)  # the next Ctrl-C is KeyboardInterrupt again

    handling = False
    if handle:
        try:
            loop.add_signal_handler(signal.SIGINT, end_input)
            handling = True
        except (NotImplementedError, RuntimeError, ValueError):  # no signal handlers here (Windows, a thread)
            pass
    try:
        yield stop
    finally:
        if handling and not stop.is_set():
            loop.remove_signal_handler(signal.SIGINT)


class _Captions:
    """Prints a stream's subtitles (srt or vtt), each cue once it is finished. The
    header comes with the first cue, or with the summary of a stream without words: a
    stream that fails before its first cue prints nothing (not half a subtitle file)."""

    def __init__(self, format: str, limits: dict[str, float]) -> None:
        from ..subtitles import Cues, header

        self.format = format
        self.cues = Cues(**limits)
        self.printed = 0
        self._header = header(format)

    def event(self, event: dict) -> None:
        from ..subtitles import cue_text

        cues = []
        if event["type"] == "commit":
            cues = self.cues.add(event["words"])
        elif event["type"] in ("summary", "error"):
            cues = self.cues.flush()
        if (cues or event["type"] == "summary") and self._header:
            self._write(self._header)
            self._header = ""
        for cue in cues:
            self.printed += 1
            self._write(cue_text(cue, self.printed, self.format))

    @staticmethod
    def _write(text: str) -> None:
        import sys

        if text:
            click.echo(text, nl=False)
            sys.stdout.flush()  # a live caption is printed when it is finished, also into a pipe
