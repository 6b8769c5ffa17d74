"""Training runs the tracker's own step (engine/tracking_step.py) and targets its failures.

* The clip stage with gradients off gives the tracker's masks and memory banks on a clip with
  the bundled weights (same prompts, the shipped admission rule and bfloat16 memories).
* Gradients reach the memory attention and the presence head through the step; the presence
  target turns "absent" when the mask is on the wrong thing; frames after a re-appearance
  weigh more; truncated backpropagation gives the same loss as one pass.
* ``--time-limit-s`` stops a run and saves what ``--resume`` needs; batches made by worker
  processes are those made in-process, for a given seed.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.checkpoint import load_model, read_state_dict
from engine.config import COMPACT
from engine.model.sam2 import SAM2Model
from engine.tools.synthetic import Scene, click_inside
from engine.tools.train import (Batches, ClipBatch, Decoded, TrainConfig, TrainRuntime,
                                _frames_to_model, _mask_to_model, clip_step, main, make_batch,
                                reacquire_weights, sam_loss)
from engine.tracker import StreamingTracker
from engine.tracking_step import TrackingStep

BUNDLED = Path(__file__).resolve().parents[1] / "engine" / "weights" / "sam2_ros_compact.pt"
SMALL = replace(COMPACT, image_size=64)
# Worst differences measured (2 objects, 12 frames, 1 thread): 3.4e-4 on the mask logits,
# one bfloat16 step (7.8e-3) on a stored spatial memory, 3e-6 on the pointers. Objects decoded
# one by one (the tracker's prompts) or as a batch (the training's) round differently in fp32;
# a memory element near a bfloat16 rounding midpoint then moves by a whole bfloat16 step.
MAX_LOGIT_DIFF = 5e-3
MAX_MEMORY_DIFF = 3e-2
MAX_POINTER_DIFF = 1e-3


def _clip(frames: int = 12):
    scene = Scene(320, 240, 3, seed=11)
    return list(scene.frames(frames))


def test_training_step_is_the_trackers_step():
    """A clip through ``clip_step`` without gradients (fixed prompts, no corrective click,
    no memory dropout) and through ``StreamingTracker``: the same masks on every frame, the
    same banks (sizes, prompted frames, temporal slots, contents) at the end."""
    torch.set_num_threads(1)
    model = load_model(BUNDLED, "sam2_ros_compact")
    clip = _clip()
    frames, ids = [f for f, _ in clip], [1, 2]
    clicks = [click_inside(clip[0][1][k]) for k in ids]
    tracker = StreamingTracker(model)
    assert isinstance(tracker.step, TrackingStep) and tracker.memory_min_iou == 0.5
    tracker.track(frames[0])
    for k, c in zip(ids, clicks):
        tracker.add_prompt(k, points=[c], labels=[1])
    theirs = [np.stack([tracker.mask_logits(k) for k in ids])]
    for frame in frames[1:]:
        tracker.track(frame)
        theirs.append(np.stack([tracker.mask_logits(k) for k in ids]))

    s = model.cfg.image_size
    coords = torch.tensor([[[x / 320 * s, y / 240 * s]] for x, y in clicks])
    labels = torch.ones(2, 1, dtype=torch.int32)
    gt = np.stack([[_mask_to_model(m[k], s) for _, m in clip] for k in ids])
    batch = ClipBatch(_frames_to_model(frames, s), torch.tensor([list(range(len(clip)))] * 2), gt)
    with torch.no_grad():
        result = clip_step(np.random.default_rng(0), model, batch, TrainRuntime(model),
                           TrainConfig(correct_rate=0.0), kind="click", prompts=(coords, labels))
    assert len(result.masks) == len(frames)
    empty = 0
    for t, (a, low) in enumerate(zip(theirs, result.masks)):
        b = F.interpolate(low.float(), size=(240, 320), mode="bilinear",
                          align_corners=False)[:, 0].numpy()
        diff = np.abs(np.clip(a, -50, 50) - np.clip(b, -50, 50)).max()
        assert diff <= MAX_LOGIT_DIFF, f"frame {t}: mask logits differ by {diff}"
        assert np.array_equal(a > 0, b > 0), f"frame {t}"
        empty += int(not (b > 0).any())
    assert empty < len(frames)  # the objects are tracked, not empty throughout
    for k, bank in zip(ids, result.banks):
        ref = tracker.bank(k)
        assert bank.size() == ref.size() and bank.prompted_frames == ref.prompted_frames
        mine, want = bank.select(len(frames)), ref.select(len(frames))
        assert [slot for _, slot in mine.spatial] == [slot for _, slot in want.spatial]
        assert [ago for _, ago in mine.pointers] == [ago for _, ago in want.pointers]
        for (x, _), (y, _) in zip(mine.spatial, want.spatial):
            assert x.dtype == y.dtype == torch.bfloat16
            assert float((x.float() - y.float()).abs().max()) <= MAX_MEMORY_DIFF
        for (x, _), (y, _) in zip(mine.pointers, want.pointers):
            assert float((x - y).abs().max()) <= MAX_POINTER_DIFF


def _small_batch(seed: int = 3, clip_len: int = 6, objects: int = 2):
    cfg = TrainConfig(clip_batch=1, clip_len=clip_len, objects_per_clip=objects,
                      correct_rate=0.0)
    return cfg, make_batch("clip", cfg, SMALL.image_size, 1, seed)


def test_gradients_reach_memory_attention_and_presence_head():
    torch.set_num_threads(1)
    model = SAM2Model(SMALL).train()
    model.image_encoder.requires_grad_(False)
    cfg, batch = _small_batch()
    with torch.enable_grad():
        result = clip_step(np.random.default_rng(1), model, batch, TrainRuntime(model),
                           replace(cfg, memory_rule="all"), kind="click")
    assert math.isfinite(float(result.loss))

    def moved(prefix: str) -> bool:
        return any(p.grad is not None and bool(p.grad.abs().sum() > 0)
                   for n, p in model.named_parameters() if n.startswith(prefix))

    assert moved("memory_attention.") and moved("memory_encoder.")
    assert moved("sam_mask_decoder.pred_obj_score_head.")
    assert moved("maskmem_tpos_enc")  # the temporal encodings of the bank's slots
    assert all(p.grad is None for p in model.image_encoder.parameters())


def test_truncated_backpropagation_gives_the_same_loss_and_cuts_the_banks():
    """--tbptt: the loss of a clip does not depend on where backpropagation is cut (the
    forward pass is the same); the gradient does, and after the step no bank tensor holds
    a graph."""
    torch.set_num_threads(1)
    cfg, batch = _small_batch(clip_len=7)
    runs = {}
    for window in (0, 2):
        torch.manual_seed(0)
        model = SAM2Model(SMALL).train()
        model.image_encoder.requires_grad_(False)
        with torch.enable_grad():
            result = clip_step(np.random.default_rng(2), model, batch, TrainRuntime(model),
                               replace(cfg, tbptt=window, memory_rule="all"), kind="box")
        grad = torch.cat([p.grad.flatten() for p in model.memory_attention.parameters()
                          if p.grad is not None])
        runs[window] = float(result.loss), grad
        for bank in result.banks:
            sel = bank.select(100)
            assert all(not f.requires_grad for f, _ in sel.spatial)
            assert all(not p.requires_grad for p, _ in sel.pointers)
    assert runs[0][0] == pytest.approx(runs[2][0], rel=1e-5)
    assert not torch.allclose(runs[0][1], runs[2][1])  # cut: earlier frames get less


def test_presence_target_is_absent_when_the_mask_is_on_the_wrong_thing():
    """--presence-on-target: an object in view whose chosen mask lies elsewhere is trained
    towards "absent"; one whose mask is on it, or whose mask is empty, towards "present"."""
    s = 32
    gt = torch.zeros(3, 1, s, s)
    gt[:, :, 4:12, 4:12] = 1  # all three objects visible at the top left
    raw = torch.full((3, 1, s // 4, s // 4), -10.0)
    raw[0, :, 1:3, 1:3] = 10.0  # object 0's mask on it
    raw[1, :, 5:7, 5:7] = 10.0  # object 1's mask elsewhere; object 2's mask empty
    logits = torch.full((3, 1), 5.0, requires_grad=True)  # all called present
    out = Decoded(raw, torch.ones(3, 1), raw, torch.zeros(3, 8), logits, raw=raw,
                  best=torch.zeros(3, dtype=torch.long))
    with torch.enable_grad():
        loss, stats = sam_loss(out, gt, presence_on_target=0.5)
        (grad,) = torch.autograd.grad(loss, logits)
    assert grad[0, 0] < 0 < grad[1, 0] and grad[2, 0] < 0  # 0 and 2 pushed up, 1 down
    assert float(stats["lost_conf"]) == pytest.approx(1 / 3)  # object 1: lost and confident
    with torch.enable_grad():
        loss, _ = sam_loss(out, gt)  # visibility only: all pushed up
        (grad,) = torch.autograd.grad(loss, logits)
    assert (grad < 0).all()
    with torch.enable_grad():  # --off-target-weight 4: the lost object's term weighs 4x
        loss, _ = sam_loss(out, gt, presence_on_target=0.5, off_target_weight=4.0)
        (heavy,) = torch.autograd.grad(loss, logits)
    with torch.enable_grad():
        loss, _ = sam_loss(out, gt, presence_on_target=0.5)
        (plain,) = torch.autograd.grad(loss, logits)
    assert heavy[1, 0] == pytest.approx(4 * plain[1, 0])
    assert torch.equal(heavy[[0, 2]], plain[[0, 2]])


def test_frames_after_a_reappearance_weigh_more():
    visible = np.array([[1, 1, 0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1]], bool)
    w = reacquire_weights(visible, frames=2, extra=3.0)
    assert w[0].tolist() == [1, 1, 1, 1, 4, 4, 1, 1] and (w[1] == 1).all()
    assert (reacquire_weights(visible, frames=2, extra=0.0) == 1).all()


def _same_batch(a, b) -> bool:
    return (torch.equal(a.images, b.images) and torch.equal(a.frame_of, b.frame_of)
            and np.array_equal(a.gt, b.gt) and a.burn_in == b.burn_in)


def test_worker_batches_are_the_in_process_batches():
    """Step k's batch depends on (seed, stage, k) only: two worker processes give the
    batches made here, in order, from any first step; another seed gives others."""
    cfg = TrainConfig(seed=4, clip_batch=1, clip_len=3, clip_len_max=5, objects_per_clip=2,
                      burn_in=2)
    with Batches("clip", cfg, SMALL.image_size, 1, 3) as here:
        local = [here.get() for _ in range(3)]
    with Batches("clip", cfg, SMALL.image_size, 1, 3, workers=2) as pool:
        remote = [pool.get() for _ in range(3)]
    assert all(_same_batch(a, b) for a, b in zip(local, remote))
    other = make_batch("clip", replace(cfg, seed=5), SMALL.image_size, 1, 3)
    assert not _same_batch(local[0], other)


def test_time_limit_stops_saves_and_resumes(tmp_path):
    """--time-limit-s: the run stops before its steps are done, writes a checkpoint that loads
    strictly and the log; --resume goes on from the step it stopped at."""
    out, work, log = tmp_path / "m.pt", tmp_path / "work", tmp_path / "train.log"
    args = ["--out", str(out), "--work-dir", str(work), "--log", str(log), "--init",
            str(BUNDLED), "--image-steps", "0", "--clip-steps", "1000", "--clip-batch", "1",
            "--clip-len", "3", "--objects-per-clip", "1", "--memory-init", "false",
            "--warmup", "1", "--log-every", "1", "--save-every", "1000"]
    main(args + ["--time-limit-s", "15"])
    text = log.read_text()
    assert "time limit: stopped before clip step" in text
    stopped = int(text.split("time limit: stopped before clip step ")[1].split()[0])
    assert 0 < stopped < 1000
    load_model(out, "sam2_ros_compact")  # strict
    first = read_state_dict(out)
    assert not all(torch.equal(first[k], v) for k, v in read_state_dict(BUNDLED).items())
    main(args + ["--time-limit-s", "10", "--resume"])
    text = log.read_text()
    assert f"resumed at stage clip step {stopped}" in text
    assert f"clip {stopped:5d}/1000" in text.split("resumed")[1]


def test_broad_world_batches():
    """--world broad draws clips from engine.tools.world (training families); every prompted
    object is in view on frame 0; --classic-share mixes in the original world."""
    for share in (0.0, 0.5):
        cfg = TrainConfig(world="broad", classic_share=share, clip_batch=2, clip_len=4,
                          objects_per_clip=2)
        batch = make_batch("clip", cfg, SMALL.image_size, 1, 7)
        n, t = batch.frame_of.shape
        assert t == 4 and batch.images.shape == (2 * 4, 3, 64, 64)
        assert batch.gt.shape == (n, 4, 64, 64) and batch.gt[:, 0].reshape(n, -1).any(1).all()


def test_broad_world_image_batches():
    """The image stage draws from the configured world too: with --world broad, frames of
    engine.tools.world's training scenes (other sizes than the classic 320x240 among them),
    each prompted object non-empty at model resolution."""
    from engine.tools.train import image_frame

    rng = np.random.default_rng(3)
    shapes = {image_frame(rng, TrainConfig(world="broad"))[0].shape for _ in range(12)}
    assert len(shapes) > 1  # FRAME_SIZES: the classic world draws 320x240 only
    rng = np.random.default_rng(3)
    assert {image_frame(rng, TrainConfig())[0].shape for _ in range(4)} == {(240, 320, 3)}
    cfg = TrainConfig(world="broad", image_batch=3, objects_per_image=2)
    batch = make_batch("image", cfg, SMALL.image_size, 1, 5)
    assert batch.images.shape == (3, 3, 64, 64)
    assert batch.gt.shape[0] == len(batch.index) >= 3 and batch.gt.reshape(
        batch.gt.shape[0], -1).any(1).all()


def test_off_target_weight_needs_the_on_target_rule():
    from engine.tools.train import TrainConfig, check_config

    check_config(TrainConfig(presence_on_target=0.5, off_target_weight=3.0))
    with pytest.raises(ValueError, match="needs presence_on_target"):
        check_config(TrainConfig(off_target_weight=3.0))
    with pytest.raises(ValueError, match=">= 0"):
        check_config(TrainConfig(presence_on_target=0.5, off_target_weight=-1.0))
