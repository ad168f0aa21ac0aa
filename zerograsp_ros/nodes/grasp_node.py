"""Reconstruction-and-grasp node: serves /predict_grasps with the ZeroGrasp model.

- Keeps the latest RGB-D frames and instance masks (own callback group, so frames
  keep flowing while inference runs in the inference group).
- A request uses its own frame/masks, or the latest fresh frame (max_frame_age)
  with its masks (segmenting in process when the segmentation node has not
  delivered masks for it yet).
- Refinement runs in this process by default: the same code
  (perception.pipeline.refine_on_reconstruction) and the same parameters
  (REFINEMENT_PARAMETERS, config/perception.yaml's shared section) that
  refinement_node serves /refine_grasps with, on the frame, objects and table plane
  already decoded here; no grasps, reconstruction or frame cross a message. With
  `use_refine_service` it calls /refine_grasps instead, asynchronously from a third
  callback group; when that service is down the request fails with a clear message,
  or returns unrefined grasps if request.allow_unrefined.
- Results are published (transient local) for the visualisation node; with
  `continuous` the node also predicts on every new frame.
"""
from __future__ import annotations

from collections import deque
import sys
import threading
import time
import traceback

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node

from zerograsp_ros.errors import InputError
from zerograsp_ros.msg import GraspArray, InstanceMasks, SceneReconstruction
from zerograsp_ros.msg import RGBDFrame as RGBDFrameMsg
from zerograsp_ros.nodes.common import (
    FRAME_QOS,
    GRASPS_TOPIC,
    INSTANCE_MASKS_TOPIC,
    LATCHED_QOS,
    PREDICT_SERVICE,
    RECONSTRUCTION_TOPIC,
    REFINE_SERVICE,
    RGBD_FRAME_TOPIC,
    Param,
    at_least_one,
    declare_params,
    is_device,
    non_negative,
    positive,
)
from zerograsp_ros.nodes.conversions import (
    frame_msg_is_empty,
    grasps_to_msg,
    masks_msg_is_empty,
    masks_msg_to_labels,
    msg_to_grasps,
    response_header,
    rgbd_msg_to_frame,
    scene_to_msg,
    stamp_to_seconds,
)
from zerograsp_ros.nodes.refinement_node import REFINEMENT_PARAMETERS, refinement_from_parameters
from zerograsp_ros.nodes.request_limits import (
    Admission,
    Deadline,
    check_frame_size,
    check_label_counts,
    check_mask_scores,
    check_max_grasps,
    check_object_count,
    check_object_extent,
    limit_params,
    limits_from_parameters,
    plain_message,
)
from zerograsp_ros.nodes.segmentation_node import SEGMENTER_PARAMETERS, segmenter_from_parameters
from zerograsp_ros.perception.pipeline import GraspPipeline, calibrate_refined, finite_top_k
from zerograsp_ros.resources import default_checkpoint
from zerograsp_ros.runtime import StageTimer, resolve_device
from zerograsp_ros.srv import PredictGrasps, RefineGrasps

POSITIVE = (positive, 'a number > 0')
PARAMETERS = (
    Param('checkpoint', '', "ZeroGrasp checkpoint ('' = share/zerograsp_ros/checkpoints/"
          "zerograsp_cpu.pt)"),
    Param('device', 'auto', "Torch device: 'auto' (cuda if available), 'cpu' or 'cuda[:N]'",
          is_device, "'auto', 'cpu' or 'cuda[:N]'"),
    Param('max_grasps', 20, 'Grasps returned when the request says 0', at_least_one,
          'an integer >= 1'),
    Param('max_grasps_per_object', 256, 'Grasps decoded per object before refinement',
          at_least_one, 'an integer >= 1'),
    Param('max_frame_age', 2.0, 'A request without a frame fails when the latest frame is '
          'older than this [s]', *POSITIVE),
    Param('use_refine_service', False, 'Refine through the /refine_grasps service (another '
          'process) instead of in this process with the same code and parameters'),
    Param('refinement_device', 'cpu', "In-process refinement: torch device ('cpu', "
          "'cuda[:N]' or 'auto')", is_device, "'auto', 'cpu' or 'cuda[:N]'"),
    Param('refine_service_wait', 2.0, 'How long to wait for /refine_grasps to appear [s]',
          non_negative, 'a number >= 0'),
    Param('refine_timeout', 30.0, 'How long to wait for the refinement answer [s]', *POSITIVE),
    Param('min_score', 0.0, "Drop grasps scoring below this (0 keeps all; the shipped "
          "checkpoint's scores are success probabilities and its suggested threshold, chosen "
          'on val, is logged at start-up)', lambda v: 0.0 <= v <= 1.0, 'a number in [0, 1]'),
    Param('publish_results', True, 'Publish grasps and reconstructions of every request'),
    Param('continuous', False, 'Also predict on every new frame and publish the results'),
    Param('continuous_period', 1.0, 'Continuous mode: how often to look for a new frame [s]',
          *POSITIVE),
    Param('continuous_refine', True, 'Continuous mode: refine the grasps'),
    Param('torch_threads', 0, 'CPU threads torch may use for inference (0 = torch default; 1 '
          'is fastest on small, busy machines)', lambda v: v >= 0, 'an integer >= 0'),
    *REFINEMENT_PARAMETERS,
    *SEGMENTER_PARAMETERS,
    *limit_params(('max_image_pixels', 'max_objects', 'min_object_pixels', 'max_object_extent',
                   'deadline', 'max_queued_requests', 'max_queue_wait')),
)


