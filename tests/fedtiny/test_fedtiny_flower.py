"""The Flower layer: the strategy + ClientApp protocol in process (LocalGrid) and on Flower's simulation
engine, client failures, the deployment's run config, the experiment runner and its config checks."""

import json

import numpy as np
import pytest

pytest.importorskip("flwr")

from reprozoo.core.experiment import ConfigError  # noqa: E402
from reprozoo.fedtiny.experiment import Config, run  # noqa: E402
from reprozoo.fedtiny.server import ServerJob  # noqa: E402
from reprozoo.fedtiny.simulation import run_federated  # noqa: E402
from reprozoo.fedtiny.sparse import Mask  # noqa: E402
from reprozoo.fedtiny.strategy import FedTinyStrategy  # noqa: E402

TINY = dict(n_clients=3, n_train=240, rounds=2, delta_t=1, t_end=3, warmup_rounds=0, abns_samples=48, synflow_iters=3,
            eval_every=1, n_curve=200, n_test=300, candidates=("erk-magnitude", "uniform-random", "er-magnitude"),
            device="cpu")


def tiny_job(method, **changes):
    """A ServerJob of ``method`` on MNIST at density 0.05, seed 0, with the TINY settings (and ``changes``)."""
    return ServerJob(Config.from_preset("quick", **{**TINY, **changes}), method, "MNIST", 0.05, 0)


def test_fedtiny_protocol_in_process_keeps_density_and_zeros():
    # prepare / execute
    (out,), _ = run_federated([tiny_job("FedTiny")], 3, engine="local")
    # assert: ABNS ran over the pool and picked its argmin; masks exact after every grow/drop
    assert out["abns"]["chosen"] in TINY["candidates"]
    losses = out["abns"]["losses"]
    assert out["abns"]["chosen"] == TINY["candidates"][int(np.argmin(losses))]
    assert out["density"] == pytest.approx(0.05, abs=1e-3)
    adjusted = [e for e in out["history"] if e.get("adjusted")]
    assert len(adjusted) == 2 and all(len(e["adjusted"]) == 1 for e in adjusted)
    assert adjusted[0]["adjusted"] == ["fc.weight"]  # output layer first
    assert 0.0 <= out["top1"] <= 100.0 and out["bytes"] > 0 and out["flops_per_round"] > 0  # top1 in percent


def test_candidate_warm_up_before_abns_is_charged_to_fedtiny():
    """warmup_rounds=w: every candidate trains w masked rounds (history entries tagged with it), ABNS runs
    after round w on the warmed-up candidates, and the chosen one trains the remaining rounds; rounds,
    bytes and FLOPs of the warm-up count in the job's totals; w=0 is the selection at initialisation."""
    (warm, cold), _ = run_federated([tiny_job("FedTiny", warmup_rounds=1, rounds=3),
                                     tiny_job("FedTiny", warmup_rounds=0, rounds=3)], 3, engine="local")
    pool = TINY["candidates"]
    assert [e.get("warmup") for e in warm["history"]] == [*pool, None, None]
    assert [e["round"] for e in warm["history"]] == [1, 1, 1, 2, 3]
    assert warm["abns"]["after_round"] == 1 and cold["abns"]["after_round"] == 0
    assert [e["round"] for e in cold["history"]] == [1, 2, 3]
    assert [r for r, _ in warm["curve"]] == [1, 2, 3] and [r for r, _ in cold["curve"]] == [0, 1, 2, 3]
    # the warm-up trains C candidates in round 1: more bytes and FLOPs than selecting at initialisation
    assert warm["bytes"] > cold["bytes"] and warm["flops_per_round"] > cold["flops_per_round"]
    assert warm["density"] == pytest.approx(0.05, abs=1e-3)
    # the warmed-up candidates' losses are below those at initialisation (about ln 10)
    assert min(warm["abns"]["losses"]) < min(cold["abns"]["losses"])
    with pytest.raises(ConfigError, match="warmup_rounds=3 should be below rounds=3"):
        tiny_job("FedTiny", warmup_rounds=3, rounds=3)


def test_failing_client_does_not_stop_the_round():
    (out,), _ = run_federated([tiny_job("FedDST", fail_client=1, fail_round=2)], 3, engine="local")
    assert [e["n_failed"] for e in out["history"]] == [0, 1]
    assert [e["n_ok"] for e in out["history"]] == [3, 2]
    assert out["failures"] == [(2, "client 1", "RuntimeError: injected failure in round 2")]
    assert out["n_failed"] == 1  # the failure is recorded in the job's result
    assert out["density"] == pytest.approx(0.05, abs=1e-3)


