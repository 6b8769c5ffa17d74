"""Model sizes of SAM 2 and SAM 2.1 as plain, readable data.

Every number here is a fact of Meta's published configs (``sam2/configs``); nothing is computed
at import time. ``ModelConfig`` is frozen: derive a variant with ``dataclasses.replace``
(``replace(MODELS["sam2.1_hiera_tiny"], image_size=512)``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InputError, UnknownName

# Architecture constants shared by every published size.
D_MODEL = 256  # width of the neck, prompt encoder, mask decoder and memory attention
MEM_DIM = 64  # width of a spatial memory (memory encoder output)
BACKBONE_STRIDE = 16  # image pixels per cell of the lowest-resolution feature map used
NUM_MASKMEM = 7  # spatial memories attended to: 1 prompted + 6 most recent (SAM 2 default)
MAX_OBJ_PTRS = 16  # object pointers attended to
MAX_COND_FRAMES = 4  # prompted frames a tracker keeps per object (the project's default)
# Objects tracked at once by default: the node's ``max_objects``, and the object batch that
# ``sam2-engine build`` and ``python -m engine.export`` prepare TensorRT engines for, so that
# engines built ahead of time are the ones the node uses.
MAX_OBJECTS = 8


@dataclass(frozen=True)
class HieraConfig:
    """The Hiera trunk: a hierarchical ViT with windowed and global attention blocks."""

    embed_dim: int
    num_heads: int
    stages: tuple[int, ...]  # blocks per stage
    global_att_blocks: tuple[int, ...]  # indices (over all blocks) that attend globally
    window_spec: tuple[int, ...]  # window size per stage
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
    q_pool: int = 3  # number of stage transitions that pool the queries
    q_stride: tuple[int, int] = (2, 2)
    dim_mul: float = 2.0  # width multiplier at each stage transition
    head_mul: float = 2.0  # heads multiplier at each stage transition

    @property
    def channel_list(self) -> tuple[int, ...]:
        """Output widths of the four stages, lowest resolution first (the neck's order)."""
        dims = [int(self.embed_dim * self.dim_mul**i) for i in range(len(self.stages))]
        return tuple(reversed(dims))


@dataclass(frozen=True)
class ModelConfig:
    """One SAM 2 / SAM 2.1 model: architecture and the switches its published config sets."""

    name: str
    version: str  # "2" or "2.1"
    size: str  # tiny | small | base_plus | large
    checkpoint_name: str  # file name Meta publishes, e.g. "sam2.1_hiera_tiny.pt"
    hiera: HieraConfig
    image_size: int = 1024
    d_model: int = D_MODEL
    mem_dim: int = MEM_DIM
    num_maskmem: int = NUM_MASKMEM
    max_obj_ptrs: int = MAX_OBJ_PTRS
    memory_attention_layers: int = 4
    memory_attention_ffn_dim: int = 2048
    memory_encoder_fuser_layers: int = 2
    # Mask-decoder widths (two-way transformer MLP, its heads, the IoU head's hidden layer).
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    # SAM 2.1 additions: a learned memory embedding for absent objects and temporal position
    # encodings (projected) on object pointers. (2.1's pointer encodings are signed; a stream
    # only attends to past frames, where signed and unsigned agree.)
    no_obj_embed_spatial: bool = False
    add_tpos_enc_to_obj_ptrs: bool = False
    proj_tpos_enc_in_obj_ptrs: bool = False
    # Behaviour switches set identically by every published config. Those with one behaviour
    # in every config are not switches here but what the code does: the no-memory embedding
    # is added directly (directly_add_no_mem_embed), a mask prompt is the output without the
    # decoder (use_mask_input_as_output_without_sam), only past pointers are attended to
    # (only_obj_ptrs_in_the_past_for_eval).
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    multimask_output_in_sam: bool = True
    multimask_output_for_tracking: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    iou_prediction_use_sigmoid: bool = True
    pred_obj_scores: bool = True
    pred_obj_scores_mlp: bool = True
    fixed_no_obj_ptr: bool = True
    use_multimask_token_for_obj_ptr: bool = True
    use_mlp_for_obj_ptr_proj: bool = True
    # Mask-decoder extras the official video predictor enables.
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    rope_theta: float = 10000.0
    # Streaming policy, not in Meta's configs (None: every tracked frame joins its object's
    # memory, as in SAM 2). A number: a tracked frame joins only when the object is judged
    # present and the decoder's IoU estimate is at least this; the recent memories are then
    # the last admitted frames, in temporal slots by their order (see ``memory_bank``).
    memory_min_iou: float | None = None

    def __post_init__(self) -> None:
        if self.memory_min_iou is not None and not 0.0 <= self.memory_min_iou <= 1.0:
            raise InputError(f"memory_min_iou must be None or in [0, 1], "
                             f"got {self.memory_min_iou!r}")
        # The trunk's last stage has stride 32: the image side must divide by it.
        if self.image_size <= 0 or self.image_size % (2 * BACKBONE_STRIDE) != 0:
            raise InputError(
                f"image_size must be a positive multiple of {2 * BACKBONE_STRIDE}, "
                f"got {self.image_size}"
            )

    @property
    def backbone_stride(self) -> int:
        return BACKBONE_STRIDE

    @property
    def feat_size(self) -> int:
        """Side of the lowest-resolution feature map (64 at image_size 1024)."""
        return self.image_size // BACKBONE_STRIDE

    @property
    def backbone_channel_list(self) -> tuple[int, ...]:
        return self.hiera.channel_list


_TINY = HieraConfig(96, 1, (1, 2, 7, 2), (5, 7, 9), (8, 4, 14, 7), (7, 7))
_SMALL = HieraConfig(96, 1, (1, 2, 11, 2), (7, 10, 13), (8, 4, 14, 7), (7, 7))
_BASE_PLUS = HieraConfig(112, 2, (2, 3, 16, 3), (12, 16, 20), (8, 4, 14, 7), (14, 14))
_LARGE = HieraConfig(144, 2, (2, 6, 36, 4), (23, 33, 43), (8, 4, 16, 8), (7, 7))

_SIZES = {"tiny": ("t", _TINY), "small": ("s", _SMALL), "base_plus": ("b+", _BASE_PLUS),
          "large": ("l", _LARGE)}
_V21 = dict(no_obj_embed_spatial=True, add_tpos_enc_to_obj_ptrs=True,
            proj_tpos_enc_in_obj_ptrs=True)


def _build_table() -> dict[str, ModelConfig]:
    table = {}
    for size, (_, hiera) in _SIZES.items():
        for version, extra in (("2", {}), ("2.1", _V21)):
            name = f"sam{version}_hiera_{size}"
            table[name] = ModelConfig(name=name, version=version, size=size,
                                      checkpoint_name=f"{name}.pt", hiera=hiera, **extra)
    return table


MODELS: dict[str, ModelConfig] = _build_table()

# The project's own compact model (SAM 2.1 architecture, reduced widths and depths), trained on
# the synthetic world of ``engine.tools.synthetic`` by ``engine.tools.train``; weights in
# engine/weights/.
# Not one of Meta's models, so it has no reference config and is kept out of ``MODELS``.
# 3.08 M parameters (12.3 MB in fp32); a small Hiera (5 blocks, widths 32..256), d_model 128,
# 2 memory-attention layers, narrower feed-forwards; image_size 192 as trained. The stage-3/4
# blocks attend globally, so other sizes (multiples of 32) also run. One mask per prompt (no
# multimask candidates): in this world a click is not ambiguous, and a small model's IoU head
# picks among candidates less reliably than its single-mask token segments. Frames where it
# loses or misjudges the object stay out of its memory (``memory_min_iou``): on the validation
# clips of ``engine/weights/TRAINING.md`` this lifts J&F, most after occlusions and exits.
COMPACT = ModelConfig(
    name="sam2_ros_compact", version="2.1", size="compact",
    checkpoint_name="sam2_ros_compact.pt",
    hiera=HieraConfig(embed_dim=32, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(2, 3, 4),
                      window_spec=(8, 4, 12, 6), window_pos_embed_bkg_spatial_size=(8, 8)),
    image_size=192, d_model=128, mem_dim=64, memory_attention_layers=2,
    memory_attention_ffn_dim=512, decoder_mlp_dim=512, decoder_num_heads=4,
    iou_head_hidden_dim=128, multimask_output_in_sam=False, multimask_output_for_tracking=False,
    dynamic_multimask_via_stability=False, memory_min_iou=0.5, **_V21)

PROJECT_MODELS: dict[str, ModelConfig] = {COMPACT.name: COMPACT}


MEMORY_RULE_EXPECTED = ("must be 'model' (the model's own rule), 'all' (every tracked frame "
                        "joins the memory, as in SAM 2) or an IoU threshold in [0, 1]")


def parse_memory_rule(text: str) -> float | None | str:
    """A memory-admission rule written as text (node parameter, benchmark option), as
    ``StreamingTracker``'s ``memory_min_iou``: "model" (the model's own), "all" (None: every
    tracked frame, SAM 2's rule) or an IoU threshold in [0, 1]. InputError otherwise."""
    if text in ("model", "all"):
        return None if text == "all" else text
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise InputError(f"memory rule {text!r} {MEMORY_RULE_EXPECTED}")
    return value


def known_models() -> list[str]:
    """Every model name ``get_config`` accepts: Meta's published ones and the project's own."""
    return sorted(MODELS) + sorted(PROJECT_MODELS)


def reference_config_name(cfg: ModelConfig) -> str:
    """The name of the matching config in Meta's package (for the oracle in tests)."""
    if cfg.size not in _SIZES:
        raise InputError(f"model {cfg.name} is not one of Meta's published models: "
                         "it has no reference config")
    short = _SIZES[cfg.size][0]
    if cfg.version == "2.1":
        return f"configs/sam2.1/sam2.1_hiera_{short}.yaml"
    return f"configs/sam2/sam2_hiera_{short}.yaml"


def get_config(name: str, **overrides) -> ModelConfig:
    """Look a model up by name (``sam2.1_hiera_tiny``, ..., ``sam2_ros_compact``) and apply
    overrides."""
    from dataclasses import replace

    table = {**MODELS, **PROJECT_MODELS}
    if name not in table:
        raise UnknownName(f"unknown model {name!r}; known models: "
                          f"{', '.join(known_models())}", "model")
    return replace(table[name], **overrides) if overrides else table[name]
