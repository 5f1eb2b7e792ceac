"""RSD4: recurrent softmax delayed deep double deterministic policy gradient for delay-constrained scheduling.

Importing this package registers the Gymnasium environment ``DelayConstrainedScheduling-v0``.
"""

from gymnasium.envs.registration import register, registry

from reprozoo.rsd4.env import (
    ENV_ID,
    DelayConstrainedSchedulingEnv,
    LagrangianWrapper,
    dual_update,
    success_probability,
)

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="reprozoo.rsd4.env:DelayConstrainedSchedulingEnv",
             vector_entry_point="reprozoo.rsd4.vector_env:DelayConstrainedSchedulingVectorEnv")

from reprozoo.rsd4.agent import RSD4, UserLayout, softmax_operator  # noqa: E402
from reprozoo.rsd4.baselines import EDF, MaxWeight, MaxWeightBlind, SB3Agent, Uniform, calibrate, evaluate  # noqa: E402
from reprozoo.rsd4.vector_env import DelayConstrainedSchedulingVectorEnv  # noqa: E402

__all__ = [
    "EDF",
    "MaxWeight",
    "MaxWeightBlind",
    "RSD4",
    "SB3Agent",
    "Uniform",
    "UserLayout",
    "calibrate",
    "evaluate",
    "softmax_operator",
    "ENV_ID",
    "DelayConstrainedSchedulingEnv",
    "DelayConstrainedSchedulingVectorEnv",
    "LagrangianWrapper",
    "dual_update",
    "success_probability",
]
