"""Model surgery: turn the linear layers of a model (HF transformers, PEFT LoRA, plain torch)
into :class:`~optforge.nn.WTACRSLinear` layers in place, and back.

* :func:`convert_linear` replaces the ``nn.Linear`` layers whose names match ``include`` (default:
  the paper's "level 2" set, :data:`DEFAULT_TARGETS`). Parameters are shared, not copied, so
  optimizers, checkpoints and ``state_dict`` keys keep working. All layers converted by one
  call share one :class:`~optforge.nn.wta_crs.SampleShare`, so layers that read the same input
  tensor (q/k/v, gate/up) store one sample of it.
* With PEFT LoRA the base weights are frozen and the trainable ``lora_A`` matrices read the
  layer input: a ``lora_A`` is converted when its LoRA layer's name matches (the paper's
  "LoRA + WTA-CRS": sample the input saved for ``A``'s gradient).
* :func:`convert_model` is the one call for a whole model: every trainable linear of the
  attention and MLP blocks (:data:`ALL_TARGETS`) plus ``nn.ReLU`` → :class:`~optforge.nn.MaskedReLU`
  (1-bit masks, where the activation is a ReLU); with ``recompute=True`` also the SwiGLU MLPs and
  RMSNorms of Llama-style blocks by versions that recompute their elementwise tensors in the
  backward pass (:mod:`optforge.nn.wta_crs.recompute`).

* Re-applying a saved conversion: every call records what it converted (the resolved layer
  names and the options) as a :class:`ConversionSpec` on the model, and, for a Hugging Face
  model, in ``model.config.wta_crs``, so ``save_pretrained`` writes it to ``config.json``. The
  weights are plain ``nn.Linear`` weights (same ``state_dict`` keys), so after
  ``from_pretrained`` the model is unconverted; :func:`apply_conversion` (or
  ``convert_linear(model, spec=...)``) converts the same layers the same way in one call.

Activation checkpointing composes: checkpoint a block (``torch.utils.checkpoint`` non-reentrant,
or HF ``gradient_checkpointing_enable``) and the converted layers inside sample during the
recomputation; with the default RNG the recomputation replays the same rows.

Example:
    >>> import torch
    >>> from optforge.nn import convert_linear, revert_linear
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    >>> convert_linear(model, 0.3, include=None)  # every nn.Linear
    ['0', '2']
    >>> revert_linear(model)
    ['0', '2']
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from optforge._core import check_in_range
from optforge.nn.activations import MaskedReLU
from optforge.nn.wta_crs.layer import (
    SampleShare,
    WTACRSLinear,
    check_layer_config,
)
from optforge.nn.wta_crs.recompute import recomputable, replacement

__all__ = [
    "ALL_TARGETS",
    "DEFAULT_TARGETS",
    "ConversionSpec",
    "ConversionStep",
    "apply_conversion",
    "conversion_spec",
    "convert_linear",
    "convert_model",
    "revert_linear",
]

#: Layer-name patterns replaced by default, the paper's "level 2" set: attention output and
#: feed-forward projections (not q/k/v). Llama/Mistral/Qwen, T5, BERT, OPT/BART/Whisper naming.
DEFAULT_TARGETS: tuple[str, ...] = (
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "*.SelfAttention.o",
    "*.EncDecAttention.o",
    "wi",
    "wi_0",
    "wi_1",
    "wo",
    "*.attention.output.dense",
    "*.intermediate.dense",
    "*.output.dense",
    "out_proj",
    "fc1",
    "fc2",
)

#: Every linear of the attention and MLP blocks: :data:`DEFAULT_TARGETS` plus the q/k/v
#: projections (Llama ``q_proj``…, T5 ``q``/``k``/``v``, BERT ``query``/``key``/``value``,
#: GPT-NeoX ``query_key_value``/``dense*``). Siblings reading one input share one sample.
ALL_TARGETS: tuple[str, ...] = (
    *DEFAULT_TARGETS,
    "q_proj",
    "k_proj",
    "v_proj",
    "*.SelfAttention.[qkv]",
    "*.EncDecAttention.[qkv]",
    "*.attention.self.query",
    "*.attention.self.key",
    "*.attention.self.value",
    "*.attention.query_key_value",
    "*.attention.dense",
    "*.mlp.dense_h_to_4h",
    "*.mlp.dense_4h_to_h",
)

Selector = Sequence[str] | Callable[[str, nn.Module], bool] | None

_DEFAULT_EXCLUDE: tuple[str, ...] = ("lm_head",)
#: Options recorded in a spec (plain values); the others are objects given again at re-apply.
_RECORDED = ("min_k", "method", "det_ratio")
_RUNTIME = ("generator", "grad_norm_cache")
#: Key of the recorded conversion in a Hugging Face ``model.config``.
CONFIG_KEY = "wta_crs"
_FORMAT = "optforge.nn.wta_crs/1"
_SPEC_ATTR = "_wta_crs_spec"

_LORA_A = ".lora_A."


def _base_name(name: str) -> str:
    """``x.q_proj`` for PEFT's ``x.q_proj.lora_A.default``; the name itself otherwise."""
    head, sep, _ = name.rpartition(_LORA_A)
    return head if sep else name


