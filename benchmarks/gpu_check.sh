#!/usr/bin/env bash
# The GPU check of issue 12: the engines table on CUDA, and how many real-time sessions one
# GPU serves with p95 commit latency <= 2 s, written as JSON. Prepared here, run there:
#
#   bash benchmarks/gpu_check.sh prepare   # here, PyPI reachable: artifacts/gpu-check (about 55 MB)
#   bash benchmarks/gpu_check.sh run       # on the GPU machine, carrying artifacts/gpu-check;
#                                          # results in $OUT (else artifacts/gpu-check/results)
#   GPU_CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh run   # every step but CUDA, on a CPU
#
# Settings: GPU_CHECK_CLIENTS (concurrency levels, default 1,50,100,200,300 on CUDA, 1,2 on
# a CPU), GPU_CHECK_SECONDS (audio per client, 20), GPU_CHECK_MAX_BATCH and
# GPU_CHECK_BATCH_WAIT_MS (the batching scheduler's max_batch and batch_wait_ms, default 256
# and 20 on CUDA, 4 and 20 on a CPU), GPU_CHECK_ARTIFACTS (the folder),
# GPU_CHECK_PYTHON_VERSION (of the wheels prepare fetches, 3.12), PYTHON.
#
# The GPU machine has Python 3.12 with PyTorch (CUDA 13) and no network, no CUDA 12
# libraries (CTranslate2's CUDA build cannot run: faster-whisper on CUDA is recorded with the
# one-line reason it gives), and takes at most 64 MiB of files per call. So `prepare` packs
# tiny.en (benchmarks/pack_weights.py: 10-bit weights, about 50 MB instead of 75.5 MB),
# decodes the shared English speech to 16 kHz WAV (read there without FFmpeg), and
# downloads the wheels of what that machine lacks (openai-whisper, jiwer, tornado, ...).
# `run` installs those into a private folder, restores and converts the weights, runs
# benchmarks/engines.py (openai-whisper float16 and float32 on CUDA), then
# benchmarks/concurrency.py with openai-whisper on CUDA through the batching scheduler
# (passes of concurrent sessions in one model call, up to max_batch). Its clients send
# webm/opus, as browsers do, when an FFmpeg is there (RTLAB_FFMPEG or PATH; none is carried:
# it does not fit beside the weights), and raw 16-bit PCM otherwise (no decoding: the
# sessions' FFmpeg is then not measured). Each stage has a time limit; the whole run stays
# under 8 minutes. Summary: $OUT/gpu-check.json.
set -euo pipefail
cd "$(dirname "$0")/.."

ART=${GPU_CHECK_ARTIFACTS:-artifacts/gpu-check}
PYTHON_VERSION=${GPU_CHECK_PYTHON_VERSION:-3.12}  # the GPU machine's
PACKED=$ART/tiny.en-packed
SPEECH=$ART/speech
WHEELS=$ART/wheels
PY=${PYTHON:-python3}

# The pinned requirement of a package (names compared as pip does: case, - _ . alike).
pin() { grep -iE "^$(sed 's/[-_.]/[-_.]/g' <<< "$1")==" constraints.txt; }

