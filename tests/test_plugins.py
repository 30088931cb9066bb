"""Bring your own normalizer: a layer given as ``module:Class`` or ``file.py:Class`` is checked before any compute,
works in worker processes and in ``normlib run``, and its source enters the cache key."""

import textwrap

import pytest
import torch

from normlib import __main__ as cli
from normlib import cache, layers
from normlib.experiments import compass
from normlib.layers import plugins
from normlib.params import ParameterError
from normlib.sweep import sweep

GOOD = """
import torch
from torch import nn


class Scaled(nn.Module):
    def __init__(self, num_channels, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.eps = eps

    def forward(self, x):
        return x / (x.std(dim=(1, 2, 3), keepdim=True) + self.eps) * self.weight.view(1, -1, 1, 1)
"""


def write(tmp_path, source, name="mynorm.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def test_a_file_plugin_builds_in_every_factory(tmp_path):
    spec = f"{write(tmp_path, GOOD)}:Scaled"
    norm = layers.make_norm(spec, 8)
    assert type(norm).__name__ == "Scaled" and layers.norm_info(spec).title == "Scaled"
    block = layers.conv_norm_act(spec, 3, 8)
    assert block(torch.randn(2, 3, 5, 5)).shape == (2, 8, 5, 5)


def test_a_module_plugin(tmp_path, monkeypatch):
    write(tmp_path, GOOD, "my_plugin_module.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert type(layers.make_norm("my_plugin_module:Scaled", 4)).__name__ == "Scaled"


@pytest.mark.parametrize(
    "source, cls, message",
    [
        (None, "Scaled", "no file"),
        (GOOD, "Missing", "defines no 'Missing'"),
        ("x = 1\nclass NotAModule:\n    pass\n", "NotAModule", "not an nn.Module subclass"),
        ("value = 3\n", "value", "not an nn.Module subclass"),
        (
            "from torch import nn\nclass TwoArgs(nn.Module):\n"
            "    def __init__(self, a, b):\n        super().__init__()\n",
            "TwoArgs",
            "cannot be called as TwoArgs(num_channels)",
        ),
        (
            "from torch import nn\nclass Pool(nn.Module):\n    def __init__(self, c):\n        super().__init__()\n"
            "    def forward(self, x):\n        return x[:, :, ::2]\n",
            "Pool",
            "changes the tensor's shape from (4, 8, 6, 6) to (4, 8, 3, 6)",
        ),
        ("raise RuntimeError('broken import')\n", "X", "broken import"),
    ],
)
def test_every_bad_plugin_is_rejected_with_its_message(tmp_path, source, cls, message):
    path = tmp_path / "absent.py" if source is None else write(tmp_path, source, f"bad_{cls}.py")
    spec = f"{path}:{cls}"
    with pytest.raises(ParameterError, match=r"parameter 'norm'.*" + __import__("re").escape(message)):
        compass.EXPERIMENT.resolve("book", norm=spec)
    with pytest.raises(plugins.PluginError, match="expected|shape|defines no|broken"):
        layers.make_norm(spec, 8)


def test_an_unimportable_module_names_what_is_expected():
    with pytest.raises(ParameterError, match=r"parameter 'norm'.*no_such_module_xyz.*module:Class"):
        compass.EXPERIMENT.resolve("book", norm="no_such_module_xyz:Norm")
    with pytest.raises(ParameterError, match=r"parameter 'norm'.*unknown normalizer name='rmsnorm'"):
        compass.EXPERIMENT.resolve("book", norm="rmsnorm")


def test_the_cache_key_follows_the_layers_source(tmp_path):
    path = write(tmp_path, GOOD)
    spec = f"{path}:Scaled"
    config = {"model_kwargs": {"norm": spec, "cfg": [8]}}
    before = cache.cache_key(cache.cache_key, config)
    assert cache.cache_key(cache.cache_key, config) == before
    path.write_text(GOOD.replace("self.eps) *", "self.eps) * 2 *"))
    after = cache.cache_key(cache.cache_key, config)
    assert after != before
    # and the registry reloads the edited layer in this process
    x = torch.randn(2, 8, 3, 3)
    y = layers.make_norm(spec, 8)(x)
    torch.testing.assert_close(
        y, 2 * layers.make_norm("ln", 8)(x) * 0 + 2 * (x / (x.std(dim=(1, 2, 3), keepdim=True) + 1e-5))
    )


def _build_and_shape(spec: str, channels: int) -> list[int]:
    return list(layers.conv_norm_act(spec, 3, channels)(torch.randn(2, 3, 4, 4)).shape)


@pytest.mark.slow
def test_worker_processes_load_the_plugin_themselves(tmp_path):
    spec = f"{write(tmp_path, GOOD)}:Scaled"
    frame = sweep(_build_and_shape, [{"spec": spec, "channels": 4}], cache=False, progress=False)
    assert frame["result"][0] == [2, 4, 4, 4]


@pytest.mark.notebook
def test_normlib_run_with_a_file_plugin(tmp_path, monkeypatch, capsys):
    """A layer of the reader's own, given as a relative file path, through the whole chapter-04 notebook."""
    pytest.importorskip("papermill")
    monkeypatch.chdir(cli.Path(__file__).resolve().parents[1])
    monkeypatch.setenv("NORMLIB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "runs"
    status = cli.main(
        ["run", "04_compass", "-p", "norm", "examples/maxnorm.py:MaxNorm2d", "-p", "baseline_norms", "bn,ln",
         "-p", "train_baselines", "bn", "-p", "resnet_depth", "8", "-p", "depth", "5", "-p", "width", "8",
         "-p", "repeats", "1", "-p", "init_batch", "8", "-p", "subset", "64", "-p", "test_subset", "20",
         "-p", "batch_size", "32", "--out", str(out), "--quiet"]
    )  # fmt: skip
    assert status == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "claims:" in printed
    assert list(out.glob("04_compass-*/04_compass.ipynb"))


@pytest.mark.training
def test_report_card_command_prints_grades(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(cli.Path(__file__).resolve().parents[1])
    assert cli.main(["report-card", "examples/maxnorm.py:MaxNorm2d", "--baselines", "bn,ln"]) == 0
    out = capsys.readouterr().out
    assert "MaxNorm2d" in out and "no prediction" in out and "BatchNorm" in out
    assert cli.main(["report-card", "examples/nothing.py:X"]) == 2
    assert "parameter 'norm'" in capsys.readouterr().err


TINY = ["-p", "baseline_norms", "bn,ln", "-p", "train_baselines", "bn", "-p", "resnet_depth", "8", "-p", "depth", "5",
        "-p", "width", "8", "-p", "repeats", "1", "-p", "init_batch", "8", "-p", "subset", "64", "-p", "test_subset",
        "20", "-p", "batch_size", "32"]  # fmt: skip


@pytest.mark.training
def test_claims_with_a_file_plugin(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(cli.Path(__file__).resolve().parents[1])
    monkeypatch.setenv("NORMLIB_CACHE", str(tmp_path / "cache"))
    status = cli.main(
        ["claims", "--only", "04_compass", "--seeds", "0", "-p", "norm", "examples/maxnorm.py:MaxNorm2d", *TINY]
    )
    out = capsys.readouterr().out
    assert status in (0, 1) and "C04.grades.bn" in out and "C04.A.rms" not in out  # no prediction, no row
    assert cli.main(["claims", "--only", "04_compass", "-p", "norm", "examples/none.py:X"]) == 2
    assert "parameter 'norm'" in capsys.readouterr().err
    assert cli.main(["claims", "--only", "04_compass", "-p", "seed", "3"]) == 2


@pytest.mark.slow
def test_dask_workers_load_the_plugin_and_key_it_by_its_source(tmp_path):
    import logging

    distributed = pytest.importorskip("distributed")
    path = write(tmp_path, GOOD)
    spec = f"{path}:Scaled"
    grid = [{"spec": spec, "channels": 4}]
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        frame = sweep(_build_and_shape, grid, executor=client.get_executor(), cache_root=tmp_path / "c", progress=False)
        assert frame["result"][0] == [2, 4, 4, 4]
        path.write_text(GOOD + "\n# edited\n")  # the edited layer is a new key: computed again, not served stale
        sweep(_build_and_shape, grid, executor=client.get_executor(), cache_root=tmp_path / "c", progress=False)
    assert len(list((tmp_path / "c").rglob("*.entry"))) == 2