def _check_selector(name: str, selector: object) -> Selector:
    """``None``, a pattern string, a non-empty sequence of pattern strings, or a callable."""
    if selector is None or callable(selector):
        return selector  # type: ignore[return-value]
    if isinstance(selector, str):
        return (selector,)
    if isinstance(selector, Sequence | set | frozenset):
        patterns = tuple(selector)
        bad = [p for p in patterns if not isinstance(p, str)]
        if bad:
            raise TypeError(
                f"{name} must hold name patterns (str), got {type(bad[0]).__name__} {bad[0]!r}"
            )
        return patterns
    raise TypeError(
        f"{name} must be None, a pattern string, a sequence of patterns or a predicate "
        f"(name, module) -> bool, got {type(selector).__name__}"
    )


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def _matches(name: str, module: nn.Module, selector: Selector, default: bool) -> bool:
    if selector is None:
        return default
    if callable(selector):
        return bool(selector(name, module))
    if isinstance(selector, str):
        selector = (selector,)
    names = {name, _base_name(name)}
    return any(
        fnmatch.fnmatchcase(n, pat) or fnmatch.fnmatchcase(n.rsplit(".", 1)[-1], pat)
        for n in names
        for pat in selector
    )


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


@dataclass(frozen=True)
class ConversionStep:
    """One conversion call: which layers, at which ratio, with which options.

    Attributes:
        ratio: Fraction of rows kept.
        layers: Names of the ``nn.Linear`` layers converted (resolved, not patterns).
        relus: Names of the ``nn.ReLU`` modules turned into 1-bit :class:`MaskedReLU`.
        share_inputs: One :class:`SampleShare` for the step's layers.
        options: Recorded :class:`WTACRSLinear` options (``min_k``, ``method``, ``det_ratio``,
            and ``generator`` when it was an int seed).
        runtime: Options that were objects (a ``GradNormCache``, a ``torch.Generator``): not
            recorded; give them again to :func:`apply_conversion`.
        recomputed: Names of the SwiGLU MLPs / RMSNorms replaced by their recomputing versions
            (``convert_model(recompute=True)``).
    """

    ratio: float
    layers: tuple[str, ...]
    relus: tuple[str, ...] = ()
    share_inputs: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)
    runtime: tuple[str, ...] = ()
    recomputed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``recomputed`` only when not empty)."""
        out = {
            "ratio": self.ratio,
            "layers": list(self.layers),
            "relus": list(self.relus),
            "share_inputs": self.share_inputs,
            "options": dict(self.options),
            "runtime": list(self.runtime),
        }
        if self.recomputed:
            out["recomputed"] = list(self.recomputed)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConversionStep:
        """The step :meth:`to_dict` wrote (validated)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a conversion step must be a mapping, got {type(data).__name__}")
        unknown = sorted(
            set(data)
            - {"ratio", "layers", "relus", "share_inputs", "options", "runtime", "recomputed"}
        )
        if unknown or "ratio" not in data or "layers" not in data:
            raise ValueError(
                f"a conversion step needs 'ratio' and 'layers' (and optionally 'relus', "
                f"'share_inputs', 'options', 'runtime', 'recomputed'), got keys {sorted(data)}"
            )
        options = dict(data.get("options", {}))
        bad = sorted(set(options) - {*_RECORDED, "generator"})
        if bad:
            raise ValueError(f"conversion step options: unknown {bad}")
        check_layer_config({"ratio": data["ratio"], **options})
        runtime = tuple(data.get("runtime", ()))
        if set(runtime) - set(_RUNTIME):
            raise ValueError(f"conversion step runtime: unknown {sorted(set(runtime))}")
        return cls(
            ratio=float(data["ratio"]),
            layers=_names("layers", data["layers"]),
            relus=_names("relus", data.get("relus", ())),
            share_inputs=_check_bool("share_inputs", data.get("share_inputs", True)),
            options=options,
            runtime=runtime,
            recomputed=_names("recomputed", data.get("recomputed", ())),
        )


