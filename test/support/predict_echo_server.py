"""A separate process serving PredictGrasps for the interface round-trip test.

It answers with make_predict_response(request.max_grasps - 17) and appends
the request it received, serialized (hex), to the message, so the client can
compare both directions field by field.
"""
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rclpy  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402

from support.interface_samples import make_predict_response  # noqa: E402
from zerograsp_ros.srv import PredictGrasps  # noqa: E402


def main():
    rclpy.init()
    node = rclpy.create_node('predict_echo_server')

    def handle(request, response):
        received = serialize_message(request).hex()
        filled = make_predict_response(request.max_grasps - 17)
        filled.message = filled.message + ' ' + received
        return filled

    node.create_service(PredictGrasps, 'predict_grasps', handle)
    print('READY', flush=True)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
