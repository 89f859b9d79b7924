"""Camera observation encoder of a visuomotor diffusion policy (Diffusion Policy, Chi et al. 2023).

Per camera, every frame goes through its own trunk:

    images[cam] (B, To, H, W, 3) uint8 --x / 127.5 - 1, channels first--> (B*To, 3, H, W)
    crop:            random per frame while training, centre in eval    (B*To, 3, h, w)
    trunk:           CNN, GroupNorm in place of every BatchNorm          (B*To, C, H', W')
    spatial softmax: 1x1 conv -> K maps, softmax over pixels, E[x], E[y] (B*To, 2K)
    linear:          2K -> features                                      (B*To, features)
    concat cameras (in construction order)                               (B, To, n_cams * features)

Trunks:
    "resnet18": ResNet-18 trained from scratch (the reference recipe), global pool and fc removed,
                GroupNorm with channels // 16 groups; 512 channels at stride 32.
    "small":    conv 5x5 s2 (3 -> 32), conv 3x3 s1 (32 -> 32), conv 3x3 s2 (32 -> 64), each
                followed by GroupNorm and Mish; 64 channels at stride 4, ~13M MACs per 56x56 crop,
                for training on a CPU in minutes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

BACKBONES = ("small", "resnet18")


def crop_images(
    x: Tensor, crop_hw: tuple[int, int], random: bool, generator: torch.Generator | None = None
) -> Tensor:
    """(N, C, H, W) -> (N, C, h, w): per-sample random crop (training) or centre crop (evaluation).

    Random offsets are drawn from `generator` (the default generator when None), one (top, left)
    pair per sample, and applied in one gather per axis. The centre crop starts at
    ((H - h) // 2, (W - w) // 2).
    """
    h, w = crop_hw
    n, c, height, width = x.shape
    if not torch.jit.is_tracing() and (h > height or w > width):
        raise ValueError(f"crop {h}x{w} is larger than the image {height}x{width}")
    if not random:
        top, left = (height - h) // 2, (width - w) // 2
        return x[:, :, top : top + h, left : left + w]
    device = generator.device if generator is not None else x.device
    top = torch.randint(0, height - h + 1, (n,), generator=generator, device=device).to(x.device)
    left = torch.randint(0, width - w + 1, (n,), generator=generator, device=device).to(x.device)
    rows = top[:, None] + torch.arange(h, device=x.device)  # (N, h)
    cols = left[:, None] + torch.arange(w, device=x.device)  # (N, w)
    x = x.gather(2, rows[:, None, :, None].expand(n, c, h, width))  # (N, C, h, W)
    return x.gather(3, cols[:, None, None, :].expand(n, c, h, w))  # (N, C, h, w)


def _coordinates(n: int) -> Tensor:
    """(n,) pixel-centre coordinates spread over [-1, 1]; a single pixel sits at 0."""
    return torch.linspace(-1.0, 1.0, n) if n > 1 else torch.zeros(1)


class SpatialSoftmax(nn.Module):
    """Keypoints from a feature map: a 1x1 conv to K maps, a softmax over each map's pixels, and
    the expected (x, y) pixel coordinate under it, x along the width and y along the height, both
    in [-1, 1]. Output (N, 2K) ordered [x_0, y_0, x_1, y_1, ...]."""

    def __init__(self, in_channels: int, height: int, width: int, keypoints: int):
        super().__init__()
        if min(in_channels, height, width, keypoints) < 1:
            raise ValueError(
                f"SpatialSoftmax needs positive sizes, got in_channels={in_channels}, "
                f"height={height}, width={width}, keypoints={keypoints}"
            )
        self.height, self.width, self.keypoints = height, width, keypoints
        self.conv = nn.Conv2d(in_channels, keypoints, kernel_size=1)
        ys, xs = torch.meshgrid(_coordinates(height), _coordinates(width), indexing="ij")
        self.register_buffer("pos", torch.stack([xs.flatten(), ys.flatten()], -1), persistent=False)

    def forward(self, feat: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, 2K) expected (x, y) per keypoint."""
        maps = self.conv(feat).flatten(2)  # (N, K, H*W)
        attention = maps.softmax(dim=-1)  # (N, K, H*W)
        return (attention @ self.pos).flatten(1)  # (N, K, 2) -> (N, 2K)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(channels // 16, channels)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with GroupNorm, a 1x1 conv + norm shortcut when the
    shape changes. (N, c_in, H, W) -> (N, c_out, H / stride, W / stride)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = _norm(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), _norm(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + identity)


def resnet18_trunk(in_channels: int = 3) -> nn.Sequential:
    """ResNet-18 without global pool and fc, GroupNorm throughout: (N, 3, H, W) -> (N, 512,
    ~H/32, ~W/32). Convs use Kaiming-normal (fan_out) initialisation as in torchvision."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
        _norm(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    ]
    c_in = 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers.append(nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)))
        c_in = c_out
    trunk = nn.Sequential(*layers)
    for m in trunk.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return trunk


def small_trunk(in_channels: int = 3) -> nn.Sequential:
    """Three conv + GroupNorm + Mish layers: (N, 3, H, W) -> (N, 64, ~H/4, ~W/4)."""

    def block(c_in: int, c_out: int, k: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, k, stride, k // 2), _norm(c_out), nn.Mish()]

    return nn.Sequential(
        *block(in_channels, 32, 5, 2),
        *block(32, 32, 3, 1),
        *block(32, 64, 3, 2),
    )


def make_backbone(name: str, in_channels: int = 3) -> tuple[nn.Module, int]:
    """CNN trunk and its output channel count; name in BACKBONES (ValueError otherwise)."""
    if name == "small":
        return small_trunk(in_channels), 64
    elif name == "resnet18":
        return resnet18_trunk(in_channels), 512
    raise ValueError(f"unknown backbone {name!r}; choose one of {BACKBONES}")


def _module_key(camera: str) -> str:
    """A camera name as an nn.ModuleDict key (no '.')."""
    return camera.replace(".", "_")


class ImageEncoder(nn.Module):
    """One trunk + spatial softmax + linear per camera.

    forward(images: dict[str, Tensor]) with images[cam] (B, To, H, W, 3) uint8 (or float in
    [0, 255]) -> (B, To, n_cams * features) float32, cameras in the order given at construction.
    Converts to float in [-1, 1] (x / 127.5 - 1), channels-first, crops (random per frame while
    self.training, centre in eval), runs all B*To frames of a camera through that camera's trunk
    as one batch, spatial softmax, linear.
    """

    def __init__(
        self,
        cameras: tuple[str, ...],
        image_hw: tuple[int, int],
        crop_hw: tuple[int, int],
        backbone: str = "small",
        features: int = 64,
        keypoints: int = 32,
    ):
        super().__init__()
        cameras = tuple(cameras)
        if not cameras:
            raise ValueError("ImageEncoder needs at least one camera, got none")
        keys = [_module_key(c) for c in cameras]
        if len(set(keys)) != len(keys):
            raise ValueError(f"camera names must be distinct (after '.' -> '_'), got {cameras}")
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {BACKBONES}")
        (height, width), (h, w) = image_hw, crop_hw
        if min(h, w) < 1 or h > height or w > width:
            raise ValueError(f"crop_hw={tuple(crop_hw)} must fit inside image_hw={tuple(image_hw)}")
        if features < 1 or keypoints < 1:
            raise ValueError(f"features={features} and keypoints={keypoints} must be positive")
        self.cameras = cameras
        self.image_hw = (int(height), int(width))
        self.crop_hw = (int(h), int(w))
        self.features = features
        self.out_dim = len(cameras) * features
        self.trunks = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        for key in keys:
            trunk, channels = make_backbone(backbone)
            with torch.no_grad():
                _, _, fh, fw = trunk(torch.zeros(1, 3, h, w)).shape
            self.trunks[key] = trunk
            self.heads[key] = nn.Sequential(
                SpatialSoftmax(channels, fh, fw, keypoints), nn.Linear(2 * keypoints, features)
            )

    def forward(self, images: dict[str, Tensor]) -> Tensor:
        """images[cam] (B, To, H, W, 3) -> (B, To, n_cams * features).

        Shape checks are skipped while tracing: a trace fixes the shapes it was traced with."""
        expected = (*self.image_hw, 3)
        out = []
        for camera in self.cameras:
            if camera not in images:
                raise ValueError(f"camera {camera!r} is missing; got {sorted(images)}")
            x = images[camera]
            if x.dim() != 5:
                raise ValueError(
                    f"camera {camera!r}: input of shape {tuple(x.shape)}, the encoder expects "
                    f"(B, To, {expected[0]}, {expected[1]}, 3)"
                )
            if not torch.jit.is_tracing() and tuple(x.shape[2:]) != expected:
                raise ValueError(
                    f"camera {camera!r}: image of shape {tuple(x.shape[2:])}, the encoder "
                    f"expects {expected}"
                )
            b, t = x.shape[:2]
            x = x.flatten(0, 1).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B*To, 3, H, W)
            x = crop_images(x, self.crop_hw, random=self.training)  # (B*To, 3, h, w)
            key = _module_key(camera)
            f = self.heads[key](self.trunks[key](x))  # (B*To, features)
            out.append(f.reshape(b, t, self.features))
        return torch.cat(out, dim=-1)  # (B, To, n_cams * features)
