"""Input shapes of a model: its ONNX input, the TensorRT optimisation profile from its card, and the batch limit.

Card keys read here (all optional):
  card["tensorrt"]["profile"] = {"min": [...], "opt": [...], "max": [...]}   shapes of the (single) input
  card["tensorrt"]["precision"] = "fp32"                                     force FP32 for this model
  card["max_batch"] = 64                                                     largest first-axis chunk per call
Without a profile, one is derived from the ONNX input: a dynamic batch axis spans 1..max_batch, a dynamic depth
axis (5-D input, axis 2) spans 1..32, dynamic height/width span 32..512; static axes are kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_BATCH = 32
DEFAULT_DEPTH = (1, 12, 32)
DEFAULT_SPATIAL = (32, 256, 512)


@dataclass(frozen=True)
class InputSpec:
    """The model's first input: name and dims (int when static, None when dynamic)."""

    name: str
    dims: tuple[int | None, ...]

    @property
    def rank(self) -> int:
        return len(self.dims)


@dataclass(frozen=True)
class Profile:
    """A TensorRT optimisation profile for the single input: every shape in [min, max] is accepted."""

    input_name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self):
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise ValueError(f"profile for {self.input_name!r}: min/opt/max have different ranks")
        for low, mid, high in zip(self.min, self.opt, self.max):
            if not (1 <= low <= mid <= high):
                raise ValueError(
                    f"profile for {self.input_name!r}: need 1 <= min <= opt <= max per axis, "
                    f"got min {list(self.min)} opt {list(self.opt)} max {list(self.max)}"
                )

    def accepts(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.min) and all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))

    def as_dict(self) -> dict:
        return {"input": self.input_name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def onnx_input_spec(onnx_path: Path) -> InputSpec:
    """Read the first input's name and dims through ONNX Runtime (no `onnx` package needed on the node)."""
    import onnxruntime  # lazy: heavy (~0.5 s), and only a session needs it

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    dims = tuple(d if isinstance(d, int) and d > 0 else None for d in first.shape)
    return InputSpec(first.name, dims)


def _card_tensorrt(card: dict) -> dict:
    section = card.get("tensorrt", {})
    if not isinstance(section, dict):
        raise ValueError("card key 'tensorrt' must be an object")
    return section


def max_batch(card: dict) -> int:
    """Largest first-axis chunk fed to the model at once: card max_batch, else the profile's max batch, else 32."""
    if "max_batch" in card:
        value = card["max_batch"]
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"card max_batch must be a positive integer, got {value!r}")
        return value
    profile = _card_tensorrt(card).get("profile")
    if isinstance(profile, dict) and profile.get("max"):
        return int(profile["max"][0])
    return DEFAULT_MAX_BATCH


def profile_for(card: dict, spec: InputSpec) -> Profile:
    """The card's profile when it has one (checked against the ONNX input), else one derived from the input."""
    given = _card_tensorrt(card).get("profile")
    if given is not None:
        try:
            profile = Profile(spec.name, tuple(given["min"]), tuple(given["opt"]), tuple(given["max"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"card tensorrt.profile needs min, opt and max lists: {exc}") from None
        if len(profile.min) != spec.rank:
            raise ValueError(f"card tensorrt.profile has rank {len(profile.min)}, the ONNX input {spec.name!r} has {spec.rank}")
        for axis, dim in enumerate(spec.dims):
            if dim is not None and not (profile.min[axis] == profile.opt[axis] == profile.max[axis] == dim):
                raise ValueError(f"card tensorrt.profile axis {axis} must be {dim} (static in the ONNX input)")
        return profile
    batch = max_batch(card)
    low, mid, high = [], [], []
    for axis, dim in enumerate(spec.dims):
        if dim is not None:
            ranges = (dim, dim, dim)
        elif axis == 0:
            ranges = (1, max(1, batch // 2), batch)
        elif spec.rank == 5 and axis == 2:
            ranges = DEFAULT_DEPTH
        elif axis >= spec.rank - 2:
            ranges = DEFAULT_SPATIAL
        else:
            raise ValueError(f"input {spec.name!r} axis {axis} is dynamic and the card has no tensorrt.profile for it")
        low.append(ranges[0])
        mid.append(ranges[1])
        high.append(ranges[2])
    return Profile(spec.name, tuple(low), tuple(mid), tuple(high))


def precision_for(card: dict, requested: str) -> str:
    """The precision to build: the requested one unless the card forces fp32 for this model."""
    if requested not in ("fp16", "fp32"):
        raise ValueError(f"precision must be fp16 or fp32, got {requested!r}")
    forced = _card_tensorrt(card).get("precision")
    if forced is not None and forced not in ("fp16", "fp32"):
        raise ValueError(f"card tensorrt.precision must be fp16 or fp32, got {forced!r}")
    return "fp32" if forced == "fp32" else requested
