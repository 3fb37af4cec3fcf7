"""`lewm-ros bag2dataset` on real rosbag2 files (written with rosbags, and a Humble-style sqlite3 bag written with
sqlite3): timing, zero-order-hold alignment, both command types, joint states, episode markers and gaps,
damaged bags, and the command line's refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from bagkit import (
    NS,
    array_command,
    compressed_image,
    joint_state,
    marker,
    raw_image,
    trajectory,
    write_bag,
    write_humble_sqlite_bag,
)

from lewm_ros.cli import main
from lewm_ros.data.bag_conversion import convert
from lewm_ros.data.conversion_spec import (
    BETWEEN_STEPS,
    NO_COMMAND,
    NO_JOINT_STATE,
    OUTSIDE_MARKERS,
    UNDECODABLE,
    ConversionError,
    ConversionSpec,
)
from lewm_ros.data.episode_reader import EpisodeReader
from lewm_ros.data.episode_validation import validate
from lewm_ros.data.frames import fit_frame

JOINTS = ("shoulder", "elbow")
DT = 0.05
SIDE = 16
T0 = 1_700_000_000 * NS  # wall-clock-like log times
CAM, CMD, JS, EP = "/camera/image_raw", "/velocity_controller/commands", "/joint_states", "/bag_recorder/episode"


def frame_pixels(k: int, side: int = SIDE) -> np.ndarray:
    """A frame that names its index: every pixel (k, 255 - k, 7 * k mod 256)."""
    pixels = np.empty((side, side, 3), np.uint8)
    pixels[...] = (k % 256, 255 - k % 256, (7 * k) % 256)
    return pixels


def velocity(k: int) -> list[float]:
    return [round(np.sin(k) * 1.5, 6), round(np.cos(k) * 1.5, 6)]


def qpos(k: int) -> list[float]:
    return [0.01 * k, -0.02 * k]


def recording(frames: int = 30, *, dt: float = DT, start: int = T0, command_delay: float = 0.01,
              image=lambda k, ns: raw_image(frame_pixels(k), ns), commands: str = "array", joints: bool = True,
              skip: frozenset = frozenset()) -> list:  # fmt: skip
    """An arm at the control rate: frame k at start + k*dt, the command answering it `command_delay` later, a joint
    state with each frame. Frame indices in `skip` are not recorded (a dropped camera frame)."""
    records = []
    for k in range(frames):
        ns = start + round(k * dt * NS)
        if joints:
            records.append((JS, joint_state(JOINTS, qpos(k), [0.2, -0.4], ns), ns - 1000))
        if k not in skip:
            records.append((CAM, image(k, ns), ns))
        cmd_ns = ns + round(command_delay * NS)
        if commands == "array":
            records.append((CMD, array_command(velocity(k)), cmd_ns))
        else:
            reverse = list(reversed(JOINTS))  # names in another order than the joint states: matched by name
            records.append((CMD, trajectory(reverse, velocities=list(reversed(velocity(k)))), cmd_ns))
    return sorted(records, key=lambda r: r[2])


def spec(**overrides) -> ConversionSpec:
    values = {"image_topic": CAM, "action_topic": CMD, "joint_topic": JS, "image_size": SIDE, "control_dt": DT,
              "max_joint_speed": (2.0,), **overrides}  # fmt: skip
    return ConversionSpec(**values)


def check_accounting(report) -> None:
    for bag in report.bags:
        assert bag.kept + sum(bag.dropped.values()) == bag.frames, (bag.kept, dict(bag.dropped), bag.frames)


@pytest.mark.parametrize("storage, version", [("mcap", 8), ("mcap", 9), ("sqlite3", 8)])
def test_rows_take_frames_joint_states_and_the_command_that_followed_each_frame(tmp_path, storage, version):
    bag = write_bag(tmp_path / "bag", recording(30), storage=storage, version=version)
    report = convert([bag], tmp_path / "out.h5", spec())
    check_accounting(report)
    assert report.episodes == 1 and report.rows == 30
    with EpisodeReader(tmp_path / "out.h5") as reader:
        episode = reader.episode(0)
        attrs = reader.attributes
    for k in range(30):
        np.testing.assert_array_equal(episode.pixels[k], frame_pixels(k))
        np.testing.assert_allclose(episode.qpos[k], qpos(k), atol=1e-6)  # interpolated 1 us away
    expected = np.array([velocity(k) for k in range(29)]) / 2.0
    np.testing.assert_allclose(episode.action[:-1], expected, atol=1e-6)  # zero-order hold: command k -> row k
    assert np.all(np.isnan(episode.action[-1]))
    np.testing.assert_allclose(episode.timestamp, np.arange(30) * DT, atol=1e-9)
    np.testing.assert_allclose(episode.qvel, np.tile([0.2, -0.4], (30, 1)))
    assert list(attrs["joint_names"]) == list(JOINTS)  # learnt from the joint states
    assert attrs["source"] == "rosbag2" and attrs["camera"] == CAM and attrs["control_dt"] == DT
    assert "zero-order hold" in attrs["alignment"]


def test_humble_sqlite_bag_without_definitions_converts_like_mcap(tmp_path):
    records = recording(20)
    humble = write_humble_sqlite_bag(tmp_path / "humble", records)
    mcap = write_bag(tmp_path / "mcap", records)
    for name, bag, distro in (("h.h5", humble, "humble"), ("m.h5", mcap, "jazzy")):
        convert([bag], tmp_path / name, spec(distro=distro))
    with EpisodeReader(tmp_path / "h.h5") as a, EpisodeReader(tmp_path / "m.h5") as b:
        for field in ("pixels", "action", "qpos", "qvel", "timestamp"):
            np.testing.assert_array_equal(getattr(a.episode(0), field), getattr(b.episode(0), field))


def test_joint_names_come_from_joint_states_and_trajectories_match_by_name(tmp_path):
    bag = write_bag(tmp_path / "bag", recording(12, commands="trajectory"))
    report = convert([bag], tmp_path / "out.h5", spec())
    assert report.joint_names == JOINTS
    with EpisodeReader(tmp_path / "out.h5") as reader:
        action = reader.actions(0)
        assert list(reader.attributes["joint_names"]) == list(JOINTS)
    np.testing.assert_allclose(action[:-1], np.array([velocity(k) for k in range(11)]) / 2.0, atol=1e-6)


def test_position_trajectories_are_differenced_against_the_joint_state(tmp_path):
    records = []
    for k in range(10):
        ns = T0 + round(k * DT * NS)
        records.append((JS, joint_state(JOINTS, qpos(k)), ns - 1000))
        records.append((CAM, raw_image(frame_pixels(k), ns), ns))
        target = np.array(qpos(k)) + np.array([0.05, -0.1])  # 0.05 rad in 0.1 s -> 0.5 rad/s
        records.append((CMD, trajectory(JOINTS, positions=target.tolist(), horizon_ns=NS // 10), ns + NS // 100))
    bag = write_bag(tmp_path / "bag", sorted(records, key=lambda r: r[2]))
    convert([bag], tmp_path / "out.h5", spec(max_joint_speed=(1.0,)))
    with EpisodeReader(tmp_path / "out.h5") as reader:
        action = reader.actions(0)
        qvel = reader.read("qvel", 0)
    # the joint state at the command's time is interpolated between frames: position k + 0.2 of a step
    moved = np.array([0.05, -0.1]) - 0.2 * np.array([0.01, -0.02])
    np.testing.assert_allclose(action[:-1], np.tile(moved / 0.1, (9, 1)), atol=1e-5)  # joint states 1 us early
    np.testing.assert_allclose(qvel[1:-1], np.tile([0.2, -0.4], (8, 1)), atol=1e-6)  # velocities differenced


def test_a_faster_camera_is_subsampled_and_a_dropped_frame_splits_the_episode(tmp_path):
    fast = write_bag(tmp_path / "fast", recording(40, dt=DT / 2))  # 40 Hz camera, commands at 40 Hz
    report = convert([fast], tmp_path / "fast.h5", spec())
    check_accounting(report)
    assert report.bags[0].dropped[BETWEEN_STEPS] == 19 and report.rows == 20
    with EpisodeReader(tmp_path / "fast.h5") as reader:
        pixels, action = reader.pixels(0), reader.actions(0)
    for row in range(20):
        np.testing.assert_array_equal(pixels[row], frame_pixels(2 * row))
    # frame 2k+2 arrived after the command answering frame 2k+1: that is the one in force
    np.testing.assert_allclose(action[:-1], np.array([velocity(2 * r + 1) for r in range(19)]) / 2.0, atol=1e-6)

    holed = write_bag(tmp_path / "holed", recording(30, skip=frozenset({12})))
    report = convert([holed], tmp_path / "holed.h5", spec())
    check_accounting(report)
    assert report.bags[0].episodes == [12, 17]


def sim_clock_recording(frames: int, lagged: frozenset) -> list:
    """What a recorder on a simulation's /clock writes: frames and joint states carry exact sim-time header stamps,
    but receive times come from the last /clock the recorder saw, one step late for the frames in `lagged`;
    messages are written in arrival order (frame k, joint state k, then the command answering frame k)."""
    records = []
    for k in range(frames):
        exact = T0 + round(k * DT * NS)
        received = exact - (round(DT * NS) if k in lagged else 0)
        records.append((CAM, raw_image(frame_pixels(k), exact), received))
        records.append((JS, joint_state(JOINTS, qpos(k), [0.2, -0.4], exact), received))
        records.append((CMD, array_command(velocity(k)), received))
    return records


def test_header_stamps_place_frames_when_receive_times_jitter(tmp_path):
    bag = write_bag(tmp_path / "bag", sim_clock_recording(40, lagged=frozenset({7, 19, 20, 33})))
    report = convert([bag], tmp_path / "auto.h5", spec())  # auto: every frame and joint state is stamped
    assert report.bags[0].frame_time == "header stamps" and report.bags[0].episodes == [40]
    with EpisodeReader(tmp_path / "auto.h5") as reader:
        action, qpos_ = reader.actions(0), reader.read("qpos", 0)
        np.testing.assert_allclose(reader.read("timestamp", 0), np.arange(40) * DT, atol=1e-9)
    np.testing.assert_allclose(action[:-1], np.array([velocity(k) for k in range(39)]) / 2.0, atol=1e-6)
    np.testing.assert_allclose(qpos_, np.array([qpos(k) for k in range(40)]), atol=1e-12)

    report = convert([bag], tmp_path / "bag.h5", spec(frame_time="bag"))  # receive times: the jitter splits
    check_accounting(report)
    assert report.bags[0].frame_time == "bag receive times" and len(report.bags[0].episodes) > 1


def test_frames_without_header_stamps_fall_back_to_receive_times(tmp_path):
    unstamped = [(t, m, ns) for t, m, ns in recording(10)]
    for _topic, msg, _ns in unstamped:
        if hasattr(msg, "header"):
            msg.header.stamp.sec = msg.header.stamp.nanosec = 0
    bag = write_bag(tmp_path / "bag", unstamped)
    report = convert([bag], tmp_path / "auto.h5", spec())
    assert report.bags[0].frame_time == "bag receive times" and report.bags[0].episodes == [10]
    with pytest.raises(ConversionError, match="header stamp"):
        convert([bag], tmp_path / "header.h5", spec(frame_time="header"))
    with pytest.raises(ConversionError, match="no episode"):
        convert([bag], tmp_path / "header.h5", spec(frame_time="header", joint_topic=None))


def test_gaps_and_episode_markers_split_episodes(tmp_path):
    first, second = recording(15), recording(15, start=T0 + 10 * NS)
    gaps = write_bag(tmp_path / "gaps", first + second)
    report = convert([gaps], tmp_path / "gaps.h5", spec())
    assert report.bags[0].episodes == [15, 15] and report.bags[0].split_on == "gaps"

    marked = first + second + [
        (EP, marker("start 0"), T0 + round(2.5 * DT * NS)), (EP, marker("stop 0"), T0 + round(9.5 * DT * NS)),
        (EP, marker("start 1"), T0 + 10 * NS - 1), (EP, marker("stop 1"), T0 + 11 * NS),
    ]  # fmt: skip
    bag = write_bag(tmp_path / "marked", sorted(marked, key=lambda r: r[2]))
    report = convert([bag], tmp_path / "marked.h5", spec())
    check_accounting(report)
    assert report.bags[0].episodes == [7, 15] and "markers" in report.bags[0].split_on
    assert report.bags[0].dropped[OUTSIDE_MARKERS] == 8
    with EpisodeReader(tmp_path / "marked.h5") as reader:
        np.testing.assert_array_equal(reader.pixels(0, [0]), frame_pixels(3)[None])


def test_frames_before_the_first_command_or_without_joint_states_are_dropped_with_reasons(tmp_path):
    records = [r for r in recording(20) if not (r[0] == CMD and r[2] < T0 + 4 * DT * NS)]  # commands from frame 4
    records = [r for r in records if not (r[0] == JS and T0 + 9.5 * DT * NS < r[2] < T0 + 40 * DT * NS)]
    bag = write_bag(tmp_path / "bag", records)
    report = convert([bag], tmp_path / "out.h5", spec(max_gap=0.06))
    check_accounting(report)
    bag_report = report.bags[0]
    assert bag_report.dropped[NO_COMMAND] == 4  # frames 0-3: no command had arrived before the next frame
    assert bag_report.dropped[NO_JOINT_STATE] == 10  # frames 10-19
    assert bag_report.episodes == [6]  # frames 4..9; 9 has no action (frame 10 is dropped)


def test_compressed_images_and_other_sizes_go_through_the_agents_codec_and_fit(tmp_path):
    big = {k: np.random.default_rng(k).integers(0, 255, (48, 64, 3), dtype=np.uint8) for k in range(8)}
    bag = write_bag(tmp_path / "bag", recording(8, image=lambda k, ns: compressed_image(big[k], ns, "png")))
    report = convert([bag], tmp_path / "out.h5", spec())
    assert report.bags[0].resized == {"64x48": 8}
    lines = "\n".join(report.lines(spec()))
    assert "resized 8 frames from 64x48 to 16x16 (crop)" in lines
    with EpisodeReader(tmp_path / "out.h5") as reader:
        for k in range(8):
            np.testing.assert_array_equal(reader.pixels(0, [k])[0], fit_frame(big[k], SIDE, "crop"))

    report = convert([bag], tmp_path / "out.h5", spec(image_policy="resize"), overwrite=True)
    with EpisodeReader(tmp_path / "out.h5") as reader:
        np.testing.assert_array_equal(reader.pixels(0, [3])[0], fit_frame(big[3], SIDE, "resize"))
    with pytest.raises(ConversionError, match="no episode"):
        convert([bag], tmp_path / "exact.h5", spec(image_policy="exact"))
    assert not (tmp_path / "exact.h5").exists()


def test_undecodable_frames_are_dropped_and_split(tmp_path):
    def image(k, ns):
        msg = raw_image(frame_pixels(k), ns)
        if k == 5:
            msg.encoding = "yuv422"
        return msg

    bag = write_bag(tmp_path / "bag", recording(12, image=image))
    report = convert([bag], tmp_path / "out.h5", spec())
    check_accounting(report)
    assert report.bags[0].dropped[UNDECODABLE] == 1 and report.bags[0].episodes == [5, 6]
    assert "unsupported image encoding" in report.bags[0].first_errors[UNDECODABLE]


def test_several_bags_append_and_must_agree_on_joints(tmp_path):
    a = write_bag(tmp_path / "a", recording(10))
    b = write_bag(tmp_path / "b", recording(12), storage="sqlite3")
    report = convert([a, b], tmp_path / "out.h5", spec())
    assert report.episodes == 2 and report.rows == 22
    with EpisodeReader(tmp_path / "out.h5") as reader:
        assert [reader.episode(e).policy for e in range(2)] == ["rosbag:a", "rosbag:b"]
    other = write_bag(tmp_path / "other", [(CAM, raw_image(frame_pixels(0), T0), T0),
                                           (JS, joint_state(["a", "b", "c"], [0, 0, 0]), T0),
                                           (CMD, array_command([0, 0, 0]), T0 + 1)])  # fmt: skip
    with pytest.raises(ConversionError, match="differ"):
        convert([a, other], tmp_path / "mixed.h5", spec())
    assert not (tmp_path / "mixed.h5").exists() and not list(tmp_path.glob(".mixed.h5*"))


def test_long_episodes_are_cut_into_overlapping_parts(tmp_path, monkeypatch):
    monkeypatch.setattr("lewm_ros.data.bag_conversion.MAX_EPISODE_BYTES", 10 * SIDE * SIDE * 3)  # 10 frames
    bag = write_bag(tmp_path / "bag", recording(25))
    report = convert([bag], tmp_path / "out.h5", spec())
    check_accounting(report)
    assert report.bags[0].episodes == [10, 10, 7] and report.bags[0].kept == 25
    with EpisodeReader(tmp_path / "out.h5") as reader:
        np.testing.assert_array_equal(reader.pixels(1, [0])[0], frame_pixels(9))  # part 2 repeats frame 9
        actions = np.concatenate([reader.actions(e)[:-1] for e in range(3)])
    np.testing.assert_allclose(actions, np.array([velocity(k) for k in range(24)]) / 2.0, atol=1e-6)  # all 24


# ---------------------------------------------------------------------- damaged bags


def long_recording(tmp_path: Path) -> Path:
    """~3.7 MB MCAP: several 1 MiB chunks of 64x64 frames, so a cut leaves whole chunks behind."""
    noise = np.random.default_rng(0)

    def image(k, ns):
        return raw_image(noise.integers(0, 255, (64, 64, 3), dtype=np.uint8), ns)

    return write_bag(tmp_path / "long", recording(300, image=image))


def test_a_truncated_mcap_is_refused_with_counts_or_converted_partially(tmp_path, capsys):
    bag = long_recording(tmp_path)
    cut = tmp_path / "cut"
    cut.mkdir()
    data = (bag / "long.mcap").read_bytes()
    (cut / "long.mcap").write_bytes(data[: len(data) * 2 // 3])  # killed mid-recording: no footer, no metadata
    args = ["bag2dataset", str(cut), "--image-topic", CAM, "--action-topic", CMD, "--joint-topic", JS,
            "--image-size", "16", "--control-dt", str(DT), "--max-joint-speed", "2", "--out", str(tmp_path / "o.h5")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "damaged" in err and "--allow-partial" in err and "messages recovered" in err
    assert not (tmp_path / "o.h5").exists()

    assert main([*args, "--allow-partial", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "DAMAGED" in captured.out and "warning" in captured.err
    summary = validate(tmp_path / "o.h5")
    assert 100 < summary.num_frames < 300


def test_a_corrupt_chunk_inside_an_intact_file_is_skipped_and_reported(tmp_path):
    bag = long_recording(tmp_path)
    data = bytearray((bag / "long.mcap").read_bytes())
    zstd_frames = [i for i in range(len(data) - 3) if data[i : i + 4] == b"\x28\xb5\x2f\xfd"]
    data[zstd_frames[1] : zstd_frames[1] + 4] = bytes(4)  # the second chunk no longer decompresses
    (bag / "long.mcap").write_bytes(bytes(data))
    with pytest.raises(ConversionError, match=r"damaged.*corrupt chunk"):
        convert([bag], tmp_path / "o.h5", spec())
    report = convert([bag], tmp_path / "o.h5", spec(allow_partial=True))
    check_accounting(report)
    bag_report = report.bags[0]
    assert bag_report.damaged and len(bag_report.episodes) == 2  # the lost chunk splits the recording
    assert 150 < report.rows < 300 and bag_report.messages[CAM] == report.rows


# ---------------------------------------------------------------------- refusals


def cli(tmp_path: Path, bag: Path, *extra: str) -> list[str]:
    return ["bag2dataset", str(bag), "--image-topic", CAM, "--action-topic", CMD, "--image-size", "16",
            "--control-dt", str(DT), "--max-joint-speed", "2", "--out", str(tmp_path / "out.h5"), *extra]  # fmt: skip


def test_missing_topics_are_listed_with_the_bags_topics_and_types(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", recording(5))
    assert main(cli(tmp_path, bag, "--joint-topic", "/arm/joint_states")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no topic '/arm/joint_states'" in err
    for topic, kind in ((CAM, "sensor_msgs/msg/Image"), (CMD, "std_msgs/msg/Float64MultiArray"),
                        (JS, "sensor_msgs/msg/JointState")):  # fmt: skip
        assert f"{topic} ({kind}" in err


def test_unsupported_message_types_are_refused(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", recording(5))
    assert main(cli(tmp_path, bag, "--joint-topic", CAM)) == 2
    assert "carries sensor_msgs/msg/Image" in capsys.readouterr().err
    weird = write_bag(tmp_path / "weird", [*recording(5), (EP, joint_state(JOINTS, [0, 0]), T0)])
    assert main(cli(tmp_path, weird)) == 2
    assert "expected std_msgs/msg/String" in capsys.readouterr().err
    assert main(["bag2dataset", str(bag), "--image-topic", CMD, "--action-topic", CMD, "--image-size", "16",
                 "--control-dt", "0.05", "--max-joint-speed", "2", "--out", str(tmp_path / "x.h5")]) == 2  # fmt: skip
    assert "does not convert" in capsys.readouterr().err


def test_existing_output_is_refused_unless_overwrite_and_failures_leave_it_untouched(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", recording(6))
    out = tmp_path / "out.h5"
    out.write_bytes(b"precious")
    assert main(cli(tmp_path, bag)) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == b"precious"
    assert main(cli(tmp_path, bag, "--action-topic", "/nope", "--overwrite")) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag", "out.h5"]
    assert main(cli(tmp_path, bag, "--overwrite", "--no-progress")) == 0
    assert validate(out).num_frames == 6


@pytest.mark.parametrize("flags, message", [
    (("--max-joint-speed", "0"), "must be in"),
    (("--max-joint-speed", "1,nan"), "finite"),
    (("--control-dt", "0"), "must be in"),
    (("--image-size", "0"), "must be in"),
    (("--max-gap", "0.01"), "at least --control-dt"),
    (("--sync-tolerance", "0.05"), "sync-tolerance"),
    (("--joint-names", "a,a"), "distinct"),
    (("--image-policy", "zoom"), "invalid choice"),
])  # fmt: skip
def test_bad_flags_are_one_line_and_exit_2(tmp_path, capsys, flags, message):
    bag = write_bag(tmp_path / "bag", recording(3))
    assert main(cli(tmp_path, bag, *flags)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("lewm-ros bag2dataset: error:")


def test_not_a_bag_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(cli(tmp_path, tmp_path / "empty")) == 2
    assert "not a rosbag2 directory" in capsys.readouterr().err
    assert main(cli(tmp_path, tmp_path / "missing")) == 2
    assert "does not exist" in capsys.readouterr().err
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"not an mcap file at all")
    assert main(cli(tmp_path, junk)) == 2
    assert "not an MCAP file" in capsys.readouterr().err
    copy = tmp_path / "nometa"
    shutil.copytree(write_bag(tmp_path / "bag", recording(6)), copy)
    (copy / "metadata.yaml").unlink()
    assert main(cli(tmp_path, copy, "--no-progress")) == 0  # intact storage file: read directly, noted
    assert "no metadata.yaml" in capsys.readouterr().out


def test_the_rosbags_free_copies_in_the_conversion_spec_agree():
    """conversion_spec copies two rosbags-bound names so `lewm-ros bag2dataset --help` needs no rosbags."""
    from lewm_ros.data import conversion_spec
    from lewm_ros.data.bag_metadata import EPISODE_TYPE
    from lewm_ros.data.message_types import TYPESTORES

    assert conversion_spec.MARKER_TYPE == EPISODE_TYPE
    assert conversion_spec.DISTROS == tuple(TYPESTORES)