def test_strategy_rejects_mask_shape_mismatch():
    import torch

    with pytest.raises(ValueError, match="does not match"):
        FedTinyStrategy(shapes={"fc.weight": (10, 64)}, base_config={},
                        mask=Mask({"fc.weight": torch.ones(10, 32, dtype=torch.bool)}))
    with pytest.raises(ValueError, match="dense FedAvg"):
        FedTinyStrategy(shapes={"fc.weight": (10, 64)}, base_config={}, delta_t=2, t_end=5)


@pytest.mark.parametrize("engine", ["local", "flower"])
def test_a_failing_client_is_named_by_its_partition_in_one_line(engine, tmp_path, capfd):
    """``--set fail_client=1 --set fail_round=2`` on both engines (Flower's: a real round trip through its
    simulation engine, ABNS + 2 rounds): the run goes on without client 1 in round 2, and result.json and
    report.md name client 1 (its partition index, not a Flower node id) with a one-line reason; no
    traceback is printed."""
    import reprozoo

    settings = {**TINY, "methods": ("FedTiny",), "engine": engine, "num_cpus": 2, "fail_client": 1, "fail_round": 2}
    device = settings.pop("device")
    result = reprozoo.run("fedtiny", preset="quick", out=tmp_path / "run", overrides=settings, device=device)
    line = "MNIST d=0.05 seed=0 FedTiny: round 2 completed without client 1 (RuntimeError: injected failure in round 2)"
    assert line in result.notes
    assert line in json.loads((tmp_path / "run" / "result.json").read_text())["notes"]
    assert f"- {line}" in (tmp_path / "run" / "report.md").read_text()
    assert "Traceback" not in "".join(capfd.readouterr())
    rec = {(r.method, r.metric): r.value for r in result.records}
    assert rec[("FedTiny", "density")] == pytest.approx(0.05, abs=1e-3) and 0.0 <= rec[("FedTiny", "top1")] <= 100.0


def test_smoke_experiment_is_real_and_deterministic(tmp_path):
    """Two runs give the same records, the second with its server jobs in 2 processes (quick's default)."""
    cfg = Config.from_preset("smoke", methods=("FedTiny", "FedAvg-dense", "Random"))
    a = run(cfg, tmp_path / "a")
    b = run(cfg.replace(num_cpus=2), tmp_path / "b")
    va = [(r.method, r.metric, r.value) for r in a.records]
    vb = [(r.method, r.metric, r.value) for r in b.records]
    assert va == vb
    rec = {(r.method, r.metric): r.value for r in a.records}
    for m in ("FedTiny", "Random"):
        assert rec[(m, "density")] == pytest.approx(0.05, abs=1e-3)
        assert rec[(m, "bytes_communicated")] < rec[("FedAvg-dense", "bytes_communicated")]
        assert rec[(m, "train_FLOPs_per_round")] < rec[("FedAvg-dense", "train_FLOPs_per_round")]
    # top1 is recorded in percent (project convention): above chance (10 %) after two rounds
    assert rec[("FedAvg-dense", "top1")] > 15.0
    assert all(1.0 < r.value <= 100.0 for r in a.records if r.metric == "top1")
    assert all((tmp_path / "a" / f).is_file() for f in a.figures)
    json.dumps(a.config)