def _names(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list of module names, got {type(value).__name__}")
    if not all(isinstance(v, str) and v for v in value):
        raise TypeError(f"{name} must be a list of non-empty module names, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class ConversionSpec:
    """The WTA-CRS conversions applied to a model, in order; serialisable and re-applicable.

    Recorded by :func:`convert_linear` / :func:`convert_model` (read it back with
    :func:`conversion_spec`; a Hugging Face model also keeps it in ``model.config.wta_crs``).
    Re-apply it to a freshly loaded copy of the model with :func:`apply_conversion`.

    Example:
        >>> from torch import nn
        >>> from optforge.nn import ConversionSpec, apply_conversion, conversion_spec, convert_model
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> convert_model(model, 0.3, include=None)
        ['0', '2', '1']
        >>> text = conversion_spec(model).to_json()
        >>> fresh = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> apply_conversion(fresh, ConversionSpec.from_json(text))
        ['0', '2', '1']
    """

    steps: tuple[ConversionStep, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (what ``model.config.wta_crs`` holds)."""
        return {"format": _FORMAT, "steps": [step.to_dict() for step in self.steps]}

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConversionSpec:
        """The spec :meth:`to_dict` wrote (validated; ``ValueError`` naming the problem)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"spec must be a mapping, got {type(data).__name__}")
        if data.get("format") != _FORMAT:
            raise ValueError(
                f"spec format must be {_FORMAT!r}, got {data.get('format')!r} (not a WTA-CRS "
                f"conversion spec, or one from a newer optforge)"
            )
        steps = data.get("steps")
        if not isinstance(steps, Sequence) or isinstance(steps, str):
            raise ValueError("spec 'steps' must be a list of conversion steps")
        return cls(tuple(ConversionStep.from_dict(step) for step in steps))

    @classmethod
    def from_json(cls, text: str) -> ConversionSpec:
        """The spec :meth:`to_json` wrote."""
        return cls.from_dict(json.loads(text))

    @property
    def layers(self) -> tuple[str, ...]:
        """Every converted linear, in order."""
        return tuple(name for step in self.steps for name in step.layers)


def _selection(
    model: nn.Module,
    include: Selector,
    exclude: Selector,
    trainable_only: bool,
) -> list[str]:
    return [
        name
        for name, module in model.named_modules()
        if type(module) is nn.Linear
        and (module.weight.requires_grad or not trainable_only)
        and _matches(name, module, include, True)
        and not _matches(name, module, exclude, False)
    ]


def _step_for(
    ratio: float,
    layers: list[str],
    relus: list[str],
    share_inputs: bool,
    config: dict,
    recomputed: Sequence[str] = (),
) -> ConversionStep:
    options = {k: config[k] for k in _RECORDED if k in config}
    runtime = []
    for key in _RUNTIME:
        value = config.get(key)
        if isinstance(value, int):  # an int seed is recorded, a Generator object is not
            options[key] = value
        elif value is not None:
            runtime.append(key)
    share = share_inputs or config.get("share") is not None
    return ConversionStep(
        ratio=float(ratio),
        layers=tuple(layers),
        relus=tuple(relus),
        share_inputs=share,
        options=options,
        runtime=tuple(runtime),
        recomputed=tuple(recomputed),
    )


def conversion_spec(model: nn.Module) -> ConversionSpec | None:
    """The :class:`ConversionSpec` recorded on ``model`` by the conversions applied to it.

    ``None`` if nothing was converted in this process. (A model loaded with ``from_pretrained``
    carries the saved spec in ``model.config.wta_crs`` until :func:`apply_conversion` applies it.)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return getattr(model, _SPEC_ATTR, None)


def _hf_config(model: nn.Module) -> Any:
    config = getattr(model, "config", None)
    return config if hasattr(config, "to_json_string") else None


def _record(model: nn.Module, spec: ConversionSpec | None) -> None:
    if spec is None or not spec.steps:
        model.__dict__.pop(_SPEC_ATTR, None)
    else:
        model.__dict__[_SPEC_ATTR] = spec
    config = _hf_config(model)
    if config is not None:
        if spec is None or not spec.steps:
            if hasattr(config, CONFIG_KEY):
                delattr(config, CONFIG_KEY)
        else:
            setattr(config, CONFIG_KEY, spec.to_dict())


def _append(model: nn.Module, step: ConversionStep) -> None:
    if step.layers or step.relus or step.recomputed:
        previous = conversion_spec(model) or ConversionSpec()
        _record(model, ConversionSpec((*previous.steps, step)))


def _replace_relus(model: nn.Module, names: Sequence[str]) -> None:
    for name in names:
        _set_submodule(model, name, MaskedReLU())


def _replace_recomputed(model: nn.Module, names: Sequence[str]) -> None:
    for name in names:
        _set_submodule(model, name, replacement(model.get_submodule(name)))


def _convert(
    model: nn.Module,
    ratio: float,
    names: Sequence[str],
    share_inputs: bool,
    config: dict[str, Any],
) -> None:
    if share_inputs and config.get("share") is None:
        config = {**config, "share": SampleShare()}
    for name in names:
        layer = WTACRSLinear.from_linear(model.get_submodule(name), ratio=ratio, **config)
        _set_submodule(model, name, layer)


def convert_linear(
    model: nn.Module,
    ratio: float | None = None,
    *,
    include: Selector = DEFAULT_TARGETS,
    exclude: Selector = _DEFAULT_EXCLUDE,
    share_inputs: bool = True,
    trainable_only: bool = False,
    spec: ConversionSpec | Mapping[str, Any] | None = None,
    **config: Any,
) -> list[str]:
    """Replace matching ``nn.Linear`` layers of ``model`` in place by :class:`WTACRSLinear`.

    Only layers whose type is exactly ``nn.Linear`` are replaced (subclasses such as the
    ``out_proj`` of ``nn.MultiheadAttention``, whose weight is read directly by its parent, are
    left alone). A PEFT ``lora_A`` layer matches through its LoRA layer's name. The conversion
    is recorded (:func:`conversion_spec`; ``model.config.wta_crs`` for Hugging Face models).
    Every argument is validated before the model is touched.

    Args:
        model: The model to modify in place.
        ratio: Fraction of rows kept, in ``(0, 1]`` (default 0.3).
        include: Name patterns (``fnmatch``, matched against the full module name and its last
            component), a predicate ``(name, module) -> bool``, or ``None`` for every linear.
            An empty pattern list is an error (``None`` means every linear).
        exclude: Patterns or predicate of layers never replaced (default ``lm_head``).
        share_inputs: Give the converted layers one :class:`~optforge.nn.wta_crs.SampleShare`
            (layers reading the same input tensor store one sample of it).
        trainable_only: Skip layers whose weight does not require grad.
        spec: Re-apply a recorded conversion instead (a :class:`ConversionSpec` or its dict):
            the same as :func:`apply_conversion`; then only ``generator`` / ``grad_norm_cache``
            may be given besides.
        **config: Further :class:`WTACRSLinear` options (``min_k``, ``method``, ``det_ratio``,
            ``generator``, ``grad_norm_cache``).

    Returns:
        The names of the replaced layers (a ``UserWarning`` when nothing matched).
    """
    if spec is not None:
        selection = {
            "ratio": ratio is not None,
            "include": include is not DEFAULT_TARGETS,
            "exclude": exclude is not _DEFAULT_EXCLUDE,
            "share_inputs": share_inputs is not True,
            "trainable_only": trainable_only is not False,
        }
        given = [k for k, v in selection.items() if v]
        given += sorted(set(config) - set(_RUNTIME))
        if given:
            raise TypeError(
                f"convert_linear(spec=...) re-applies a recorded conversion; do not also pass "
                f"{', '.join(given)}"
            )
        return apply_conversion(model, spec, **config)
    ratio = 0.3 if ratio is None else ratio
    names = _convert_checked(model, ratio, include, exclude, share_inputs, trainable_only, config)
    _append(model, _step_for(ratio, names, [], share_inputs, config))
    return names


def _convert_checked(
    model: nn.Module,
    ratio: float,
    include: Selector,
    exclude: Selector,
    share_inputs: bool,
    trainable_only: bool,
    config: dict[str, Any],
) -> list[str]:
    """Validate every argument, then convert the matching layers; their names."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, nn.Linear):
        raise ValueError("model is itself an nn.Linear; use WTACRSLinear.from_linear(model)")
    check_in_range("ratio", ratio, 0.0, 1.0, low_inclusive=False)
    include = _check_selector("include", include)
    exclude = _check_selector("exclude", exclude)
    if include is not None and not callable(include) and not include:
        raise ValueError(
            "include is empty, so nothing would be converted; pass None for every linear or "
            "name patterns such as ('q_proj', 'v_proj')"
        )
    _check_bool("share_inputs", share_inputs)
    _check_bool("trainable_only", trainable_only)
    if "ratio" in config:
        raise TypeError("ratio is given twice")
    check_layer_config({"ratio": ratio, **config})
    names = _selection(model, include, exclude, trainable_only)
    if not names:
        warnings.warn(
            f"convert_linear: no nn.Linear of {type(model).__name__} matched include={include!r}"
            f" (exclude={exclude!r}, trainable_only={trainable_only}); no linear was converted",
            UserWarning,
            stacklevel=3,
        )
    _convert(model, ratio, names, share_inputs, dict(config))
    return names


def convert_model(
    model: nn.Module,
    ratio: float = 0.3,
    *,
    include: Selector = ALL_TARGETS,
    exclude: Selector = _DEFAULT_EXCLUDE,
    masks: bool = True,
    share_inputs: bool = True,
    recompute: bool = False,
    **config: Any,
) -> list[str]:
    """One call for a whole model: every trainable attention/MLP linear, plus 1-bit ReLU masks.

    Converts the trainable ``nn.Linear`` layers matching ``include`` (default
    :data:`ALL_TARGETS`; with PEFT LoRA, the ``lora_A`` of the matching LoRA layers) with one
    shared sample per input, and, with ``masks=True``, every ``nn.ReLU`` to
    :class:`~optforge.nn.MaskedReLU`. Recorded like :func:`convert_linear` (one step).

    Args:
        model: The model to modify in place.
        ratio: Fraction of rows kept, in ``(0, 1]``.
        include: As :func:`convert_linear`.
        exclude: As :func:`convert_linear`.
        masks: Also replace ``nn.ReLU`` modules by 1-bit-mask ReLUs.
        share_inputs: As :func:`convert_linear`.
        recompute: Also replace the SwiGLU MLPs and RMSNorms of Llama-style blocks
            (:data:`~optforge.nn.wta_crs.recompute.SWIGLU_CLASSES`,
            :data:`~optforge.nn.wta_crs.recompute.RMSNORM_CLASSES`) by versions that keep
            ``gate``/``up`` (not ``silu(gate)``) and the norm's input (not its normalised
            output): exact, bitwise-equal gradients, one elementwise pass more per backward.
        **config: Further :class:`WTACRSLinear` options.

    Returns:
        The names of the replaced modules (linears first, then ReLUs, then recomputed modules).
    """
    _check_bool("masks", masks)
    _check_bool("recompute", recompute)
    names = _convert_checked(model, ratio, include, exclude, share_inputs, True, config)
    relus = [n for n, m in model.named_modules() if type(m) is nn.ReLU and n] if masks else []
    _replace_relus(model, relus)
    recomputed = [n for n, m in model.named_modules() if n and recomputable(m)] if recompute else []
    _replace_recomputed(model, recomputed)
    _append(model, _step_for(ratio, names, relus, share_inputs, config, recomputed))
    return names + relus + recomputed


def apply_conversion(
    model: nn.Module,
    spec: ConversionSpec | Mapping[str, Any] | str | None = None,
    **runtime: Any,
) -> list[str]:
    """Re-apply a recorded conversion to a model in one call (e.g. after ``from_pretrained``).

    Converts exactly the layers the spec names, at the recorded ratio and options, with one
    shared sample per step as recorded; checks every named module (present, a plain
    ``nn.Linear`` / ``nn.ReLU``) before changing anything.

    Args:
        model: The unconverted model (same module names as the converted one).
        spec: A :class:`ConversionSpec`, its dict or its JSON; ``None`` reads the one a
            Hugging Face model's config carries (``model.config.wta_crs``, written by
            ``save_pretrained`` of a converted model).
        **runtime: ``grad_norm_cache`` / ``generator`` objects, which a spec cannot record
            (a ``UserWarning`` names those a step used and that are not given again).

    Returns:
        The names of the replaced modules, in the order of the steps.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    spec = _resolve_spec(model, spec)
    extra = sorted(set(runtime) - set(_RUNTIME))
    if extra:
        raise TypeError(
            f"apply_conversion takes only {', '.join(_RUNTIME)} besides the spec, got "
            f"{', '.join(extra)} (the rest is recorded in the spec)"
        )
    modules = dict(model.named_modules())
    for step in spec.steps:
        for kind, names, cls in (("linear", step.layers, nn.Linear), ("ReLU", step.relus, nn.ReLU)):
            for name in names:
                module = modules.get(name)
                if module is None:
                    raise ValueError(
                        f"spec names layer {name!r}, which {type(model).__name__} does not have "
                        f"(a different architecture or naming?)"
                    )
                if type(module) is not cls:
                    done = (
                        " (already converted?)"
                        if isinstance(module, WTACRSLinear | MaskedReLU)
                        else ""
                    )
                    raise ValueError(
                        f"spec names {name!r} as a plain {kind}, but it is a "
                        f"{type(module).__name__}{done}"
                    )
        for name in step.recomputed:
            module = modules.get(name)
            if module is None or not recomputable(module):
                found = "missing" if module is None else f"a {type(module).__name__}"
                raise ValueError(
                    f"spec names {name!r} as a SwiGLU MLP / RMSNorm to recompute, but it is "
                    f"{found} in {type(model).__name__}"
                )
        check_layer_config({"ratio": step.ratio, **step.options, **runtime})
        missing = [k for k in step.runtime if k not in runtime]
        if missing:
            warnings.warn(
                f"the recorded conversion used {', '.join(missing)} objects, which a spec cannot "
                f"record; pass them to apply_conversion (converted without)",
                UserWarning,
                stacklevel=2,
            )
    out: list[str] = []
    for step in spec.steps:
        config = {**step.options, **{k: v for k, v in runtime.items() if k in step.runtime}}
        _convert(model, step.ratio, step.layers, step.share_inputs, config)
        _replace_relus(model, step.relus)
        _replace_recomputed(model, step.recomputed)
        out += [*step.layers, *step.relus, *step.recomputed]
    previous = conversion_spec(model) or ConversionSpec()
    _record(model, ConversionSpec((*previous.steps, *spec.steps)))
    return out


def _resolve_spec(model: nn.Module, spec: object) -> ConversionSpec:
    if spec is None:
        config = _hf_config(model)
        saved = getattr(config, CONFIG_KEY, None) if config is not None else None
        if saved is None:
            raise ValueError(
                "model carries no recorded WTA-CRS conversion (no model.config.wta_crs); pass "
                "spec=conversion_spec(converted_model) or the spec's dict/JSON"
            )
        if conversion_spec(model) is not None:
            raise ValueError("model is already converted (its recorded spec is applied)")
        return ConversionSpec.from_dict(saved)
    if isinstance(spec, ConversionSpec):
        return spec
    if isinstance(spec, str):
        return ConversionSpec.from_json(spec)
    if isinstance(spec, Mapping):
        return ConversionSpec.from_dict(spec)
    raise TypeError(
        f"spec must be a ConversionSpec, its dict, its JSON or None, got {type(spec).__name__}"
    )


def revert_linear(model: nn.Module) -> list[str]:
    """Turn every :class:`WTACRSLinear` of ``model`` back into an ``nn.Linear`` (shared params).

    The recorded spec keeps only its ReLU and recompute replacements (they are not reverted).

    Args:
        model: The model to modify in place.

    Returns:
        The names of the reverted layers.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    names = [n for n, m in model.named_modules() if isinstance(m, WTACRSLinear) and n]
    for name in names:
        _set_submodule(model, name, model.get_submodule(name).to_linear())
    spec = conversion_spec(model)
    if spec is not None:
        steps = tuple(
            dataclasses.replace(s, layers=()) for s in spec.steps if s.relus or s.recomputed
        )
        _record(model, ConversionSpec(steps))
    return names
