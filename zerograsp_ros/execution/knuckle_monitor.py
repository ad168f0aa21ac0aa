"""Watches the gripper's knuckle joint on /joint_states until it has settled.

The Jazzy Robotiq stack answers every gripper goal with "stalled, succeeded" about
50 ms after it starts (its driver never reports a velocity, so the controller's stall
timer runs out at once), long before the fingers stop. Open and close are therefore
judged on the joint itself: settled = the last `settle_time` seconds of samples lie
within `tolerance`, and the knuckle either moved away from where it was when the goal
was sent, already sits at the target, or `motion_start_wait` passed without motion
(blocked from the start). Pure Python: the backend feeds it positions.
"""
from __future__ import annotations

from collections import deque
import threading
import time

from zerograsp_ros.execution.backends import ExecutionError


class KnuckleMonitor:
    """Positions of one joint with their arrival times (thread-safe)."""

    def __init__(self, joint_name: str, settle_time: float = 0.2, tolerance: float = 0.004,
                 motion_start_wait: float = 1.0, clock=time.monotonic, history: float = 5.0):
        self.joint_name = joint_name
        self.settle_time = float(settle_time)
        self.tolerance = float(tolerance)
        self.motion_start_wait = float(motion_start_wait)
        self.clock = clock
        self.history = max(float(history), 2 * self.settle_time)
        self._samples: deque[tuple[float, float]] = deque()
        self._cond = threading.Condition()

    # ----------------------------------------------------------------- input
    def add(self, position: float, stamp: float | None = None) -> None:
        now = self.clock() if stamp is None else float(stamp)
        with self._cond:
            self._samples.append((now, float(position)))
            while self._samples and self._samples[0][0] < now - self.history:
                self._samples.popleft()
            self._cond.notify_all()

    def on_joint_state(self, msg) -> None:
        """sensor_msgs/JointState callback: keep our joint's position, ignore the rest."""
        try:
            i = list(msg.name).index(self.joint_name)
        except ValueError:
            return
        if i < len(msg.position):
            self.add(msg.position[i])

    # ----------------------------------------------------------------- queries
    def latest(self) -> tuple[float, float] | None:
        with self._cond:
            return self._samples[-1] if self._samples else None

    def _settled_since(self, since: float, start: float | None, target: float, now: float):
        window = [p for t, p in self._samples if t >= now - self.settle_time]
        after = [(t, p) for t, p in self._samples if t >= since]
        if not after or after[0][0] > now - self.settle_time or not window:
            return None                       # not watched for a whole window since the goal
        if max(window) - min(window) > self.tolerance:
            return None                       # still moving
        position = window[-1]
        moved = start is None or abs(position - start) > self.tolerance
        at_target = abs(position - target) <= self.tolerance
        if moved or at_target or now - since >= self.motion_start_wait:
            return position
        return None

    def wait_settled(self, since: float, start: float | None, target: float,
                     timeout: float) -> float:
        """Block until settled after `since` (a clock() time); the settled position.

        ExecutionError when no sample arrives or the joint keeps moving for `timeout` s.
        """
        deadline = self.clock() + float(timeout)
        with self._cond:
            while True:
                now = self.clock()
                position = self._settled_since(since, start, target, now)
                if position is not None:
                    return position
                if now >= deadline:
                    break
                self._cond.wait(timeout=min(0.02, max(deadline - now, 0.0)))
            last = self._samples[-1] if self._samples else None
        if last is None or last[0] < since:
            raise ExecutionError(f'no {self.joint_name} position on the joint states for '
                                 f'{timeout:.1f} s (is the joint_state_broadcaster running?)')
        raise ExecutionError(f'{self.joint_name} did not settle within {timeout:.1f} s '
                             f'(last position {last[1]:.4f} rad)')