@pytest.mark.parametrize("change, match", [
    ({"densities": (0.0,)}, r"densities\[0\]=0.0 should be > 0"),
    ({"densities": (1.5,)}, r"densities\[0\]=1.5 should be <= 1"),
    ({"alpha": 0.0}, r"alpha=0.0 should be > 0"),
    ({"alpha": -1.0}, "alpha"),
    ({"n_clients": 400, "n_train": 300}, "n_clients"),
    ({"methods": ("FedMagic",)}, r"methods='FedMagic' is not valid; choose one of \['FedTiny'"),
    ({"engine": "spark"}, r"engine='spark' is not valid; choose one of \['flower', 'local'\]"),
    ({"candidates": ("erk-best",)}, r"candidates='erk-best' is not valid; choose one of \['uniform-magnitude'"),
    ({"candidates": ()}, "candidates is empty"),
    ({"densities": (0.05, 0.05)}, r"densities=.* repeats 0.05"),
    ({"fail_client": 99, "fail_round": 1}, r"fail_client=99 .*\[0, n_clients=3\)"),
    ({"fail_client": 3, "fail_round": 1}, r"fail_client=3 "),
    ({"fail_client": 1}, r"fail_client=1 and fail_round=-1: set both"),
    ({"fail_round": 1}, r"fail_client=-1 and fail_round=1"),
    ({"fail_client": 1, "fail_round": 9}, r"fail_round=9 .*\[0, rounds=2\]"),
    ({"fail_client": -2}, r"fail_client=-2 should be >= -1"),
    ({"n_test": -1}, r"n_test=-1 should be >= 0"),
    ({"n_train": 0}, r"n_train=0 should be >= 2"),
    ({"lr": 0.0}, r"^lr=0.0 should be > 0"),
    ({"lr": -0.1}, r"lr=-0.1"),
    ({"momentum": 1.0}, r"momentum=1.0 should be < 1"),
    ({"momentum": -0.5}, r"momentum"),
    ({"weight_decay": -1e-4}, r"weight_decay=-0.0001 should be >= 0"),
    ({"fraction_train": 0.0}, r"fraction_train=0.0 should be > 0"),
    ({"adjust_alpha": 1.5}, r"adjust_alpha=1.5"),
    ({"delta_t": -1}, r"delta_t=-1 should be >= 0"),
    ({"t_end": 0}, r"t_end=0"),
    ({"batch_size": 0}, r"batch_size=0"),
    ({"rounds": 0}, r"rounds=0"),
    ({"eval_every": 0}, r"eval_every=0"),
    ({"num_cpus": 0}, r"num_cpus=0"),
    ({"arch": "vgg"}, r"arch='vgg'"),
    ({"layer_order": "random"}, r"layer_order"),
])
def test_config_bad_input(change, match):
    with pytest.raises(ConfigError, match=match):
        Config.from_preset("smoke", **change)


def test_abns_picks_the_deliberately_good_candidate():
    """Toy pool: two masked random initialisations and one masked model trained on the clients' data;
    ABNS's merged-statistics losses must single out the trained one."""
    import torch

    from reprozoo.fedtiny.client import build_model, federated_data, local_train, state_of
    from reprozoo.fedtiny.deployment import client_app
    from reprozoo.fedtiny.protocol import Keys, client_config
    from reprozoo.fedtiny.simulation import LocalGrid, _local_identity
    from reprozoo.fedtiny.sparse import make_mask

    config = Config.from_preset("quick", **TINY)
    data = federated_data("MNIST", config.n_train, config.n_clients, config.alpha, 0)
    x = torch.cat([c[0] for c in data.clients])
    y = torch.cat([c[1] for c in data.clients])
    cands = []
    for i, name in enumerate(["init-a", "trained", "init-b"]):
        model = build_model("cnn16", 10, 1, seed=10 + i)
        mask = make_mask(model, 0.5, "erk", "magnitude")
        mask.apply(model)
        if name == "trained":
            local_train(model, mask, x, y, epochs=3, batch_size=16, lr=0.05, momentum=0.9, weight_decay=0.0,
                        gen=torch.Generator().manual_seed(0))
        cands.append((name, mask, state_of(model)))
    shapes = {k: v.shape for k, v in cands[0][2].items()}
    strategy = FedTinyStrategy(shapes=shapes, base_config=client_config(config, "MNIST", 0), candidates=cands,
                               min_available_nodes=3)
    with _local_identity():
        mask, state = strategy.run_abns(LocalGrid(client_app, 3))
    assert strategy.abns["chosen"] == "trained"
    assert int(np.argmin(strategy.abns["losses"])) == 1
    assert Keys.N_CAND == "n-candidates"
    # the chosen state carries the merged BN statistics, not the candidate's initial ones
    assert not np.allclose(state["features.1.running_mean"], cands[1][2]["features.1.running_mean"])


