"""Multi-process start-up: when to call `jax.distributed.initialize`, and a consistency check.

A job is multi-process when the environment says so:

- explicit: `maybe_initialize(...)` arguments or `VJEPA_COORDINATOR` (host:port),
  `VJEPA_NUM_PROCESSES` and `VJEPA_PROCESS_ID` (set by `launch/gpu/local.sh`);
- launcher: `VJEPA_DISTRIBUTED=1` (set by `launch/tpu/run.sh`; JAX reads the TPU VM metadata);
- TPU pod or multislice: `TPU_WORKER_HOSTNAMES` / `TPU_PROCESS_ADDRESSES` with more than one host,
  or `MEGASCALE_COORDINATOR_ADDRESS` / `MEGASCALE_NUM_SLICES` > 1;
- SLURM: `SLURM_JOB_ID` with `SLURM_NTASKS` > 1 (one task per node or per GPU, under `srun`);
- Open MPI: `OMPI_COMM_WORLD_SIZE` > 1.

Anything else is a single-process run: no distributed runtime. `VJEPA_LOCAL_DEVICE_IDS` (e.g.
"0,1,2,3") pins the devices a process uses, and `VJEPA_CPU_DEVICES` sets the number of simulated
CPU devices per process. Single-process runs without it get one CPU device per core
(`configure_cpu_devices`); accelerators are unaffected. Run `python -m vjepa_jax.distributed
[TEXT]` on every process to check the wiring: it prints one JSON line per process, or fails
naming the processes that disagree.
"""
import collections
import dataclasses
import hashlib
import json
import logging
import os
import sys
from typing import Mapping, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils


@dataclasses.dataclass(frozen=True)
class InitArgs:
  """Arguments for `jax.distributed.initialize`; None lets JAX detect the value itself."""
  source: str
  coordinator_address: Optional[str] = None
  num_processes: Optional[int] = None
  process_id: Optional[int] = None
  local_device_ids: Optional[tuple[int, ...]] = None


def _int(value: object, name: str) -> int:
  try:
    return int(str(value))
  except ValueError:
    raise ValueError(f"{name} must be an integer, got {value!r}") from None


def _local_device_ids(environ: Mapping[str, str]) -> Optional[tuple[int, ...]]:
  text = environ.get("VJEPA_LOCAL_DEVICE_IDS", "").strip()
  if not text:
    return None
  return tuple(_int(part, "VJEPA_LOCAL_DEVICE_IDS entry") for part in text.split(","))


def _explicit(environ: Mapping[str, str], coordinator_address: Optional[str],
              num_processes: Optional[int], process_id: Optional[int]) -> Optional[InitArgs]:
  given = {
      "coordinator_address (VJEPA_COORDINATOR)":
          coordinator_address or environ.get("VJEPA_COORDINATOR", ""),
      "num_processes (VJEPA_NUM_PROCESSES)":
          environ.get("VJEPA_NUM_PROCESSES", "") if num_processes is None else num_processes,
      "process_id (VJEPA_PROCESS_ID)":
          environ.get("VJEPA_PROCESS_ID", "") if process_id is None else process_id,
  }
  missing = [name for name, value in given.items() if value == ""]
  if len(missing) == len(given):
    return None
  if missing:
    raise ValueError(f"Explicit multi-process start needs all three settings; missing: "
                     f"{', '.join(missing)}.")
  address, count, index = given.values()
  count = _int(count, "num_processes")
  index = _int(index, "process_id")
  host, _, port = str(address).rpartition(":")
  if not host or not port.isdigit():
    raise ValueError(f"coordinator_address must be host:port, got {address!r}")
  if count < 1 or not 0 <= index < count:
    raise ValueError(f"process_id must be in [0, num_processes); got process_id={index}, "
                     f"num_processes={count}")
  return InitArgs("explicit", str(address), count, index, _local_device_ids(environ))


