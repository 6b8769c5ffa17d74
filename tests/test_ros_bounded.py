"""Per-request state of sam2_node stays bounded: requests that wait for a frame, and requests
that go through the worker, leave nothing behind once answered (no timers, deadlines, waiters
or callback-group entries that grow with the number of requests). The node runs in this
process (to count what it holds), its client is a real rclpy node over loopback DDS.
Also the pure ``Deadlines`` schedule the node uses for those waits."""
from __future__ import annotations

import time

import numpy as np
import pytest
from sensor_msgs.msg import Image

from sam2_ros.conversions import fill_image
from sam2_ros.deadlines import Deadlines
from sam2_ros_interfaces.srv import AddPrompt

W, H = 128, 96


def test_deadlines_run_once_when_due_and_forget_what_is_cancelled():
    now = [0.0]
    d = Deadlines(clock=lambda: now[0])
    ran: list[str] = []
    d.add(1.0, lambda: ran.append("a"))
    b = d.add(2.0, lambda: ran.append("b"))
    d.add(0.5, lambda: ran.append("c"))
    assert d.run_due() == 0 and ran == []
    now[0] = 1.0
    assert d.run_due() == 2 and ran == ["c", "a"]  # in the order they fell due
    b.cancel()
    b.cancel()  # twice: still fine
    now[0] = 5.0
    assert d.run_due() == 0 and ran == ["c", "a"] and len(d) == 0


def test_a_deadline_added_while_running_due_ones_waits_for_the_next_run():
    now = [0.0]
    d = Deadlines(clock=lambda: now[0])
    ran: list[str] = []
    d.add(0.1, lambda: d.add(0.0, lambda: ran.append("later")))
    now[0] = 0.2
    assert d.run_due() == 1 and ran == []
    assert d.run_due() == 1 and ran == ["later"]


@pytest.fixture
def node_in_process():
    """The node active in this process with one frame received; yields (node, call) where
    ``call(request)`` sends an AddPrompt from a real client and returns the answer."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.qos import qos_profile_sensor_data

    from ros_helpers import in_process_node

    with in_process_node(model="sam2.1_hiera_tiny", image_size=128, num_threads=1,
                         prompt_wait_s=0.1) as (node, probe, executor):
        pub = probe.create_publisher(Image, f"{node.get_namespace()}/image",
                                     qos_profile_sensor_data)
        client = probe.create_client(AddPrompt, f"{node.get_fully_qualified_name()}/add_prompt")
        ok = TransitionCallbackReturn.SUCCESS
        assert node.trigger_configure() == ok and node.trigger_activate() == ok

        def spin_until(pred, timeout=30.0) -> bool:
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.02)
                if pred():
                    return True
            return False

        def call(request):
            future = client.call_async(request)
            assert spin_until(future.done), "add_prompt did not answer"
            return future.result()
        assert spin_until(client.service_is_ready)
        msg = fill_image(Image(), np.full((H, W, 3), 90, np.uint8), "rgb8")
        msg.header.stamp.sec = 1
        assert spin_until(lambda: (pub.publish(msg), node._session is not None and
                                   node._session.window.find(10**9) is not None)[1])
        yield node, call


def test_answered_requests_leave_nothing_behind(node_in_process):
    node, call = node_in_process

    def held():
        return {"timers": len(list(node.timers)), "group entries": len(node._wait_group.entities),
                "deadlines": len(node._deadlines), "waiters": len(node._waiters)}

    def future_stamped():  # waits prompt_wait_s for a frame that never comes, then refused
        req = AddPrompt.Request(object_id=1, points_x=[5.0], points_y=[5.0], labels=[1])
        req.frame_stamp.sec = 10**6
        return req

    def applied():  # on the frame just received: through the worker, applied
        return AddPrompt.Request(object_id=1, points_x=[60.0], points_y=[50.0], labels=[1])

    first = call(future_stamped())
    assert not first.success and "has not arrived" in first.message, first.message
    assert call(applied()).success
    before = held()
    for _ in range(25):
        assert not call(future_stamped()).success
        answer = call(applied())
        assert answer.success, answer.message
    assert held() == before


def test_cleanup_frees_the_tracker_without_waiting_for_the_garbage_collector(node_in_process):
    """After cleanup nothing of the old configuration is left: its tracker and model are freed
    at once, not at the next full garbage collection (a finished request used to hold its
    session in a reference cycle, so a reconfigure loaded the new model beside the old one)."""
    import gc
    import weakref

    from rclpy.lifecycle import TransitionCallbackReturn

    node, call = node_in_process
    answer = call(AddPrompt.Request(object_id=1, points_x=[60.0], points_y=[50.0], labels=[1]))
    assert answer.success, answer.message
    tracker = weakref.ref(node._session.engine.tracker)
    gc.disable()
    try:
        ok = TransitionCallbackReturn.SUCCESS
        assert node.trigger_deactivate() == ok and node.trigger_cleanup() == ok
        assert node._session is None
        assert tracker() is None, "the cleaned-up tracker is still referenced"
    finally:
        gc.enable()
