"""A `planning.Planner` behind a websocket: one model, many clients, one plan at a time.

  server = PlannerServer(encoder, predictor, cfg, description="...")
  server.warm_up()                                   # compiles before any client is accepted
  asyncio.run(server.serve("127.0.0.1", 8000))

  handle = start_server(encoder, predictor, cfg)     # the same, in a background thread
  handle.port; handle.stop()

Each connection is a session with its own goal (one goal image or a sub-goal schedule, encoded
once at `set_goal` and kept as latents) and its own PRNG stream: plan n of a session (counted
from its start or its last `reset`) uses `fold_in(key(cfg.seed), n)`, so a client's answers do
not depend on what other clients do. Goal encoding and plans run on one worker thread, in
arrival order; at most `max_queue` requests wait behind the running one, and any further
request is refused at once with a `busy` error. A session ends when its connection closes; a
request of a closed session still waiting in the queue is dropped, and one already running has
its result discarded.

Wire format: `protocol`. Every request is timed in phases (decode: parsing and checking the
message; queue: waiting for the worker; plan: the accelerator work; encode: packing the reply),
logged at INFO and summarised in `metadata`.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import hmac
import logging
import threading
import time
from typing import Any, Callable, Iterable

import jax
import ml_collections
import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request
from websockets.http11 import Response

from vjepa_jax import planning
from vjepa_jax.models import world_model
from vjepa_jax.planning import config as planning_config
from vjepa_jax.planning import planner as planner_lib
from vjepa_jax.serve import protocol

log = logging.getLogger("vjepa_jax.serve")

METHODS = ("cem", "mppi", "gd")
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
POSE_LAYOUT_7 = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
ACTION_LAYOUT_7 = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "dgripper")
PHASES = ("decode", "queue", "plan", "encode")


def planner_config(method: str = "cem", preset: str = "paper",
                   **overrides: Any) -> ml_collections.ConfigDict:
  """`planning.default_config(preset)` with the search method and (dotted) field overrides set.

  Raises:
    ValueError: for an unknown method or field.
  """
  if method not in METHODS:
    raise ValueError(f"unknown planner {method!r}; choose one of {METHODS}")
  cfg = planning.default_config(preset)
  cfg.method = method
  return planning_config.with_overrides(cfg, overrides)


class RequestError(ValueError):
  """A request the server refuses; `code` is one of `protocol.ERROR_CODES`."""

  def __init__(self, code: str, message: str):
    super().__init__(message)
    self.code = code


@dataclasses.dataclass
class Session:
  """One connection's state.

  Attributes:
    goals: goal latents `[N, D]`, one per sub-goal (None before `set_goal`).
    bounds: cumulative step counts of a schedule (None for a single goal, held indefinitely).
    step: plans made towards the current goal or schedule.
    calls: plans made since the session started or was reset (the PRNG stream position).
  """
  id: int
  peer: str
  goals: list | None = None
  bounds: np.ndarray | None = None
  step: int = 0
  calls: int = 0


class LatencyStats:
  """The latest `window` timings (ms) per request type and phase."""

  def __init__(self, window: int = 1000):
    self._window = window
    self._data: dict[str, dict[str, collections.deque]] = {}
    self._lock = threading.Lock()

  def add(self, kind: str, timings: dict[str, float]) -> None:
    with self._lock:
      phases = self._data.setdefault(
          kind, {p: collections.deque(maxlen=self._window) for p in PHASES})
      for phase, ms in timings.items():
        phases[phase].append(ms)

  def summary(self) -> dict:
    """{kind: {phase: {count, mean, p50, p90, p99, max}}} in milliseconds."""
    out = {}
    with self._lock:
      for kind, phases in self._data.items():
        out[kind] = {}
        for phase, values in phases.items():
          if not values:
            continue
          v = np.asarray(values)
          out[kind][phase] = {"count": int(v.size), "mean": float(v.mean()),
                              "p50": float(np.percentile(v, 50)),
                              "p90": float(np.percentile(v, 90)),
                              "p99": float(np.percentile(v, 99)), "max": float(v.max())}
    return out


def _ms(start: float) -> float:
  return (time.perf_counter() - start) * 1e3


class PlannerServer:
  """Serves one `planning.Planner` to websocket clients.

  Args:
    encoder, predictor: the models (NNX modules or `Loaded` wrappers), shared by all sessions.
    cfg: planner config (`planner_config()`).
    description: what model this is (reported by `metadata`).
    token: if set, clients must send `Authorization: Bearer <token>`.
    max_queue: requests allowed to wait behind the running one; more are refused (`busy`).
    max_message_bytes: largest accepted message; a larger one closes its connection (1009).
  """

  def __init__(self, encoder: Any, predictor: Any, cfg: ml_collections.ConfigDict, *,
               description: str = "", token: str | None = None, max_queue: int = 4,
               max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
    if max_queue < 0:
      raise ValueError(f"max_queue must be >= 0, got {max_queue}")
    self.planner = planning.Planner(encoder, predictor, cfg)
    encoder_cfg = world_model.module_of(encoder).cfg
    predictor_cfg = world_model.module_of(predictor).cfg
    self.model_config = {"encoder": dataclasses.asdict(encoder_cfg),
                         "predictor": dataclasses.asdict(predictor_cfg)}
    self.action_dim = int(predictor_cfg.action_dim)
    self.description = description
    self.token = token or None
    self.max_queue = max_queue
    self.max_message_bytes = max_message_bytes
    self.stats = LatencyStats()
    self._executor: concurrent.futures.ThreadPoolExecutor | None = None
    self._lock = threading.Lock()
    self._pending = 0
    self._sessions: dict[int, Session] = {}
    self._next_id = 0
    self._frame_shapes: set[tuple] = set()
    self._base_key = jax.random.key(self.planner.cfg.seed)
    self._stop: asyncio.Event | None = None
    self.port: int | None = None


  def _encode_goals(self, images: list[np.ndarray]) -> list:
    for image in images:
      self._note_shape(image.shape)
    return jax.block_until_ready([self.planner.encode(image) for image in images])

  def _plan(self, frame: np.ndarray, pose: np.ndarray, goal, calls: int) -> dict:
    """The one place that calls the planner for a session's plan (see `Session.calls`)."""
    self._note_shape(frame.shape)
    key = jax.random.fold_in(self._base_key, calls)
    context = self.planner.encode(frame)[None]
    result = self.planner.plan_function(context, pose[None, None], None, goal, key)
    energies = np.asarray(result.energies, np.float32)
    return {"actions": np.asarray(result.actions, np.float32), "energies": energies}

  def _note_shape(self, shape: tuple) -> None:
    if shape not in self._frame_shapes:
      self._frame_shapes.add(shape)
      log.info("first image of shape %s: compiling the encoder for it (once)", shape)

  def warm_up(self, frame_shapes: Iterable[tuple[int, int]] = ()) -> float:
    """Encodes a goal and plans once per frame shape (default: the model's square size), so
    that clients never wait for compilation. Returns the seconds it took."""
    start = time.perf_counter()
    size = self.planner.image_size
    shapes = list(frame_shapes) or [(size, size)]
    rng = np.random.default_rng(0)
    for h, w in shapes:
      frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
      goal = self._encode_goals([frame])[0]
      self._plan(frame, np.zeros(self.action_dim, np.float32), goal, 0)
    seconds = time.perf_counter() - start
    log.info("warm-up: compiled and ran the plan for frames %s in %.1f s", shapes, seconds)
    return seconds


  def _release(self, _future) -> None:
    with self._lock:
      self._pending -= 1

  async def _run(self, connection: ServerConnection, fn: Callable, *args) -> tuple | None:
    """Runs `fn(*args)` on the planner thread after the requests ahead of it.

    Returns (result, queue ms, run ms), or None if the connection closed first.
    """
    with self._lock:
      if self._pending > self.max_queue:
        raise RequestError(
            "busy", f"server busy: 1 request running and {self._pending - 1} waiting, the queue "
            f"limit (--max-queue {self.max_queue}); retry later")
      self._pending += 1
    submitted = time.perf_counter()

    def job():
      started = time.perf_counter()
      out = fn(*args)
      return out, (started - submitted) * 1e3, _ms(started)

    future = self._executor.submit(job)
    future.add_done_callback(self._release)
    waiting = asyncio.wrap_future(future)
    closed = asyncio.ensure_future(connection.wait_closed())
    await asyncio.wait({waiting, closed}, return_when=asyncio.FIRST_COMPLETED)
    if not waiting.done():
      waiting.cancel()  # drops it if still queued; a running plan finishes and is discarded
      return None
    closed.cancel()
    return waiting.result()


  def _image(self, frame: Any, name: str) -> np.ndarray:
    if not isinstance(frame, np.ndarray):
      raise RequestError("bad_request", f"`{name}` must be a uint8 image array [H, W, 3], got "
                         f"{type(frame).__name__}")
    if frame.dtype != np.uint8:
      raise RequestError("bad_request", f"`{name}` must be uint8 (a camera image with values "
                         f"0-255), got dtype {frame.dtype}; convert with "
                         "(x * 255).clip(0, 255).astype(np.uint8) if it is float in [0, 1]")
    if frame.ndim != 3 or frame.shape[-1] != 3 or 0 in frame.shape:
      raise RequestError("bad_request", f"`{name}` must be an RGB image [H, W, 3], got shape "
                         f"{list(frame.shape)}")
    return frame

  def _pose(self, request: dict) -> np.ndarray:
    pose = request.get("pose")
    layout = (", ".join(POSE_LAYOUT_7) if self.action_dim == 7
              else f"the robot's {self.action_dim} states")
    if not isinstance(pose, np.ndarray) or pose.dtype.kind not in "iuf":
      raise RequestError("bad_request", f"`pose` must be a float array [{self.action_dim}] "
                         f"({layout}), got {type(pose).__name__}")
    if pose.shape != (self.action_dim,):
      raise RequestError("bad_request", f"`pose` must have shape [{self.action_dim}] ({layout}: "
                         f"the model's state width), got {list(pose.shape)}")
    pose = pose.astype(np.float32)
    if not np.all(np.isfinite(pose)):
      raise RequestError("bad_request", f"`pose` has non-finite values {pose.tolist()}; send the "
                         "robot's measured state")
    return pose

  def _goal_request(self, request: dict) -> tuple[list[np.ndarray], np.ndarray | None, int]:
    """(images, cumulative bounds or None, start step) of a `set_goal` request."""
    if ("goal" in request) == ("schedule" in request):
      raise RequestError("bad_request", "set_goal needs exactly one of `goal` (an image) or "
                         "`schedule` (a list of [image, steps])")
    if "goal" in request:
      return [self._image(request["goal"], "goal")], None, 0
    schedule = request["schedule"]
    if not isinstance(schedule, list) or not schedule:
      raise RequestError("bad_request", "`schedule` must be a non-empty list of [image, steps]")
    images, steps = [], []
    for i, entry in enumerate(schedule):
      if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], int)):
        raise RequestError("bad_request", f"schedule entry {i} must be [image, steps (int)]")
      if entry[1] < 1:
        raise RequestError("bad_request", f"schedule entry {i} has steps={entry[1]}; each "
                           "sub-goal needs at least 1 step")
      images.append(self._image(entry[0], f"schedule[{i}] image"))
      steps.append(entry[1])
    bounds = np.cumsum(steps)
    start = request.get("start_step", 0)
    if not isinstance(start, int) or not 0 <= start < bounds[-1]:
      raise RequestError("bad_request", f"`start_step` must be an int in [0, {bounds[-1]}), "
                         f"got {start!r}")
    return images, bounds, start

  def _metadata(self) -> dict:
    dim = self.action_dim
    return {
        "protocol": protocol.PROTOCOL_VERSION,
        "model": self.description,
        "model_config": self.model_config,
        "planner": self.planner.plan_function.cfg.to_dict(),
        "method": self.planner.cfg.get("method", "cem"),
        "image_size": self.planner.image_size,
        "action_dim": dim,
        "action_layout": list(ACTION_LAYOUT_7) if dim == 7 else [f"d{i}" for i in range(dim)],
        "pose_layout": list(POSE_LAYOUT_7) if dim == 7 else [f"s{i}" for i in range(dim)],
        "horizon": int(self.planner.plan_function.cfg.horizon),
        "latency_ms": self.stats.summary(),
        "queue": {"limit": self.max_queue, "pending": self._pending},
        "sessions": len(self._sessions),
        "max_message_bytes": self.max_message_bytes,
    }

  async def _respond(self, session: Session, connection: ServerConnection,
                     message: bytes | str) -> bytes | None:
    start = time.perf_counter()
    timings = {}
    kind = "invalid"
    try:
      try:
        request = protocol.unpack(message)
      except protocol.ProtocolError as e:
        raise RequestError("bad_message", str(e)) from e
      kind = request.get("type")
      if kind not in protocol.REQUESTS:
        raise RequestError("unknown_request", f"unknown request type {kind!r}; known: "
                           f"{list(protocol.REQUESTS)}")
      if kind == "metadata":
        timings["decode"] = _ms(start)
        reply = self._metadata()
      elif kind == "reset":
        session.goals, session.bounds, session.step, session.calls = None, None, 0, 0
        timings["decode"] = _ms(start)
        reply = {}
      elif kind == "set_goal":
        images, bounds, first = self._goal_request(request)
        timings["decode"] = _ms(start)
        done = await self._run(connection, self._encode_goals, images)
        if done is None:
          return None
        session.goals, timings["queue"], timings["plan"] = done
        session.bounds, session.step = bounds, first
        reply = {"goals": len(images), "steps": None if bounds is None else int(bounds[-1]),
                 "step": first}
      else:
        frame, pose = self._image(request.get("frame"), "frame"), self._pose(request)
        if session.goals is None:
          raise RequestError("no_goal", "no goal set: send set_goal (a goal image or a "
                             "schedule) before plan")
        step = session.step
        if session.bounds is None:
          index, left = 0, None
        else:
          if step >= session.bounds[-1]:
            raise RequestError("schedule_done", f"all {session.bounds[-1]} steps of the goal "
                               "schedule are planned; send set_goal or reset")
          index = int(np.searchsorted(session.bounds, step, side="right"))
          left = int(session.bounds[-1] - step - 1)
        timings["decode"] = _ms(start)
        done = await self._run(connection, self._plan, frame, pose, session.goals[index],
                               session.calls)
        if done is None:
          return None
        out, timings["queue"], timings["plan"] = done
        session.step, session.calls = step + 1, session.calls + 1
        energies = out["energies"]
        reply = {"action": out["actions"][0], "actions": out["actions"],
                 "energy": float(energies[-1]), "energies": energies,
                 "plan_ms": timings["plan"], "queue_ms": timings["queue"],
                 "decode_ms": timings["decode"], "step": step, "goal_index": index,
                 "steps_left": left}
      reply["type"] = kind
    except RequestError as e:
      reply = {"type": "error", "code": e.code, "message": str(e)}
      log.warning("session %d %s refused (%s): %s", session.id, kind, e.code, e)
    except Exception as e:  # keep serving: the client gets the error, the log the traceback
      log.exception("session %d %s failed", session.id, kind)
      reply = {"type": "error", "code": "internal", "message": f"{type(e).__name__}: {e}"}
    encode_start = time.perf_counter()
    data = protocol.pack(reply)
    timings["encode"] = _ms(encode_start)
    if reply["type"] != "error":
      self.stats.add(kind, timings)
      log.info("session %d %s: %s", session.id, kind,
               ", ".join(f"{p} {timings[p]:.2f} ms" for p in PHASES if p in timings))
    return data

  async def _handle(self, connection: ServerConnection) -> None:
    self._next_id += 1
    session = Session(self._next_id, str(connection.remote_address))
    self._sessions[session.id] = session
    log.info("session %d opened from %s", session.id, session.peer)
    try:
      async for message in connection:
        reply = await self._respond(session, connection, message)
        if reply is None:
          break
        await connection.send(reply)
    except ConnectionClosed:
      pass
    finally:
      del self._sessions[session.id]
      code = connection.close_code
      log.info("session %d closed (%s)", session.id,
               f"code {code} {connection.close_reason or ''}".strip() if code else "lost")


  def _check_token(self, connection: ServerConnection, request: Request) -> Response | None:
    if self.token is None:
      return None
    sent = request.headers.get("Authorization", "")
    if hmac.compare_digest(sent.encode(), f"Bearer {self.token}".encode()):
      return None
    log.warning("refused a connection from %s: missing or wrong token",
                connection.remote_address)
    return connection.respond(401, "missing or wrong token: pass PlannerClient(..., token=...) "
                              f"with the server's --token (or ${protocol.TOKEN_ENV})\n")

  def _add_limit_header(self, connection, request, response: Response) -> Response:
    response.headers[protocol.MAX_MESSAGE_HEADER] = str(self.max_message_bytes)
    return response

  async def serve(self, host: str = "127.0.0.1", port: int = 8000,
                  ready: Callable[[int], None] | None = None) -> None:
    """Serves until `stop()`; calls `ready(port)` once listening (port 0 picks a free one)."""
    self._stop = asyncio.Event()
    self._loop = asyncio.get_running_loop()
    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="planner")
    async with ws_serve(self._handle, host, port, compression=None,
                        max_size=self.max_message_bytes, process_request=self._check_token,
                        process_response=self._add_limit_header) as server:
      self.port = server.sockets[0].getsockname()[1]
      log.info("serving %s on ws://%s:%d", self.description or "the planner", host, self.port)
      if ready is not None:
        ready(self.port)
      await self._stop.wait()
    self._executor.shutdown(wait=True, cancel_futures=True)

  def stop(self) -> None:
    """Stops serving (thread-safe): open connections are closed, queued work dropped."""
    if self._stop is not None:
      self._loop.call_soon_threadsafe(self._stop.set)



