"""engine.depth: 3D centroid, extent and inlier count of masked objects on synthetic depth with
known geometry (flat patches at known depths over a background plane), with holes, edge bleed
and masks that overshoot the object; the refusals of bad input."""
from __future__ import annotations

import numpy as np
import pytest

from engine.depth import Intrinsics, erode, locate_object, locate_objects, mask_box

H, W = 240, 320
INTR = Intrinsics(fx=277.0, fy=281.0, cx=159.5, cy=119.5)
V, U = np.mgrid[0:H, 0:W]
MM = 1e-3  # the 1 mm bound, in metres


def background(z_top: float = 4.0, z_bottom: float = 3.0) -> np.ndarray:
    """A slanted background plane: inverse depth affine in v (a plane in 3D), metres."""
    inv = 1 / z_top + (1 / z_bottom - 1 / z_top) * V / (H - 1)
    return 1.0 / inv


def square(x0, y0, side) -> np.ndarray:
    return (U >= x0) & (U < x0 + side) & (V >= y0) & (V < y0 + side)


def triangle(x0, y0, side) -> np.ndarray:
    """A right triangle: its centroid is off its bounding box's centre (erosion would move it)."""
    return square(x0, y0, side) & ((U - x0) >= (V - y0))


def truth(mask: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid and extent of the back-projected pixel centres of ``mask``, brute force."""
    zs = z[mask]
    pts = np.stack([(U[mask] - INTR.cx) * zs / INTR.fx, (V[mask] - INTR.cy) * zs / INTR.fy, zs], 1)
    return pts.mean(0), pts.max(0) - pts.min(0)


def scene(shape: np.ndarray, z_obj: float = 1.25):
    z = background()
    z[shape] = z_obj
    return z


@pytest.mark.parametrize("make", [square, triangle])
@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_flat_patch_centroid_and_extent_are_exact(make, encoding):
    """A flat patch at 1.25 m: centroid within 1 mm, extent as its pixel centres span."""
    shape = make(60, 40, 70)
    z = scene(shape)
    depth, scale = ((np.round(z * 1000).astype(np.uint16), 0.001) if encoding == "16UC1"
                    else (z.astype(np.float32), 1.0))
    pos = locate_object(depth, scale, INTR, shape)
    c, e = truth(shape, np.round(z * 1000) / 1000)
    assert pos.has_position and pos.num_valid == shape.sum()
    assert np.abs(pos.centroid - c).max() < MM
    assert np.abs(pos.extent - e).max() < MM
    assert pos.centroid[2] == pytest.approx(1.25, abs=MM)
    assert pos.extent[0] == pytest.approx(69 * 1.25 / INTR.fx, abs=MM)


def test_holes_are_ignored():
    """20 % of the object's depth pixels missing (0 in 16UC1, NaN/inf in 32FC1): still within
    1 mm of the whole patch's centroid, and num_valid counts only the depths present."""
    shape = triangle(100, 60, 90)
    z = scene(shape, 0.9)
    rng = np.random.default_rng(1)
    holes = rng.random((H, W)) < 0.2
    c, _ = truth(shape, z)
    mm = np.round(z * 1000).astype(np.uint16)
    mm[holes] = 0
    pos = locate_object(mm, 0.001, INTR, shape)
    assert pos.num_valid == (shape & ~holes).sum()
    assert np.abs(pos.centroid - c).max() < MM
    metres = z.astype(np.float32)
    metres[holes] = np.where(rng.random(holes.sum()) < 0.5, np.nan, np.inf)
    pos = locate_object(metres, 1.0, INTR, shape)
    assert pos.num_valid == (shape & ~holes).sum()
    assert np.abs(pos.centroid - c).max() < MM


def test_mask_overshooting_onto_the_background_is_rejected():
    """The mask is 3 px wider than the object all round (the background's depth there): those
    pixels are not inliers, so the centroid is the object's; a plain mean would be far off."""
    shape = triangle(80, 50, 80)
    z = scene(shape, 1.1)
    grown = ~erode(~shape, 3)  # dilation by 3 px
    pos = locate_object(z, 1.0, INTR, grown)
    c, e = truth(shape, z)
    assert pos.num_valid == shape.sum()
    assert np.abs(pos.centroid - c).max() < MM and np.abs(pos.extent - e).max() < MM
    naive, _ = truth(grown, z)
    assert abs(naive[2] - c[2]) > 0.1  # the test is not trivial


def test_flying_pixels_at_the_edges_are_rejected():
    """Depth bleed: the object's rim (2 px) reads depths between object and background, as
    depth sensors do at discontinuities. The centroid stays within 1 mm (the patch is a square,
    whose centroid its rim-less inside shares)."""
    shape = square(120, 70, 64)
    z = scene(shape, 1.5)
    rim = shape & ~erode(shape, 2)
    rng = np.random.default_rng(2)
    z[rim] = 1.5 + rng.uniform(0.2, 0.9, rim.sum()) * (background()[rim] - 1.5)
    pos = locate_object(z, 1.0, INTR, shape)
    c, _ = truth(shape, scene(shape, 1.5))
    assert pos.num_valid == (shape & ~rim).sum()
    assert np.abs(pos.centroid - c).max() < MM
    assert pos.extent[2] < MM  # flat: no depth spread left


def test_slanted_surface_keeps_all_its_pixels():
    """A patch of the slanted background plane (depths spread over ~10 cm, more than band_m):
    the robust band keeps every pixel, and the centroid is exact."""
    shape = square(20, 20, 200)
    z = background(4.0, 3.0)
    pos = locate_object(z, 1.0, INTR, shape, band_m=0.01)
    c, e = truth(shape, z)
    assert e[2] > 0.2 and pos.num_valid == shape.sum()
    assert np.abs(pos.centroid - c).max() < MM and np.abs(pos.extent - e).max() < MM


def test_several_objects_and_the_point_cloud():
    """locate_objects over two objects (one with its box given); the decimated points project
    back onto the object's mask pixels."""
    a, b = square(20, 20, 40), triangle(150, 100, 60)
    z = background()
    z[a], z[b] = 0.8, 1.6
    out = locate_objects(z, 1.0, INTR, {1: a, 2: b}, {2: mask_box(b)}, points_stride=4)
    for obj_id, shape in ((1, a), (2, b)):
        c, _ = truth(shape, z)
        assert np.abs(out[obj_id].centroid - c).max() < MM
        pts = out[obj_id].points
        assert pts.dtype == np.float32 and 0 < len(pts) <= shape.sum() / 16 + 60
        uv = np.round(INTR.project(pts)).astype(int)
        assert shape[uv[:, 1], uv[:, 0]].all()
        assert (uv % 4 == 0).all()


def test_unknown_position_without_enough_depth():
    """Empty mask, a mask with no valid depth, fewer inliers than min_pixels: no position,
    NaN centroid and extent, num_valid says how many there were."""
    z = np.full((H, W), 2.0, np.float32)
    empty = np.zeros((H, W), bool)
    shape = square(10, 10, 5)
    for mask, depth, n in ((empty, z, 0), (shape, np.zeros_like(z), 0), (shape, z, 25)):
        pos = locate_object(depth, 1.0, INTR, mask, min_pixels=30)
        assert not pos.has_position and pos.num_valid == n
        assert np.isnan(pos.centroid).all() and np.isnan(pos.extent).all()
    thin = square(50, 50, 3)  # gone after erosion: all its pixels are used
    assert locate_object(z, 1.0, INTR, thin, min_pixels=9).has_position


@pytest.mark.parametrize("k, match", [
    ([0.0] * 9, "missing or zero"),
    ([500, 0, 320, 0, -1, 240, 0, 0, 1], "focal lengths must be > 0"),
    ([500, 0, float("nan"), 0, 500, 240, 0, 0, 1], "finite"),
    ([500, 0, 320], "9 values"),
])
def test_bad_intrinsics_are_refused(k, match):
    with pytest.raises(ValueError, match=match):
        Intrinsics.from_k(k)


def test_depth_of_another_aspect_ratio_is_refused():
    with pytest.raises(ValueError, match=r"depth is 320x240 but the mask is 160x100, another "
                                         r"aspect ratio"):
        locate_object(np.ones((H, W)), 1.0, INTR, np.ones((100, 160), bool))


@pytest.mark.parametrize("factor", [2, 0.5])
def test_depth_at_another_resolution_samples_the_mask(factor):
    """Resize rule: the mask is 320x240, the depth of the same view 160x120 (or 640x480) with
    its own intrinsics; each depth pixel takes the mask at its centre. A flat square at 1.3 m
    with its sides on the coarser grid's pixel borders: its centroid within 1 mm."""
    h, w = int(H / factor), int(W / factor)
    k = Intrinsics(INTR.fx / factor, INTR.fy / factor, (INTR.cx + 0.5) / factor - 0.5,
                   (INTR.cy + 0.5) / factor - 0.5)
    shape = square(60, 40, 70)  # colour pixels 60..129, 40..109
    z = np.full((h, w), 3.0, np.float32)
    v, u = np.mgrid[0:h, 0:w]
    cu, cv = np.floor((u + 0.5) * factor).astype(int), np.floor((v + 0.5) * factor).astype(int)
    z[shape[np.minimum(cv, H - 1), np.minimum(cu, W - 1)]] = 1.3
    pos = locate_object(z, 1.0, k, shape, mask_box(shape))
    c, _ = truth(shape, scene(shape, 1.3))
    assert pos.num_valid == int(shape.sum() / factor**2)
    assert np.abs(pos.centroid - c).max() < MM


def test_erode_matches_a_square_structuring_element():
    rng = np.random.default_rng(3)
    m = rng.random((30, 40)) < 0.8
    r = 2
    padded = np.pad(m, r)
    expected = np.ones_like(m)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            expected &= padded[r + dy:r + dy + 30, r + dx:r + dx + 40]
    assert (erode(m, r) == expected).all()
    assert (erode(m, 0) == m).all()


def test_synthetic_scene_depth_has_exact_geometry():
    """The demo's generated scene: depth from the true masks in 16UC1 millimetres gives every
    object's true centroid within 1 mm; with 2 % holes, that of its pixels with depth within
    1 mm; with edge bleed too (objects then lose their rim) the true one within 5 mm. Asking
    for depth does not change the scene's frames."""
    from engine.tools.synthetic import Scene

    args = dict(width=160, height=120, num_objects=3, seed=5, object_size=(24, 40))
    plain = [f for f, _ in Scene(**args).frames(4)]
    scene = Scene(**args)
    for t, (frame, masks) in enumerate(scene.frames(4)):
        assert (frame == plain[t]).all()
        truth_c = scene.true_positions(masks)
        assert len(truth_c) == 3
        for holes, bleed, bound in ((0.0, False, MM), (0.02, False, MM), (0.02, True, 5 * MM)):
            mm = np.round(scene.depth(masks, holes, bleed) * 1000).astype(np.uint16)
            out = locate_objects(mm, 0.001, scene.intrinsics, masks)
            seen = truth_c if bleed else scene.true_positions(
                {k: m & (mm > 0) for k, m in masks.items()})
            for obj_id, c in seen.items():
                assert np.abs(out[obj_id].centroid - c).max() < bound, (t, obj_id, holes, bleed)
            assert (mm == 0).mean() <= 2 * holes


def test_readme_depth_example_runs(capsys):
    """The README's engine.depth example runs as written and finds the true centroid."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S)
                   if "locate_object(" in b)
    exec(compile(example, "README.md", "exec"), {})
    found, truth_line = capsys.readouterr().out.strip().splitlines()
    assert found.startswith("True [") and found.split("] ")[0] + "]" == "True " + truth_line
