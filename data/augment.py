"""Random distortions of whole training batches on the device, each image with its own draw from the
loader's seeded generator: affine (rotation, zoom, shear, translation) and Simard et al. (2003)'s elastic
distortions, composed into one sampling grid and applied with one `grid_sample` per batch; then left-right
mirrors and random erasing (a blanked rectangle, cutout), for clothing: a mirrored digit can change meaning.

torchvision.transforms.v2 draws one set of parameters per call, so per-image randomness would take a
Python loop over the batch (measured in bench/augment.py); F.affine_grid and grid_sample do the whole batch.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Augment:
    """The `augment` config group: random shifts (the loader takes them in its batch gather) and the ranges
    of the random distortions this class applies (zeros: off)."""

    max_shift: int = 0  # shifts of up to this many whole pixels, x and y
    degrees: float = 0.0  # rotation in [-degrees, degrees], counter-clockwise as the digit is seen
    scale: float = 0.0  # zoom in [1 - scale, 1 + scale]
    shear: float = 0.0  # shear angle in [-shear, shear] degrees, along x
    translate: float = 0.0  # translation in [-translate, translate] pixels, x and y apart
    alpha: float = 0.0  # elastic: displacement scale in pixels (0: no elastic distortion)
    sigma: float = 4.0  # elastic: standard deviation in pixels of the Gaussian smoothing the field
    flip: float = 0.0  # probability of a left-right mirror, per image
    erase: float = 0.0  # probability of blanking a rectangle, per image (random erasing, cutout)
    erase_size: int = 12  # the rectangle's height and width, each drawn in [1, erase_size] pixels

    @property
    def distorts(self) -> bool:
        """Whether there is anything to resample (shifts aside)."""
        return any((self.degrees, self.scale, self.shear, self.translate, self.alpha))

    @property
    def masks(self) -> bool:
        """Whether images are mirrored or erased."""
        return bool(self.flip or self.erase)

    def flip_and_erase(
        self, images: Tensor, generator: torch.Generator, draws: int | None = None, part: slice = slice(None)
    ) -> Tensor:
        """Mirror images (B, H, W) left-right with probability `flip` and blank (set to 0, the background) a
        rectangle with probability `erase`, its sides drawn in [1, erase_size] and its place anywhere inside the
        image; each image with its own draws (for `draws` images, `part` of them kept, as in `__call__`).
        Nothing is drawn for an option that is off, so the other draws stay as they were without it."""
        n, (height, width), device = draws or len(images), images.shape[-2:], images.device
        if self.flip:
            mirrored = (torch.rand(n, generator=generator, device=device) < self.flip)[part]
            images = torch.where(mirrored[:, None, None], images.flip(-1), images)
        if self.erase:
            u = torch.rand(n, 5, generator=generator, device=device)[part]
            sides = 1 + (u[:, 1:3] * self.erase_size).long().clamp(max=self.erase_size - 1)  # height, width
            top = (u[:, 3] * (height - sides[:, 0] + 1)).long()
            left = (u[:, 4] * (width - sides[:, 1] + 1)).long()
            rows = torch.arange(height, device=device)[None, :, None] - top[:, None, None]
            cols = torch.arange(width, device=device)[None, None, :] - left[:, None, None]
            inside = (
                (rows >= 0)
                & (rows < sides[:, 0, None, None])
                & (cols >= 0)
                & (cols < sides[:, 1, None, None])
            )
            images = images.masked_fill(inside & (u[:, 0] < self.erase)[:, None, None], 0)
        return images

    def __call__(
        self, images: Tensor, generator: torch.Generator, draws: int | None = None, part: slice = slice(None)
    ) -> Tensor:
        """Distort float images (B, 1, H, W) whose background is 0; returns a new tensor of the same shape.
        `draws`, `part`: draw for `draws` images and distort with the draws of `part` of them (one rank's
        part of a batch)."""
        shape = torch.Size([draws or len(images), *images.shape[1:]])
        grid = F.affine_grid(self.thetas(shape, generator)[part], list(images.shape), align_corners=False)
        if self.alpha:
            grid = grid + self.displacements(shape, generator)[part]
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def thetas(self, shape: torch.Size, generator: torch.Generator) -> Tensor:
        """Per-image (B, 2, 3) sampling matrices for images of `shape` (B, C, H, W): for each output
        position, where to read in the input."""
        batch, _, height, width = shape
        device = generator.device
        u = torch.rand(batch, 5, generator=generator, device=device) * 2 - 1  # uniform in [-1, 1)
        angle, shear = torch.deg2rad(self.degrees * u[:, 0]), torch.deg2rad(self.shear * u[:, 2])
        zoom = 1 + self.scale * u[:, 1]
        cos, sin = torch.cos(angle), torch.sin(angle)
        # The forward map of the content in grid coordinates (x right, y down, [-1, 1]): zoom, shear along x,
        # then rotate counter-clockwise as seen; the grid needs its inverse.
        rotation = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)
        shearing = torch.eye(2, device=device).repeat(batch, 1, 1)
        shearing[:, 0, 1] = torch.tan(shear)
        inverse = torch.linalg.inv(zoom[:, None, None] * rotation @ shearing)
        shift = self.translate * u[:, 3:] * torch.tensor([2 / width, 2 / height], device=device)  # grid units
        return torch.cat([inverse, -(inverse @ shift[:, :, None])], dim=2)

    def displacements(self, shape: torch.Size, generator: torch.Generator) -> Tensor:
        """A random displacement field per image, (B, H, W, 2) in grid units: uniform in [-1, 1) per pixel,
        smoothed by a Gaussian of `sigma` pixels, times `alpha` pixels (Simard et al. 2003, section 2)."""
        batch, _, height, width = shape
        device = generator.device
        field = torch.rand(batch, 2, height, width, generator=generator, device=device) * 2 - 1
        field = gaussian_blur(field, self.sigma) * self.alpha  # pixels
        return field.permute(0, 2, 3, 1) * torch.tensor([2 / width, 2 / height], device=device)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Smooth each channel of x (..., H, W) with a normalised Gaussian of `sigma` pixels (cut at 3 sigma),
    zero padding.

    As two products with banded (H, H) and (W, W) matrices: 14x faster here than two depthwise 1-D
    convolutions, which the CPU runs one channel at a time; written out rather than taken from torchvision,
    whose import costs every run 1.5 s."""
    radius = max(1, math.ceil(3 * sigma))
    weight = torch.exp(
        -(torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device) ** 2) / (2 * sigma**2)
    )

    def band(n: int) -> Tensor:  # (n, n): entry (i, j) weighs input j for output i
        i = torch.arange(n, device=x.device)
        offset = i[None, :] - i[:, None]
        inside = offset.abs() <= radius
        return torch.where(inside, weight[(offset + radius).clamp(0, 2 * radius)], 0.0) / weight.sum()

    return band(x.shape[-2]) @ x @ band(x.shape[-1]).T
