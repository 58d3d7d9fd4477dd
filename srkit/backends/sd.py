"""Stable Diffusion 2.x components through diffusers: VAE, UNet, ControlNet and the fixed prompt.

:class:`StableDiffusion` builds diffusers' ``AutoencoderKL``, ``UNet2DConditionModel`` and
(optionally) ``ControlNetModel`` from the published configs written in ``conf/backend/*.yaml``
(keys = the diffusers constructor arguments) and loads their weights from a diffusers folder
(``vae/``, ``unet/``, ``controlnet/`` with ``diffusion_pytorch_model.safetensors``), a hub id in the
local Hugging Face cache, or ``"synthetic"``. Every key and shape is checked against the config.

The methods that use SD (InvSR, DM-SR, CCSR) condition the UNet on one fixed text prompt. Its
embedding is computed once with the text encoder (``transformers.CLIPTextModel``) and cached in
memory and in ``SRKIT_HOME/prompt_embeds`` (keyed by the model folder and the prompt); the text
encoder is freed right after, so it never stays in memory.

Training the prior (what the mini zoo does, since SD itself cannot be downloaded here): :meth:`StableDiffusion.vae_losses`
is LDM's AutoencoderKL objective, :meth:`StableDiffusion.unet_losses` SD's denoising objective on the VAE's latents,
conditioned on the fixed prompt; :func:`latent_scaling_factor` sets a trained VAE's latent scale as LDM does.

VAE tiling (``SDVAE.decode_tiled``) uses :func:`srkit.tiling.tiled_network_apply`, not diffusers'
``enable_tiling``. A tiled decoder differs from the untiled one in two global operations: the
mid-block self-attention and every GroupNorm's statistics (per tile instead of per image; about
0.1 max abs with srkit-synthetic-v1 weights, so diffusers' tiling cannot meet 1e-2). Here the
latent-resolution part (``post_quant_conv``, ``conv_in``, mid block with its attention) runs on the
whole latent, which is 1/64 of the pixels; the up path runs block by block over tiles with a
halo of context, each GroupNorm with the statistics of the whole image (accumulated over the
tiles' cores before it is applied), so the result is the untiled decode up to float rounding
while the accelerator holds one tile's working memory (:func:`srkit.tiling.stagewise_tiled_apply`).
"""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, WeightsNotFoundError, import_optional
from ..tiling import tiled_network_apply
from ..types import Autoencoder
from ..weights import SYNTHETIC, cache_file, load_weights, resolve, synthetic_tensor

__all__ = [
    "DIFFUSERS_WEIGHTS", "SDVAE", "UNET_LOSS_WEIGHTS", "VAE_LOSS_WEIGHTS", "StableDiffusion", "build_component",
    "count_parameters", "encode_prompt", "latent_scaling_factor",
]

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
# LDM's LPIPSWithDiscriminator as SD's KL-f8 VAE was trained (autoencoder_kl_32x32x4.yaml: kl_weight 1e-6, logvar 0).
VAE_LOSS_WEIGHTS = {"l1": 1.0, "kl": 1.0e-6}
UNET_LOSS_WEIGHTS = {"mse": 1.0}
_CLASSES = {"vae": "AutoencoderKL", "unet": "UNet2DConditionModel", "controlnet": "ControlNetModel"}


def _diffusers_class(component: str) -> type[nn.Module]:
    import diffusers

    return getattr(diffusers, _CLASSES[component])


def build_component(component: str, config: Mapping[str, Any], *, device: str | torch.device | None = None) -> nn.Module:
    """``vae``/``unet``/``controlnet`` as the diffusers model of ``config`` (random init; ``device="meta"`` allocates nothing)."""
    if component not in _CLASSES:
        raise ConfigError(f"unknown SD component {component!r}; expected one of {', '.join(_CLASSES)}")
    cls = _diffusers_class(component)
    if type(config).__module__.startswith("omegaconf"):  # a Hydra-composed node: plain lists for diffusers' config
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(config, resolve=True)  # type: ignore[assignment]
    try:
        with torch.device(device or "cpu"):
            return cls(**dict(config))
    except TypeError as err:
        raise ConfigError(f"{component} config does not fit diffusers.{cls.__name__}: {err}") from None


def count_parameters(component: str, config: Mapping[str, Any]) -> int:
    """Parameter count of a component, built on the ``meta`` device (no memory is allocated)."""
    return sum(p.numel() for p in build_component(component, config, device="meta").parameters())


