"""The synthetic scene generator: reproducible, and its masks are exactly what was drawn."""
import numpy as np

from engine.tools.synthetic import Scene, click_inside


def _background_only(seed, t, **kw):
    scene = Scene(seed=seed, **kw)
    frames = list(scene.frames(t + 1))
    scene.objects = []
    return frames[t], scene.render(t)[0]


def test_same_seed_same_frames():
    a = [f for f, _ in Scene(seed=5).frames(5)]
    b = [f for f, _ in Scene(seed=5).frames(5)]
    c = [f for f, _ in Scene(seed=6).frames(5)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_masks_are_what_was_drawn():
    for t in (0, 7, 19):
        (frame, masks), background = _background_only(11, t, num_objects=4)
        union = np.zeros(frame.shape[:2], bool)
        for m in masks.values():
            assert not (union & m).any(), "visible masks must not overlap"
            union |= m
        assert union.any()
        # Outside every mask the frame is the background, pixel for pixel.
        assert np.array_equal(frame[~union], background[~union])
        # Inside, the object covers the background (textures differ from it almost everywhere).
        changed = (frame != background).any(-1)
        assert changed[union].mean() > 0.95


def test_objects_leave_and_come_back():
    seen = {}
    for t, (_, masks) in enumerate(Scene(seed=2, num_objects=2, exits=True).frames(400)):
        for k, m in masks.items():
            seen.setdefault(k, []).append(bool(m.any()))
    for visible in seen.values():
        v = np.array(visible)
        assert v[0], "starts in view"
        assert (~v).any(), "never left the frame"
        assert (np.diff(v.astype(int)) == 1).any(), "never came back"


def test_click_inside_is_inside():
    _, masks = next(Scene(seed=1).frames(1))
    for m in masks.values():
        x, y = click_inside(m)
        assert m[int(y), int(x)]
    assert click_inside(np.zeros((4, 4), bool)) is None
