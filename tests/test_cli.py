"""``sam2-engine`` end to end on a tiny model at 128 px: export, track (torch and onnxruntime)
on a generated video file, the speed benchmark on a tiny configuration, and build refusing
cleanly without TensorRT. Prompt syntax is checked table-driven."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engine.cli import CLIError, main, parse_prompt_arg
from engine.config import get_config
from engine.model.sam2 import SAM2Model
from engine.prompts import Prompt
from engine.tools.synthetic import Scene, click_inside
from engine.video import FramePrompt, merge_prompts

MODEL = "sam2.1_hiera_tiny"
SIZE = 128
WIDTH, HEIGHT, FRAMES = 160, 128, 5


@pytest.fixture(autouse=True)
def _restore_threads():
    """The commands set torch's thread count for the process; give it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """Seeded random weights of the tiny model in Meta's file format."""
    path = tmp_path_factory.mktemp("ckpt") / f"{MODEL}.pt"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.save({"model": SAM2Model(get_config(MODEL, image_size=SIZE)).state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> tuple[Path, dict]:
    """A short mp4 of a generated scene, and a click inside each object on frame 0."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    scene = Scene(WIDTH, HEIGHT, num_objects=2, seed=3, object_size=(28, 48))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (WIDTH, HEIGHT))
    clicks = {}
    for t, (frame, masks) in enumerate(scene.frames(FRAMES)):
        if t == 0:
            clicks = {i: click_inside(m) for i, m in masks.items()}
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path, clicks


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sam2_cache")


def read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        frames.append(frame)


# ------------------------------------------------------------------------------ prompts
@pytest.mark.parametrize("kind, text, expected", [
    ("point", "1:10,20", FramePrompt(1, 0, Prompt(points=[(10.0, 20.0)], labels=[1]))),
    ("point", "2:10.5,20:0", FramePrompt(2, 0, Prompt(points=[(10.5, 20.0)], labels=[0]))),
    ("point", "3:10,20:1@7", FramePrompt(3, 7, Prompt(points=[(10.0, 20.0)], labels=[1]))),
    ("box", "4:1,2,30,40", FramePrompt(4, 0, Prompt(box=(1.0, 2.0, 30.0, 40.0)))),
    ("box", "5:1,2,30,40@3", FramePrompt(5, 3, Prompt(box=(1.0, 2.0, 30.0, 40.0)))),
])
def test_prompt_arguments_parse(kind, text, expected):
    """OBJ:X,Y[:LABEL][@FRAME] and OBJ:X0,Y0,X1,Y1[@FRAME]; --at (here 0) is the default frame."""
    assert parse_prompt_arg(kind, text, default_frame=0) == expected


@pytest.mark.parametrize("kind, text, message", [
    ("point", "1", "expected OBJ:"),
    ("point", "a:1,2", "object id: 'a' is not an integer"),
    ("point", "1:1,x", "not a comma-separated list of numbers"),
    ("point", "1:1,2,3", "expected OBJ:X,Y or OBJ:X,Y:LABEL"),
    ("point", "1:1,2:1@z", "frame after '@'"),
    ("box", "1:1,2,3", "expected OBJ:X0,Y0,X1,Y1"),
    ("mask", "1:/no/such/mask.png", "cannot read image"),
])
def test_bad_prompt_arguments_are_refused(kind, text, message):
    with pytest.raises(CLIError, match=message):
        parse_prompt_arg(kind, text, default_frame=0)


