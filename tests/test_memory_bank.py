"""The per-object memory bank: what it keeps, what it hands a frame, and that it stays bounded."""
import pytest
import torch

from engine.memory_bank import BankSize, MemoryBank, MemoryEntry

HW, MEM, D = 4, 64, 256


def entry(frame: int) -> MemoryEntry:
    """An entry whose tensors carry its frame index, so selections can be read back."""
    return MemoryEntry(frame, torch.full((HW, MEM), float(frame), dtype=torch.bfloat16),
                       torch.full((D,), float(frame)))


def frames_of(pairs) -> list[tuple[int, int]]:
    """[(tensor, n)] -> [(frame the tensor came from, n)]."""
    return [(int(t.flatten()[0].item()), n) for t, n in pairs]


def test_recent_frames_get_slots_by_distance():
    bank = MemoryBank()
    bank.add_prompted(entry(0))
    for t in range(1, 10):
        bank.add_tracked(entry(t))
    sel = bank.select(10)
    # Prompted first in slot 0, then the 6 most recent oldest first: frame 9 (1 ago) -> slot 6.
    assert frames_of(sel.spatial) == [(0, 0), (4, 1), (5, 2), (6, 3), (7, 4), (8, 5), (9, 6)]
    # Pointers: prompted (10 frames ago), then recent newest first.
    assert frames_of(sel.pointers) == [(0, 10)] + [(t, 10 - t) for t in range(9, 0, -1)]


def test_pointer_window_is_max_obj_ptrs_minus_one_frames():
    bank = MemoryBank(max_obj_ptrs=16)
    bank.add_prompted(entry(0))
    for t in range(1, 40):
        bank.add_tracked(entry(t))
    sel = bank.select(40)
    assert [n for _, n in sel.pointers] == [40] + list(range(1, 16))
    # one more of each than a selection uses: the frame just tracked may still be prompted
    assert bank.size() == BankSize(prompted=1, recent=7, recent_pointers=16)


@pytest.mark.parametrize("ordinal", [False, True])
@pytest.mark.parametrize("tracked", [1, 3, 6, 7, 14, 15, 16, 40])
def test_prompt_on_the_frame_just_tracked_sees_what_its_tracking_saw(tracked, ordinal):
    """At every fill level: once frame t is tracked (and stored), a prompt on frame t selects
    exactly the memories frame t was tracked with, as the reference does (it never reads
    frame t's own output for frame t)."""
    bank = MemoryBank(ordinal=ordinal)
    bank.add_prompted(entry(0))
    for t in range(1, tracked):
        bank.add_tracked(entry(t))
    before = bank.select(tracked)
    bank.add_tracked(entry(tracked))  # track() stores the frame's memory first
    after = bank.select(tracked)  # then add_prompt on the same frame reads the bank
    assert frames_of(after.spatial) == frames_of(before.spatial)
    assert frames_of(after.pointers) == frames_of(before.pointers)
    assert len(before.spatial) == 1 + min(tracked - 1, 6)
    assert len(before.pointers) == 1 + min(tracked - 1, 15)


def test_only_frames_before_the_current_one_are_selected():
    bank = MemoryBank()
    bank.add_prompted(entry(5))
    assert bank.select(5).spatial == [] and bank.select(5).pointers == []
    bank.add_tracked(entry(6))
    assert frames_of(bank.select(6).spatial) == [(5, 0)]
    assert frames_of(bank.select(7).spatial) == [(5, 0), (6, 6)]


def test_stale_entries_outside_the_window_are_not_selected():
    """Prompted frames interrupt the FIFO; entries more than 6 frames old must not be used."""
    bank = MemoryBank()
    bank.add_prompted(entry(0))
    for t in (1, 2, 3):
        bank.add_tracked(entry(t))
    for t in range(4, 12):  # prompted every frame (as if re-prompted): no recent frames added
        bank.add_prompted(entry(t))
    sel = bank.select(12)
    assert [n for _, n in sel.spatial] == [0, 0, 0, 0]  # only prompted frames, no stale recent
    assert all(f >= 12 - 15 for f, _ in frames_of(sel.pointers))


