"""--tensorboard and --wandb (live.py, docs/live-curves.md): each unit's records, read back from
TensorBoard's event files and from W&B's offline run, are exactly the unit's; the results and the
unit files are those of a run without them; a missing package is one line and exit 2, before
anything is touched; a run without them imports neither. Needs tensorboard and wandb
(requirements-dev.txt)."""
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import harness
import live
import options
import unit_run
import workers

from helpers import EXPERIMENT, ROOT, TINY, run_experiment

ARGS = ["--datasets=x_plus_y", "--num_seeds=2", *TINY[:-1]]  # TINY's last is --jobs=1
UNITS = ["x_plus_y_0", "x_plus_y_1"]

# A run without live curves, in a fresh process that then names the live modules it imported.
PLAIN_DRIVER = """
import json, sys
sys.path.insert(0, {root!r})
import harness, experiment as E
harness.main(E.Config, E.train_unit, sys.argv[1:])
live = [m for m in sys.modules if m.split(".")[0] in ("tensorboard", "wandb") or m == "torch.utils.tensorboard"]
print("live modules:", json.dumps(sorted(live)))
"""


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """(folder, stdout) of the run without --tensorboard and --wandb that the others must equal."""
    root = tmp_path_factory.mktemp("plain")
    driver = root / "driver.py"
    driver.write_text(PLAIN_DRIVER.format(root=str(ROOT)))
    proc = subprocess.run([sys.executable, str(driver), "--out_dir=plain", *ARGS, "--jobs=1"], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return root / "plain", proc.stdout


def unit_file(folder, name):
    return json.loads((folder / "units" / f"{name}.json").read_text())


def assert_same_results(plain, other, flag):
    """other's contract files equal plain's; its unit files too, but for wall times, the
    shortcut check's time and the settings that may differ (out_dir, jobs, the flag)."""
    assert (other / "final_info.json").read_text() == (plain / "final_info.json").read_text()
    ours = np.load(other / "all_results.npy", allow_pickle=True).item()
    assert ours == np.load(plain / "all_results.npy", allow_pickle=True).item()
    for name in UNITS:
        a, b = unit_file(plain, name), unit_file(other, name)
        for u in (a, b):
            del u["wall_time_s"], u["forward"]["check_s"]
        config_a, config_b = a.pop("config"), b.pop("config")
        assert a == b
        assert {k for k in config_a if config_a[k] != config_b[k]} <= {"out_dir", "jobs", flag}
        assert config_a[flag] is False and config_b[flag] is True
    assert {p.name for p in other.iterdir()} == {p.name for p in plain.iterdir()} | {flag}


def expected_scalars(unit):
    """{tag: [(step, value), ...]} of a unit file's records, as live.scalars names them."""
    tags = {}
    for prefix, rows in (("train", unit["train_info"]), ("val", unit["val_info"])):
        for row in rows:
            for tag, value in live.scalars(prefix, row).items():
                tags.setdefault(tag, []).append((row["step"], value))
    return tags


def tensorboard_run(folder):
    """(scalars {tag: [(step, value)]}, the config text) of one TensorBoard run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    return scalars, text


def unit_config(unit):
    return {**unit["config"], "dataset": unit["dataset"], "seed_index": unit["seed_index"], "seed": unit["seed"]}


@pytest.mark.slow
def test_off_by_default_nothing_is_imported_or_written(plain):
    folder, stdout = plain
    assert "live modules: []" in stdout
    assert not (folder / "tensorboard").exists() and not (folder / "wandb").exists()
    config = json.loads((folder / "config.json").read_text())
    assert config["tensorboard"] is False and config["wandb"] is False


@pytest.mark.slow
def test_tensorboard_holds_each_units_records_at_their_steps_and_changes_no_result(tmp_path, plain):
    run_experiment(tmp_path, "--out_dir=tb", *ARGS, "--jobs=2", "--tensorboard")  # the worker pool
    folder = tmp_path / "tb"
    assert_same_results(plain[0], folder, "tensorboard")
    assert sorted(p.name for p in (folder / "tensorboard").iterdir()) == UNITS  # one run per unit
    for name in UNITS:
        assert len(list((folder / "tensorboard" / name).glob("events.out.tfevents.*"))) == 1
        unit = unit_file(folder, name)
        scalars, text = tensorboard_run(folder / "tensorboard" / name)
        expected = expected_scalars(unit)
        assert "val/val_accuracy" in expected and set(scalars) == set(expected)
        for tag, points in expected.items():  # TensorBoard keeps float32
            assert scalars[tag] == [(step, float(np.float32(v))) for step, v in points], tag
        assert json.loads(textwrap.dedent(text)) == unit_config(unit)


def wandb_records(path):
    """The protobuf records of a W&B run file (run-*.wandb): a 7-byte header (":W&B", 0xBEE1,
    version 0), then LevelDB-log blocks of 32 KiB, each record chunk behind a 7-byte header
    (crc32, length, type: 1 full, 2 first, 3 middle, 4 last). wandb no longer ships a reader."""
    from wandb.proto import wandb_internal_pb2
    data = path.read_bytes()
    assert data[:7] == struct.pack("<4sHB", b":W&B", 0xBEE1, 0)
    pos, chunks = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            yield wandb_internal_pb2.Record.FromString(chunks)
            chunks = b""


def wandb_run(folder):
    """(run record, config, history {step: {key: value}}, exit record) of one offline run folder."""
    (path,) = folder.glob("run-*.wandb")
    run, history, exit_ = None, {}, None
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            history[items["_step"]] = {k: v for k, v in items.items() if not k.startswith("_")}
        elif kind == "exit":
            exit_ = record.exit
    config = {i.key: json.loads(i.value_json) for i in run.config.update if i.key != "_wandb"}
    return run, config, history, exit_


def wandb_env(tmp_path):
    """Offline and quiet, whatever this machine's W&B settings; its files under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    home = tmp_path / "wandb_home"
    return {**env, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": str(home),
            "WANDB_CACHE_DIR": str(home), "WANDB_DATA_DIR": str(home)}


@pytest.mark.slow
def test_wandb_offline_runs_hold_each_units_records_and_change_no_result(tmp_path, plain):
    proc = subprocess.run([sys.executable, str(EXPERIMENT), "--out_dir=wb", *ARGS, "--jobs=1", "--wandb"],
                          cwd=tmp_path, env=wandb_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "wb"
    assert_same_results(plain[0], folder, "wandb")
    runs = sorted((folder / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # one per unit, both from this one process (--jobs=1)
    seen = set()
    for run_folder in runs:
        run, config, history, exit_ = wandb_run(run_folder)
        name = run.display_name
        seen.add(name)
        assert run.run_group == "wb" and run.project == "grokking-harness"
        unit = unit_file(folder, name)
        assert config == unit_config(unit)
        expected = {}
        for tag, points in expected_scalars(unit).items():
            for step, value in points:
                expected.setdefault(step, {})[tag] = value
        assert history == expected  # every record, at its step, exactly (W&B keeps float64)
        assert exit_ is not None and exit_.exit_code == 0
    assert seen == set(UNITS)


@pytest.mark.slow
def test_a_resume_may_turn_tensorboard_on_for_the_units_it_trains(tmp_path, plain):
    folder = tmp_path / "resumed"
    shutil.copytree(plain[0], folder)
    (folder / "final_info.json").unlink()
    (folder / "units" / "x_plus_y_1.json").unlink()
    proc = run_experiment(tmp_path, "--out_dir=resumed", "--resume", "--tensorboard")
    assert "units: 1 to run, 1 resumed" in proc.stdout
    assert (folder / "final_info.json").read_text() == (plain[0] / "final_info.json").read_text()
    assert [p.name for p in (folder / "tensorboard").iterdir()] == ["x_plus_y_1"]
    assert json.loads((folder / "config.json").read_text())["tensorboard"] is False  # kept as it was


@pytest.mark.parametrize("package", ["tensorboard", "wandb"])
def test_a_missing_package_is_one_line_naming_it_and_exit_2(tmp_path, monkeypatch, capsys, package):
    import experiment as E
    monkeypatch.setitem(sys.modules, package, None)  # `import package` now fails; find_spec says None
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        harness.main(E.Config, E.train_unit, ["--out_dir=r", f"--{package}"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: --{package} needs the {package} package: pip install {package}\n"
    assert not (tmp_path / "r").exists()


# --- the logger itself, with a stand-in for train_unit: no training -------------------------------
def fake_train_unit(fail_first):
    """A train_unit taking two records whose losses say which attempt made them; with fail_first,
    the first attempt's shortcut fails (ShortcutFailed) and unit_run.train trains it again plain."""
    def train_unit(cfg, dataset, seed_index, run):
        attempt = 2 if run.plain_because else 1
        for step in (10, 20):
            run.record({"step": step, "train_loss": attempt / step, "train_accuracy": 0.5},
                       {"step": step, "val_loss": attempt + step, "val_accuracy": 0.25, "grokked": True,
                        "key_frequencies": [1, 2]})
        if attempt == 1 and fail_first:
            raise unit_run.ShortcutFailed("noted by the test")
        return run.result()
    return train_unit


def fake_cfg():
    import experiment as E
    return E.Config(total_steps=20, eval_every=10)


def fails_once(cfg, dataset, seed_index, run):
    """fake_train_unit(True) at module level, so that spawned workers can unpickle it."""
    return fake_train_unit(True)(cfg, dataset, seed_index, run)


@pytest.mark.parametrize("jobs", [1, 2])
def test_the_progress_bar_counts_each_update_once_when_a_unit_trains_again(tmp_path, jobs):
    """Each unit's first attempt records updates 10 and 20 and fails; the second records them
    again: the bar ends at 2 units x 20 updates, not 80 (the retrained records counted twice)."""
    from tqdm import tqdm
    bar, results = tqdm(total=40, file=io.StringIO()), []
    workers.run_units(fails_once, options.RunOptions(out_dir=str(tmp_path), device="cpu"), fake_cfg(),
                      [("x_plus_y", 0), ("x_plus_y", 1)], jobs, results.append, bar)
    assert len(results) == 2 and all(r["forward"]["path"] == "plain" for r in results)
    assert bar.n == 40


def settings(out, **on):
    return live.live_settings(options.RunOptions(out_dir=str(out), **on), fake_cfg())


def test_a_unit_trained_again_plain_starts_its_tensorboard_run_anew(tmp_path):
    warnings = []
    result = unit_run.train(fake_train_unit(True), fake_cfg(), "x_plus_y", 0, out_dir=str(tmp_path),
                            live=settings(tmp_path, tensorboard=True), warn=warnings.append)
    assert result["forward"]["reason"].startswith("the plain forward was dropped: noted by the test")
    assert len(warnings) == 1 and "training again from the start" in warnings[0]
    folder = tmp_path / "tensorboard" / "x_plus_y_0"
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1  # the first attempt's are gone
    scalars, _ = tensorboard_run(folder)
    # numbers only: the bool and the list (a progress measure's key_frequencies) are left out
    assert scalars == {"train/train_loss": [(10, np.float32(2 / 10)), (20, np.float32(2 / 20))],
                       "train/train_accuracy": [(10, 0.5), (20, 0.5)],
                       "val/val_loss": [(10, 12.0), (20, 22.0)], "val/val_accuracy": [(10, 0.25), (20, 0.25)]}


RESTART_DRIVER = """
import sys
sys.path[:0] = [{root!r}, {tests!r}]
import test_live, unit_run
out = sys.argv[1]
unit_run.train(test_live.fake_train_unit(True), test_live.fake_cfg(), "x_plus_y", 0, out_dir=out,
               live=test_live.settings(out, wandb=True), warn=lambda message: None)
"""


@pytest.mark.slow
def test_a_unit_trained_again_plain_is_a_second_wandb_run_and_the_first_is_marked_failed(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(RESTART_DRIVER.format(root=str(ROOT), tests=str(ROOT / "tests")))
    proc = subprocess.run([sys.executable, str(driver), str(tmp_path / "r")], cwd=tmp_path,
                          env=wandb_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    runs = [wandb_run(f) for f in sorted((tmp_path / "r" / "wandb").glob("offline-run-*"))]
    assert [run.display_name for run, *_ in runs] == ["x_plus_y_0", "x_plus_y_0"]
    losses = [[history[step]["val/val_loss"] for step in (10, 20)] for _, _, history, _ in runs]
    assert sorted(losses) == [[11, 21], [12, 22]]  # the first attempt's, then the second's
    exit_codes = {losses[i][0]: exit_.exit_code for i, (*_, exit_) in enumerate(runs)}
    assert exit_codes == {11: 1, 12: 0}  # the abandoned attempt is finished as failed


def test_a_failing_logger_is_one_warning_and_the_unit_trains_on(tmp_path, monkeypatch):
    def broken(self, step, values):
        raise OSError("No space left on device")
    monkeypatch.setattr(live.TensorBoardSink, "log", broken)
    warnings = []
    result = unit_run.train(fake_train_unit(False), fake_cfg(), "x_plus_y", 0, out_dir=str(tmp_path),
                            live=settings(tmp_path, tensorboard=True), warn=warnings.append)
    assert [r["step"] for r in result["val_info"]] == [10, 20]
    assert warnings == ["x_plus_y_0: --tensorboard stopped logging (OSError: No space left on device); "
                        "the unit trains on, its results unchanged"]


def test_a_slurm_array_task_logs_its_units_too(tmp_path, monkeypatch):
    monkeypatch.setattr(workers, "process_settings", lambda threads, deterministic: None)  # keep pytest's threads
    (tmp_path / "units").mkdir()
    opts = options.RunOptions(out_dir=str(tmp_path), tensorboard=True)
    workers.train_and_save_unit(fake_train_unit(False), opts, fake_cfg(), "x_plus_y", 1)
    assert (tmp_path / "units" / "x_plus_y_1.json").is_file()
    scalars, _ = tensorboard_run(tmp_path / "tensorboard" / "x_plus_y_1")
    assert scalars["val/val_accuracy"] == [(10, 0.25), (20, 0.25)]
