"""Static checks of launch files (`launch`/`launch_ros` are not installable here): every executable they name is
a console script of setup.py, every parameter they pass is declared by that node, the YAML they load has a
section per node whose keys the node declares, and every launch argument the issue promises exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from lewm_ros.control.settings import PARAMETER_NAMES

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
ROS_BUILTIN_PARAMETERS = {"use_sim_time"}  # declared by every rclpy node


def console_scripts() -> dict[str, str]:
    text = (ROOT / "setup.py").read_text()
    return dict(re.findall(r'"([\w-]+)\s*=\s*([\w.]+:\w+)"', text))


def declared_parameters(executable: str) -> set[str]:
    if executable == "lewm_agent":
        return set(PARAMETER_NAMES) | ROS_BUILTIN_PARAMETERS
    module = console_scripts()[executable].split(":")[0]
    source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
    return set(re.findall(r'declare_parameter\(\s*"(\w+)"', source)) | ROS_BUILTIN_PARAMETERS


def node_calls(tree: ast.AST) -> list[ast.Call]:
    return [
        n for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("Node", "LifecycleNode")
    ]  # fmt: skip


def keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_there_is_a_sim_reach_launch_file():
    assert (ROOT / "launch" / "sim_reach.launch.py") in LAUNCH_FILES


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_names_real_executables_and_declared_parameters(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    compile(tree, str(path), "exec")
    scripts = console_scripts()
    ours = [c for c in node_calls(tree) if ast.literal_eval(keyword(c, "package")) == "lewm_ros"]
    assert ours, "no lewm_ros node in the launch file"
    for call in ours:
        executable = ast.literal_eval(keyword(call, "executable"))
        assert executable in scripts, f"{executable} is not a console script in setup.py"
        name = ast.literal_eval(keyword(call, "name"))
        assert name == executable, "node name differs from the YAML section it reads"
        declared = declared_parameters(executable)
        for item in keyword(call, "parameters").elts:
            if isinstance(item, ast.Dict):
                for key in item.keys:
                    assert ast.literal_eval(key) in declared, f"{executable} does not declare {key.value}"


def assigned(tree: ast.AST, name: str) -> ast.AST:
    """The value assigned to a module-level name."""
    return next(
        n.value for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == name for t in n.targets)
    )  # fmt: skip


def test_arm_launch_declares_the_promised_arguments_and_autostarts_the_agent():
    """arm.launch.py builds the agent in an OpaqueFunction (empty bundle/device keep the YAML's values), so its
    overrides are a computed dict: the names it may override must be declared agent parameters."""
    text = (ROOT / "launch" / "arm.launch.py").read_text()
    tree = ast.parse(text)
    arguments = {ast.literal_eval(key) for key in assigned(tree, "ARGUMENTS").keys}
    assert {"bundle", "device", "params_file", "record"} <= arguments
    overridable = set(ast.literal_eval(assigned(tree, "OVERRIDABLE")))
    assert overridable and overridable <= declared_parameters("lewm_agent")
    assert "TRANSITION_CONFIGURE" in text and "TRANSITION_ACTIVATE" in text and 'goal_state="inactive"' in text
    assert '"jetson_arm.yaml"' in text and "namespace=\"\"" in text  # Humble's LifecycleNode needs a namespace


def test_jetson_arm_yaml_is_a_valid_real_robot_configuration():
    """The settings the agent would build from it: GPU, fp16, trajectory output that holds, real time."""
    from lewm_ros.control.settings import build_settings

    params = yaml.safe_load((ROOT / "config" / "jetson_arm.yaml").read_text())["lewm_agent"]["ros__parameters"]
    assert params["use_sim_time"] is False
    settings = build_settings(params)  # raises SettingsError naming a bad parameter
    assert (settings.device, settings.precision) == ("cuda", "fp16")
    assert (settings.command_type, settings.safe_action) == ("joint_trajectory", "hold")
    assert settings.trajectory_duration_ms > 1000.0 / settings.control_rate_hz  # overlapping segments
    assert settings.deadline_ms < settings.plan_overrun_ms < 1000.0 / settings.control_rate_hz


def test_sim_reach_declares_the_promised_arguments_and_autostarts_the_agent():
    text = (ROOT / "launch" / "sim_reach.launch.py").read_text()
    tree = ast.parse(text)
    arguments = next(
        n for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "ARGUMENTS" for t in n.targets)
    )  # fmt: skip
    names = set(ast.literal_eval(arguments.value))
    assert {"scene", "bundle", "device", "headless", "record"} <= names
    assert "TRANSITION_CONFIGURE" in text and "TRANSITION_ACTIVATE" in text and 'goal_state="inactive"' in text


@pytest.mark.parametrize("config, nodes", [("sim_reach.yaml", ("mujoco_sim", "lewm_agent")),
                                           ("lewm_agent.yaml", ("lewm_agent",)),
                                           ("jetson_arm.yaml", ("lewm_agent",))])  # fmt: skip
def test_config_yaml_sections_hold_only_declared_parameters(config, nodes):
    document = yaml.safe_load((ROOT / "config" / config).read_text())
    assert set(document) == set(nodes)
    for node in nodes:
        params = document[node]["ros__parameters"]
        unknown = set(params) - declared_parameters(node)
        assert not unknown, f"{config}: {node} does not declare {sorted(unknown)}"
