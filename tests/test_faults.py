"""Fault injection on tiny phantom runs: kills by signal, config changes between attempts,
corrupt and crafted files, non-finite losses and a full disk. Each ends in a result equal to a
clean run of the final config, or in one named error, and leaves nothing behind."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from dia import training
from dia.checkpoint import FINGERPRINT, claim_state_dir, load_state
from dia.data.archive import MARKER
from dia.data.views import INDEX as VIEWS_INDEX
from dia.diffusion.dissolve import Dissolver
from dia.errors import DiaError
from dia.io import TEMP_SUFFIX, atomic_path, sweep_temps
from dia.sections import config_sections
from dia.stages import runs
from dia.stages.data import run_download, run_prepare
from dia.stages.diffusion import run_dissolve_cache, run_train_diffusion
from dia.stages.runs import run_score, run_train
from dia.training import READ_EVERY, Schedule, TrainState, run_epochs
from tests.conftest import ROOT, TINY_CONFIG

CONFIG = yaml.safe_load(TINY_CONFIG.read_text())
SPEC = CONFIG["datasets"]["phantom"]
LAYERS = [{s: CONFIG[s] for s in config_sections()}, SPEC]

# Runs a stage in a child process that kills itself with SIGKILL the moment its first
# checkpoint (a state file named last.pt) is in place: a job killed mid-run, at a known step.
DRIVER = """
import json, os, signal, sys
from pathlib import Path
import torch
import dia.io
torch.set_num_threads(1)  # as the tests' own process: the same arithmetic, bit for bit
stage, kwargs = json.loads(sys.argv[1])
replace = os.replace
def replace_then_die(src, dst):
    replace(src, dst)
    if Path(dst).name == "last.pt":
        os.kill(os.getpid(), signal.SIGKILL)
dia.io.os.replace = replace_then_die
for key in ("data_dir", "out_dir", "state_dir", "cache"):
    if kwargs.get(key):
        kwargs[key] = Path(kwargs[key])
if stage == "diffusion":
    from dia.stages.diffusion import run_train_diffusion as run
else:
    from dia.stages.runs import run_train as run
run(**kwargs)
"""


def _killed(stage: str, **kwargs: Any) -> None:
    """Run ``stage`` in a child process killed by SIGKILL after its first checkpoint."""
    args = json.dumps([stage, {k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()}])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Phantom data, a diffusion model and its dissolve cache."""
    root = tmp_path_factory.mktemp("faults")
    run_download("phantom", SPEC, root / "raw.npz")
    run_prepare("phantom", SPEC, root / "raw.npz", root / "data")
    common = dict(data_dir=root / "data", preset="dia_code", layers=LAYERS, resolution=16)
    run_train_diffusion(
        out_dir=root / "diffusion", state_dir=root / "s", ratio=1.0, seed=0, device="cpu", **common
    )
    run_dissolve_cache(
        model_path=root / "diffusion/model.pt", dest=root / "cache.npz", device="cpu", **common
    )
    return root


def _layers(**sections: dict[str, Any]) -> list[dict[str, Any]]:
    return [*LAYERS, sections]


def _train_kwargs(root: Path, out: Path, layers: list, baseline: str | None) -> dict[str, Any]:
    cache = None if baseline else root / "cache.npz"
    return dict(
        data_dir=root / "data",
        out_dir=out,
        state_dir=out / "state",
        preset="dia_code",
        layers=layers,
        seed=0,
        device="cpu",
        baseline=baseline,
        cache=cache,
    )


def _scored(root: Path, out: Path, layers: list, baseline: str | None) -> dict[str, Any]:
    run_train(**_train_kwargs(root, out, layers, baseline))
    run_score(data_dir=root / "data", run_dir=out, preset="dia_code", layers=layers, device="cpu")
    return {
        "scores": (out / "scores.csv").read_text(),
        "metrics": json.loads((out / "metrics.json").read_text()),
        "log": [row.split(",")[:3] for row in (out / "train_log.csv").read_text().splitlines()],
    }


