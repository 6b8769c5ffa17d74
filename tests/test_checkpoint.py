"""Loading official-format checkpoints: strict, weights_only, and errors a user can act on."""
import pickle

import pytest
import torch

from engine.checkpoint import CheckpointError, identify, load_model, read_state_dict
from oracle import build_oracle, save_official_checkpoint

TINY = "sam2.1_hiera_tiny"


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny.pt"
    return save_official_checkpoint(build_oracle(TINY, 256), path)


def _save(tmp_path, state, name="x.pt"):
    path = tmp_path / name
    torch.save({"model": state}, path)
    return path


def test_loads_official_file_unchanged(tiny_file):
    model = load_model(tiny_file, TINY, image_size=256)
    reference = build_oracle(TINY, 256).state_dict()
    ours = model.state_dict()
    assert ours.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(ours[key], value), key


@pytest.mark.parametrize("name", ["sam2_hiera_tiny", "sam2.1_hiera_tiny",
                                  "sam2_hiera_base_plus", "sam2.1_hiera_base_plus"])
def test_identify_names_the_published_model(name):
    assert identify(build_oracle(name, 256).state_dict()) == name


def test_missing_file_names_file_and_model(tmp_path):
    missing = tmp_path / "nowhere" / "sam2.1_hiera_tiny.pt"
    with pytest.raises(CheckpointError, match=r"not found: .*nowhere.*sam2\.1_hiera_tiny"):
        load_model(missing, TINY)


def test_truncated_file(tmp_path, tiny_file):
    data = tiny_file.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"could not read checkpoint .*cut\.pt.*truncated"):
        load_model(cut, TINY, image_size=256)


def test_garbage_file(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint" * 100)
    with pytest.raises(CheckpointError, match=r"truncated, corrupt or not a torch checkpoint"):
        read_state_dict(junk)


class _Payload:
    """Stands for arbitrary code a malicious checkpoint would run when unpickled."""


def test_arbitrary_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "extra": _Payload()}, path)
    with pytest.raises(CheckpointError, match=r"refused to load .*weights_only=True"):
        read_state_dict(path)


def test_not_official_format(tmp_path):
    path = tmp_path / "bare.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match=r"not in the official SAM 2 format.*'state_dict'"):
        read_state_dict(path)


def test_other_size_names_both(tiny_file):
    with pytest.raises(CheckpointError,
                       match=r"holds the weights of sam2\.1_hiera_tiny, but model "
                             r"sam2\.1_hiera_base_plus was asked for"):
        load_model(tiny_file, "sam2.1_hiera_base_plus", image_size=256)


def test_other_version_names_both(tmp_path):
    path = save_official_checkpoint(build_oracle("sam2_hiera_tiny", 256), tmp_path / "v2.pt")
    with pytest.raises(CheckpointError,
                       match=r"holds the weights of sam2_hiera_tiny, but model sam2\.1_hiera_tiny"):
        load_model(path, TINY, image_size=256)


def test_missing_keys_are_named(tmp_path):
    state = dict(build_oracle(TINY, 256).state_dict())
    del state["memory_encoder.out_proj.weight"]
    path = _save(tmp_path, state)
    with pytest.raises(CheckpointError,
                       match=r"missing keys \(1\): memory_encoder\.out_proj\.weight"):
        load_model(path, TINY, image_size=256)


def test_unexpected_keys_are_named(tmp_path):
    state = dict(build_oracle(TINY, 256).state_dict())
    for i in range(7):
        state[f"extra.head{i}.weight"] = torch.zeros(1)
    path = _save(tmp_path, state)
    with pytest.raises(CheckpointError,
                       match=r"unexpected keys \(7\): extra\.head0\.weight, .*\(2 more\)"):
        load_model(path, TINY, image_size=256)


def test_wrong_shape_is_named(tmp_path):
    state = dict(build_oracle(TINY, 256).state_dict())
    state["no_mem_embed"] = torch.zeros(1, 1, 128)
    path = _save(tmp_path, state)
    with pytest.raises(CheckpointError,
                       match=r"wrong shape \(1\): no_mem_embed \(1, 1, 128\) \(expected \(1, 1, 256\)\)"):
        load_model(path, TINY, image_size=256)


@pytest.mark.parametrize("size", [512, 1024])
def test_other_image_sizes_load_the_same_file(tiny_file, size):
    model = load_model(tiny_file, TINY, image_size=size)
    assert model.cfg.image_size == size
    feats = model.encode_image(torch.randn(1, 3, size, size))
    assert feats.feat.shape == (1, 256, size // 16, size // 16)
    assert [t.shape[-1] for t in feats.high_res] == [size // 4, size // 8]


def test_invalid_image_size_is_refused(tiny_file):
    with pytest.raises(ValueError, match=r"multiple of 32, got 500"):
        load_model(tiny_file, TINY, image_size=500)


def test_unknown_model_name(tiny_file):
    with pytest.raises(KeyError, match=r"unknown model 'sam3'.*sam2\.1_hiera_tiny"):
        load_model(tiny_file, "sam3")
