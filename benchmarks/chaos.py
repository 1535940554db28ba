"""Honest real-time sessions with and without a hostile mix of clients, against ``rtlab serve``.

Two phases against one server (a subprocess on 127.0.0.1, the ``test`` backend by
default, every limit at its default):

1. **alone**: ``--honest`` clients stream ``--seconds`` of tone-coded webm/opus each in
   real time (250 ms chunks, starting within ``--ramp`` seconds);
2. **hostile**: the same honest clients again while, in a separate process (so that its
   own work does not delay the honest clients' event loop, only the shared CPUs), a
   hostile mix runs: ``--churn`` connect/disconnect cycles dropped at random stages
   (half without a close frame), protocol fuzzing (random, malformed and deeply nested
   frames, garbage audio), silent slot holders (connect, answer nothing but pings, come
   back when closed), start/stop floods, model-name spraying, and slowloris HTTP requests
   (a header byte a second).

Reported: the honest sessions' errors and commit latency (p50/p95, a word's arrival at
the client minus its end in the audio) in each phase; what happened to each hostile
client; the server's threads, file descriptors and memory (PSS) before, between and after
the phases, and its FFmpeg processes once everything settled. Targets: honest sessions
unaffected (0 errors, p95 within 20% of the alone phase), threads and memory back to
their level after the alone phase, no FFmpeg left.

    python benchmarks/chaos.py --honest 20 --seconds 30 --churn 1000 \\
        --page docs/benchmarks/2026-11-30-chaos.md

Writes ``results/chaos-<backend>.json`` and, with ``--page``, the dated Markdown page.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import tornado
from tornado.websocket import WebSocketClosedError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from concurrency import ServerProcess, ffmpeg_version, pss_mb, refuse_below, tone_audio  # noqa: E402

from rtlab.backends import written_whole  # noqa: E402
from rtlab.decoders import find_ffmpeg  # noqa: E402
from rtlab.eval.metrics import LatencyStats, environment_info  # noqa: E402
from rtlab.server.client import TranscriptionClient, chunks, stream_file  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CHUNK_SECONDS = 0.25
TARGETS = {"honest_errors": 0, "p95_ratio": 1.2, "ffmpeg_after": 0}
SETTLE_TIMEOUT = 60.0  # seconds a phase's sessions and FFmpeg processes get to go away
KNOWN_TYPES = {"transcription_starting", "model_loading_started", "transcription_started", "transcript",
               "transcription_stopped", "transcription_failed", "error", "pong"}  # fmt: skip


# -- the server's resources ----------------------------------------------------------------


def resources(server: ServerProcess) -> dict:
    """Threads, file descriptors, PSS (MB) of the server and its FFmpeg children right now.

    A PSS that could not be read (no /proc/PID/smaps_rollup) is None, not 0 MB; the FFmpeg
    children's is the sum of those read (one that exited meanwhile holds nothing), None
    when there were some and none could be read.
    """
    process = server.process
    ffmpeg = server.ffmpeg()
    server_pss = pss_mb(process.pid)
    ffmpeg_pss = [mb for mb in (pss_mb(p.pid) for p in ffmpeg) if mb is not None]
    return {
        "threads": process.num_threads(),
        "fds": process.num_fds(),
        "server_pss_mb": None if server_pss is None else round(server_pss, 1),
        "ffmpeg": len(ffmpeg),
        "ffmpeg_pss_mb": round(sum(ffmpeg_pss), 1) if ffmpeg_pss or not ffmpeg else None,
    }


def _mb(value: float | None) -> str:
    """A PSS for the page: "unknown" where it could not be read."""
    return "unknown" if value is None else str(value)


async def settle(server: ServerProcess, timeout: float = SETTLE_TIMEOUT) -> float | None:
    """Wait until the server has no session and no FFmpeg (then 2 s more); the seconds taken,
    or None when some were still there after ``timeout`` seconds."""
    started = time.monotonic()
    quiet = False
    while not quiet and time.monotonic() - started < timeout:
        health = await asyncio.get_running_loop().run_in_executor(None, server.health)
        quiet = health["sessions"] == 0 and health["transcribing"] == 0 and not server.ffmpeg()
        if not quiet:
            await asyncio.sleep(0.25)
    await asyncio.sleep(2.0)
    return round(time.monotonic() - started, 1) if quiet else None


def settled(phase: dict) -> str:
    """How the page names the moment after a phase: settled, or not within the timeout."""
    return "settled" if phase["settle_seconds"] is not None else f"NOT settled within {SETTLE_TIMEOUT:g} s"


async def sample_peak(server: ServerProcess, peak: dict, stop: asyncio.Event) -> None:
    while not stop.is_set():
        now = await asyncio.get_running_loop().run_in_executor(None, resources, server)
        for key, value in now.items():
            known = [v for v in (peak.get(key), value) if v is not None]  # None: not read
            peak[key] = max(known) if known else None
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass


# -- honest sessions -----------------------------------------------------------------------


async def honest_sessions(server: ServerProcess, audio: dict, args, rng: random.Random) -> dict:
    async def one() -> object:
        await asyncio.sleep(rng.uniform(0, args.ramp))
        try:
            return await stream_file(server.ws_url, audio["payload"], speed=1.0, chunk_seconds=CHUNK_SECONDS,
                                     duration=audio["seconds"], format="webm", timeout=args.seconds + 60)  # fmt: skip
        except Exception as error:  # noqa: BLE001 - counted, not raised
            return error

    started = time.monotonic()
    results = await asyncio.gather(*(one() for _ in range(args.honest)))
    errors: collections.Counter = collections.Counter()
    commit, start, wrong = [], [], 0
    for result in results:
        if isinstance(result, Exception):
            errors[type(result).__name__] += 1
        elif result.error is not None:
            errors[result.error.get("error", "error")] += 1
        else:
            start.append(result.start_latency)
            commit += result.commit_latencies(audio["words"])
            wrong += result.text != audio["text"]
    commit_stats, start_stats = LatencyStats.from_values(commit), LatencyStats.from_values(start)
    return {
        "sessions": args.honest,
        "ok": args.honest - sum(errors.values()),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "wrong_text": wrong,
        "commit_p50_s": _round(commit_stats.median),
        "commit_p95_s": _round(commit_stats.p95),
        "committed_words": commit_stats.count,
        "start_p95_ms": None if start_stats.p95 is None else round(1000 * start_stats.p95, 1),
        "wall_seconds": round(time.monotonic() - started, 1),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# -- the hostile mix (run in its own process) -----------------------------------------------


class Hostile:
    """Every hostile client, with what happened to each, until ``stop_at``."""

    def __init__(self, url: str, ws_url: str, seconds: float, audio: dict, rng: random.Random) -> None:
        self.url, self.ws_url = url, ws_url
        self.host, self.port = url.removeprefix("http://").rsplit(":", 1)
        self.stop_at = time.monotonic() + seconds
        self.audio = audio
        self.rng = rng
        self.outcomes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.lifetimes: dict[str, list[float]] = collections.defaultdict(list)
        self.malformed: list[dict] = []

    def running(self) -> bool:
        return time.monotonic() < self.stop_at

    async def connect(self, kind: str) -> TranscriptionClient | None:
        try:
            return await TranscriptionClient.connect(self.ws_url)
        except Exception as error:  # noqa: BLE001
            self.outcomes[kind][f"connect failed: {type(error).__name__}"] += 1
            await asyncio.sleep(0.5)
            return None

    def closing_code(self, client: TranscriptionClient) -> str:
        failed = [m for m in client.messages if m.get("type") == "transcription_failed"]
        reason = failed[-1]["error"] if failed else "no message"
        return f"closed {client.close_code} ({reason})"

    def check(self, client: TranscriptionClient) -> None:
        for message in client.messages:
            if message.get("type") not in KNOWN_TYPES or (
                message["type"] in ("error", "transcription_failed") and not message.get("message")
            ):
                self.malformed.append(message)

    async def holder(self) -> None:
        """Connects, never starts, answers nothing but sends a ping every 5 s."""
        while self.running():
            client = await self.connect("silent holders")
            if client is None:
                continue
            opened = time.monotonic()
            while self.running() and not client.closed:
                try:
                    await client.ping()
                    await client.wait_closed(timeout=5.0)
                except (asyncio.TimeoutError, WebSocketClosedError):
                    pass
            if client.closed:
                self.outcomes["silent holders"][self.closing_code(client)] += 1
                self.lifetimes["silent holders"].append(time.monotonic() - opened)
            self.check(client)
            await client.close()

    async def flooder(self) -> None:
        """start/stop pairs as fast as the socket takes them, until the server closes."""
        while self.running():
            client = await self.connect("start/stop floods")
            if client is None:
                continue
            sent = 0
            try:
                while self.running() and sent < 10_000:
                    await client.start()
                    await client.stop()
                    sent += 2
                    if sent % 50 == 0:
                        await asyncio.sleep(0)
            except WebSocketClosedError:
                pass
            try:
                await client.wait_closed(timeout=10)
            except asyncio.TimeoutError:
                pass
            self.outcomes["start/stop floods"][self.closing_code(client) if client.closed else "still open"] += 1
            self.outcomes["start/stop floods"]["utterances started"] += sum(
                m["type"] == "model_loading_started" for m in client.messages
            )
            self.outcomes["start/stop floods"]["messages sent"] += sent
            self.check(client)
            await client.close()
            await asyncio.sleep(0.5)

    async def sprayer(self) -> None:
        """start_transcription with a new model name (paths and hub names among them) each time."""
        index = 0
        while self.running():
            client = await self.connect("model-name spraying")
            if client is None:
                continue
            try:
                while self.running() and not client.closed:
                    index += 1
                    name = self.rng.choice([f"spray-{index}", f"/tmp/models/{index}", f"org/model-{index}",
                                            f"../../{index}"])  # fmt: skip
                    await client.start(model=name)
                    reply = await client.wait_for("transcription_started", "transcription_failed", timeout=10)
                    self.outcomes["model-name spraying"][f"reply {reply.get('error', reply['type'])}"] += 1
            except Exception:  # noqa: BLE001 - closed by the rate limit, or a timeout
                pass
            if client.closed:
                self.outcomes["model-name spraying"][self.closing_code(client)] += 1
            self.check(client)
            await client.close()

    async def slowloris(self) -> None:
        """An HTTP request whose headers never end: a byte a second until the server closes."""
        while self.running():
            opened = time.monotonic()
            try:
                reader, writer = await asyncio.open_connection(self.host, int(self.port))
                writer.write(f"GET / HTTP/1.1\r\nHost: {self.host}\r\n".encode())
                closed = False
                while self.running() and not closed:
                    writer.write(b"X")
                    await writer.drain()
                    try:
                        closed = await asyncio.wait_for(reader.read(1), 1.0) == b""
                    except asyncio.TimeoutError:
                        pass
                self.outcomes["slowloris"]["closed by the server" if closed else "still open at the end"] += 1
                if closed:
                    self.lifetimes["slowloris"].append(time.monotonic() - opened)
                writer.close()
            except (ConnectionError, OSError):
                self.outcomes["slowloris"]["closed by the server"] += 1
                self.lifetimes["slowloris"].append(time.monotonic() - opened)

    async def fuzzer(self) -> None:
        """Random frames, a ping after each; every reply must be well formed."""
        frames = [
            lambda: json.dumps({"type": "start_transcription", **self.random_fields()}),
            lambda: json.dumps({"type": self.rng.choice(["stop_transcription", "ping", "dance", 7, None])}),
            lambda: "[" * self.rng.randint(1, 20_000) + "]" * 5,
            lambda: self.rng.choice(["not json {", "[]", '"x"', "{}", "null", "\x00"]),
            lambda: os.urandom(self.rng.randint(1, 4000)),
            lambda: self.audio["payload"][: self.rng.randint(100, 8000)],
        ]
        while self.running():
            client = await self.connect("fuzzing")
            if client is None:
                continue
            try:
                for _ in range(self.rng.randint(1, 8)):
                    frame = self.rng.choice(frames)()
                    await (client.send_audio(frame) if isinstance(frame, bytes) else client.send_text(frame))
                    await client.ping()
                    await client.wait_for("pong", timeout=15)
                await client.stop()
                await client.ping()
                await client.wait_for("pong", timeout=15)
                self.outcomes["fuzzing"]["sequences answered"] += 1
            except Exception as error:  # noqa: BLE001
                self.outcomes["fuzzing"][f"failed: {type(error).__name__}"] += 1
            self.check(client)
            if self.rng.random() < 0.5:
                client.abort()
            else:
                await client.close()

    def random_fields(self) -> dict:
        pick = self.rng.choice
        fields = {}
        for name, values in (("backend", ["test", "faster-whisper", "nope", 5]), ("model", ["tones", "x", "/etc", None]),
                             ("format", ["auto", "webm", "pcm_s16le", "aiff"]), ("policy", ["local-agreement", "x"])):  # fmt: skip
            if self.rng.random() < 0.4:
                fields[name] = pick(values)
        return fields

    async def churn(self, cycles: int, concurrency: int) -> None:
        """Connect/disconnect cycles at random stages, half dropped without a close frame."""
        pieces = chunks(self.audio["payload"], CHUNK_SECONDS, self.audio["seconds"])
        stages = ["connect_only", "start", "mid_stream", "after_stop"]

        async def cycle() -> None:
            stage = self.rng.choice(stages)
            client = None
            try:
                client = await TranscriptionClient.connect(self.ws_url)
                if stage != "connect_only":
                    await client.start()
                if stage in ("mid_stream", "after_stop"):
                    await client.wait_for("transcription_started", timeout=30)
                    for piece in pieces[:8]:
                        await client.send_audio(piece)
                    await client.wait_for("transcript", timeout=30)
                if stage == "after_stop":
                    await client.stop()
                    await client.wait_for("transcription_stopped", "transcription_failed", timeout=30)
                self.check(client)
                client.abort() if self.rng.random() < 0.5 else await client.close()
                self.outcomes["churn"][stage] += 1
            except Exception as error:  # noqa: BLE001
                refused = [m["error"] for m in (client.messages if client else []) if m["type"] == "transcription_failed"]
                reason = f" ({refused[-1]})" if refused else ""
                self.outcomes["churn"][f"failed: {type(error).__name__}{reason}"] += 1
                if client is not None:
                    client.abort()

        started = time.monotonic()
        done = 0
        while done < cycles:
            wave = min(concurrency, cycles - done)
            await asyncio.gather(*(cycle() for _ in range(wave)))
            done += wave
        self.outcomes["churn"]["wall seconds"] = round(time.monotonic() - started)


async def loop_stalls(stop_at: float, worst: list[float]) -> None:
    """The longest the event loop took to come back to a 0.1 s sleep, beyond the 0.1 s."""
    while time.monotonic() < stop_at:
        started = time.monotonic()
        await asyncio.sleep(0.1)
        worst[0] = max(worst[0], time.monotonic() - started - 0.1)


async def hostile_main(args) -> dict:
    audio = tone_audio(4.0)
    hostile = Hostile(args.hostile_url, args.hostile_ws, args.seconds + args.ramp, audio, random.Random(args.seed + 1))
    tasks = [hostile.churn(args.churn, args.churn_concurrency)]
    tasks += [hostile.holder() for _ in range(args.holders)]
    tasks += [hostile.flooder() for _ in range(args.flooders)]
    tasks += [hostile.sprayer() for _ in range(args.sprayers)]
    tasks += [hostile.fuzzer() for _ in range(args.fuzzers)]
    tasks += [hostile.slowloris() for _ in range(args.slowloris)]

    async def guarded(kind: str, task) -> None:  # a hostile client's own bug ends that client only
        try:
            await task
        except Exception as error:  # noqa: BLE001
            hostile.outcomes[kind][f"client crashed: {type(error).__name__}: {error}"[:120]] += 1

    kinds = ["churn"] + ["silent holders"] * args.holders + ["start/stop floods"] * args.flooders
    kinds += ["model-name spraying"] * args.sprayers + ["fuzzing"] * args.fuzzers + ["slowloris"] * args.slowloris
    stall = [0.0]
    await asyncio.gather(loop_stalls(hostile.stop_at, stall), *(guarded(kind, task) for kind, task in zip(kinds, tasks)))
    return {"outcomes": {k: dict(v) for k, v in hostile.outcomes.items()}, "lifetimes": lifetime_summary(hostile.lifetimes),
            "loop_stall_max_s": round(stall[0], 3),
            "malformed_replies": hostile.malformed[:20], "malformed_count": len(hostile.malformed)}  # fmt: skip


def lifetime_summary(lifetimes: dict[str, list[float]]) -> dict[str, dict]:
    """Per kind of hostile client, how long its closed connections lived: count, median
    (of an even count, the mean of the two middle ones) and longest, in seconds."""
    return {kind: {"count": len(seconds), "median_s": _round(statistics.median(seconds)), "max_s": _round(max(seconds))}
            for kind, seconds in lifetimes.items() if seconds}  # fmt: skip


# -- the run ---------------------------------------------------------------------------------


async def main_async(args) -> dict:
    rng = random.Random(args.seed)
    load_start = round(os.getloadavg()[0], 2)
    audio = tone_audio(args.seconds)
    ffmpeg = find_ffmpeg()
    server = ServerProcess("test", None, 50, None, ["--idle-timeout", "60"])
    server_command = "rtlab serve --port 0 --backend test --max-connections 50 --idle-timeout 60 --log-level warning"
    try:
        await asyncio.get_running_loop().run_in_executor(None, server.wait_loaded)
        await asyncio.sleep(1.0)
        before = resources(server)
        print(f"server {server.url} (pid {server.popen.pid}); before: {before}", flush=True)

        print(f"phase 1: {args.honest} honest sessions alone, {audio['seconds']:.1f} s each…", flush=True)
        # Sampled as in the hostile phase: reading /proc costs CPU, the same in both.
        peak_alone: dict = {}
        stop = asyncio.Event()
        sampler = asyncio.ensure_future(sample_peak(server, peak_alone, stop))
        alone = await honest_sessions(server, audio, args, rng)
        stop.set()
        await sampler
        alone["settle_seconds"] = await settle(server)
        after_alone = resources(server)
        print(f"  {alone}\n  resources: {after_alone}", flush=True)

        rounds = []
        for number in range(1, args.hostile_rounds + 1):
            print(f"phase 2, round {number}: the same beside the hostile mix ({args.churn} churn cycles, "
                  f"{args.holders} holders, {args.flooders} flooders, {args.sprayers} sprayers, {args.fuzzers} "
                  f"fuzzers, {args.slowloris} slowloris)…", flush=True)  # fmt: skip
            rounds.append(await hostile_round(server, audio, args, rng))
            print(f"  {rounds[-1]['honest']}\n  hostile: {json.dumps(rounds[-1]['hostile']['outcomes'])}\n"
                  f"  resources: {rounds[-1]['after']}", flush=True)  # fmt: skip
    finally:
        exit_code = server.stop()
    report = {
        "benchmark": "chaos",
        "backend": "test",
        "server_command": server_command,
        "command": "python benchmarks/chaos.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "audio": {"seconds": round(audio["seconds"], 2), "format": "webm/opus 32 kbit/s", "chunk_seconds": CHUNK_SECONDS},
        "clock": "wall (real-time streaming)",
        "settings": {k: getattr(args, k) for k in ("honest", "seconds", "ramp", "churn", "churn_concurrency", "holders",
                                                   "flooders", "sprayers", "fuzzers", "slowloris", "hostile_rounds",
                                                   "seed")},  # fmt: skip
        "alone": alone,
        "rounds": rounds,
        "p95_ratio": _round(p95_ratio(alone, rounds)),
        "resources": {"before": before, "peak_alone": peak_alone, "after_alone": after_alone},
        "server_exit_code": exit_code,
        "ffmpeg": {"path": ffmpeg, "version": ffmpeg_version(ffmpeg)},
        # The machine may be shared: a 1-minute load average before the run above the CPU
        # count means something else was running.
        "loadavg_1m": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        "environment": environment_info(),
        "tornado": tornado.version,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "date": time.strftime("%Y-%m-%d"),
    }
    report["verdicts"] = verdicts(report)
    return report


async def hostile_round(server: ServerProcess, audio: dict, args, rng: random.Random) -> dict:
    """Honest sessions while the hostile mix runs in a child process; then settle."""
    command = [sys.executable, __file__, "--hostile-url", server.url, "--hostile-ws", server.ws_url, *_pass_on(args)]
    attacker = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    peak: dict = {}
    stop = asyncio.Event()
    sampler = asyncio.ensure_future(sample_peak(server, peak, stop))
    honest = await honest_sessions(server, audio, args, rng)
    output, _ = await attacker.communicate()
    stop.set()
    await sampler
    lines = output.decode().strip().splitlines()
    if attacker.returncode != 0 or not lines:
        raise RuntimeError(f"the hostile process failed (exit status {attacker.returncode}); see its stderr above")
    hostile = json.loads(lines[-1])
    honest["settle_seconds"] = await settle(server)
    health = await asyncio.get_running_loop().run_in_executor(None, server.health)
    return {
        "honest": honest,
        "hostile": hostile,
        "peak": peak,
        "after": resources(server),
        "health_after": {k: health.get(k) for k in ("status", "problems", "stuck_passes", "sessions", "transcribing",
                                                     "ffmpeg_processes")},  # fmt: skip
    }


def _pass_on(args) -> list[str]:
    flags = []
    for name in ("seconds", "ramp", "churn", "churn_concurrency", "holders", "flooders", "sprayers", "fuzzers",
                 "slowloris", "seed"):  # fmt: skip
        flags += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return flags


def p95_ratio(alone: dict, rounds: list[dict]) -> float | None:
    """The worst hostile round's commit latency p95 over the alone phase's, among the rounds
    whose honest sessions committed a word (:func:`verdicts` names the others); None when
    none did, or the alone phase did not."""
    known = [r["honest"]["commit_p95_s"] for r in rounds if r["honest"]["commit_p95_s"] is not None]
    return max(known) / alone["commit_p95_s"] if known and alone["commit_p95_s"] else None


def _p95_verdict(report: dict) -> str:
    """The commit latency line. A phase where no honest session committed a word has no p95
    and no ratio: it is named, not quietly left out of the worst."""
    alone, rounds = report["alone"], report["rounds"]
    silent = [str(number) for number, r in enumerate(rounds, 1) if r["honest"]["commit_p95_s"] is None]
    if alone["commit_p95_s"] is None:
        ratio = "no ratio: the alone phase committed nothing"
    elif len(silent) == len(rounds):
        ratio = "no ratio: no round beside the hostile mix committed anything"
    else:
        ratio = f"x{report['p95_ratio']} at worst" + (" of the rounds that committed words" if silent else "")
    return (
        f"commit latency p95 {alone['commit_p95_s']} s alone, {[r['honest']['commit_p95_s'] for r in rounds]} s beside "
        f"the hostile mix: {ratio} (target <= x{TARGETS['p95_ratio']})"
        + (f"; round{'s' * (len(silent) > 1)} {', '.join(silent)} committed nothing (no honest session had a word "
           "committed)" if silent else "")  # fmt: skip
    )


def verdicts(report: dict) -> list[str]:
    alone, rounds, res = report["alone"], report["rounds"], report["resources"]
    after = [r["after"] for r in rounds]
    return [
        f"honest sessions beside the hostile mix: {[r['honest']['errors'] for r in rounds]} errors per round "
        f"(target {TARGETS['honest_errors']}), {sum(r['honest']['wrong_text'] for r in rounds)} wrong transcripts",
        _p95_verdict(report),
        f"server threads {res['after_alone']['threads']} after the alone phase, {[a['threads'] for a in after]} after "
        f"each hostile round (peaks {[r['peak'].get('threads') for r in rounds]})",
        f"server PSS (MB) {_mb(res['after_alone']['server_pss_mb'])} after the alone phase, "
        f"[{', '.join(_mb(a['server_pss_mb']) for a in after)}] after each hostile round",
        f"file descriptors {res['after_alone']['fds']} after the alone phase, {[a['fds'] for a in after]} after each "
        f"hostile round",
        f"seconds until no session and no FFmpeg was left: {alone['settle_seconds']} after the alone phase, "
        f"{[r['honest']['settle_seconds'] for r in rounds]} after each hostile round (None: not within "
        f"{SETTLE_TIMEOUT:g} s)",
        f"FFmpeg processes after each hostile round: {[a['ffmpeg'] for a in after]} (target {TARGETS['ffmpeg_after']})",
        f"malformed replies seen by hostile clients: {sum(r['hostile']['malformed_count'] for r in rounds)}",
    ]


def _git(*command: str) -> str | None:
    try:
        return subprocess.run(["git", *command], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# -- the page --------------------------------------------------------------------------------


def page(report: dict) -> str:
    env, res = report["environment"], report["resources"]
    packages = env.get("packages", {})
    alone, rounds, settings = report["alone"], report["rounds"], report["settings"]
    total = env.get("memory_total_bytes")
    memory = f"{total / 2**30:.1f} GiB" if total else "memory unknown"
    phases = [alone] + [r["honest"] for r in rounds]
    rows = [
        ("sessions ok / errors", [f"{h['ok']} / {h['errors']}" for h in phases]),
        ("wrong transcripts", [h["wrong_text"] for h in phases]),
        ("committed words", [h["committed_words"] for h in phases]),
        ("commit latency p50", [_seconds(h["commit_p50_s"]) for h in phases]),
        ("commit latency p95", [_seconds(h["commit_p95_s"]) for h in phases]),
        ("start latency p95", [f"{h['start_p95_ms']} ms" for h in phases]),
        ("error kinds", [h["error_kinds"] or "none" for h in phases]),
    ]
    headers = ["alone"] + [f"beside the hostile mix, round {i}" for i in range(1, len(rounds) + 1)]
    out = [
        f"# `benchmarks/chaos.py`, test backend, {report['date']}",
        "",
        f"{settings['honest']} honest real-time sessions against `rtlab serve`, alone and then beside a hostile",
        "mix of clients run from a separate process on the same machine. Written by the script.",
        "",
        "| | |",
        "|---|---|",
        f"| date | {report['date']} |",
        # No GPU named: environment_info detects none, and the test backend uses none.
        f"| hardware | {env.get('cpu_count')} CPU cores ({_cpu_model_short(report)}), "
        f"{memory}; {env.get('platform')} |",
        f"| software | rtlab {packages.get('rtlab')} (commit {report['git_commit']} plus the working tree), "
        f"Tornado {report['tornado']}, Python {env.get('python')}, FFmpeg {report['ffmpeg']['version']} |",
        "| model | none: the deterministic `test` backend (tone-coded words, instant, exact transcripts) |",
        f"| clock | wall: each honest client streams {report['audio']['seconds']} s of webm/opus (32 kbit/s) in "
        f"250 ms chunks in real time, starting within {settings['ramp']:g} s; the honest clients run in the "
        "benchmark process, the hostile ones in a child process, all on the same cores as the server |",
        "| normalizer | none needed: transcripts are compared exactly |",
        f"| server | `{report['server_command']}`: every other limit at its default (start timeout 10 s, "
        "HTTP timeout 10 s, 20 control messages per second, pass deadline 30 s, the server's own "
        "backend, model and policy only) |",
        f"| command | `{report['command']}` |",
        f"| load | 1-minute load average {report['loadavg_1m']['start']} before the run (other work on "
        f"this shared machine), {report['loadavg_1m']['end']} at its end (this benchmark included) |",
        "",
        "## Honest sessions",
        "",
        "Commit latency is measured at the client: a word's arrival minus its end in the audio,",
        "the stream starting one chunk before the first send.",
        "",
        "| | " + " | ".join(headers) + " |",
        "|---|" + "---:|" * len(headers),
        *(f"| {name} | " + " | ".join(str(v) for v in values) + " |" for name, values in rows),
        "",
        "## The hostile mix",
        "",
        f"Started with the honest sessions and running for their length ({settings['seconds']:g} s + "
        f"{settings['ramp']:g} s ramp); the churn runs until its {settings['churn']} cycles are done "
        f"({settings['churn_concurrency']} at a time).",
        "",
        "| client | count | " + " | ".join(f"round {i}" for i in range(1, len(rounds) + 1)) + " |",
        "|---|---:|" + "---|" * len(rounds),
    ]
    counts = {"churn": settings["churn"], "silent holders": settings["holders"], "start/stop floods": settings["flooders"],
              "model-name spraying": settings["sprayers"], "fuzzing": settings["fuzzers"],
              "slowloris": settings["slowloris"]}  # fmt: skip
    for kind in sorted(counts):
        cells = []
        for r in rounds:
            outcomes = r["hostile"]["outcomes"].get(kind, {})
            described = ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())) or "nothing recorded"
            life = r["hostile"]["lifetimes"].get(kind)
            if life:
                described += f"; closed connections lived {life['median_s']} s (median), {life['max_s']} s at most"
            cells.append(described)
        out.append(f"| {kind} | {counts[kind]} | " + " | ".join(cells) + " |")
    out += [
        "",
        "Malformed replies seen by the hostile clients, per round: "
        f"{[r['hostile']['malformed_count'] for r in rounds]}. The hostile process's event loop "
        f"came back from a 0.1 s sleep at most {[r['hostile']['loop_stall_max_s'] for r in rounds]} s late "
        "(its clients' timings are only as good as that).",
        "",
        "## Server resources",
        "",
        "| | threads | file descriptors | server PSS (MB) | FFmpeg processes |",
        "|---|---:|---:|---:|---:|",
    ]
    measured = [("before (model loaded, idle)", res["before"]), ("peak during the alone phase", res["peak_alone"]),
                (f"after the alone phase, {settled(alone)}", res["after_alone"])]
    for number, r in enumerate(rounds, 1):
        measured += [(f"peak during hostile round {number}", r["peak"]),
                     (f"after hostile round {number}, {settled(r['honest'])}", r["after"])]  # fmt: skip
    for label, r in measured:
        out.append(f"| {label} | {r.get('threads')} | {r.get('fds')} | {_mb(r.get('server_pss_mb'))} | {r.get('ffmpeg')} |")
    health = rounds[-1]["health_after"]
    out += [
        "",
        "Threads that stay after a phase belong to pools that keep idle workers for reuse, each",
        "bounded by its size, not by the number of connections or names clients sent: the",
        "scheduler's pool that runs passes (one thread per CPU slot of a backend) and asyncio's",
        "default executor (model loads; at most CPU count + 4 threads). A pass that waits for its",
        "turn waits on a thread of its own that ends with the pass.",
        "",
        f"`/healthz` after the last hostile round: status `{health['status']}`, {health['sessions']} sessions, "
        f"{health['stuck_passes']} stuck passes, {health['ffmpeg_processes']} FFmpeg processes. "
        f"The server exited with status {report['server_exit_code']} on SIGTERM.",
        "",
        "## Verdicts",
        "",
        *(f"- {line}" for line in report["verdicts"]),
        "",
    ]
    return "\n".join(out)


def _seconds(latency: float | None) -> str:
    """A commit latency for the page: "nothing committed" where no word was."""
    return "nothing committed" if latency is None else f"{latency} s"


def _cpu_model_short(report: dict) -> str:
    environment = report["environment"]
    # Reports written before environment_info named the CPU kept it at the top level.
    model = environment.get("cpu_model") or report.get("cpu_model") or "unknown CPU"
    return f"{environment.get('machine') or ''}, {model}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--honest", type=int, default=20, help="honest real-time sessions in each phase")
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per honest session")
    parser.add_argument("--ramp", type=float, default=5.0, help="honest clients start within this many seconds")
    parser.add_argument("--churn", type=int, default=1000, help="connect/disconnect cycles in the hostile phase")
    parser.add_argument("--churn-concurrency", type=int, default=10)
    parser.add_argument("--holders", type=int, default=8, help="silent slot holders")
    parser.add_argument("--flooders", type=int, default=2, help="start/stop flooders")
    parser.add_argument("--sprayers", type=int, default=2, help="model-name sprayers")
    parser.add_argument("--fuzzers", type=int, default=2, help="protocol fuzzers")
    parser.add_argument("--slowloris", type=int, default=50, help="slow HTTP requests")
    parser.add_argument("--hostile-rounds", type=int, default=1,
                        help="hostile phases one after the other (resources after each show whether they plateau)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="results", help="folder for chaos-test.json")
    parser.add_argument("--page", help="write the Markdown page here (e.g. docs/benchmarks/DATE-chaos.md)")
    parser.add_argument("--hostile-url", help=argparse.SUPPRESS)  # the hostile child process
    parser.add_argument("--hostile-ws", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    refuse_below(parser, [("--honest", args.honest, 1), ("--hostile-rounds", args.hostile_rounds, 1),
                          ("--churn-concurrency", args.churn_concurrency, 1), ("--churn", args.churn, 0),
                          ("--holders", args.holders, 0), ("--flooders", args.flooders, 0),
                          ("--sprayers", args.sprayers, 0), ("--fuzzers", args.fuzzers, 0),
                          ("--slowloris", args.slowloris, 0), ("--ramp", args.ramp, 0)])
    if not args.seconds > 0:
        parser.error(f"--seconds must be above 0, not {args.seconds:g}")
    if args.hostile_url:
        print(json.dumps(asyncio.run(hostile_main(args))))
        return 0
    report = asyncio.run(main_async(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with written_whole(out / "chaos-test.json") as partial:
        partial.write_text(json.dumps(report, indent=2))
    print()
    for line in report["verdicts"]:
        print("  " + line)
    if args.page:
        with written_whole(Path(args.page)) as partial:
            partial.write_text(page(report))
        print(f"wrote {args.page}")
    print(f"wrote {out / 'chaos-test.json'}")
    return 0


if __name__ == "__main__":
    from rtlab.cli.display import run_script

    sys.exit(run_script(main))