# DIA (contrastive, with its cache) and one baseline; `change` is the key edited after the kill.
# DIA is killed at the end of its first epoch, past its first step (whose LR the trainer starts at).
DIA_RUN = {"method": "dia", "lr": 0.1, "max_batches_per_epoch": 3, "checkpoint_every_steps": 3}
RUNS = {
    "dia": (None, {"contrastive": DIA_RUN}, {"contrastive": {"lr": 0.05}}),
    "kdad": ("kdad", {"kdad": {"checkpoint_every_steps": 2}}, {"kdad": {"lr": 5e-4}}),
}


@pytest.mark.parametrize("run", RUNS)
def test_a_killed_run_rerun_with_or_without_a_change_equals_a_clean_run(
    prepared: Path, tmp_path: Path, run: str, capfd: pytest.CaptureFixture[str]
) -> None:
    baseline, base, change = RUNS[run]
    before = _layers(**base)
    after = [*before, change]
    clean = _scored(prepared, tmp_path / "clean", after, baseline)

    _killed("train", **_train_kwargs(prepared, tmp_path / "same", after, baseline))
    assert (tmp_path / "same/state/last.pt").exists()
    assert _scored(prepared, tmp_path / "same", after, baseline) == clean
    assert "discarding" not in capfd.readouterr().err  # resumed, not restarted

    _killed("train", **_train_kwargs(prepared, tmp_path / "changed", before, baseline))
    assert _scored(prepared, tmp_path / "changed", after, baseline) == clean
    section, values = next(iter(change.items()))
    key = f"config.{section}.{next(iter(values))}"
    assert f"made by another configuration ({key}: " in capfd.readouterr().err
    assert not (tmp_path / "changed/state").exists()