prepare() {
    mkdir -p "$ART"
    [ -d "$PACKED" ] || "$PY" benchmarks/pack_weights.py pack tiny.en "$PACKED"
    "$PY" - "$SPEECH" <<'EOF'
import sys, wave
from pathlib import Path
from rtlab.decoders.files import decode_file
from rtlab.eval.corpus import load_corpus, shared_speech_dir

folder = shared_speech_dir()
if folder is None:
    sys.exit("prepare: the shared English speech is not here (RTLAB_SPEECH_DIR)")
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
for utterance in load_corpus(folder):
    name = Path(utterance.audio).stem
    with wave.open(str(out / f"{name}.wav"), "wb") as wav:
        wav.setnchannels(1); wav.setsampwidth(2); wav.setframerate(16000)
        wav.writeframes(decode_file(utterance.audio, "s16le"))
    (out / f"{name}.txt").write_text(utterance.text + "\n", encoding="utf-8")
print(f"prepare: {len(list(out.glob('*.wav')))} clips as 16 kHz WAV in {out}")
EOF
    mkdir -p "$WHEELS"
    # openai-whisper ships as a source archive only: built here into a pure-Python wheel.
    "$PY" -m pip wheel -q --no-deps -w "$WHEELS" "$(pin openai-whisper)"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEELS" \
        "$(pin more-itertools)" "$(pin jiwer)" "$(pin rapidfuzz)" "$(pin whisper-normalizer)" \
        "$(pin indic_numtowords)" "$(pin text2num)" "$(pin tornado)"
    local bytes
    bytes=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
    bytes=$((bytes + $(du -sb "$ART" | cut -f1)))
    echo "prepare: $ART ready; the working tree and it come to $((bytes / 1048576)) MiB of the 64 MiB a call carries"
}

run() {
    local out=${OUT:-$ART/results} device=${GPU_CHECK_DEVICE:-cuda} work site started
    out=$(mkdir -p "$out" && cd "$out" && pwd)
    work=$(mktemp -d)
    site=$work/site
    started=$(date +%s)
    exec > >(tee "$out/gpu-check.log") 2>&1
    echo "gpu-check: device $device, results in $out"

    # The carried wheels of packages this machine lacks, into a private folder; rtlab and
    # the plugin from this tree (a dist-info carries the plugin's entry point).
    mkdir -p "$site"
    local missing
    missing=$("$PY" - "$WHEELS" <<'PY'
import importlib.metadata, sys
from pathlib import Path
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    try:
        importlib.metadata.version(wheel.name.split("-")[0])
    except importlib.metadata.PackageNotFoundError:
        print(wheel)
PY
)
    if [ -n "$missing" ]; then
        echo "gpu-check: installing the carried wheels of $(echo "$missing" | wc -l) packages"
        # shellcheck disable=SC2086  # one path per word
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$site" $missing
    fi
    export PYTHONPATH="$site:$PWD:$PWD/plugins/rtlab-openai-whisper${PYTHONPATH:+:$PYTHONPATH}"
    if ! "$PY" -c "import importlib.metadata as m; m.version('rtlab-openai-whisper')" 2>/dev/null; then
        local info=$site/rtlab_openai_whisper-0.1.0.dist-info
        mkdir -p "$info"
        printf 'Metadata-Version: 2.1\nName: rtlab-openai-whisper\nVersion: 0.1.0\n' > "$info/METADATA"
        printf '[rtlab]\nopenai_whisper = rtlab_openai_whisper\n' > "$info/entry_points.txt"
    fi
    export RTLAB_CACHE_DIR=$work/cache PYTHONUNBUFFERED=1
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())"
    command -v nvidia-smi >/dev/null && nvidia-smi -L || true

    # The weights: restored from the packed folder, converted once into a checkpoint.
    "$PY" benchmarks/pack_weights.py restore "$PACKED" "$work/tiny.en"
    "$PY" -m rtlab models convert "$work/tiny.en" "$work/tiny.en.pt"

    # The engines table.
    local configs=() status_engines=0 status_concurrency=0
    if [ "$device" = cuda ]; then
        configs+=(--config "backend=openai-whisper,model=$work/tiny.en.pt,device=cuda,compute_type=float16,name=openai-whisper tiny.en cuda float16")
        configs+=(--config "backend=openai-whisper,model=$work/tiny.en.pt,device=cuda,compute_type=float32,name=openai-whisper tiny.en cuda float32")
        if "$PY" -c "import faster_whisper" 2>/dev/null; then  # refused there, in one line, without CUDA 12
            configs+=(--config "backend=faster-whisper,model=$work/tiny.en,device=cuda,compute_type=float16,name=faster-whisper tiny.en cuda float16")
            configs+=(--config "backend=faster-whisper,model=$work/tiny.en,device=cuda,compute_type=int8_float16,name=faster-whisper tiny.en cuda int8_float16")
        fi
    else
        configs+=(--config "backend=openai-whisper,model=$work/tiny.en.pt,device=cpu,name=openai-whisper tiny.en cpu float32")
    fi
    timeout 150 "$PY" benchmarks/engines.py --corpus "$SPEECH" --language en --out "$out/engines" "${configs[@]}" \
        || status_engines=$?

    # Concurrent real-time sessions through the batching scheduler.
    local ffmpeg format levels max_batch
    ffmpeg=$(command -v "${RTLAB_FFMPEG:-ffmpeg}" || true)  # an executable one, or none
    format=$([ -n "$ffmpeg" ] && echo webm || echo pcm_s16le)
    if [ "$device" = cuda ]; then levels=1,50,100,200,300 max_batch=256; else levels=1,2 max_batch=4; fi
    levels=${GPU_CHECK_CLIENTS:-$levels} max_batch=${GPU_CHECK_MAX_BATCH:-$max_batch}
    local batch_wait_ms=${GPU_CHECK_BATCH_WAIT_MS:-20}
    echo "gpu-check: concurrency at $levels clients, $format, max_batch $max_batch, batch_wait_ms $batch_wait_ms"
    env ${ffmpeg:+RTLAB_FFMPEG=$ffmpeg} RTLAB_SPEECH_DIR=$SPEECH timeout 270 "$PY" benchmarks/concurrency.py \
        --backend openai-whisper --model "$work/tiny.en.pt" -b "device=$device" \
        -b "max_batch=$max_batch" -b "batch_wait_ms=$batch_wait_ms" --format "$format" \
        --clients "$levels" --seconds "${GPU_CHECK_SECONDS:-20}" --ramp 5 --out "$out" \
        || status_concurrency=$?

    "$PY" - "$out" "$device" "$status_engines" "$status_concurrency" "$(( $(date +%s) - started ))" \
        "$max_batch" "$batch_wait_ms" "$format" <<'EOF'
