"""How fast a model computes, never what it computes: the attention kernel of the LLM, Liger's fused Llama kernels,
regional `torch.compile` of the decoder layers, and activation checkpointing of a fraction of them. Each option is a
config key (`speed.*`, `model.gradient_checkpointing`); tests/test_speed.py checks that each changes no loss or
gradient where it can run on CPU, and each that needs a GPU or a package is a one-line error where it cannot run.

Packed rows (several samples in a row, the position ids restarting at each) cost only their samples' attention with
`flex_attention`: transformers turns the restarts into a block-diagonal causal `BlockMask`, whose empty blocks
FlexAttention skips, where SDPA computes the whole masked square. `flash_attention_2` does the same with its
variable-length kernels where the flash-attn package is installed.
"""

from __future__ import annotations

import importlib.util
import math

import torch

from ..errors import ConfigError, unknown

ATTENTIONS = ("sdpa", "eager", "flex_attention", "flash_attention_2")


class SpeedOptionError(ConfigError):
    """A speed option this machine or installation cannot run; the message names the key."""


def decoder_layers(language_model) -> torch.nn.ModuleList | None:
    """The LLM's list of decoder layers (`layers` in Llama, Qwen2, Mistral, Gemma, Phi-3; `h` in GPT-2; else the
    list as long as the config's `num_hidden_layers`), or None."""
    for name in ("layers", "h"):
        found = getattr(language_model, name, None)
        if isinstance(found, torch.nn.ModuleList):
            return found
    n = getattr(getattr(language_model, "config", None), "num_hidden_layers", None)
    return next((m for m in language_model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n), None)


def _layers(model) -> torch.nn.ModuleList:
    layers = decoder_layers(model.model.language_model)
    if layers is None:
        raise SpeedOptionError(f"speed: the LLM {type(model.model.language_model).__name__} has no `layers` to act on")
    return layers


def check_speed_options(attention: str = "sdpa", liger_kernels: bool = False, compile_layers: str | None = None,
                        gradient_checkpointing: bool | float = False, training: bool = True,
                        device: str = "cpu") -> None:
    """Every option checked before a model is built: its value, and that this machine can run it."""
    if attention not in ATTENTIONS:
        raise SpeedOptionError(f"speed.attention: expected one of {', '.join(ATTENTIONS)}, got {attention!r}")
    if attention == "flex_attention" and training and device == "cpu":
        raise SpeedOptionError("speed.attention=flex_attention: FlexAttention has no backward pass on CPU (torch "
                               f"{torch.__version__}); train with speed.attention=sdpa here, or on a GPU")
    if attention == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise SpeedOptionError("speed.attention=flash_attention_2 needs the flash-attn package (`pip install "
                               "flash-attn`, CUDA only); flex_attention skips the masked blocks without it")
    if liger_kernels and (device == "cpu" or importlib.util.find_spec("liger_kernel") is None):
        raise SpeedOptionError("speed.liger_kernels=true needs a CUDA GPU and `pip install liger-kernel` (Triton "
                               f"kernels); here: device {device}, liger-kernel "
                               f"{'installed' if importlib.util.find_spec('liger_kernel') else 'not installed'}")
    if compile_layers is not None and not isinstance(compile_layers, str):
        raise SpeedOptionError(f"speed.compile_layers: expected null or a torch.compile backend name (inductor), "
                               f"got {compile_layers!r}")
    backends = [b for b in torch.compiler.list_backends(exclude_tags=()) if "TESTING" not in b]   # debug ones too:
    # aot_eager compiles graphs on CPU without a C compiler
    if compile_layers is not None and compile_layers not in backends:
        raise SpeedOptionError(unknown("speed.compile_layers", "torch.compile backend", compile_layers, backends))
    fraction = gradient_checkpointing
    if isinstance(fraction, bool) or fraction is None:
        return
    if not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise SpeedOptionError("model.gradient_checkpointing: expected true, false or the fraction of decoder layers "
                               f"to recompute (0 to 1), got {fraction!r}")


def apply_speed(model, attention: str = "sdpa", liger_kernels: bool = False, compile_layers: str | None = None,
                gradient_checkpointing: bool | float = False) -> dict:
    """The options applied to a built model (before it is wrapped for a stage); returns what was applied."""
    if model.config.text_config._attn_implementation != attention:   # the LLM as built already uses it otherwise
        model.model.language_model.set_attn_implementation(attention)
        model.config.text_config._attn_implementation = attention
    checkpointed = checkpoint_layers(model, gradient_checkpointing)
    if liger_kernels:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        # RMSNorm, SwiGLU and RoPE; the loss stays `MofConfig.loss_implementation`'s (`liger` there is Liger's)
        _apply_liger_kernel_to_instance(model=model.model.language_model, rope=True, rms_norm=True, swiglu=True,
                                        cross_entropy=False, fused_linear_cross_entropy=False)
    if compile_layers:
        for layer in _layers(model):   # regional: each layer compiled on its own, so one compiled graph serves them all
            layer.compile(backend=compile_layers)
    return {"attention": attention, "liger_kernels": bool(liger_kernels), "compile_layers": compile_layers,
            "checkpointed_layers": checkpointed}


def checkpoint_layers(model, gradient_checkpointing: bool | float) -> int:
    """Activation checkpointing of the first `ceil(fraction x layers)` decoder layers (`true`: all, `false`: none);
    returns how many. The rest keep their activations: memory is traded for recomputation layer by layer.
    (transformers' `every_n_layers` checkpoints one layer in n; a fraction such as 0.75 is finer, so the layers'
    own flags are set here.)"""
    fraction = 1.0 if gradient_checkpointing is True else 0.0 if not gradient_checkpointing else float(gradient_checkpointing)
    if fraction == 0:
        return 0
    model.activation_checkpointing_enable()
    model.config.use_cache = False
    if fraction == 1:   # every layer, whatever the decoder calls them
        return len(getattr(model.model.language_model, "layers", ()))
    layers = _layers(model)
    count = math.ceil(fraction * len(layers))
    for k, layer in enumerate(layers):
        layer.gradient_checkpointing = k < count
    return count
