"""Server process of the robustness suite: grasp_node and execution_node in one process.

    python test/support/robustness_graph.py CHECKPOINT NAMESPACE

- grasp_node in NAMESPACE with a short max_frame_age (the test process is the camera:
  it publishes NAMESPACE/zerograsp/rgbd_frame and can stop doing so),
- execution_node in NAMESPACE (sim backend; the simulated cell is NOT running, so a pick
  that gets past the request checks fails at a motion stage after service_timeout).
/refine_grasps is served by a separate refinement_node process the test can kill.
Prints 'ROBUSTNESS GRAPH READY' once both nodes serve.
"""
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv):
    checkpoint, namespace = argv[1], argv[2]
    from rclpy.parameter import Parameter

    from zerograsp_ros.nodes.bringup import init_ros, spin
    from zerograsp_ros.nodes.execution_node import ExecutionNode
    from zerograsp_ros.nodes.grasp_node import GraspNode

    init_ros()
    ns = ['--ros-args', '-r', f'__ns:={namespace}']
    grasp = GraspNode(cli_args=ns, parameter_overrides=[
        Parameter('checkpoint', value=checkpoint), Parameter('device', value='cpu'),
        # refinement through the killable refinement_node, not in process (the default)
        Parameter('use_refine_service', value=True),
        Parameter('max_frame_age', value=1.5), Parameter('refine_service_wait', value=1.0),
        Parameter('refine_timeout', value=20.0), Parameter('max_grasps_per_object', value=16),
        # crowded 2-core test machine: the 8-client test queues everyone, none refused
        Parameter('limits.deadline', value=110.0),
        Parameter('limits.max_queue_wait', value=110.0)])
    execution = ExecutionNode('execution_node', cli_args=ns, parameter_overrides=[
        Parameter('backend', value='sim'), Parameter('service_timeout', value=1.0),
        Parameter('predict_service', value=f'{namespace}/predict_grasps'),
        Parameter('predict_timeout', value=60.0)])
    print('ROBUSTNESS GRAPH READY', flush=True)
    return spin([grasp, execution], threads=8)


if __name__ == '__main__':
    sys.exit(main(sys.argv))