class ServerHandle:
  """A `PlannerServer` running in a background thread (see `start_server`).

  Attributes:
    server: the `PlannerServer`.
    host, port: where it listens.
  """

  def __init__(self, server: PlannerServer, host: str, port: int):
    self.server, self.host = server, host
    self._ready = threading.Event()
    self._error: BaseException | None = None
    self._thread = threading.Thread(target=self._run, args=(port,), daemon=True,
                                    name="planner-server")
    self._thread.start()
    self._ready.wait()
    if self._error is not None:
      raise self._error
    self.port = server.port

  def _run(self, port: int) -> None:
    try:
      asyncio.run(self.server.serve(self.host, port, ready=lambda _: self._ready.set()))
    except BaseException as e:  # reported to the starting thread, which re-raises it
      self._error = e
      self._ready.set()

  @property
  def url(self) -> str:
    return f"ws://{self.host}:{self.port}"

  def stop(self, timeout: float = 30.0) -> None:
    """Stops the server and waits for its thread."""
    self.server.stop()
    self._thread.join(timeout)

  def __enter__(self) -> "ServerHandle":
    return self

  def __exit__(self, *exc) -> None:
    self.stop()


def start_server(encoder: Any, predictor: Any, cfg: ml_collections.ConfigDict, *,
                 host: str = "127.0.0.1", port: int = 0,
                 warm_up_shapes: Iterable[tuple[int, int]] = (), **kwargs: Any) -> ServerHandle:
  """Builds a `PlannerServer` from loaded models, compiles it and serves it in a background
  thread; returns once it accepts clients.

  Args:
    encoder, predictor, cfg: as `PlannerServer`.
    host, port: where to listen (port 0: a free port, see `handle.port`).
    warm_up_shapes: (H, W) frame sizes to compile for (default: the model's square size).
    **kwargs: `PlannerServer` options (description, token, max_queue, max_message_bytes).
  """
  server = PlannerServer(encoder, predictor, cfg, **kwargs)
  server.warm_up(warm_up_shapes)
  return ServerHandle(server, host, port)
