"""FedTiny's Flower apps for ``flwr run`` (simulation runtime or a real deployment): ``client_app`` and
``server_app``.  The simulation engine (:mod:`reprozoo.fedtiny.simulation`) runs the same ``client_app``.

``client_app`` answers the three message types of the protocol (:class:`~reprozoo.fedtiny.protocol.Keys`)
with :func:`reprozoo.fedtiny.client.handle` on its node's ``partition-id``; everything else it needs
arrives in each message's config record.

``server_app`` builds the experiment's config from the run config (``preset`` plus any
:class:`~reprozoo.fedtiny.experiment.FedTinyConfig` field, dashes for underscores, values as ``--set``
takes them; an empty string keeps the preset's value) and runs every (dataset, density, seed, method)
of it, one after the other, on the SuperNodes; each run's numbers go to the ``reprozoo.fedtiny`` log.
App descriptor: ``src/reprozoo/fedtiny/flwr_app/pyproject.toml``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flwr.app import Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid, ServerApp

from reprozoo.core.experiment import TorchExperimentConfig
from reprozoo.core.run import build_config
from reprozoo.fedtiny.client import federated_data, handle
from reprozoo.fedtiny.protocol import Keys, failure_reason, from_record, to_record
from reprozoo.fedtiny.server import experiment_jobs

__all__ = ["client_app", "server_app", "config_from_run_config"]

log = logging.getLogger("reprozoo.fedtiny")

# -- client -------------------------------------------------------------------------------------------
client_app = ClientApp()


def _reply(msg: Message, context: Context, action: str) -> Message:
    """Run :func:`handle`; an exception becomes an error reply whose reason is one line naming this
    client's partition (:func:`~reprozoo.fedtiny.protocol.failure_reason`), so the server can name the
    client and go on, and Flower logs no traceback."""
    node = context.node_config
    if "partition-id" not in node or "num-partitions" not in node:
        return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                             f"node {context.node_id}: its node config {dict(node)} lacks partition-id / "
                             "num-partitions; start the SuperNode with --node-config 'partition-id=K "
                             "num-partitions=N'"), reply_to=msg)
    partition_id = int(node["partition-id"])
    try:
        config = dict(msg.content[Keys.CONFIG])
        arrays = from_record(msg.content[Keys.ARRAYS]) if Keys.ARRAYS in msg.content.array_records else {}
        out, metrics = handle(action, config, arrays, partition_id, int(node["num-partitions"]))
    except Exception as exc:  # noqa: BLE001 - a failing client is an error reply, not a crash
        log.info("client %d: %s failed", partition_id, action, exc_info=True)
        return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, failure_reason(partition_id, exc)), reply_to=msg)
    return Message(RecordDict({Keys.ARRAYS: to_record(out), Keys.METRICS: MetricRecord(metrics)}), reply_to=msg)


@client_app.query(Keys.BN_STATS)
def _query_bnstats(msg: Message, context: Context) -> Message:
    return _reply(msg, context, Keys.BN_STATS)


@client_app.query(Keys.LOSSES)
def _query_losses(msg: Message, context: Context) -> Message:
    return _reply(msg, context, Keys.LOSSES)


@client_app.train()
def _train(msg: Message, context: Context) -> Message:
    return _reply(msg, context, Keys.TRAIN)


@client_app.evaluate()
def _evaluate(msg: Message, context: Context) -> Message:
    return _reply(msg, context, Keys.EVALUATE)


# -- server -------------------------------------------------------------------------------------------
def config_from_run_config(run_config: Mapping[str, Any]) -> TorchExperimentConfig:
    """The :class:`~reprozoo.fedtiny.experiment.FedTinyConfig` of a Flower run config: ``preset`` (default
    ``quick``) plus settings named like the config's fields (``n-clients`` or ``n_clients``), parsed as
    ``--set`` parses them (``methods = "FedTiny,Random"``); empty strings are left out.  An unknown key or a
    bad value raises :class:`~reprozoo.core.checks.ConfigError` naming it."""
    settings = {str(k).replace("-", "_"): v for k, v in run_config.items()}
    preset = str(settings.pop("preset", "") or "quick")
    overrides = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in settings.items() if v != ""}
    _, config = build_config("fedtiny", preset, overrides=overrides)
    return config


def _server_has_data(config: TorchExperimentConfig) -> bool:
    """Whether this machine can load every data set of ``config`` (its test set for the evaluation)."""
    from reprozoo.datasets import DataNotFoundError

    try:
        for ds in config.datasets:
            federated_data(ds, config.n_train, config.n_clients, config.alpha, config.seeds[0])
    except DataNotFoundError:
        return False
    return True


#: The ServerApp of ``flwr run``: every run of the run config's experiment, on the deployment's nodes.
server_app = ServerApp()


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    config = config_from_run_config(dict(context.run_config))
    if config.evaluate_on == "server" and not _server_has_data(config):
        log.warning("fedtiny: this server holds no copy of %s: the clients evaluate (evaluate_on='clients')%s",
                    ", ".join(config.datasets),
                    "; SNIP, which needs the server's public batch, is skipped" if "SNIP" in config.methods else "")
        config = config.replace(evaluate_on="clients", methods=tuple(m for m in config.methods if m != "SNIP"))
    for job in experiment_jobs(config):
        out = job(grid)
        log.warning("fedtiny %s: top1=%.2f %% density=%.4f bytes=%d failures=%s", job, out["top1"],
                    out["density"], out["bytes"], out["failures"])