class RefinementUnavailable(Exception):
    """/refine_grasps is not there or did not answer in time."""


class GraspNode(Node):
    def __init__(self, **kwargs):
        super().__init__('grasp_node', **kwargs)
        values = declare_params(self, PARAMETERS)
        checkpoint, device = values['checkpoint'], values['device']
        self.max_grasps = values['max_grasps']
        max_per_object = values['max_grasps_per_object']
        self.max_frame_age = values['max_frame_age']
        self.use_refine_service = values['use_refine_service']
        self.use_table_plane = values['use_table_plane']
        self.refine_wait = values['refine_service_wait']
        self.refine_timeout = values['refine_timeout']
        self.min_score = values['min_score']
        self.publish_results = values['publish_results']
        self.continuous = values['continuous']
        period = values['continuous_period']
        self.continuous_refine = values['continuous_refine']
        self.torch_threads = values['torch_threads']
        segmenter = segmenter_from_parameters(values, self.get_logger().warn)
        self.limits = limits_from_parameters(values)
        self.admission = Admission(self.limits.max_queued_requests, self.limits.max_queue_wait)
        # Waiting requests hold executor threads: keep some for frames and the refine client.
        self.executor_threads = self.limits.max_queued_requests + 4

        if not checkpoint:
            checkpoint = str(default_checkpoint())
        from zerograsp_ros.model.inference import ZeroGraspPredictor

        self.device = str(resolve_device(device))
        predictor = ZeroGraspPredictor.from_checkpoint(checkpoint, device=self.device)
        gripper, refinement_config = refinement_from_parameters(values)
        self.pipeline = GraspPipeline(predictor, segmenter, gripper=gripper,
                                      refinement_config=refinement_config,
                                      max_grasps=self.max_grasps,
                                      max_grasps_per_object=max_per_object,
                                      refinement_device=str(resolve_device(
                                          values['refinement_device'])))
        scores = (f'scores are calibrated success probabilities (suggested threshold '
                  f'{predictor.score_threshold:.2f})' if predictor.calibration is not None
                  else 'scores are raw graspness x quality (checkpoint has no calibration)')
        self.get_logger().info(f'loaded {checkpoint} on {self.device}; {scores}')

        self.inference_group = MutuallyExclusiveCallbackGroup()
        self.input_group = MutuallyExclusiveCallbackGroup()
        self.client_group = MutuallyExclusiveCallbackGroup()
        self.publish_group = MutuallyExclusiveCallbackGroup()
        self.lock = threading.Lock()
        self.frames: deque[tuple[float, RGBDFrameMsg]] = deque(maxlen=4)
        self.masks: deque[InstanceMasks] = deque(maxlen=4)
        self.frames_received = 0
        self.predictions = 0
        self.create_subscription(RGBDFrameMsg, RGBD_FRAME_TOPIC, self._on_frame, FRAME_QOS,
                                 callback_group=self.input_group)
        self.create_subscription(InstanceMasks, INSTANCE_MASKS_TOPIC, self._on_masks,
                                 FRAME_QOS, callback_group=self.input_group)
        self.refine_client = self.create_client(RefineGrasps, REFINE_SERVICE,
                                                callback_group=self.client_group)
        self.grasps_pub = self.create_publisher(GraspArray, GRASPS_TOPIC, LATCHED_QOS)
        self.reconstruction_pub = self.create_publisher(SceneReconstruction,
                                                        RECONSTRUCTION_TOPIC, LATCHED_QOS)
        self.pending_publish = None
        self.create_timer(0.05, self._publish_pending, callback_group=self.publish_group)
        # Reentrant: cheap checks refuse bad requests at once even while the model is busy;
        # the model itself runs one request at a time (Admission, request_limits.py).
        self.service = self.create_service(PredictGrasps, PREDICT_SERVICE, self._on_predict,
                                           callback_group=ReentrantCallbackGroup())
        self.last_continuous_stamp = None
        if self.continuous:
            self.create_timer(period, self._continuous_tick, callback_group=self.inference_group)

    # ----------------------------------------------------------------- inputs

    def _on_frame(self, msg: RGBDFrameMsg):
        with self.lock:
            self.frames.append((time.monotonic(), msg))
            self.frames_received += 1

    def _on_masks(self, msg: InstanceMasks):
        with self.lock:
            self.masks.append(msg)

    def _wait_for_fresh_frame(self) -> None:
        """Give a stale or absent stream up to max_frame_age to deliver a new frame.

        A camera that paused briefly (the simulated cell renders nothing while the arm
        moves) is waited for; one that stopped still fails within about max_frame_age.
        """
        deadline = time.monotonic() + self.max_frame_age
        while time.monotonic() < deadline:
            with self.lock:
                if self.frames and time.monotonic() - self.frames[-1][0] <= self.max_frame_age:
                    return
            time.sleep(0.05)

    def _latest_inputs(self) -> tuple[RGBDFrameMsg, InstanceMasks | None]:
        """The newest fresh frame and its masks (None when none arrived for it yet)."""
        self._wait_for_fresh_frame()
        with self.lock:
            frames, masks = list(self.frames), list(self.masks)
        if not frames:
            raise InputError(f'no recent frame: nothing received on {RGBD_FRAME_TOPIC} yet '
                             '(is the camera node running?)')
        received, frame = frames[-1]
        age = time.monotonic() - received
        if age > self.max_frame_age:
            raise InputError(f'no recent frame: the latest frame is {age:.1f} s old '
                             f'(max_frame_age {self.max_frame_age} s)')
        # Prefer the newest fresh frame that already has masks.
        by_stamp = {stamp_to_seconds(m.header.stamp): m for m in masks}
        for received, candidate in reversed(frames):
            if time.monotonic() - received > self.max_frame_age:
                break
            match = by_stamp.get(stamp_to_seconds(candidate.header.stamp))
            if match is not None:
                return candidate, match
        return frame, None

    def _select_inputs(self, request) -> tuple[RGBDFrameMsg, InstanceMasks | None]:
        has_frame = not frame_msg_is_empty(request.frame)
        has_masks = not masks_msg_is_empty(request.masks)
        if has_frame:
            return request.frame, request.masks if has_masks else None
        frame, masks = self._latest_inputs()
        if has_masks:
            if stamp_to_seconds(request.masks.header.stamp) != \
                    stamp_to_seconds(frame.header.stamp):
                raise InputError('the request carries masks but no frame, and the masks\' stamp '
                                 'matches no recent frame')
            masks = request.masks
        return frame, masks

    # ----------------------------------------------------------------- service

    # ----------------------------------------------------------------- limits

    def _check_request(self, request) -> None:
        """Cheap size checks of the request itself, before it waits for the model."""
        check_max_grasps(request.max_grasps)
        if not frame_msg_is_empty(request.frame):
            check_frame_size(request.frame, self.limits)
        if not masks_msg_is_empty(request.masks):
            check_mask_scores(request.masks)
            # Decoded again under the model, but counted here too: label images with
            # thousands of ids never take a queue place from valid requests.
            check_object_count(masks_msg_to_labels(request.masks), self.limits)

    def _check_inputs(self, frame_msg, masks_msg) -> None:
        """The selected inputs (also the camera's latest frame) within the limits."""
        check_frame_size(frame_msg, self.limits)
        if masks_msg is not None:
            check_mask_scores(masks_msg)

    # ----------------------------------------------------------------- service

    def _on_predict(self, request, response):
        start = time.perf_counter()
        watch = StageTimer()
        deadline = Deadline(self.limits.deadline)
        try:
            self._check_request(request)
            with self.admission.slot(deadline):
                deadline.check('selecting the inputs')
                frame_msg, masks_msg = self._select_inputs(request)
                self._check_inputs(frame_msg, masks_msg)
                self._predict(frame_msg, masks_msg, request, response, watch, deadline)
        except (InputError, RefinementUnavailable) as exc:
            response.success = False
            response.message = plain_message(exc)
            self.get_logger().warn(f'predict_grasps failed: {response.message}')
        except Exception as exc:  # a bug must not take the service down: report it loudly
            response.success = False
            response.message = plain_message(f'internal error: {type(exc).__name__}: {exc}')
            self.get_logger().error(f'predict_grasps crashed:\n{traceback.format_exc()}')
        if not response.success:  # nothing half-filled goes back with a failure
            response.grasps = GraspArray()
            response.reconstruction = SceneReconstruction()
        # Stage times also on failure: where the time went is useful either way.
        watch.times['total'] = time.perf_counter() - start
        response.stage_names = list(watch.times)
        response.stage_seconds = [float(v) for v in watch.times.values()]
        return response

    def _predict(self, frame_msg, masks_msg, request, response, watch, deadline=None):
        if self.torch_threads:
            import torch

            # Set in the inference thread itself: OpenMP thread counts are per thread.
            torch.set_num_threads(self.torch_threads)
        with watch.stage('message_decoding'):
            frame = rgbd_msg_to_frame(frame_msg)
            labels = masks_msg_to_labels(masks_msg, frame.shape) \
                if masks_msg is not None else None
            if labels is not None:
                check_label_counts(labels, self.limits)
        k = int(request.max_grasps) or self.max_grasps
        refine_here = request.refine and not self.use_refine_service
        labelled, plane, warnings = self.pipeline.prepare(
            frame, labels, watch, need_plane=refine_here and self.use_table_plane)
        if not self.use_table_plane:
            plane = None
        if labels is None:
            check_label_counts(labelled.labels, self.limits)  # what segmentation found
        check_object_extent(labelled.depth, labelled.intrinsics, labelled.labels, self.limits)
        if deadline is not None:
            deadline.check('the network')
        prediction = self.pipeline.predict(labelled, watch)
        warnings += [str(w) for w in prediction.warnings]
        grasps = prediction.grasps.subset(prediction.grasps.finite_mask())
        if len(grasps) == 0:
            raise InputError(f'the model proposed no grasp on the {len(prediction.objects)} '
                             'object(s)')
        header = response_header(frame_msg.header)
        summary = ''
        if request.refine and deadline is not None:
            deadline.check('refinement')
        if request.refine:
            try:
                with watch.stage('refinement'):
                    refined, counts = self._refine(grasps, prediction.objects, labelled, plane,
                                                   frame_msg, k, deadline)
                rejected = ', '.join(f'{r}: {c}' for r, c in counts.items() if c)
                if len(refined) == 0:
                    raise InputError(f'no grasp survived refinement ({rejected or "none"} of '
                                     f'{len(grasps)} rejected)')
                summary = f'{len(refined)} refined grasps on ' \
                          f'{len(prediction.objects)} object(s) (rejected: {rejected or "none"})'
                grasps = refined
            except RefinementUnavailable as exc:
                if not request.allow_unrefined:
                    raise
                warnings.append(f'UNREFINED grasps: {exc}')
                grasps = finite_top_k(grasps, k)
                summary = f'{len(grasps)} unrefined grasps on ' \
                          f'{len(prediction.objects)} object(s)'
        else:
            grasps = finite_top_k(grasps, k)
            summary = f'{len(grasps)} unrefined grasps (refine=false) on ' \
                      f'{len(prediction.objects)} object(s)'
        grasps_msg = grasps_to_msg(self._above_min(grasps), header)
        self.predictions += 1
        response.success = True
        response.message = summary + ''.join(f'; warning: {w}' for w in warnings)
        response.grasps = grasps_msg
        if request.return_reconstruction:
            response.reconstruction = scene_to_msg(prediction.objects, header)
        if self.publish_results:
            with self.lock:
                self.pending_publish = (grasps_msg, prediction.objects, header,
                                        response.reconstruction if
                                        request.return_reconstruction else None)

    def _above_min(self, grasps):
        """Grasps scoring at least min_score; InputError naming it when none is left."""
        if self.min_score <= 0.0 or len(grasps) == 0:
            return grasps
        kept = grasps.subset(grasps.scores >= self.min_score)
        if len(kept) == 0:
            raise InputError(f'no grasp scores at least min_score {self.min_score:.2f} '
                             f'(best {float(grasps.scores.max()):.3f} of {len(grasps)})')
        return kept

    def _refine(self, grasps, objects, frame, plane, frame_msg, k, deadline=None):
        """(refined top-k grasps, rejection counts), in process or through /refine_grasps."""
        if not self.use_refine_service:
            try:   # the code and parameters refinement_node serves /refine_grasps with
                out = self.pipeline.refine(grasps, objects, frame=frame, table_plane=plane,
                                           max_grasps=k)
            except InputError as exc:
                raise InputError(f'refinement failed: {exc}') from exc
            for warning in out.warnings:
                self.get_logger().warn(warning, throttle_duration_sec=5.0)
            return out.grasps, out.rejection_counts
        if not self.refine_client.service_is_ready() and \
                not self.refine_client.wait_for_service(timeout_sec=self.refine_wait):
            raise RefinementUnavailable(f'refinement service /{REFINE_SERVICE} is not available '
                                        '(is refinement_node running?)')
        request = RefineGrasps.Request()
        request.grasps = grasps_to_msg(grasps, response_header(frame_msg.header))
        request.reconstruction = scene_to_msg(objects, response_header(frame_msg.header),
                                              include_mesh=False)
        request.frame = frame_msg
        request.max_grasps = int(k)
        future = self.refine_client.call_async(request)
        timeout = self.refine_timeout if deadline is None else \
            max(0.0, min(self.refine_timeout, deadline.remaining()))
        deadline = time.monotonic() + timeout
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        # The answer is delivered by the executor in client_group; this thread only waits.
        while not future.done() and time.monotonic() < deadline:
            done.wait(0.02)
        if not future.done():
            self.refine_client.remove_pending_request(future)
            raise RefinementUnavailable(f'/{REFINE_SERVICE} did not answer within '
                                        f'{timeout:.1f} s (refine_timeout / limits.deadline)')
        result = future.result()
        if result is None:
            raise RefinementUnavailable(f'/{REFINE_SERVICE} call failed: {future.exception()}')
        if not result.success:
            raise InputError(f'refinement failed: {result.message}')
        # scores after refinement -> success probabilities (checkpoint calibration); the
        # in-process path gets them from GraspPipeline.refine
        refined = calibrate_refined(self.pipeline.predictor, msg_to_grasps(result.grasps))
        return refined, dict(zip(result.rejection_reasons, result.rejection_counts))

    # ----------------------------------------------------------------- output

    def _publish_pending(self):
        with self.lock:
            pending, self.pending_publish = self.pending_publish, None
        if pending is None:
            return
        grasps_msg, objects, header, scene_msg = pending
        self.grasps_pub.publish(grasps_msg)
        self.reconstruction_pub.publish(scene_msg if scene_msg is not None
                                        else scene_to_msg(objects, header))

    def _continuous_tick(self):
        try:
            frame_msg, masks_msg = self._latest_inputs()
        except InputError:
            return
        stamp = stamp_to_seconds(frame_msg.header.stamp)
        if stamp == self.last_continuous_stamp:
            return
        self.last_continuous_stamp = stamp
        request = PredictGrasps.Request()
        request.refine = self.continuous_refine
        request.allow_unrefined = True
        response = PredictGrasps.Response()
        try:
            with self.admission.slot(Deadline(self.limits.deadline)):
                self._check_inputs(frame_msg, masks_msg)
                self._predict(frame_msg, masks_msg, request, response, StageTimer(),
                              Deadline(self.limits.deadline))
        except (InputError, RefinementUnavailable) as exc:
            self.get_logger().warn(f'continuous prediction: {exc}', throttle_duration_sec=5.0)


def main(args=None):
    from zerograsp_ros.nodes.bringup import run_single_node

    return run_single_node(GraspNode, args)


if __name__ == '__main__':
    sys.exit(main())
