"""Devices, meshes and processes: data-parallel training on every device of every host.

One implementation of the train step serves one CPU, eight GPUs of a node and many nodes: the
step is jitted once, and *shardings* say where its inputs live. A 1-D device mesh with the axis
``"data"`` spans every device of every process; a batch is split along ``"data"`` (each process
contributes the events its loader read, :func:`DataParallel.batch`), and the training state is
either replicated on every device or, with ``train.param_sharding: fsdp``, its large parameter
and optimiser-state arrays are split along ``"data"`` too (FSDP/ZeRO-3 style: XLA gathers a
parameter where a layer needs it and reduce-scatters its gradient). The jitted step computes the
mean loss and the BatchNorm statistics over the *global* batch, so a run on N devices follows
the same trajectory as one device with the same global batch (to float rounding).

Several processes (hosts) join one job through :func:`initialize` (``jax.distributed``): under
SLURM's ``srun`` JAX reads the job's environment; elsewhere the coordinator address, process count
and index come from the arguments or the ``RECO_COORDINATOR_ADDRESS``, ``RECO_NUM_PROCESSES`` and
``RECO_PROCESS_ID`` environment variables. Process 0 is the *main* process: it simulates, writes
the run folder and logs to MLflow; every process reads its own share of the event files and takes
part in Orbax checkpoints.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, Literal

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA = "data"  # the mesh axis the batch (and, with FSDP, the state) is split along
_ENV = ("RECO_COORDINATOR_ADDRESS", "RECO_NUM_PROCESSES", "RECO_PROCESS_ID")

ParamSharding = Literal["replicated", "fsdp"]


def slurm_tasks() -> int:
    """Tasks of the SLURM job step this process runs in (1 outside ``srun``)."""
    if "SLURM_STEP_ID" not in os.environ or "SLURM_STEP_NODELIST" not in os.environ:
        return 1
    return int(os.environ.get("SLURM_STEP_NUM_TASKS", os.environ.get("SLURM_NTASKS", "1")))


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Join a multi-process job when there is one; returns whether this is one.

    Call it before anything runs on a device. Explicit settings (arguments, else the
    ``RECO_*`` environment variables) win; otherwise a SLURM job step with more than one task is
    detected and ``jax.distributed.initialize()`` reads its environment; otherwise this is a
    single process and nothing is done.

    Raises:
        ValueError: settings given only in part, or a process id out of range.
    """
    if jax.distributed.is_initialized():
        return True
    env = {k: os.environ.get(k) or None for k in _ENV}
    coordinator = coordinator_address or env["RECO_COORDINATOR_ADDRESS"]
    count = num_processes if num_processes is not None else env["RECO_NUM_PROCESSES"]
    index = process_id if process_id is not None else env["RECO_PROCESS_ID"]
    given = {"coordinator address": coordinator, "process count": count, "process id": index}
    if any(v is not None for v in given.values()):
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise ValueError(
                f"multi-process settings incomplete: {missing} missing (give all of "
                f"--coordinator/--num-processes/--process-id or {', '.join(_ENV)})"
            )
        count, index = int(count), int(index)
        if not 0 <= index < count:
            raise ValueError(f"process id {index} is not in [0, {count})")
        if count == 1:
            return False
        jax.distributed.initialize(str(coordinator), num_processes=count, process_id=index)
        return True
    if slurm_tasks() > 1:
        jax.distributed.initialize()  # JAX's SLURM cluster detection: coordinator = first node
        return True
    return False


def process_count() -> int:
    """Processes in this job (1 unless :func:`initialize` joined a multi-process job; asking
    does not start JAX's backends, so :func:`initialize` may still be called after)."""
    return jax.process_count() if jax.distributed.is_initialized() else 1


def process_index() -> int:
    """This process's index in the job (0 for a single process)."""
    return jax.process_index() if jax.distributed.is_initialized() else 0


def is_main() -> bool:
    """Whether this is process 0 (the one that logs and writes shared files)."""
    return process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (nothing with one process)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def broadcast_str(value: str | None, max_bytes: int = 4096) -> str:
    """Process 0's ``value`` on every process (e.g. the run folder it chose)."""
    if process_count() == 1:
        if value is None:
            raise ValueError("broadcast_str: process 0 has no value")
        return value
    from jax.experimental import multihost_utils

    buf = np.zeros(max_bytes + 4, np.uint8)
    if is_main():
        if value is None:
            raise ValueError("broadcast_str: process 0 has no value")
        data = value.encode()
        if len(data) > max_bytes:
            raise ValueError(f"broadcast_str: {len(data)} bytes > {max_bytes}")
        buf[:4] = np.frombuffer(np.uint32(len(data)).tobytes(), np.uint8)
        buf[4 : 4 + len(data)] = np.frombuffer(data, np.uint8)
    out = np.asarray(multihost_utils.broadcast_one_to_all(buf))
    n = int(np.frombuffer(out[:4].tobytes(), np.uint32)[0])
    return out[4 : 4 + n].tobytes().decode()


