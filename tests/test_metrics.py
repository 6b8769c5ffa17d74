"""The DAVIS measures and presence scoring, on small hand-made masks with known answers."""
import numpy as np
import pytest

from engine.tools.metrics import (PRESENCE_THRESHOLD, ClipScore, boundary_map, contour_accuracy,
                                  lost_and_confident, mask_place, presence_truth, reacquisition,
                                  region_similarity, summarize)


def square(shape=(40, 40), top=10, left=10, side=10):
    m = np.zeros(shape, bool)
    m[top:top + side, left:left + side] = True
    return m


def test_region_similarity_known_values():
    a = square()
    assert region_similarity(a, a) == 1.0
    assert region_similarity(a, square(left=25)) == 0.0
    # 10x10 squares overlapping on a 10x5 strip: 50 / 150
    assert region_similarity(a, square(left=15)) == pytest.approx(50 / 150)
    empty = np.zeros_like(a)
    assert region_similarity(empty, empty) == 1.0
    assert region_similarity(a, empty) == 0.0


def test_boundary_map_is_davis_seg2bmap():
    m = square(shape=(6, 6), top=1, left=1, side=3)
    expected = np.array([
        [1, 1, 1, 1, 0, 0],  # pixels whose right/bottom/diagonal neighbour differs
        [1, 0, 0, 1, 0, 0],
        [1, 0, 0, 1, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0]], bool)
    assert np.array_equal(boundary_map(m), expected)
    # the image border is not a boundary: a full mask has none
    assert not boundary_map(np.ones((5, 5), bool)).any()


def test_contour_accuracy_known_values():
    a = square()
    assert contour_accuracy(a, a) == 1.0
    empty = np.zeros_like(a)
    assert contour_accuracy(empty, empty) == 1.0
    assert contour_accuracy(a, empty) == 0.0
    assert contour_accuracy(empty, a) == 0.0
    # far apart: no boundary pixel within the tolerance of the other
    assert contour_accuracy(a, square(left=28, top=28), bound_th=2) == 0.0
    # shifted by 2 px: all matched with a 2 px tolerance, not all with 1 px
    shifted = square(left=12)
    assert contour_accuracy(a, shifted, bound_th=2) == 1.0
    assert contour_accuracy(a, shifted, bound_th=1) < 1.0


def test_contour_accuracy_precision_and_recall():
    """Truth = the predicted square plus a far copy: precision 1, recall 1/2 -> F = 2/3."""
    pred = square(shape=(60, 60), top=5, left=5)
    truth = pred | square(shape=(60, 60), top=40, left=40)
    assert contour_accuracy(pred, truth, bound_th=2) == pytest.approx(2 / 3)
    assert contour_accuracy(truth, pred, bound_th=2) == pytest.approx(2 / 3)


def test_tolerance_as_fraction_of_the_diagonal():
    """DAVIS's 0.008 of a 320x240 diagonal (400 px) is ceil(3.2) = 4 px."""
    a = square(shape=(240, 320), top=100, left=100, side=40)
    assert contour_accuracy(a, square(shape=(240, 320), top=100, left=104, side=40)) == 1.0
    assert contour_accuracy(a, square(shape=(240, 320), top=100, left=106, side=40)) < 1.0


