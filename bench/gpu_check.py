"""The GPU path checked in one call on a machine with an NVIDIA GPU, and what it saw written down.

    python bench/gpu_check.py OUT_DIR [--wheels DIR] [--only STEP,...] [--budget SECONDS]

Steps, in this order, each with its own time limit and all within ``--budget`` (470 s by default,
so that the whole call fits in 8 minutes on one H100 or H200):

    self-check        ops/_selfcheck.py on the GPU: do the NVRTC kernels agree with the portable
                      path, and how long the check takes once they are compiled
    ops-tests         tests/ops/test_roi_align_cuda.py (the kernels forced; then the self-check and
                      the portable path on CUDA tensors)
    predictor-tests   the CUDA tests of tests/model/test_predictor.py
    memcheck          the ops CUDA tests under compute-sanitizer --tool memcheck, our kernels
                      instrumented, PyTorch's caching allocator off (a read past a tensor is then
                      a read past an allocation); CUDA-graph and profiler tests left out
    racecheck         the tiled and multi-level ops tests under --tool racecheck (shared memory)
    bench-roi-align   bench/roi_align.py --cuda-only
    bench-inference-* bench/inference.py --device cuda, one step per architecture
    bench-train       bench/train.py --device cuda
    train-amp         main.py train on synthetic shapes: 40 float16-autocast steps of the small
                      architecture, with the before/after evaluation

It prints a line per step as it goes, then a summary table, and writes OUT_DIR/gpu-check.log (every
step's full output) and OUT_DIR/<date>-<gpu>-gpu-check.md (the table and the benchmarks' output),
the same file as bench/results/<date>-<gpu>-gpu-check.md. Exit status 1 when a step failed or
ran past its limit, 0 otherwise (a step skipped for a stated reason does not fail the call).
Without a CUDA GPU it says so, skips the GPU steps, writes OUT_DIR's two files (bench/results/
records only what a GPU measured) and exits with 2: nothing was checked.

The GPU machine has no PySide6, no pycocotools and no network. No step imports Qt.
``model.synthetic`` (imported by every model builder), the training data and the evaluation import
pycocotools, so every step from predictor-tests on but the sanitizers and bench-roi-align needs it;
each one that fails only for a missing pycocotools (or Qt) is reported as skipped, with the reason.
To run them, bring pycocotools' wheel for the machine's Python (3.12 there), e.g. from a machine
with PyPI:

    python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_17_x86_64 -d .whl pycocotools

and pass ``--wheels .whl`` (the default when a ``.whl`` folder exists at the repository root): the
wheels of modules this Python lacks are installed into a temporary folder for the steps.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ARCHITECTURES = (
    "maskrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn_v2",
    "keypointrcnn_resnet50_fpn",
    "masks_and_keypoints_resnet50_fpn.COCO_V1",  # the two networks as one (issue 15), beside each alone
)
# modules a machine may lack without anything of ours being wrong: a step that fails only for one
# of them is skipped, not failed
ENVIRONMENT_MODULES = ("pycocotools", "PySide6", "shiboken6", "pytestqt")
MIN_STEP_SECONDS = 20  # a step is not started with less of the budget left

SELF_CHECK = """
import time, torch
from ops import _selfcheck
device = torch.device("cuda", torch.cuda.current_device())
start = time.perf_counter()
first = _selfcheck.check(device)
with_compile = time.perf_counter() - start
start = time.perf_counter()
second = _selfcheck.check(device)
alone = time.perf_counter() - start
verdict = "the kernels agree with the portable path" if first is None else f"the kernels {first}"
print(f"{_selfcheck.describe(device)}: {verdict}; check {alone * 1e3:.0f} ms "
      f"({with_compile:.2f} s with compiling or loading the kernels)")
raise SystemExit(0 if first is None and second is None else 1)
"""

PROBE = """
import importlib.util, json, sys
found = {m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}
info = {"python": sys.version.split()[0], "modules": found}
try:
    import torch
    info["torch"] = torch.__version__
    info["cuda_runtime"] = torch.version.cuda
    info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if info["gpus"]:
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
except Exception as error:
    info["torch_error"] = f"{type(error).__name__}: {error}"