def test_a_killed_diffusion_model_rerun_after_a_change_equals_a_clean_one(
    prepared: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    def kwargs(out: str, lr: float) -> dict[str, Any]:
        return dict(
            data_dir=prepared / "data",
            out_dir=tmp_path / out,
            state_dir=tmp_path / out / "state",
            preset="dia_code",
            layers=_layers(diffusion={"lr": lr}),
            resolution=16,
            ratio=1.0,
            seed=0,
            device="cpu",
        )

    run_train_diffusion(**kwargs("clean", 5e-5))
    _killed("diffusion", **kwargs("changed", 1e-4))
    run_train_diffusion(**kwargs("changed", 5e-5))
    assert "(config.lr: 0.0001 -> 5e-05)" in capfd.readouterr().err
    clean = torch.load(tmp_path / "clean/model.pt", weights_only=True)
    rerun = torch.load(tmp_path / "changed/model.pt", weights_only=True)
    for name, tensor in clean["model"].items():
        assert torch.equal(tensor, rerun["model"][name]), name


def _state_of_a_killed_run(prepared: Path, out: Path) -> Path:
    layers = _layers(contrastive={"method": "csi"})
    _killed("train", **_train_kwargs(prepared, out, layers, None))
    return out / "state/last.pt"


class _Exploit:
    """A pickle that runs code when loaded without ``weights_only``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_truncated_or_crafted_state_file_is_discarded_without_running_it(
    prepared: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    state = _state_of_a_killed_run(prepared, tmp_path / "run")
    state.write_bytes(state.read_bytes()[:200])
    assert load_state(state) is None and not state.exists()
    assert f"discarding unreadable state file {state}" in capfd.readouterr().err

    marker = tmp_path / "pwned"
    torch.save({"model": _Exploit(marker)}, state)
    assert load_state(state) is None and not state.exists()
    assert not marker.exists()


def test_a_read_error_of_the_machine_fails_the_job_and_keeps_the_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO on a cluster file system says nothing about the file: it is not discarded."""
    state = tmp_path / "last.pt"
    torch.save({"step": 3}, state)

    def flaky(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(torch, "load", flaky)
    with pytest.raises(OSError):
        load_state(state)
    assert state.exists()


def test_stale_state_that_cannot_be_removed_is_a_named_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never record the new fingerprint over old state that is still there."""
    state_dir = tmp_path / "state"
    claim_state_dir(state_dir, {"config": {"lr": 0.1}})
    (state_dir / "last.pt").write_bytes(b"old")

    def refuse(path: Path) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(shutil, "rmtree", refuse)
    with pytest.raises(DiaError, match=f"cannot remove the stale state in {state_dir}"):
        claim_state_dir(state_dir, {"config": {"lr": 0.05}})
    assert not (state_dir / FINGERPRINT).exists()


def test_a_run_resumes_cleanly_after_its_state_file_was_truncated(
    prepared: Path, tmp_path: Path
) -> None:
    layers = _layers(contrastive={"method": "csi"})
    clean = _scored(prepared, tmp_path / "clean", layers, None)
    state = _state_of_a_killed_run(prepared, tmp_path / "run")
    state.write_bytes(state.read_bytes()[:200])
    assert _scored(prepared, tmp_path / "run", layers, None) == clean


def test_state_without_a_fingerprint_is_not_resumed(
    prepared: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """State left by a version of the pipeline that did not record what made it."""
    state = _state_of_a_killed_run(prepared, tmp_path / "run")
    (state.parent / FINGERPRINT).unlink()
    layers = _layers(contrastive={"method": "csi"})
    run_train(**_train_kwargs(prepared, tmp_path / "run", layers, None))
    assert "records no configuration" in capfd.readouterr().err


def test_a_rebuilt_views_folder_is_a_new_input_and_its_other_entries_are_not(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder is stamped by its index, written last: an entry written beside it (which moves
    the folder's own time) keeps a run's state, a rewritten index discards it."""
    views = tmp_path / "views"
    views.mkdir()
    (views / VIEWS_INDEX).write_text("{}")
    stamps = []

    class ClaimedError(Exception):
        pass

    def claim(state_dir: Path, fingerprint: dict[str, Any]) -> None:
        stamps.append(fingerprint["inputs"]["views"])
        raise ClaimedError

    monkeypatch.setattr(runs, "claim_state_dir", claim)
    kwargs = _train_kwargs(prepared, tmp_path / "run", _layers(), "kdad") | {"views": views}
    for written in (None, views / "extra.npz", views / VIEWS_INDEX):
        if written:
            written.write_text('{"rebuilt": true}')
        with pytest.raises(ClaimedError):
            run_train(**kwargs)
    assert stamps[0] == stamps[1] != stamps[2]


def test_a_corrupt_or_crafted_model_is_a_named_error(prepared: Path, tmp_path: Path) -> None:
    layers = _layers(contrastive={"method": "csi"})
    out = tmp_path / "run"
    run_train(**_train_kwargs(prepared, out, layers, None))
    model = out / "model.pt"
    model.write_bytes(model.read_bytes()[:300])
    score = dict(data_dir=prepared / "data", run_dir=out, preset="dia_code", layers=layers)
    with pytest.raises(DiaError, match=f"cannot read trained model {model} .*delete it"):
        run_score(**score, device="cpu")
    marker = tmp_path / "pwned"
    torch.save({"model_name": _Exploit(marker)}, model)
    with pytest.raises(DiaError, match="cannot read trained model"):
        run_score(**score, device="cpu")
    assert not marker.exists()


NAN = {
    "csi": (None, {"contrastive": {"method": "csi", "lr": 1e30}}, "csi", "contrastive.lr"),
    "kdad": ("kdad", {"kdad": {"lr": 1e30}}, "KDAD", "kdad.lr"),
}


@pytest.mark.parametrize("run", NAN)
def test_a_non_finite_loss_stops_training_naming_the_step_and_the_knob(
    prepared: Path, tmp_path: Path, run: str
) -> None:
    baseline, change, name, knob = NAN[run]
    kwargs = _train_kwargs(prepared, tmp_path / "run", _layers(**change), baseline)
    message = (
        rf"^{name}: loss = (nan|inf).* at epoch \d+, step \d+, training stopped; .*lower {knob}"
    )
    with pytest.raises(DiaError, match=message):
        run_train(**kwargs)
    assert not (tmp_path / "run/model.pt").exists()


def test_a_diverging_diffusion_model_stops_at_its_first_non_finite_loss(
    prepared: Path, tmp_path: Path
) -> None:
    with pytest.raises(DiaError, match=r"train_diffusion: loss = nan at step \d+ .*diffusion\.lr"):
        run_train_diffusion(
            data_dir=prepared / "data",
            out_dir=tmp_path / "d",
            state_dir=tmp_path / "s",
            preset="dia_code",
            layers=_layers(diffusion={"lr": 1e12}),
            resolution=16,
            ratio=1.0,
            seed=0,
            device="cpu",
        )
    assert not (tmp_path / "d/model.pt").exists()


def test_a_diffusion_model_with_non_finite_weights_is_refused_and_never_cached(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "model.pt"
    ckpt = torch.load(prepared / "diffusion/model.pt", weights_only=True)
    ckpt["model"] = {
        k: v * np.nan if v.is_floating_point() else v for k, v in ckpt["model"].items()
    }
    torch.save(ckpt, broken)
    common = dict(data_dir=prepared / "data", preset="dia_code", layers=LAYERS, resolution=16)
    with pytest.raises(DiaError, match=f"diffusion model {broken} has NaN or infinite online"):
        run_dissolve_cache(model_path=broken, dest=tmp_path / "cache.npz", device="cpu", **common)

    def nan_images(self: Dissolver, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, float("nan"))

    monkeypatch.setattr(Dissolver, "dissolve_small", nan_images)
    model = prepared / "diffusion/model.pt"
    with pytest.raises(DiaError, match=r"gave NaN or infinite images \(t = \d+\)"):
        run_dissolve_cache(model_path=model, dest=tmp_path / "cache.npz", device="cpu", **common)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_a_full_disk_is_a_named_error_and_leaves_nothing(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layers = _layers(contrastive={"method": "csi"})
    out = tmp_path / "run"
    real_save = torch.save

    def save_until_full(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if Path(f).name.startswith(".model.pt."):
            Path(f).write_bytes(b"x" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_full)
    with pytest.raises(DiaError, match=f"no space left on the device writing {out}/model.pt: "):
        run_train(**_train_kwargs(prepared, out, layers, None))
    assert not list(out.glob(f".*{TEMP_SUFFIX}")) and not (out / "model.pt").exists()


def test_non_finite_scores_are_refused_before_they_are_written(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layers = _layers(contrastive={"method": "csi"})
    out = tmp_path / "run"
    run_train(**_train_kwargs(prepared, out, layers, None))
    model = torch.load(out / "model.pt", weights_only=True)
    model["model"] = {k: v.float() * np.nan for k, v in model["model"].items()}
    torch.save(model, out / "model.pt")
    with pytest.raises(DiaError, match=r"scores of .*model\.pt are NaN or infinite"):
        run_score(
            data_dir=prepared / "data", run_dir=out, preset="dia_code", layers=layers, device="cpu"
        )
    assert not (out / "scores.csv").exists()


def test_a_writer_killed_mid_write_leaves_a_temp_that_the_next_write_removes(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "results" / "manifest.csv"
    code = (
        "import os, signal, sys; from pathlib import Path; from dia.io import atomic_path\n"
        "with atomic_path(Path(sys.argv[1])) as tmp:\n"
        "    tmp.write_text('half')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code, str(dest)], env=env, check=False)
    left = list(dest.parent.glob(f".manifest.csv.*{TEMP_SUFFIX}"))
    assert len(left) == 1 and not dest.exists()
    with atomic_path(dest) as tmp:
        tmp.write_text("whole")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["manifest.csv"]

    deep = tmp_path / "results" / "deep"
    extracted = tmp_path / "results" / "raw" / "files"
    for folder in (deep, extracted):
        folder.mkdir(parents=True)
    (extracted / MARKER).write_text("archive stamp")
    killed, live, kept = (
        deep / f".cache.npz.0a1b2c3d{TEMP_SUFFIX}",
        deep / f".last.pt.4e5f6a7b{TEMP_SUFFIX}",
        extracted / f".image.png.00000000{TEMP_SUFFIX}",
    )
    for path in (killed, live, kept):
        path.write_text("half")
    hours_ago = time.time() - 7200
    for path in (killed, kept):
        os.utime(path, (hours_ago, hours_ago))
    mine = deep / ".my-notes.tmp"
    mine.write_text("not ours")
    assert sweep_temps(tmp_path / "results", skip_marked=MARKER) == [killed]
    assert mine.exists() and live.exists() and kept.exists() and not killed.exists()


def test_results_are_written_with_the_users_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "metrics.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o644


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_decode_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    code = (
        "import os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from dia.data.images import exit_with_parent\n"
        "pool = ProcessPoolExecutor(2, initializer=exit_with_parent)\n"
        "pool.submit(time.sleep, 0.2).result()\n"
        "print(*[p.pid for p in pool._processes.values()], flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True
    )
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    assert workers and all(_alive(pid) for pid in workers)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


class _Clock:
    """A clock that advances one second per training step."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _CountingTask:
    """A task whose step costs one second on the fake clock and can be killed at a step."""

    lr_key = "test.lr"

    def __init__(self, clock: _Clock, die_at: int | None = None) -> None:
        self.model = torch.nn.Linear(1, 1)
        self.rng = torch.Generator().manual_seed(0)
        self.clock, self.die_at, self.steps = clock, die_at, 0

    def train_step(self, index: torch.Tensor, epoch: int, batch: int) -> dict[str, float]:
        self.steps += 1
        if self.steps == self.die_at:
            raise KeyboardInterrupt
        self.clock.now += 1.0
        return {"loss": 1.0}

    def end_epoch(self) -> None:
        pass

    def lr(self) -> float:
        return 0.1

    def checkpoint(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "rng": self.rng.get_state()}

    def restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.rng.set_state(ckpt["rng"])


def test_an_epoch_interrupted_and_resumed_logs_the_time_it_really_took(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _Clock()
    monkeypatch.setattr("dia.training.time.perf_counter", clock)
    schedule = Schedule(epochs=2, checkpoint_every=2)
    loop = dict(n_images=8, batches=4, batch_size=2, name="test")
    with pytest.raises(KeyboardInterrupt):
        run_epochs(_CountingTask(clock, die_at=4), schedule, state_dir=tmp_path, **loop)
    state: TrainState = run_epochs(_CountingTask(clock), schedule, state_dir=tmp_path, **loop)
    # epoch 1: 2 s to its checkpoint, 2 s after the resume (the 1 s of work the kill lost after
    # that checkpoint is not counted); without the carried 2 s, it would log 2
    assert [row["seconds"] for row in state.log] == [4.0, 4.0]


class _NanAt(_CountingTask):
    """Losses left as tensors, as a GPU task leaves them; NaN from step ``bad`` on."""

    def __init__(self, clock: _Clock, bad: int) -> None:
        super().__init__(clock)
        self.bad = bad

    def train_step(self, index: torch.Tensor, epoch: int, batch: int) -> dict[str, Any]:
        super().train_step(index, epoch, batch)
        return {"loss": torch.tensor(float("nan") if self.steps >= self.bad else 1.0)}


def test_losses_are_read_in_windows_and_a_nan_is_named_at_its_own_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    real_read = training.read_losses

    def counted(pending: list[Any]) -> list[dict[str, float]]:
        reads.append(len(pending))
        return real_read(pending)

    monkeypatch.setattr(training, "read_losses", counted)
    loop = dict(n_images=120, batches=60, batch_size=2, name="test")
    run_epochs(_NanAt(_Clock(), bad=10**6), Schedule(1, 1000), state_dir=tmp_path / "a", **loop)
    assert reads == [READ_EVERY, READ_EVERY, 60 - 2 * READ_EVERY]  # not once per step

    with pytest.raises(DiaError, match=r"^test: loss = nan at epoch 1, step 7, "):
        run_epochs(_NanAt(_Clock(), bad=7), Schedule(1, 10), state_dir=tmp_path / "b", **loop)
    assert not (tmp_path / "b/last.pt").exists()  # read before the step-10 checkpoint
