"""Kernels shared by training and inference, apart from the networks in `srfeat.archs`.

- `winograd`: 3x3 convolutions by Winograd's F(4x4, 3x3) for CPUs (training and inference);
- `workers`: the band workers that run a kernel's bands of work on single-threaded threads;
- `private_torch`: the private PyTorch calls srfeat makes for speed, each with a public fallback.
"""