def test_prompt_replaces_the_tracked_entry_of_its_frame():
    bank = MemoryBank()
    bank.add_prompted(entry(0))
    for t in (1, 2, 3):
        bank.add_tracked(entry(t))
    bank.add_prompted(entry(3))  # a refinement on frame 3
    sel = bank.select(4)
    assert frames_of(sel.spatial) == [(0, 0), (3, 0), (1, 4), (2, 5)]
    assert frames_of(sel.pointers) == [(0, 4), (3, 1), (2, 2), (1, 3)]
    assert bank.size() == BankSize(prompted=2, recent=2, recent_pointers=2)


def test_full_prompt_list_keeps_the_first_and_the_newest():
    bank = MemoryBank(max_cond_frames=4)
    for t in (0, 10, 20, 30, 40, 50):
        bank.add_prompted(entry(t))
    assert bank.prompted_frames == [0, 30, 40, 50]
    single = MemoryBank(max_cond_frames=1)
    for t in (0, 10, 20):
        single.add_prompted(entry(t))
    assert single.prompted_frames == [20]


def test_tracked_frames_must_move_forward():
    bank = MemoryBank()
    bank.add_prompted(entry(3))
    with pytest.raises(ValueError, match="tracked frame 3 is not after the latest stored frame 3"):
        bank.add_tracked(entry(3))


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_maskmem=1), "num_maskmem must be an integer >= 2"),
    (dict(max_obj_ptrs=0), "max_obj_ptrs must be an integer >= 1"),
    (dict(max_cond_frames=0), "max_cond_frames must be an integer >= 1"),
    (dict(max_cond_frames=2.5), "max_cond_frames must be an integer"),
])
def test_bad_capacities_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MemoryBank(**kwargs)


def test_size_and_bytes_stop_growing_once_full():
    bank = MemoryBank()
    cap = bank.capacity()
    sizes, nbytes = [], []
    for t in range(200):
        if t % 25 == 0:
            bank.add_prompted(entry(t))
        else:
            bank.add_tracked(entry(t))
        size = bank.size()
        assert size.prompted <= cap.prompted and size.recent <= cap.recent
        assert size.recent_pointers <= cap.recent_pointers
        sel = bank.select(t + 1)
        assert len(sel.spatial) <= cap.prompted + cap.recent
        assert len(sel.pointers) <= cap.prompted + cap.recent_pointers
        sizes.append(size)
        nbytes.append(bank.nbytes())
    assert sizes[-1] == cap
    # Once four prompts and full FIFOs are held, the footprint is constant.
    assert len(set(nbytes[100:])) == 1
    full = cap.prompted * (HW * MEM * 2 + D * 4) + cap.recent * HW * MEM * 2 \
        + cap.recent_pointers * D * 4
    assert nbytes[-1] == full


def test_clear_empties_the_bank():
    bank = MemoryBank()
    bank.add_prompted(entry(0))
    bank.add_tracked(entry(1))
    bank.clear()
    assert bank.size() == BankSize(0, 0, 0) and bank.latest_frame is None


def test_ordinal_bank_keeps_the_last_stored_frames_across_gaps():
    """With ``ordinal=True`` the recent slots number the stored frames by order, however far
    apart; by distance (SAM 2's rule) frames more than 6 frames old drop out."""
    stored = (1, 2, 9, 30)  # the frames in between were not stored (object hidden, say)
    by_order, by_distance = MemoryBank(ordinal=True), MemoryBank()
    for bank in (by_order, by_distance):
        bank.add_prompted(entry(0))
        for t in stored:
            bank.add_tracked(entry(t))
    assert frames_of(by_order.select(40).spatial) == [(0, 0), (1, 3), (2, 4), (9, 5), (30, 6)]
    assert frames_of(by_distance.select(40).spatial) == [(0, 0)]
    # Pointers keep their distance in frames (15-frame window) in both.
    assert frames_of(by_order.select(40).pointers) == [(0, 40), (30, 10)]
    assert frames_of(by_distance.select(40).pointers) == [(0, 40), (30, 10)]
    # Only frames before the current one, as always.
    assert frames_of(by_order.select(30).spatial) == [(0, 0), (1, 4), (2, 5), (9, 6)]


def test_ordinal_bank_equals_sam2_rule_when_every_frame_is_stored():
    by_order, by_distance = MemoryBank(ordinal=True), MemoryBank()
    for bank in (by_order, by_distance):
        bank.add_prompted(entry(0))
    for t in range(1, 20):
        assert frames_of(by_order.select(t).spatial) == frames_of(by_distance.select(t).spatial)
        for bank in (by_order, by_distance):
            bank.add_tracked(entry(t))
