"""Camera encoder: crops, spatial softmax, GroupNorm trunks, shapes, gradients, tracing."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from diffpolicy.models.vision import (
    BACKBONES,
    ImageEncoder,
    SpatialSoftmax,
    crop_images,
    make_backbone,
)

torch.set_num_threads(1)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def frames(b: int, t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(B, To, H, W, 3) random uint8 frames."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, h, w, 3), generator=g, dtype=torch.uint8)


@pytest.fixture(scope="module")
def encoder() -> ImageEncoder:
    torch.manual_seed(0)
    return ImageEncoder(("top_image", "wrist.cam"), (24, 24), (20, 20), features=16, keypoints=8)


def test_output_shape_and_camera_order(encoder):
    images = {"top_image": frames(3, 2, 24, 24, 1), "wrist.cam": frames(3, 2, 24, 24, 2)}
    encoder.eval()
    with torch.no_grad():
        out = encoder(images)
        swapped = encoder({"top_image": images["wrist.cam"], "wrist.cam": images["top_image"]})
    assert encoder.out_dim == 32
    assert out.shape == (3, 2, 32) and out.dtype == torch.float32
    # each camera owns its half of the features: swapping the images changes both halves
    assert not torch.allclose(out[..., :16], swapped[..., :16])
    assert not torch.allclose(out[..., 16:], swapped[..., 16:])


def test_resnet18_forward_shape():
    torch.manual_seed(0)
    enc = ImageEncoder(("cam",), (36, 36), (32, 32), backbone="resnet18", features=8).eval()
    with torch.no_grad():
        out = enc({"cam": frames(2, 1, 36, 36)})
    assert out.shape == (2, 1, 8)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", BACKBONES)
def test_trunks_use_groupnorm_only(name):
    trunk, channels = make_backbone(name)
    norms = [m for m in trunk.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    groupnorms = [m for m in trunk.modules() if isinstance(m, nn.GroupNorm)]
    assert norms == []
    assert len(groupnorms) >= 3
    assert all(m.num_groups == m.num_channels // 16 for m in groupnorms)
    with torch.no_grad():
        assert trunk(torch.zeros(1, 3, 32, 32)).shape[1] == channels


def test_resnet18_param_count_matches_torchvision_without_fc():
    with torch.device("meta"):
        trunk, channels = make_backbone("resnet18")
    assert channels == 512
    assert n_params(trunk) == 11_176_512
    assert sum(isinstance(m, nn.GroupNorm) for m in trunk.modules()) == 20  # 1 + 8 * 2 + 3


def test_unknown_backbone_and_bad_arguments():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        make_backbone("vgg")
    with pytest.raises(ValueError, match="unknown backbone"):
        ImageEncoder(("cam",), (24, 24), (20, 20), backbone="vgg")
    with pytest.raises(ValueError, match="crop_hw=.*image_hw"):
        ImageEncoder(("cam",), (24, 24), (28, 20))
    with pytest.raises(ValueError, match="at least one camera"):
        ImageEncoder((), (24, 24), (20, 20))


def test_wrong_image_shape_names_the_camera(encoder):
    images = {"top_image": frames(1, 2, 24, 24), "wrist.cam": frames(1, 2, 20, 24)}
    msg = r"camera 'wrist.cam': image of shape \(20, 24, 3\), the encoder expects \(24, 24, 3\)"
    with pytest.raises(ValueError, match=msg):
        encoder(images)
    with pytest.raises(ValueError, match="camera 'top_image'"):
        encoder({"top_image": frames(1, 2, 24, 24)[..., :1], "wrist.cam": images["top_image"]})


def test_spatial_softmax_finds_a_hot_spot():
    ss = SpatialSoftmax(in_channels=1, height=9, width=13, keypoints=1)
    with torch.no_grad():
        ss.conv.weight.fill_(1.0)
        ss.conv.bias.zero_()
    feat = torch.zeros(2, 1, 9, 13)
    feat[0, 0, 2, 10] = 30.0  # row 2 of 9 -> y = -0.5, column 10 of 13 -> x = 2/3
    feat[1, 0, 8, 0] = 30.0  # bottom-left corner -> (x, y) = (-1, 1)
    xy = ss(feat)
    assert xy.shape == (2, 2)
    assert torch.allclose(xy[0], torch.tensor([10 / 12 * 2 - 1, -0.5]), atol=1e-3)
    assert torch.allclose(xy[1], torch.tensor([-1.0, 1.0]), atol=1e-3)
    # a flat map puts every keypoint at the centre
    assert torch.allclose(ss(torch.zeros(1, 1, 9, 13)), torch.zeros(1, 2), atol=1e-6)


def test_spatial_softmax_coordinates_in_range():
    torch.manual_seed(0)
    ss = SpatialSoftmax(in_channels=4, height=5, width=7, keypoints=6)
    xy = ss(10 * torch.randn(8, 4, 5, 7))
    assert xy.shape == (8, 12)
    assert xy.abs().max() <= 1.0
    assert xy.std() > 0.1  # not collapsed to the centre


def test_centre_crop_is_exact():
    x = torch.arange(2 * 3 * 7 * 8, dtype=torch.float32).reshape(2, 3, 7, 8)
    out = crop_images(x, (4, 5), random=False)
    assert torch.equal(out, x[:, :, 1:5, 1:6])  # offsets (7 - 4) // 2, (8 - 5) // 2


def test_random_crop_varies_and_is_reproducible():
    n = 16
    # pixel value = 100 * row + column, so a crop's top-left pixel reveals its offset
    grid = 100 * torch.arange(10.0)[:, None] + torch.arange(12.0)[None, :]
    x = grid.expand(n, 2, 10, 12).clone()
    a = crop_images(x, (6, 5), random=True, generator=torch.Generator().manual_seed(3))
    b = crop_images(x, (6, 5), random=True, generator=torch.Generator().manual_seed(3))
    c = crop_images(x, (6, 5), random=True, generator=torch.Generator().manual_seed(4))
    assert a.shape == (n, 2, 6, 5)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    top, left = a[:, 0, 0, 0] // 100, a[:, 0, 0, 0] % 100
    assert len(set(zip(top.tolist(), left.tolist()))) > 1  # offsets differ across samples
    assert top.max() <= 4 and left.max() <= 7
    for i in range(n):  # each crop is a contiguous window at its own offset
        t, l_ = int(top[i]), int(left[i])
        assert torch.equal(a[i], x[i, :, t : t + 6, l_ : l_ + 5])


def test_eval_is_deterministic_and_train_crops_randomly(encoder):
    images = {"top_image": frames(2, 2, 24, 24, 3), "wrist.cam": frames(2, 2, 24, 24, 4)}
    with torch.no_grad():
        encoder.eval()
        e1, e2 = encoder(images), encoder(images)
        floats = encoder({k: v.float() for k, v in images.items()})
        encoder.train()
        torch.manual_seed(0)
        t1, t2 = encoder(images), encoder(images)
        encoder.eval()
    assert torch.equal(e1, e2)
    assert torch.allclose(e1, floats, atol=1e-6)  # uint8 and float in [0, 255] agree
    assert not torch.allclose(t1, t2)


def test_gradients_reach_the_first_conv():
    torch.manual_seed(0)
    enc = ImageEncoder(("a", "b"), (24, 24), (20, 20), features=8, keypoints=4).train()
    out = enc({"a": frames(2, 2, 24, 24, 5), "b": frames(2, 2, 24, 24, 6)})
    (out**2).sum().backward()
    for key in ("a", "b"):
        first = enc.trunks[key][0]
        assert isinstance(first, nn.Conv2d)
        assert first.weight.grad is not None
        assert first.weight.grad.abs().sum() > 0
        assert torch.isfinite(first.weight.grad).all()


def test_trace_matches_eager(encoder):
    encoder.eval()
    images = {"top_image": frames(2, 2, 24, 24, 7), "wrist.cam": frames(2, 2, 24, 24, 8)}
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(encoder, (images,))
        other = {"top_image": frames(2, 2, 24, 24, 9), "wrist.cam": frames(2, 2, 24, 24, 10)}
        for imgs in (images, other):
            assert torch.allclose(traced(imgs), encoder(imgs), atol=1e-5)
    # no data-dependent Python control flow in the encoder's own eval path
    ours = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    assert [str(w.message) for w in ours if w.filename.endswith("vision.py")] == []
