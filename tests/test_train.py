"""The training script end to end on a few tiny steps: both stages run, the losses are finite,
the weights move, the checkpoint is in Meta's format and loads strictly, and an interrupted run
resumes from its saved state. (The bundled model's quality is tested in test_quality.py.)"""
from __future__ import annotations

import math
import re
from dataclasses import replace

import torch

from engine.checkpoint import load_model, read_state_dict
from engine.config import COMPACT
from engine.tools.train import TrainConfig, main, train

SMALL = replace(COMPACT, image_size=64)
STEPS = TrainConfig(image_steps=2, clip_steps=2, image_batch=2, objects_per_image=2,
                    clip_batch=1, clip_len=3, objects_per_clip=2, warmup=1, log_every=1,
                    save_every=1)


def test_both_stages_run_and_write_an_official_checkpoint(tmp_path):
    torch.set_num_threads(1)
    lines: list[str] = []
    torch.manual_seed(STEPS.seed)
    from engine.model.sam2 import SAM2Model
    before = {k: v.clone() for k, v in SAM2Model(SMALL).state_dict().items()}
    out = tmp_path / "compact.pt"
    train(STEPS, SMALL, out, tmp_path / "work", "cpu", log=lines.append)
    losses = [float(m.group(1)) for line in lines if (m := re.search(r"loss (\S+)", line))]
    assert [line.split()[0] for line in lines if "loss" in line] == ["image"] * 2 + ["clip"] * 2
    assert all(math.isfinite(v) for v in losses)
    state = read_state_dict(out)
    assert set(state) == set(before)
    moved = [k for k in before if not torch.equal(before[k], state[k])]
    assert any(k.startswith("image_encoder.") for k in moved)  # trained by the image stage
    assert any(k.startswith("memory_attention.") for k in moved)  # first trained by clips
    load_model(out, SMALL)  # strict: every key, every shape


def test_resume_continues_from_the_saved_state(tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "m.pt"
    args = ["--out", str(out), "--work-dir", str(work), "--image-steps", "2", "--clip-steps",
            "0", "--image-batch", "2", "--objects-per-image", "1", "--save-every", "1",
            "--warmup", "1"]
    # the compact config at its own size is what main() trains; one image step, then stop
    main(args[:5] + ["1"] + args[6:])
    first = read_state_dict(out)
    main(args + ["--resume"])
    log = capsys.readouterr().out
    assert "resumed at stage image step 1" in log
    assert "image     1/2" in log and "image     0/2" not in log.split("resumed")[1]
    assert not all(torch.equal(first[k], v) for k, v in read_state_dict(out).items())


def test_burn_in_frames_are_tracked_without_gradients(tmp_path):
    """--burn-in: the first frames (the prompted frame among them) run without gradients or
    losses; the trained frames still train the memory path through the bank they filled."""
    import numpy as np

    from engine.model.sam2 import SAM2Model
    from engine.tools.train import TrainRuntime, clip_step, sample_clip_batch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = SAM2Model(SMALL).train()
    model.image_encoder.requires_grad_(False)
    # every tracked frame joins the bank: a random model rarely passes the admission rule
    cfg = replace(STEPS, clip_len=2, correct_rate=0.0, memory_rule="all")
    rng = np.random.default_rng(5)
    batch = sample_clip_batch(rng, cfg, SMALL.image_size, burn_in=3)
    assert batch.frame_of.shape[1] == 5 and batch.gt.shape[1] == 5 and batch.burn_in == 3
    with torch.enable_grad():
        result = clip_step(rng, model, batch, TrainRuntime(model), cfg)
    assert math.isfinite(float(result.loss)) and 0.0 <= float(result.stats["J"]) <= 1.0
    grads = {k: p.grad for k, p in model.named_parameters()}
    prompt_only = [k for k in grads if k.startswith(("sam_prompt_encoder.point_embeddings.1",
                                                     "sam_prompt_encoder.point_embeddings.2",
                                                     "sam_prompt_encoder.mask_downscaling"))]
    assert prompt_only and all(grads[k] is None or not grads[k].any() for k in prompt_only)
    assert any(g is not None and g.any() for k, g in grads.items()
               if k.startswith("memory_attention."))
    assert any(g is not None and g.any() for k, g in grads.items()
               if k.startswith("memory_encoder."))


def test_recent_drop_leaves_prompted_memories_and_pointers():
    """--recent-drop: a tracked frame may attend to the prompted frame's spatial memory and
    the object pointers only (so the pointers must carry what the recent frames held)."""
    from engine.memory_bank import MemoryEntry
    from engine.model.sam2 import SAM2Model
    from engine.tools.train import TrainRuntime, _drop_recent
    from engine.tracking_step import TrackingStep

    torch.manual_seed(0)
    model = SAM2Model(SMALL).eval()
    cfg, hw = SMALL, SMALL.feat_size ** 2
    step = TrackingStep(TrainRuntime(model), 4, None)
    bank = step.new_bank()
    for t in range(4):
        entry = MemoryEntry(t, torch.randn(hw, cfg.mem_dim), torch.randn(cfg.d_model))
        bank.add_prompted(entry) if t == 0 else bank.add_tracked(entry)
    f = cfg.feat_size
    step.entry(0, torch.zeros(1, cfg.mem_dim, f, f), torch.randn(1, cfg.mem_dim, f, f),
               torch.zeros(1, cfg.d_model), 0)  # its position encoding makes the table
    full = step.assemble([bank.select(4)])
    only = step.assemble([_drop_recent(bank.select(4))])
    n_ptr = full.num_pointer_tokens
    assert only.num_pointer_tokens == n_ptr > 0
    assert full.tokens.shape[1] == 4 * hw + n_ptr and only.tokens.shape[1] == hw + n_ptr
    assert torch.equal(only.tokens[:, :hw], full.tokens[:, :hw])
    assert torch.equal(only.tokens[:, hw:], full.tokens[:, 4 * hw:])
    assert torch.equal(only.pos[:, :hw], full.pos[:, :hw])