def detect(environ: Mapping[str, str], coordinator_address: Optional[str] = None,
           num_processes: Optional[int] = None,
           process_id: Optional[int] = None) -> Optional[InitArgs]:
  """How to start the distributed runtime, or None for a single-process run.

  Pure: reads only `environ` and the arguments. Explicit settings win over cluster detection.
  """
  explicit = _explicit(environ, coordinator_address, num_processes, process_id)
  if explicit is not None:
    return explicit if explicit.num_processes > 1 else None
  local_ids = _local_device_ids(environ)
  if environ.get("VJEPA_DISTRIBUTED", "") == "1":
    return InitArgs("launcher", local_device_ids=local_ids)
  hosts = environ.get("TPU_PROCESS_ADDRESSES") or environ.get("TPU_WORKER_HOSTNAMES") or ""
  multihost = len([h for h in hosts.split(",") if h.strip()]) > 1
  multislice = (_int(environ.get("MEGASCALE_NUM_SLICES") or 1, "MEGASCALE_NUM_SLICES") > 1
                or bool(environ.get("MEGASCALE_COORDINATOR_ADDRESS")))
  if multihost or multislice:
    return InitArgs("tpu", local_device_ids=local_ids)
  if "SLURM_JOB_ID" in environ and _int(environ.get("SLURM_NTASKS") or 1, "SLURM_NTASKS") > 1:
    return InitArgs("slurm", local_device_ids=local_ids)
  if _int(environ.get("OMPI_COMM_WORLD_SIZE") or 1, "OMPI_COMM_WORLD_SIZE") > 1:
    return InitArgs("mpi", local_device_ids=local_ids)
  return None