print(json.dumps(info))
"""


@dataclass
class Step:
    """One check: commands run in order from the repository root; the first failure ends it."""

    name: str
    commands: list[list[str]]
    limit: float  # seconds
    gpu: bool = True
    sanitizer: bool = False
    env: dict[str, str] = field(default_factory=dict)
    show_output: bool = False  # copied whole into the results file (benchmarks)


@dataclass
class Outcome:
    name: str
    status: str  # passed, FAILED, timed out (at the step's limit), cut short (by the budget), skipped
    seconds: float
    note: str
    output: str = ""
    show_output: bool = False


def pytest(*args: str) -> list[str]:
    return [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]


def sanitizer_command(sanitizer: str, tool: str, tests: str) -> list[str]:
    """The ops CUDA tests selected by ``tests`` (a pytest -k expression) under a compute-sanitizer
    tool that instruments our kernels only (``kns``: kernel names containing roi_align)."""
    options = f"--tool {tool} --kernel-name kns=roi_align --error-exitcode 1 --print-limit 20".split()
    return [sanitizer, *options, *pytest("tests/ops/test_roi_align_cuda.py", "-k", tests)]


# The caching allocator off makes each tensor its own allocation, so that memcheck sees a read past
# one. Left out: CUDA graphs (they need the caching allocator), the profiler (it does not run under
# a sanitizer), and the tests that time or forbid synchronisation (a sanitizer's job is neither).
MEMCHECK_TESTS = "not graph and not one_kernel_launch and not never_synchronises and not under_a_second"
# racecheck checks shared memory: the tiles of a large output, and the multi-level kernels in float32
RACECHECK_TESTS = "several_bin_tiles or (multilevel_matches and dtype1) or nan_boxes"
TRAIN_OPTIONS = (
    "--weights none --arch maskrcnn_resnet18_fpn_small --iters 40 --batch-size 4 --amp --device cuda "
    "--val-fraction 0.2 --checkpoint-period 40 --log-period 10 --workers 2"
)


def build_steps(sanitizer: str | None, scratch: Path) -> list[Step]:
    """Every step, in order. ``scratch``: a folder for the training run's data and output."""
    tool = sanitizer or "compute-sanitizer"
    no_caching = {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}
    memcheck = sanitizer_command(tool, "memcheck", MEMCHECK_TESTS)
    racecheck = sanitizer_command(tool, "racecheck", RACECHECK_TESTS)
    steps = [
        Step("self-check", [[PYTHON, "-c", SELF_CHECK]], 60),
        Step("ops-tests", [pytest("tests/ops/test_roi_align_cuda.py")], 120),
        Step("predictor-tests", [pytest("-m", "cuda", "tests/model/test_predictor.py")], 90),
        Step("memcheck", [memcheck], 150, sanitizer=True, env=no_caching),
        Step("racecheck", [racecheck], 90, sanitizer=True, env=no_caching),
        Step("bench-roi-align", [[PYTHON, "bench/roi_align.py", "--cuda-only"]], 120, show_output=True),
    ]
    for arch in ARCHITECTURES:
        command = [PYTHON, "bench/inference.py", "--device", "cuda", "--arch", arch]
        steps.append(Step(f"bench-inference-{arch}", [command], 120, show_output=True))
    steps.append(Step("bench-train", [[PYTHON, "bench/train.py", "--device", "cuda"]], 150, show_output=True))
    data = scratch / "shapes"
    generate = (
        f"import pathlib; from model.synthetic import generate; generate(pathlib.Path({str(data)!r}), 40, seed=1)"
    )
    train = [PYTHON, "main.py", "train", str(data / "annotations.json"), "--images", str(data / "images")]
    train += ["--out", str(scratch / "run"), *TRAIN_OPTIONS.split()]
    steps.append(Step("train-amp", [[PYTHON, "-c", generate], train], 150))
    return steps


def run_command(command: list[str], env: dict[str, str], limit: float) -> tuple[int | None, str]:
    """Exit status (None when stopped at ``limit`` seconds) and the merged stdout and stderr. The
    command runs in its own process group, so that a sanitizer's child goes with it."""
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=max(limit, 1.0))
        return process.returncode, output
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:  # ended on its own meanwhile
            pass
        output, _ = process.communicate()
        return None, output


def missing_environment_module(output: str) -> str | None:
    for name in re.findall(r"No module named '([\w]+)", output):
        if name in ENVIRONMENT_MODULES:
            return name
    return None


def summary_note(step: Step, output: str) -> str:
    """A few words for the table: test counts, the sanitizer's verdict, the training run's length
    and last loss, or a benchmark's last row."""
    found = []
    if step.sanitizer:
        found += re.findall(r"(?:ERROR|RACECHECK) SUMMARY: .*", output)[-1:]
    found += [m.strip("= ") for m in re.findall(r"^=+ (.*?) in [\d.]+s.*=+$", output, re.MULTILINE)[-1:]]
    if not found:
        found = [training_note(output) or last_row(output)]
    note = " ".join("; ".join(found).split())
    return note if len(note) <= 110 else note[:107] + "..."


def training_note(output: str) -> str | None:
    """``40 iterations in 31 s, last loss 2.143`` from main.py train's JSON events."""
    events = []
    for line in output.splitlines():
        if line.startswith('{"event"'):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    done = [e for e in events if e.get("event") == "done"]
    losses = [e["loss"] for e in events if e.get("event") == "progress" and "loss" in e]
    if not done:
        return None
    loss = f", last loss {losses[-1]:.3f}" if losses else ""
    return f"{done[-1].get('iterations')} iterations in {done[-1].get('elapsed_s', 0):.0f} s{loss}"