def test_prompts_of_one_object_on_one_frame_are_merged():
    """Clicks accumulate into one add_prompt call; a box joins them; other frames stay apart."""
    merged = merge_prompts([FramePrompt(1, 0, Prompt([(1, 2)], [1])),
                            FramePrompt(2, 0, Prompt(box=(0, 0, 5, 5))),
                            FramePrompt(1, 0, Prompt([(3, 4)], [0])),
                            FramePrompt(1, 4, Prompt([(5, 6)], [1])),
                            FramePrompt(1, 0, Prompt(box=(0, 0, 9, 9)))])
    assert sorted(merged) == [0, 4]
    first = {p.obj_id: p.prompt for p in merged[0]}
    assert first[1].points == [(1, 2), (3, 4)] and first[1].labels == [1, 0]
    assert first[1].box == (0, 0, 9, 9) and first[2].box == (0, 0, 5, 5)
    assert merged[4][0].prompt.points == [(5, 6)]
    # a mask goes alone: clicks and a box of that object on that frame give way to it
    mask = np.ones((4, 4), bool)
    only = merge_prompts([FramePrompt(3, 1, Prompt([(1, 2)], [1], (0, 0, 2, 2))),
                          FramePrompt(3, 1, Prompt(mask=mask))])[1][0].prompt
    assert only.mask is mask and (only.points, only.labels, only.box) == (None, None, None)


# ----------------------------------------------------------------------------- commands
def test_help_runs_as_the_console_script():
    """`sam2-engine --help` (the installed script, else `python -m engine.cli`) names every
    command."""
    script = Path(sys.executable).with_name("sam2-engine")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "engine.cli"]
    out = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for command in ("export", "build", "benchmark", "track"):
        assert command in out.stdout


