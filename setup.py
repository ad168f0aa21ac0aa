"""Pip install of the pure-Python core (training and evaluation without ROS).

The ROS 2 package itself is built by colcon from CMakeLists.txt; this file
only lets `pip install -e .` put `zerograsp_ros` on the path with its
non-ROS dependencies.
"""
from pathlib import Path

from setuptools import find_packages, setup


def _requirements():
    lines = Path(__file__).with_name('requirements').joinpath('core.txt').read_text()
    return [ln.strip() for ln in lines.splitlines() if ln.strip() and not ln.startswith('#')]


setup(
    name='zerograsp_ros',
    version='0.1.0',
    packages=find_packages(include=['zerograsp_ros', 'zerograsp_ros.*']),
    install_requires=_requirements(),
    python_requires='>=3.10',
)