def last_row(output: str) -> str:
    rows = [line for line in output.splitlines() if line.strip() and not line.startswith(("floor =", "$ "))]
    return rows[-1] if rows else ""


def run_step(step: Step, env: dict[str, str], left: float, gpus: list[str], sanitizer: str | None) -> Outcome:
    if step.gpu and not gpus:
        return Outcome(step.name, "skipped", 0.0, "no CUDA GPU")
    if step.sanitizer and sanitizer is None:
        return Outcome(step.name, "skipped", 0.0, "compute-sanitizer not found (PATH, $CUDA_HOME/bin)")
    if left < MIN_STEP_SECONDS:
        return Outcome(step.name, "skipped", 0.0, f"the time budget is spent ({left:.0f} s left)")
    limit = min(step.limit, left)
    started, outputs, status = time.perf_counter(), [], 0
    for command in step.commands:
        status, output = run_command(command, {**env, **step.env}, limit - (time.perf_counter() - started))
        outputs.append(f"$ {' '.join(command)}\n{output}")
        if status != 0:
            break
    seconds, output = time.perf_counter() - started, "\n".join(outputs)
    if status is None and limit < step.limit:
        return Outcome(step.name, "cut short", seconds, f"the time budget ran out after {limit:.0f} s", output)
    if status is None:
        return Outcome(step.name, "timed out", seconds, f"stopped at its {limit:.0f} s limit", output)
    missing = missing_environment_module(output) if status != 0 else None
    if missing:
        hint = " (see --wheels)" if missing == "pycocotools" else ""
        return Outcome(step.name, "skipped", seconds, f"needs {missing}, not installed here{hint}", output)
    if step.sanitizer and status != 0 and "Device not supported" in output:
        return Outcome(step.name, "skipped", seconds, "compute-sanitizer does not support this device here", output)
    verdict = "passed" if status == 0 else "FAILED"
    return Outcome(step.name, verdict, seconds, summary_note(step, output), output, step.show_output)


def find_sanitizer() -> str | None:
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    for candidate in [shutil.which("compute-sanitizer")] + [f"{h}/bin/compute-sanitizer" for h in homes if h]:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def probe(env: dict[str, str]) -> dict:
    """Python, torch, CUDA and the modules of ENVIRONMENT_MODULES, as the steps will see them (in a
    child process, so that this one never holds a CUDA context)."""
    status, output = run_command([PYTHON, "-c", PROBE, *ENVIRONMENT_MODULES], env, 120)
    lines = output.strip().splitlines()
    if status != 0 or not lines:
        return {"python": sys.version.split()[0], "modules": {}, "torch_error": output.strip()[-300:], "gpus": []}
    return json.loads(lines[-1])


