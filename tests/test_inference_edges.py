"""Inference's thread settings: the band workers run on one intra-op thread each, and nothing else does."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_threads_started_after_a_parallel_upscale_keep_the_process_thread_count() -> None:
    """The band workers run on one intra-op thread each. Setting that (`torch.set_num_threads`)
    also set the count every thread started afterwards begins with: after the first upscale that
    used the workers, a web server's or a user's new thread ran everything on one core."""
    script = textwrap.dedent(
        """
        import threading
        import torch
        from srfeat.archs.generator import SRFeatGenerator
        from srfeat.inference import InferenceGenerator

        torch.set_num_threads(3)
        model = InferenceGenerator(SRFeatGenerator(num_features=8, num_blocks=2), algorithm="winograd")
        model.upsample_pixels = 16  # several upsampler bands: the workers run
        model(torch.rand(1, 3, 40, 40))
        seen = []
        started = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        started.start()
        started.join()
        from srfeat.ops.workers import run_parallel

        in_workers = []
        run_parallel(lambda item: in_workers.append(torch.get_num_threads()), [0, 1, 2])
        print(torch.get_num_threads(), seen[0], *sorted(in_workers))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # The caller and a thread it starts keep 3; each worker still runs on one.
    assert done.stdout.split() == ["3", "3", "1", "1", "1"], done.stdout