def test_public_entry_points_reject_bad_input():
    from reprozoo.fedtiny.client import build_model, federated_data
    from reprozoo.fedtiny.deployment import client_app
    from reprozoo.fedtiny.simulation import LocalGrid

    with pytest.raises(ValueError, match="engine"):
        run_federated([], 3, engine="spark")
    with pytest.raises(ValueError, match="num_nodes"):
        LocalGrid(client_app, 0)
    with pytest.raises(ValueError, match="arch"):
        build_model("vgg99", 10, 1, 0)
    with pytest.raises(ValueError, match="dataset"):
        federated_data("ImageNet", 100, 2, 0.5, 0)
    config = Config.from_preset("quick", **TINY)
    with pytest.raises(ValueError, match="method='FedMagic'"):
        ServerJob(config, "FedMagic", "MNIST", 0.05, 0)
    with pytest.raises(ValueError, match="density"):
        ServerJob(config, "FedTiny", "MNIST", 0.0, 0)
    with pytest.raises(ValueError, match="seed"):
        ServerJob(config, "FedTiny", "MNIST", 0.05, -1)


def test_deployment_run_config_is_the_experiment_config():
    """``flwr run``'s run config: the preset and FedTinyConfig fields (dashes), strings parsed as --set does;
    the app descriptor lists every field a deployment uses, so --run-config can set each of them."""
    import dataclasses
    import tomllib
    from pathlib import Path

    import reprozoo.fedtiny as pkg
    from reprozoo.fedtiny.deployment import config_from_run_config
    from reprozoo.fedtiny.server import experiment_jobs

    cfg = config_from_run_config({"preset": "smoke", "methods": "FedTiny,Random", "n-clients": 4, "seeds": "",
                                  "candidates": "erk-random,er-magnitude", "lr": 0.1, "device": "cpu"})
    assert isinstance(cfg, Config) and cfg.preset == "smoke"
    assert cfg.methods == ("FedTiny", "Random") and cfg.n_clients == 4 and cfg.lr == 0.1
    assert cfg.candidates == ("erk-random", "er-magnitude") and cfg.seeds == Config.PRESETS["smoke"]["seeds"]
    assert [str(j) for j in experiment_jobs(cfg)] == ["MNIST d=0.05 seed=0 FedTiny", "MNIST d=0.05 seed=0 Random"]
    with pytest.raises(ConfigError, match="densty"):
        config_from_run_config({"densty": 0.1})
    with pytest.raises(ConfigError, match="methods"):
        config_from_run_config({"methods": "FedMagic"})
    app = tomllib.loads((Path(pkg.__file__).parent / "flwr_app" / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app["components"] == {"serverapp": "reprozoo.fedtiny.deployment:server_app",
                                 "clientapp": "reprozoo.fedtiny.deployment:client_app"}
    simulation_only = {"preset", "engine", "num_cpus"}
    fields = {f.name.replace("_", "-") for f in dataclasses.fields(Config) if f.name not in simulation_only}
    assert set(app["config"]) == fields | {"preset"}
    assert config_from_run_config(app["config"]) == Config.from_preset("quick")  # "" keeps the preset's value


def test_set_strings_reject_bad_fail_client_and_n_test():
    """The fresh-user reports: --set fail_client=99 with 3 clients and --set n_test=-1 were accepted."""
    with pytest.raises(ConfigError, match="fail_client=99"):
        Config.from_preset("smoke").with_strings({"fail_client": "99", "fail_round": "1"})
    with pytest.raises(ConfigError, match="n_test=-1"):
        Config.from_preset("smoke").with_strings({"n_test": "-1"})
    ok = Config.from_preset("smoke").with_strings({"fail_client": "2", "fail_round": "0", "n_test": "0"})
    assert (ok.fail_client, ok.fail_round, ok.n_test) == (2, 0, 0)


def test_run_federated_rejects_a_grid_of_another_size():
    """A job for 3 clients on a 5-node grid used to make nodes 4 and 5 fail every round, silently."""
    from reprozoo.fedtiny.deployment import client_app
    from reprozoo.fedtiny.simulation import LocalGrid

    job = tiny_job("Random")
    with pytest.raises(ValueError, match=r"config.n_clients=3 .*n_clients=5"):
        run_federated([job], 5, engine="local")
    with pytest.raises(ValueError, match=r"grid has 5 client nodes but config.n_clients=3"):
        job(LocalGrid(client_app, 5))  # the job's own check, for grids built elsewhere
    with pytest.raises(ConfigError, match="fail_client=3"):
        tiny_job("Random", fail_client=3, fail_round=1)


def test_client_failure_messages_respect_quiet(monkeypatch, capsys, caplog):
    """"client 2 failed" goes through reprozoo.core.progress.log (silent when quiet), not a WARNING log."""
    import logging

    import reprozoo.core.progress as progress
    import reprozoo.fedtiny.strategy as fl

    seen = []
    monkeypatch.setattr(fl, "progress_log", seen.append)
    job = tiny_job("Random", fail_client=2, fail_round=1, rounds=1)
    with caplog.at_level(logging.WARNING):
        (out,), _ = run_federated([job], 3, engine="local")
    assert out["n_failed"] == 1
    assert any("client 2 failed: RuntimeError: injected failure in round 1" in m for m in seen)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "failed" in r.getMessage()]
    monkeypatch.undo()
    capsys.readouterr()
    monkeypatch.setattr(progress, "is_quiet", lambda: True)
    fl.report("node %s failed: %s", 2, "boom [bold]x[/bold]")
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(progress, "is_quiet", lambda: False)
    fl.report("node %s failed: %s", 2, "boom [bold]x[/bold]")
    assert "node 2 failed: boom [bold]x[/bold]" in capsys.readouterr().err  # printed verbatim (markup escaped)


def test_flower_run_simulation_deprecation_banner_is_filtered():
    import logging

    from flwr.supercore.logger import warn_deprecated_feature

    from reprozoo.fedtiny.simulation import _quiet_flower

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__()
            self.records = []

        def emit(self, record):
            self.records.append(record.getMessage())

    keep = Keep()
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.addHandler(keep)
    try:
        with _quiet_flower(logging.WARNING):
            warn_deprecated_feature("The `run_simulation` function is deprecated and will be removed")
            warn_deprecated_feature("Some other feature")
        warn_deprecated_feature("The `run_simulation` function is deprecated (outside the context)")
    finally:
        flwr_logger.removeHandler(keep)
    assert not any("run_simulation` function is deprecated and" in m for m in keep.records)
    assert any("Some other feature" in m for m in keep.records)  # other warnings still pass
    assert any("outside the context" in m for m in keep.records)  # the filter is removed afterwards


def test_protocol_names_round_trip_and_client_config_comes_from_the_config():
    from reprozoo.fedtiny.protocol import Keys, client_config

    names = [Keys.bn_mean(0, "features.1"), Keys.bn_var(0, "features.1"), Keys.bn_mean(0, "features.4"),
             Keys.bn_mean(1, "features.1"), Keys.grad_idx("fc.weight")]
    assert Keys.bn_layers(0, names) == ["features.1", "features.4"]
    assert Keys.grad_idx("fc.weight").startswith(Keys.GRAD) and Keys.grad_val("fc.weight").startswith(Keys.GRAD)
    config = Config.from_preset("quick", **{**TINY, "lr": 0.2, "device": "cpu"})
    record = client_config(config, "MNIST", 3, threads=1)
    assert record[Keys.LR] == 0.2 and record[Keys.N_TEST] == 300 and record[Keys.SEED] == 3
    assert "n-clients" not in record  # a client's partition and their count come from its node config
    assert record[Keys.DEVICE] == "cpu" and record[Keys.DATASET] == "MNIST" and record[Keys.THREADS] == 1
    assert all(isinstance(v, (int, float, str)) for v in record.values())  # ConfigRecord value types


def test_clients_move_their_data_and_model_once():
    """A client process builds and moves its working model and its data partitions once, then only copies
    each message's weights in (cache misses stay at one per device over ABNS and every round)."""
    from reprozoo.fedtiny import client

    client._working_model.cache_clear()
    client._partitions.cache_clear()
    (out,), _ = run_federated([tiny_job("FedTiny")], 3, engine="local")
    # 3 clients x (2 ABNS queries + 2 rounds) = 12 messages
    assert client._working_model.cache_info().misses == 1 and client._working_model.cache_info().hits == 11
    assert client._partitions.cache_info().misses == 1
    assert out["density"] == pytest.approx(0.05, abs=1e-3)


def test_clients_read_their_partition_from_the_node_config():
    """The split follows the node's own ``num-partitions`` (not the server's n_clients); a node config
    without partition-id / num-partitions is an error reply saying how to start the SuperNode."""
    from flwr.app import ConfigRecord, Context, Message, RecordDict

    from reprozoo.fedtiny.client import federated_data, handle
    from reprozoo.fedtiny.deployment import client_app
    from reprozoo.fedtiny.protocol import Keys, client_config

    config = client_config(Config.from_preset("quick", **TINY), "MNIST", 0)
    config.update({Keys.N_CAND: 0, Keys.ABNS_SAMPLES: 10**6})
    for k, n in ((1, 4), (2, 3)):
        _, metrics = handle(Keys.LOSSES, config, {}, partition_id=k, num_partitions=n)
        assert metrics[Keys.NUM_EXAMPLES] == len(federated_data("MNIST", TINY["n_train"], n, 0.5, 0).clients[k][1])
    with pytest.raises(ValueError, match=r"partition_id=4 outside \[0, num_partitions=4\)"):
        handle(Keys.LOSSES, config, {}, partition_id=4, num_partitions=4)
    from reprozoo.fedtiny.simulation import _local_identity

    with _local_identity():  # Flower stamps messages with the task's identity
        msg = Message(RecordDict({Keys.CONFIG: ConfigRecord(config)}), dst_node_id=7, message_type="query.losses")
        reply = client_app(msg, Context(run_id=0, node_id=7, node_config={}, state=RecordDict(), run_config={}))
    assert reply.has_error() and "--node-config 'partition-id=K num-partitions=N'" in reply.error.reason


def test_evaluation_on_the_clients_equals_the_servers():
    """evaluate_on="clients" (a server without a test set): every client evaluates its shard of the same
    test images; the pooled top1 equals the server's own evaluation."""
    (server, clients), _ = run_federated([tiny_job("Random"), tiny_job("Random", evaluate_on="clients")], 3,
                                         engine="local")
    assert clients["top1"] == pytest.approx(server["top1"], abs=1e-9)
    assert [r for r, _ in clients["curve"]] == [1, 2] and clients["bytes"] == server["bytes"]


def test_deployment_server_app_evaluates_on_the_clients_without_data(monkeypatch):
    from reprozoo.datasets import DataNotFoundError
    from reprozoo.fedtiny import deployment

    config = Config.from_preset("smoke")
    assert deployment._server_has_data(config)

    def missing(*args, **kwargs):
        raise DataNotFoundError("data file 'train-images-idx3-ubyte.gz' not found")

    monkeypatch.setattr(deployment, "federated_data", missing)
    assert not deployment._server_has_data(config)


@pytest.mark.gpu
def test_local_engine_on_cuda_agrees_with_cpu():
    import torch

    from reprozoo.fedtiny import client

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    (cpu,), _ = run_federated([tiny_job("FedTiny")], 3, engine="local")
    (gpu,), _ = run_federated([tiny_job("FedTiny", device="cuda")], 3, engine="local")
    assert gpu["density"] == cpu["density"] and gpu["bytes"] == cpu["bytes"]
    assert abs(gpu["top1"] - cpu["top1"]) < 0.1  # kernels differ in round-off, the protocol does not
    model, _, _ = client._working_model("cnn16", 10, 1, (28, 28), "cuda")
    assert next(model.parameters()).device.type == "cuda"
    x, _ = client._partitions("MNIST", TINY["n_train"], 3, 0.5, 0, "cuda")[0]
    assert x.device.type == "cuda"


def test_records_hold_what_flower_writes_and_read_back_what_it_reads():
    """``to_record`` writes each array's bytes as ``Array(ndarray)`` does (np.save's .npy), and ``from_record``
    returns ``Array.numpy()``'s arrays (dtype, shape, values; writable), for every dtype the protocol sends,
    0-d, empty and Fortran-ordered input; a payload it does not parse itself goes through ``Array.numpy()``."""
    from flwr.app import Array, ArrayRecord

    from reprozoo.fedtiny.protocol import from_record, to_record

    arrays = {"w": np.random.default_rng(0).normal(size=(16, 1, 3, 3)).astype(np.float32),
              "mask": np.packbits(np.ones(13, bool)), "idx": np.arange(7, dtype=np.int64),
              "b": np.array([True, False]), "empty": np.zeros((0, 3), np.float32), "scalar": np.float64(3.5),
              "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4))}
    record = to_record(arrays)
    for k, v in arrays.items():
        ref = Array(np.ascontiguousarray(v))
        assert (record[k].data, record[k].dtype, tuple(record[k].shape)) == (ref.data, ref.dtype, tuple(ref.shape))
    for rec in (record, ArrayRecord({k: Array(np.asfortranarray(np.atleast_2d(v))) for k, v in arrays.items()})):
        back = from_record(rec)
        for k, a in rec.items():
            ref = a.numpy()
            assert back[k].dtype == ref.dtype and back[k].shape == ref.shape and np.array_equal(back[k], ref), k
            assert back[k].flags.writeable