def install_wheels(wheels: Path, missing: list[str], site: Path) -> tuple[list[str], str]:
    """Install the wheels in ``wheels`` of the ``missing`` modules into ``site``: the wheels'
    names, and pip's complaint when it refused them ("" when it did not)."""
    wanted = {m.lower() for m in missing}
    chosen = [str(w) for w in sorted(wheels.glob("*.whl")) if w.name.split("-")[0].lower() in wanted]
    if not chosen:
        return [], ""
    options = f"install -q --no-index --no-deps --no-compile --target {site}".split()
    result = subprocess.run([PYTHON, "-m", "pip", *options, *chosen], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return [], " ".join((result.stderr or result.stdout).split())[:300]
    return [Path(w).name for w in chosen], ""


def tool_version(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return lines[-1] if result.returncode == 0 and lines else "not found"


def environment_lines(info: dict, sanitizer: str | None, installed: list[str]) -> list[str]:
    gpus = info.get("gpus") or []
    driver = tool_version(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    modules = ", ".join(f"{m} {'yes' if ok else 'no'}" for m, ok in info.get("modules", {}).items())
    lines = [
        f"GPU: {', '.join(gpus)} (sm {info.get('capability')}), driver {driver}"
        if gpus
        else "GPU: none. No CUDA GPU here (torch.cuda.device_count() is 0): the GPU steps are skipped",
        f"Python {info.get('python')}, torch {info.get('torch', '?')} (CUDA {info.get('cuda_runtime')})",
        f"nvcc: {tool_version(['nvcc', '--version'])}; compute-sanitizer: "
        + (tool_version([sanitizer, "--version"]) if sanitizer else "not found"),
        f"importable: {modules}" + (f" (installed for this run: {', '.join(installed)})" if installed else ""),
    ]
    if "torch_error" in info:
        lines.append(f"torch failed to load: {info['torch_error']}")
    return lines


def table(outcomes: list[Outcome]) -> list[str]:
    rows = [("step", "result", "seconds", "note")] + [(o.name, o.status, f"{o.seconds:.0f}", o.note) for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows]
    return lines[:1] + ["-" * max(len(line) for line in lines)] + lines[1:]


def results_markdown(date: str, environment: list[str], outcomes: list[Outcome], wall: float) -> str:
    parts = [
        f"# {date} — bench/gpu_check.py",
        "",
        *[f"- {line}" for line in environment],
        f"- wall clock: {wall:.0f} s",
        "",
        "```",
        *table(outcomes),
        "```",
    ]
    for o in outcomes:
        if o.show_output or o.status in ("FAILED", "timed out", "cut short"):
            tail = o.output if o.show_output else "\n".join(o.output.splitlines()[-60:])
            parts += ["", f"## {o.name} ({o.status})", "", "```", tail.rstrip(), "```"]
    return "\n".join(parts) + "\n"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, metavar="OUT_DIR", help="folder for the log and the results file")
    default_wheels = REPO / ".whl"
    parser.add_argument(
        "--wheels",
        type=Path,
        default=default_wheels if default_wheels.is_dir() else None,
        metavar="DIR",
        help="wheels to install for modules this Python lacks (default: ./.whl where it exists)",
    )
    parser.add_argument("--only", metavar="STEP,...", help="run only these steps (names as listed above)")
    parser.add_argument(
        "--budget", type=float, default=470.0, metavar="SECONDS", help="time for all steps together (default 470)"
    )
    return parser


def select_steps(steps: list[Step], only: str | None) -> list[Step]:
    if not only:
        return steps
    wanted = set(only.split(","))
    unknown = wanted - {s.name for s in steps}
    if unknown:
        raise SystemExit(f"unknown steps: {', '.join(sorted(unknown))}; known: {', '.join(s.name for s in steps)}")
    return [s for s in steps if s.name in wanted]


def prepare(wheels: Path | None, scratch: Path) -> tuple[dict[str, str], dict]:
    """The steps' environment, with the carried wheels of missing modules installed, and what
    ``probe`` sees in it (plus ``refused``: pip's complaint about the wheels, if any)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    info = probe(env)
    missing = [m for m, ok in info.get("modules", {}).items() if not ok]
    if wheels is None or not missing:
        return env, info
    installed, refused = install_wheels(wheels, missing, scratch / "site")
    if installed:
        env["PYTHONPATH"] = os.pathsep.join([str(scratch / "site"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        info = probe(env)
    return env, {**info, "installed": installed, "refused": refused}


def write_results(out: Path, environment: list[str], outcomes: list[Outcome], gpus: list[str], wall: float) -> None:
    date = datetime.date.today().isoformat()
    name = f"{date}-{slug(gpus[0]) if gpus else 'no-gpu'}-gpu-check.md"
    markdown = results_markdown(date, environment, outcomes, wall)
    log = "\n\n".join(f"===== {o.name}: {o.status} ({o.seconds:.0f} s)\n{o.output}" for o in outcomes)
    (out / "gpu-check.log").write_text("\n".join(environment) + "\n\n" + log + "\n")
    (out / name).write_text(markdown)
    print(f"\nwrote {out / 'gpu-check.log'} and {out / name}")
    if gpus:  # bench/results/ records what a GPU measured; a run without one measured nothing
        (REPO / "bench" / "results" / name).write_text(markdown)
        print(f"and bench/results/{name}")


def main() -> int:
    args = build_parser().parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        return check_gpu(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def check_gpu(args: argparse.Namespace, scratch: Path) -> int:
    started = time.perf_counter()
    sanitizer = find_sanitizer()
    steps = select_steps(build_steps(sanitizer, scratch), args.only)
    args.out.mkdir(parents=True, exist_ok=True)
    env, info = prepare(args.wheels, scratch)
    environment = environment_lines(info, sanitizer, info.get("installed", []))
    if info.get("refused"):
        environment.append(f"wheels in {args.wheels} not installed: {info['refused']}")
    print("\n".join(environment), flush=True)
    gpus = info.get("gpus") or []
    outcomes = []
    for step in steps:
        outcome = run_step(step, env, args.budget - (time.perf_counter() - started), gpus, sanitizer)
        outcomes.append(outcome)
        print(f"{outcome.name}: {outcome.status} ({outcome.seconds:.0f} s) {outcome.note}", flush=True)
    print("\n" + "\n".join(table(outcomes)))
    write_results(args.out, environment, outcomes, gpus, time.perf_counter() - started)
    if any(o.status in ("FAILED", "timed out") for o in outcomes):
        return 1
    return 0 if gpus else 2  # without a GPU nothing was checked: no success to report


if __name__ == "__main__":
    sys.exit(main())