class SDVAE(Autoencoder):
    """diffusers' ``AutoencoderKL`` as an srkit autoencoder working on *scaled* latents.

    ``encode`` returns ``scaling_factor * z`` (the posterior mode, or a sample with ``sample=True``)
    and ``decode`` divides by it first, so samplers only ever see the diffusion model's latent space.
    Images are in [-1, 1].
    """

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae
        self.latent_channels = int(vae.config.latent_channels)
        self.downscale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.scaling_factor = float(vae.config.scaling_factor)

    def encode(self, x: Tensor, *, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        dist = self.vae.encode(x).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        return z * self.scaling_factor

    def decode(self, z: Tensor) -> Tensor:
        return self.vae.decode(z / self.scaling_factor).sample

    def decode_tiled(
        self, z: Tensor, *, tile: int = 64, overlap: int = 16, statistics: Literal["image", "tile"] = "image",
        store: torch.device | str | None = None, progress: bool = False,
    ) -> Tensor:
        """Decode ``z`` with the up path in tiles of ``tile`` latent pixels (see the module docstring).

        ``statistics="image"``: exact, block by block with image-wide GroupNorm statistics, the
        blocks' outputs kept on ``store``; ``"tile"``: independent tiles blended over ``overlap``
        latent pixels with per-tile statistics, as diffusers' tiling (:func:`srkit.tiling.tiled_network_apply`).
        """
        decoder = self.vae.decoder
        h = z / self.scaling_factor
        if self.vae.post_quant_conv is not None:
            h = self.vae.post_quant_conv(h)
        h = decoder.mid_block(decoder.conv_in(h))  # latent resolution: global attention, run whole
        stages: list[Callable[[Tensor], Tensor]] = []
        for block in decoder.up_blocks:  # UpDecoderBlock2D.forward without a time embedding
            stages += [lambda x, resnet=resnet: resnet(x, None) for resnet in block.resnets]
            stages += list(block.upsamplers or [])
        stages.append(lambda x: decoder.conv_out(decoder.conv_act(decoder.conv_norm_out(x))))
        return tiled_network_apply(
            stages, h, [*decoder.up_blocks, decoder.conv_norm_out], scale=self.downscale, tile=tile,
            overlap=overlap, statistics=statistics, store=store, progress=progress,
        )


class StableDiffusion(nn.Module):
    """An SD 2.x backend: ``vae`` (:class:`SDVAE`), ``unet``, optional ``controlnet``, fixed ``prompt``.

    ``weights``: ``None`` (the ``model_id`` snapshot in the local Hugging Face cache, or
    ``SRKIT_HOME/weights/<name>``), a diffusers folder, a hub id, or ``"synthetic"`` (srkit-synthetic-v1
    weights for every component and a synthetic prompt embedding; no text encoder is needed).
    ``controlnet_weights``: a diffusers ControlNet folder or file; ``None`` initialises the ControlNet
    from the UNet's matching weights (the ControlNet recipe, as CCSR's stage 1 does).
    """

    def __init__(
        self,
        model_id: str,
        vae: Mapping[str, Any],
        unet: Mapping[str, Any],
        controlnet: Mapping[str, Any] | None = None,
        prompt: str = "",
        max_prompt_length: int = 77,
        weights: str | None = None,
        controlnet_weights: str | None = None,
    ):
        super().__init__()
        self.model_id = model_id
        self.prompt = prompt
        self.max_prompt_length = max_prompt_length
        root = resolve(weights, hub_id=model_id, what=f"Stable Diffusion {model_id!r}")
        self.root = root
        self.vae = SDVAE(self._load("vae", vae, root))
        self.unet = self._load("unet", unet, root)
        self.controlnet: nn.Module | None = None
        if controlnet is not None:
            if controlnet_weights is not None:
                self.controlnet = self._load("controlnet", controlnet, resolve(controlnet_weights, what="ControlNet"))
            elif root == SYNTHETIC:
                self.controlnet = self._load("controlnet", controlnet, SYNTHETIC)
            else:
                self.controlnet = build_component("controlnet", controlnet)
                self.controlnet.load_state_dict(self.unet.state_dict(), strict=False)
        self._prompt_cache: dict[str, Tensor] = {}

    def _load(self, component: str, config: Mapping[str, Any], root: Path | str) -> nn.Module:
        # Every entry is overwritten (these models have no buffers), so skip diffusers' random init.
        model = build_component(component, config, device="meta").to_empty(device="cpu")
        spec = SYNTHETIC if root == SYNTHETIC else str(root)
        return load_weights(model, spec, filename=DIFFUSERS_WEIGHTS, subfolder=component, what=f"{self.model_id} {component}")

    @property
    def cross_attention_dim(self) -> int:
        return int(self.unet.config.cross_attention_dim)

    def vae_losses(self, image: Tensor, weights: Mapping[str, float] = VAE_LOSS_WEIGHTS) -> dict[str, Tensor]:
        """LDM's AutoencoderKL objective on ``image`` (B, 3, H, W) in [-1, 1] with its log-variance fixed at its
        initial 0 and without LPIPS (VGG16 cannot be downloaded here) and the discriminator (it starts after 50k
        steps): sum |x - D(z)| + kl_weight KL(q(z | x) || N(0, I)) per image, z a posterior sample; both divided by
        the pixel values per image, so ``l1`` reads as a mean absolute error (a constant factor: the same optimum)."""
        posterior = self.vae.vae.encode(image).latent_dist
        reconstruction = self.vae.vae.decode(posterior.sample()).sample
        values = image[0].numel()
        return {"l1": weights["l1"] * F.l1_loss(reconstruction, image),
                "kl": weights["kl"] * posterior.kl().mean() / values}

    def unet_losses(self, latents: Tensor, sampler: Any, weights: Mapping[str, float] = UNET_LOSS_WEIGHTS,
                    prompt: str | None = None) -> dict[str, Tensor]:
        """SD's denoising objective on scaled ``latents`` (B, 4, h, w) (LDM Eq. (15)): t ~ U{0, ..., T-1},
        x_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps (``sampler.q_sample``, SD's scaled-linear betas), and the MSE of
        the UNet's output, conditioned on the prompt's embedding (default: the fixed prompt), against its target
        for ``sampler.prediction_type``: eps, v = sqrt(abar_t) eps - sqrt(1 - abar_t) z, or z."""
        t = torch.randint(0, sampler.num_train_timesteps, (latents.shape[0],), device=latents.device)
        noise = torch.randn_like(latents)
        x_t = sampler.q_sample(latents, t, noise)
        context = self.prompt_embedding(prompt).expand(latents.shape[0], -1, -1)
        output = self.unet(x_t, t, encoder_hidden_states=context).sample
        abar = sampler.alpha_bar(t, latents)
        target = {"epsilon": noise, "v_prediction": abar.sqrt() * noise - (1 - abar).sqrt() * latents,
                  "sample": latents}[sampler.prediction_type]
        return {"mse": weights["mse"] * F.mse_loss(output, target)}

    def _cache_path(self, prompt: str) -> Path:
        key = hashlib.sha256(f"{Path(self.root).resolve()}\0{self.max_prompt_length}\0{prompt}".encode()).hexdigest()[:32]
        return cache_file("prompt_embeds", f"{key}.safetensors")

    def prompt_embedding(self, prompt: str | None = None) -> Tensor:
        """The text encoder's last hidden state for ``prompt`` (default: the fixed prompt), (1, 77, dim).

        Computed once per model and prompt, then read from memory or ``SRKIT_HOME/prompt_embeds``.
        """
        prompt = self.prompt if prompt is None else prompt
        reference = next(self.unet.parameters())
        if prompt not in self._prompt_cache:
            if self.root == SYNTHETIC:
                shape = (1, self.max_prompt_length, self.cross_attention_dim)
                embedding = synthetic_tensor(f"prompt_embedding:{prompt}", shape, torch.float32)
            else:
                embedding = self._cached_or_encoded(prompt)
            self._prompt_cache[prompt] = embedding
        return self._prompt_cache[prompt].to(reference.device, reference.dtype)

    def _cached_or_encoded(self, prompt: str) -> Tensor:
        from safetensors.torch import load_file, save_file

        path = self._cache_path(prompt)
        if path.is_file():
            return load_file(str(path))["prompt_embedding"]
        embedding = encode_prompt(Path(self.root), prompt, max_length=self.max_prompt_length, cache=path)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({"prompt_embedding": embedding.contiguous()}, str(temp), metadata={"model": str(self.root), "prompt": prompt})
        os.replace(temp, path)
        return embedding


@torch.no_grad()
def latent_scaling_factor(vae: nn.Module, images: list[Tensor], *, seed: int = 0) -> float:
    """LDM's ``scale_by_std``, how SD's 0.18215 was set: 1 / the standard deviation of an ``AutoencoderKL``'s
    posterior samples of ``images`` (each (3, H, W) in [-1, 1], pooled), the factor that gives the diffusion model
    unit-variance latents. Seeded: the same images give the same factor."""
    generator = torch.Generator().manual_seed(seed)
    samples = [vae.encode(image[None]).latent_dist.sample(generator).flatten() for image in images]
    return float(1 / torch.cat(samples).std())


def encode_prompt(root: Path, prompt: str, *, max_length: int, cache: Path) -> Tensor:
    """Run the folder's tokenizer and text encoder once on ``prompt`` (float32, CPU), then free them."""
    folders = [root / "tokenizer", root / "text_encoder"]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise WeightsNotFoundError(
            f"the text encoder is needed once to embed the prompt {prompt!r}, but {', '.join(missing)} "
            f"is missing. Provide a diffusers folder with tokenizer/ and text_encoder/ (weights=<folder or cached hub id>), "
            f"or place the embedding (a safetensors file with the tensor 'prompt_embedding') at {cache}"
        )
    transformers = import_optional("transformers", extra="sd", needed_for=f"embedding the prompt {prompt!r} (SD text encoder)")
    CLIPTextModel, CLIPTokenizer = transformers.CLIPTextModel, transformers.CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(folders[0]), local_files_only=True)
    encoder = CLIPTextModel.from_pretrained(str(folders[1]), local_files_only=True).eval()
    ids = tokenizer(prompt, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        embedding = encoder(ids)[0].float()
    del encoder, tokenizer
    gc.collect()
    return embedding