def test_export_writes_the_onnx_parts(checkpoint, cache, capsys):
    """export delegates to engine.export: every part written to the cache, one line each."""
    rc = main(["export", str(checkpoint), "--image-size", str(SIZE), "--no-check",
               "--out", str(cache / "onnx")])
    assert rc == 0
    out = capsys.readouterr().out
    for part in ("image_encoder", "decoder_multimask", "decoder_singlemask", "memory_encoder",
                 "memory_attention"):
        assert f"{part}: " in out
    assert len(list((cache / "onnx").rglob("*.onnx"))) == 5


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_track_writes_an_overlay_and_prints_timing(backend, checkpoint, video, cache, tmp_path,
                                                   capsys):
    """A click on frame 0 and a box on frame 2 from the command line: an overlay video of every
    frame, a timing line per frame (the prompted frame marked) and a summary."""
    path, clicks = video
    (x1, y1), (x2, y2) = clicks[1], clicks[2]
    out = tmp_path / "overlay.mp4"
    rc = main(["track", str(path), "--point", f"1:{x1},{y1}",
               "--box", f"2:{x2 - 10},{y2 - 10},{x2 + 10},{y2 + 10}@2",
               "--checkpoint", str(checkpoint), "--image-size", str(SIZE),
               "--backend", backend, "--cache-dir", str(cache), "--threads", "1",
               "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    frames = read_video(out)
    assert len(frames) == FRAMES and frames[0].shape == (HEIGHT, WIDTH, 3)
    lines = [line for line in captured.out.splitlines() if line.startswith("frame ")]
    assert len(lines) == FRAMES
    assert "1:P " in lines[0] and "2:P " in lines[2] and "2:" not in lines[1]
    assert "enc " in lines[0] and "attn " in lines[1]
    assert f"{FRAMES} frames: median" in captured.out and f"wrote {out}" in captured.out
    assert "RANDOM" not in captured.err


def test_track_defaults_to_the_bundled_model_and_runs_bf16(video, tmp_path, capsys):
    path, clicks = video
    x, y = clicks[1]
    rc = main(["track", str(path), "--point", f"1:{x},{y}", "--precision", "bf16",
               "--max-frames", "3", "--threads", "1", "--quiet", "--out",
               str(tmp_path / "o.mp4")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "RANDOM" not in captured.err and "sam2_ros_compact.pt" in captured.out
    assert len(read_video(tmp_path / "o.mp4")) == 3


def test_track_without_checkpoint_says_random_weights(video, tmp_path, capsys):
    path, clicks = video
    x, y = clicks[1]
    rc = main(["track", str(path), "--point", f"1:{x},{y}", "--model", "sam2.1_hiera_tiny",
               "--image-size", str(SIZE), "--max-frames", "2", "--threads", "1", "--quiet",
               "--out", str(tmp_path / "o.mp4")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "RANDOM weights" in captured.err and "NOT meaningful" in captured.err
    assert len(read_video(tmp_path / "o.mp4")) == 2


@pytest.mark.parametrize("args, message", [
    (["track", "/no/such/video.mp4", "--point", "1:1,1"], "cannot open video"),
    (["track", "VIDEO"], "give at least one prompt"),
    (["track", "VIDEO", "--point", "1:9999,1"], "outside the frame"),
    (["track", "VIDEO", "--point", "1:1,1", "--model", "sam9_huge"], "unknown model"),
])
def test_track_refuses_bad_input_with_a_reason(args, message, video, tmp_path, capsys):
    args = [str(video[0]) if a == "VIDEO" else a for a in args]
    rc = main(args + ["--image-size", str(SIZE), "--out", str(tmp_path / "o.mp4")])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_a_bug_keeps_its_traceback(monkeypatch, video, tmp_path):
    """Only what the user can fix is reported as ``error:`` with exit status 2; an exception
    that is not an InputError (a ValueError or KeyError from a bug) propagates."""
    import engine.cli as cli

    def broken(args):
        raise KeyError("internal table entry missing")
    monkeypatch.setattr(cli, "cmd_track", broken)
    with pytest.raises(KeyError, match="internal table entry missing"):
        main(["track", str(video[0]), "--point", "1:1,1", "--out", str(tmp_path / "o.mp4")])


def test_benchmark_writes_tables_and_plot(cache, tmp_path, capsys):
    """A tiny grid: the markdown names the machine, has a row per backend and the reference,
    stage columns, and masks that match the reference; the PNG plot is written."""
    out = tmp_path / "speed.md"
    rc = main(["benchmark", "--grid", f"tiny:{SIZE}:1,2", "--backends", "torch",
               "--warmup", "1", "--frames", "1", "--threads", "1",
               "--cache-dir", str(cache), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    text = out.read_text()
    assert "- machine: " in text and "cores" in text and "load average" in text
    rows = [r for r in text.splitlines() if r.startswith(f"| {MODEL} | {SIZE} |")]
    throughput = [r for r in rows if r.count("|") == 13]
    assert len([r for r in throughput if "| torch |" in r]) == 2
    assert len([r for r in throughput if "| reference |" in r]) == 2
    for row in throughput:
        if "| torch |" in row:
            assert float(row.split("|")[-2]) >= 0.99  # min mask IoU vs the reference
    assert "memory attention" in text and "Goal" in text
    plot = cv2.imread(str(tmp_path / "speed_fps.png"))
    assert plot is not None and plot.shape[0] > 100

    # --merge: a later run adds its cases to the earlier ones (kept in speed.json)
    rc = main(["benchmark", "--grid", f"tiny:{SIZE}:3", "--backends", "torch", "--warmup", "1",
               "--frames", "1", "--threads", "1", "--no-reference", "--merge",
               "--cache-dir", str(cache), "--out", str(out)])
    assert rc == 0
    objects = {r.split("|")[3].strip() for r in out.read_text().splitlines()
               if r.startswith(f"| {MODEL} | {SIZE} |")}
    assert objects == {"1", "2", "3"}


def test_build_fails_cleanly_without_tensorrt(checkpoint, tmp_path, capsys):
    """No TensorRT or no GPU: exit status 2, a message naming what is missing, nothing built."""
    from engine.runtime.tensorrt_build import TensorRTUnavailable, import_tensorrt, require_cuda

    try:
        import_tensorrt()
        require_cuda("cuda")
        pytest.skip("TensorRT and a CUDA GPU are present: build would really run")
    except TensorRTUnavailable:
        pass
    rc = main(["build", str(checkpoint), "--image-size", str(SIZE),
               "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "sam2-engine: error: cannot build TensorRT engines here" in err
    assert "TensorRT" in err and ("GPU" in err or "CUDA" in err)
    assert not (tmp_path / "cache").exists()  # refused before exporting anything