def cpu_devices_for(batch_size: int, mesh: Mapping[str, int], cores: int,
                    requested: int = 0) -> int:
  """How many XLA CPU devices a single-process CPU run should use.

  XLA:CPU spreads each op of one device over the cores and leaves them idle between the many
  small ops of a train step; one device per core, data parallel, keeps every core on its own
  stream of large ops (the `bench-cpu` step runs 1.08-1.10x the official PyTorch step this way,
  0.97-1.0x on one device: benchmarks/README.md). A mesh without -1 gets exactly its size; a
  mesh with one -1 axis the largest multiple of its fixed axes that fits the cores (at least
  the fixed axes' product) and splits the batch evenly over (data, fsdp).

  Args:
    batch_size: global clips per step.
    mesh: the config's mesh axes (data, fsdp, tensor).
    cores: CPU cores available to the process.
    requested: the config's `cpu_devices`; > 0 is used as given.
  """
  if requested > 0:
    return requested
  sizes = {a: int(mesh.get(a, 1)) for a in ("data", "fsdp", "tensor")}
  fixed = int(np.prod([s for s in sizes.values() if s != -1]))
  if -1 not in sizes.values():
    return fixed
  best = fixed
  for d in range(1, max(cores, 1) // fixed + 1):
    dp = int(np.prod([d if sizes[a] == -1 else sizes[a] for a in ("data", "fsdp")]))
    if batch_size % dp == 0:
      best = fixed * d
  return best


def describe_cpu_devices(batch_size: int, mesh: Mapping[str, int], requested: int = 0,
                         environ: Optional[Mapping[str, str]] = None) -> str:
  """Why a CPU-only process has the device count it has, and the settings that change it."""
  environ = os.environ if environ is None else environ
  change = ("set the count with --config.cpu_devices=N (or the environment variable "
            "VJEPA_CPU_DEVICES=N)")
  if environ.get("VJEPA_CPU_DEVICES"):
    why = f"VJEPA_CPU_DEVICES={environ['VJEPA_CPU_DEVICES']} sets it"
  elif "xla_force_host_platform_device_count" in environ.get("XLA_FLAGS", ""):
    why = f"XLA_FLAGS={environ['XLA_FLAGS']!r} sets it"
  elif requested > 0:
    why = f"the config's cpu_devices={requested} sets it"
  else:
    cores = available_cores()
    why = (f"chosen automatically for batch_size {batch_size} and mesh {dict(mesh)} on "
           f"{cores} CPU cores: {cpu_devices_for(batch_size, mesh, cores)} (the largest count "
           "that fits the cores and splits the batch evenly)")
  return f"on this CPU-only host the XLA CPU device count is {why}; {change}"


def available_cores() -> int:
  """CPU cores this process may run on (its affinity set where the OS has one)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def configure_cpu_devices(batch_size: int, mesh: Mapping[str, int], requested: int = 0,
                          environ: Optional[Mapping[str, str]] = None) -> Optional[int]:
  """Sets the CPU device count of a single-process run; must run before the backend starts.

  Leaves it alone (returns None) when the environment fixes it (`VJEPA_CPU_DEVICES`, XLA's
  `--xla_force_host_platform_device_count`) or the job is multi-process. Accelerator runs are
  unaffected: their devices, not the CPU's, make the mesh.
  """
  environ = os.environ if environ is None else environ
  if (environ.get("VJEPA_CPU_DEVICES")
      or "xla_force_host_platform_device_count" in environ.get("XLA_FLAGS", "")
      or detect(environ) is not None):
    return None
  n = cpu_devices_for(batch_size, mesh, available_cores(), requested)
  jax.config.update("jax_num_cpu_devices", n)
  return n


def maybe_initialize(coordinator_address: Optional[str] = None,
                     num_processes: Optional[int] = None,
                     process_id: Optional[int] = None) -> bool:
  """Calls `jax.distributed.initialize` if the job is multi-process; returns whether it did.

  Must run before any other JAX call: the CPU device count and collectives are fixed when the
  backend starts.
  """
  environ = os.environ
  if environ.get("VJEPA_CPU_DEVICES"):
    jax.config.update("jax_num_cpu_devices", _int(environ["VJEPA_CPU_DEVICES"],
                                                  "VJEPA_CPU_DEVICES"))
  args = detect(environ, coordinator_address, num_processes, process_id)
  if args is None:
    return False
  if args.source == "explicit":
    # Explicit starts are how CPU-only multi-process runs happen; CPU arrays need collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  logging.info("Starting the JAX distributed runtime (%s): %s", args.source, args)
  jax.distributed.initialize(
      coordinator_address=args.coordinator_address,
      num_processes=args.num_processes,
      process_id=args.process_id,
      local_device_ids=list(args.local_device_ids) if args.local_device_ids else None)
  return True


def _hash_words(text: str) -> np.ndarray:
  return np.frombuffer(hashlib.sha256(text.encode()).digest()[:16], dtype="<i4")


def check_consistent(config_json: str) -> None:
  """Raises RuntimeError naming every process whose devices or config differ from process 0's.

  Collective: every process must call it, in the same place, after `maybe_initialize`.
  """
  if jax.process_count() == 1:
    return
  # Device counts come from the global device list, which every process sees whole: an uneven
  # layout is reported before any collective, which would not run on it.
  per_process = collections.Counter(d.process_index for d in jax.devices())
  uneven = [f"process {p}: {n} local devices vs {per_process[0]}"
            for p, n in sorted(per_process.items()) if n != per_process[0]]
  if uneven:
    raise RuntimeError(f"Processes disagree with process 0 on the number of devices: "
                       f"{'; '.join(uneven)}. Give every process the same number of devices.")
  row = np.concatenate([_hash_words(config_json), [jax.process_index()]]).astype(np.int32)
  rows = np.asarray(multihost_utils.process_allgather(row))
  rows = rows[np.argsort(rows[:, 4])]
  digests = [r[:4].astype("<i4").tobytes().hex() for r in rows]
  different = [f"process {r[4]}: config hash {d} vs {digests[0]}"
               for r, d in zip(rows, digests) if d != digests[0]]
  if different:
    raise RuntimeError(f"Processes disagree with process 0 on the config: {'; '.join(different)}. "
                       f"Start every process with the same --config and overrides.")


def is_writer() -> bool:
  """True on the one process that writes logs, metrics and configs."""
  return jax.process_index() == 0


def main(argv: Sequence[str]) -> None:
  initialized = maybe_initialize()
  check_consistent(argv[1] if len(argv) > 1 else "")
  print(json.dumps({
      "initialized": initialized,
      "process_index": jax.process_index(),
      "process_count": jax.process_count(),
      "local_device_count": jax.local_device_count(),
      "device_count": jax.device_count(),
      "is_writer": is_writer(),
  }), flush=True)


if __name__ == "__main__":
  main(sys.argv)