def test_shapes_must_match():
    with pytest.raises(ValueError, match="one shape"):
        region_similarity(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


def test_presence_truth_and_accuracy():
    assert presence_truth(np.zeros((8, 8), bool)) is False
    sliver = np.zeros((8, 8), bool)
    sliver[0, :3] = True
    assert presence_truth(sliver, min_visible=5) is None
    assert presence_truth(np.ones((8, 8), bool), min_visible=5) is True

    score = ClipScore("c", "occlusion")
    big = square()
    score.add(big, big, presence=0.9)  # right: present
    score.add(np.zeros_like(big), np.zeros_like(big), presence=0.2)  # right: absent
    score.add(big, np.zeros_like(big), presence=0.7)  # wrong: says present
    tiny = np.zeros_like(big)
    tiny[0, 0] = True
    score.add(np.zeros_like(big), tiny, presence=0.1)  # sliver: J/F scored, presence not
    assert score.presence_accuracy == pytest.approx(2 / 3)
    assert score.j == [1.0, 1.0, 0.0, 0.0]
    assert score.mean_j == 0.5 and score.jf == pytest.approx((0.5 + np.mean(score.f)) / 2)


def test_reacquisition():
    areas = [100, 100, 0, 0, 30, 100, 100]
    assert reacquisition(areas, [1, 1, 1, 1, 0.1, 0.2, 0.9], within=3) is True
    assert reacquisition(areas, [1, 1, 1, 1, 0.1, 0.2, 0.3, 0.9], within=3) is False
    assert reacquisition([100, 100], [1, 1]) is None  # never vanished
    assert reacquisition([100, 0, 0], [1, 1, 1]) is None  # never came back


def test_summarize_weights_clips_equally():
    a, b = ClipScore("a", "motion"), ClipScore("b", "exit")
    m = square()
    for _ in range(3):
        a.add(m, m, 0.9)
    b.add(m, np.zeros_like(m), 0.9)
    b.reacquired = True
    s = summarize([a, b])
    assert s.clips == 2 and s.j == pytest.approx(0.5) and s.f == pytest.approx(0.5)
    assert s.presence_accuracy == pytest.approx(0.5)
    assert (s.reacquired, s.reacquire_cases) == (1, 1)


def test_lost_and_confident_on_hand_made_cases():
    truth = square(shape=(40, 40), top=10, left=10, side=10)  # 100 px
    elsewhere = square(shape=(40, 40), top=25, left=25, side=10)
    nothing = np.zeros_like(truth)
    assert PRESENCE_THRESHOLD == 0.5
    assert lost_and_confident(truth, truth, 0.99) is False  # on target
    assert lost_and_confident(elsewhere, truth, 0.97) is True  # on something else, confident
    assert lost_and_confident(elsewhere, truth, 0.3) is False  # wrong but says "absent"
    assert lost_and_confident(elsewhere, truth, 0.5) is False  # at the threshold: not present
    assert lost_and_confident(nothing, truth, 0.9) is False  # empty: not "on" anything
    assert lost_and_confident(elsewhere, nothing, 0.9) is None  # not in view: not scored
    # the half-way line: 50 of 100 predicted pixels on target is on target, 49 is lost
    half = square(shape=(40, 40), top=10, left=15, side=10)  # 10x5 strip overlaps
    assert np.count_nonzero(half & truth) == 50 and half.sum() == 100
    assert lost_and_confident(half, truth, 0.9) is False
    grown = half.copy()
    grown[30:32, 0:1] = True  # 2 more pixels off target: 50 / 102 < 0.5
    assert lost_and_confident(grown, truth, 0.9) is True
    # a mask much bigger than the target that covers it is still mostly off it
    assert lost_and_confident(np.ones_like(truth), truth, 0.9) is True


def test_where_the_mask_is():
    truth = square(shape=(40, 40), top=0, left=0, side=10)
    other = square(shape=(40, 40), top=20, left=20, side=10)
    nothing = np.zeros_like(truth)
    assert mask_place(truth, truth, other) == "target"
    assert mask_place(other, truth, other) == "other"
    assert mask_place(square(shape=(40, 40), top=0, left=25, side=5), truth, other) == \
        "background"
    assert mask_place(nothing, truth, other) == "empty"
    assert mask_place(other, truth, None) == "background"  # no other objects known
    assert mask_place(truth, nothing, other) is None


def test_windows_of_a_long_stream():
    truth = square()
    wrong = square(left=25)
    score = ClipScore("s", "long")
    for t in range(250):  # on target for 100 frames, lost and confident after
        score.add(truth if t < 100 else wrong, truth, presence=0.9)
    w = score.windows(100)
    assert [len(x.j) for x in w] == [100, 100, 50]
    assert w[0].mean_j == 1.0 and w[1].mean_j == 0.0 and w[2].mean_j == 0.0
    assert [x.lost_share for x in w] == [0.0, 1.0, 1.0]
    assert score.lost_share == pytest.approx(150 / 250)
    assert all(x.presence_accuracy == 1.0 for x in w)
    assert score.window(95, 105).mean_j == pytest.approx(0.5)
    s = summarize(w[:2])
    assert s.lost_confident == pytest.approx(0.5) and s.visible_frames == 200
    assert s.places == {"target": 0.5, "other": 0.0, "background": 0.5, "empty": 0.0}
    with pytest.raises(ValueError, match="outside"):
        score.window(200, 300)
    with pytest.raises(ValueError, match="window size"):
        score.windows(0)
