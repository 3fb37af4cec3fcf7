"""ament_python build for lewm_ros: the same file serves colcon and plain pip."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "lewm_ros"
HERE = Path(__file__).parent


def share_files(folder: str) -> list[tuple[str, list[str]]]:
    """Install every file under `folder` to share/lewm_ros/<folder>, keeping sub-folders."""
    entries: dict[str, list[str]] = {}
    for path in sorted((HERE / folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            rel = path.relative_to(HERE)
            entries.setdefault(str(Path("share", PACKAGE, rel.parent)), []).append(str(rel))
    return sorted(entries.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *share_files("launch"),
        *share_files("config"),
        *share_files("sim"),
        *share_files("models"),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="lewm_ros developers",
    maintainer_email="dev@lewm-ros.invalid",
    description="LeWorldModel latent planning for camera-equipped arms on ROS 2.",
    license="MIT",
    python_requires=">=3.10",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "lewm-ros = lewm_ros.cli:main",
            "lewm_agent = lewm_ros.ros.agent_node:main",
            "mujoco_sim = lewm_ros.ros.mujoco_sim:main",
            "bag_recorder = lewm_ros.ros.bag_recorder:main",
        ]
    },
)