def _fsdp_spec(shape: tuple[int, ...], n: int, min_size: int) -> PartitionSpec:
    """Split the largest axis divisible by ``n`` (arrays under ``min_size``: replicated)."""
    if n == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return PartitionSpec()
    axes = [i for i in np.argsort(shape, kind="stable")[::-1] if shape[i] % n == 0]
    if not axes:
        return PartitionSpec()
    spec: list[str | None] = [None] * len(shape)
    spec[int(axes[0])] = DATA
    return PartitionSpec(*spec)


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """The device mesh of a run and where batches and the training state live on it.

    Args:
        mesh: a mesh with the axis ``"data"`` (:func:`data_mesh`: every device of every process).
        param_sharding: ``"replicated"`` (every device holds the whole state) or ``"fsdp"``
            (parameters and optimiser moments of at least ``FSDP_MIN_SIZE`` elements split along
            ``"data"`` on their largest divisible axis).
        fsdp_min_size: under FSDP, arrays with fewer elements stay replicated (gathering them
            would cost more than the memory they take).
    """

    mesh: Mesh
    param_sharding: ParamSharding = "replicated"
    fsdp_min_size: int = 2**14

    def __post_init__(self) -> None:
        if DATA not in self.mesh.axis_names:
            raise ValueError(f"the mesh needs an axis {DATA!r}, has {self.mesh.axis_names}")
        if self.param_sharding not in ("replicated", "fsdp"):
            raise ValueError(
                f"param_sharding must be 'replicated' or 'fsdp', got {self.param_sharding!r}"
            )

    @property
    def n_devices(self) -> int:
        return int(self.mesh.shape[DATA])

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def batch_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec(DATA))

    def local_devices(self) -> int:
        """Devices of the mesh that belong to this process."""
        return sum(d.process_index == jax.process_index() for d in self.mesh.devices.flat)

    def check_batch_size(self, batch_size: int) -> None:
        """A process's batch must split evenly over its devices.

        Raises:
            ValueError: it does not (naming ``loader.batch_size`` and the device count).
        """
        n = self.local_devices()
        if batch_size % n:
            raise ValueError(
                f"loader.batch_size {batch_size} (events per process) does not split over the "
                f"{n} devices of this process; use a multiple of {n}"
            )

    def batch(self, host: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's batch as the slice of a global batch split along ``"data"``: the
        global batch holds every process's events (batch size x processes)."""
        sharding = self.batch_sharding
        return {
            k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in host.items()
        }

    def state_shardings(self, state: Any) -> Any:
        """A pytree of shardings for ``state`` (a ``TrainState``): step and the model's other
        variables replicated, parameters and optimiser state as ``param_sharding`` says."""
        rep = self.replicated
        if self.param_sharding == "replicated":
            return jax.tree.map(lambda _: rep, state)
        n = self.n_devices

        def split(x: Any) -> NamedSharding:
            shape = tuple(getattr(x, "shape", ()))
            if not jax.dtypes.issubdtype(getattr(x, "dtype", np.int32), np.inexact):
                return rep  # step counters, PRNG keys
            return NamedSharding(self.mesh, _fsdp_spec(shape, n, self.fsdp_min_size))

        return type(state)(
            rep,
            jax.tree.map(split, state.params),
            jax.tree.map(lambda _: rep, state.rest),
            jax.tree.map(split, state.opt_state),
        )

    def place(self, tree: Any, shardings: Any) -> Any:
        """``tree`` (the same values on every process) put on the mesh with ``shardings``.

        With one process this is ``jax.device_put``; with several each process fills in the
        shards on its own devices from its host copy (PRNG keys through their key data).
        """
        if jax.process_count() == 1:
            return jax.device_put(tree, shardings)
        return jax.tree.map(_global_array, tree, shardings)


def _global_array(x: Any, sharding: NamedSharding) -> jax.Array:
    """A global array from a value every process holds in full."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = _global_array(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh ``("data",)`` over ``devices`` (default: every device of every process)."""
    devs = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devs, dtype=object), (DATA,))


class StopSignal:
    """SIGTERM (what SLURM sends before it preempts or times out a job) as a request to stop.

    While entered, SIGTERM sets :attr:`requested` instead of killing the process, so the training
    loop can write a checkpoint first (``reco.train.fit``); on exit the previous handler is back.
    Outside the main thread (where Python cannot install handlers) it does nothing.
    """

    def __init__(self, signals: tuple[int, ...] | None = None) -> None:
        import signal

        self.signals = (signal.SIGTERM,) if signals is None else signals
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __enter__(self) -> StopSignal:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def agreed(self) -> bool:
        """Whether any process was asked to stop (all processes call it at the same step, so
        they stop together; one process: no communication)."""
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.array(self.requested, np.int32))
        return bool(np.asarray(flags).any())