import datetime, json, sys
from pathlib import Path

out, device, engines_status, concurrency_status, seconds, max_batch, batch_wait_ms, audio_format = sys.argv[1:]
summary = {"benchmark": "gpu-check", "date": datetime.date.today().isoformat(), "device": device,
           "seconds": int(seconds), "batching": {"max_batch": int(max_batch), "batch_wait_ms": float(batch_wait_ms)}}
try:
    import torch
    summary["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda,
                        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
except Exception as error:  # noqa: BLE001 - the summary is written whatever failed
    summary["torch"] = {"error": str(error)}
engines = Path(out) / "engines" / "engines.json"
summary["engines"] = {"exit": int(engines_status)}
if engines.is_file():
    report = json.loads(engines.read_text())
    summary["engines"]["configurations"] = [
        {"name": c["name"], **({"error": c["result"]["error"]} if "error" in c["result"] else {
            key: c["result"].get(key) for key in ("rtf", "load_and_warmup_seconds", "peak_rss_bytes", "peak_gpu_bytes", "gpu")
        }), **({"wer": c["result"]["wer"]["value"]} if "wer" in c["result"] else {})}
        for c in report["configurations"]
    ]
concurrency = Path(out) / "concurrency-openai-whisper.json"
summary["concurrency"] = {"exit": int(concurrency_status), "audio": audio_format}
if concurrency.is_file():
    levels = json.loads(concurrency.read_text())["levels"]
    summary["concurrency"]["levels"] = [
        {k: level.get(k) for k in ("clients", "errors", "commit_p50_s", "commit_p95_s", "lag_max_s")} for level in levels
    ]
    kept = [l["clients"] for l in levels if l["errors"] == 0 and l["commit_p95_s"] is not None and l["commit_p95_s"] <= 2.0]
    summary["concurrency"]["most_sessions_with_p95_commit_at_most_2s"] = max(kept) if kept else 0
Path(out, "gpu-check.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
EOF
    rm -rf "$work"
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: bash benchmarks/gpu_check.sh prepare|run (see the header)" >&2; exit 2 ;;
esac
