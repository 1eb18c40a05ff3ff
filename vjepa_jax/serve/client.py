"""Client of the planner server, for the robot computer (NumPy, websockets and msgpack only).

  client = PlannerClient("gpu-box", 8000, token=os.environ.get("VJEPA_JAX_SERVE_TOKEN"))
  client.set_goal(goal_image)                       # uint8 [H, W, 3]
  action = client.plan(frame, pose)                 # uint8 [H, W, 3], [7] -> [7]
  client.last_result.energy, client.last_result.plan_ms

  client.follow(schedule, observe, execute)         # as planning.Planner.follow

The calls block until the server answers. A lost connection raises `ConnectionError` for the
call in flight; the next call reconnects and re-sends the goal (a schedule resumes at the step
it had reached), so a robot loop decides itself whether to go on after a server restart.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence
from urllib.parse import urlparse

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.exceptions import InvalidHandshake
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect

from vjepa_jax.serve import protocol


class ServerError(RuntimeError):
  """The server refused a request; `code` is one of `protocol.ERROR_CODES`."""

  def __init__(self, code: str, message: str):
    super().__init__(f"{code}: {message}")
    self.code = code


class ServerBusy(ServerError):
  """The server's queue is full; the request was not run (retry later)."""


@dataclasses.dataclass(frozen=True)
class PlanReply:
  """The server's answer to `plan`.

  Attributes:
    action: `[A]` the next action (the first of `actions`).
    actions: `[horizon, A]` the planned sequence.
    energy: the planner's final energy (mean over its best samples at the last iteration).
    energies: the energy at every planner iteration.
    plan_ms, queue_ms, decode_ms: server-side planning time, wait behind other clients' work,
      and message decoding time.
    roundtrip_ms: the whole call as this client measured it.
    step: which step of the goal (schedule) this plan was for; goal_index: the sub-goal used;
    steps_left: schedule steps still to plan (None for a single goal).
  """
  action: np.ndarray
  actions: np.ndarray
  energy: float
  energies: np.ndarray
  plan_ms: float
  queue_ms: float
  decode_ms: float
  roundtrip_ms: float
  step: int
  goal_index: int
  steps_left: int | None


def _schedule_entries(schedule: Any) -> list[tuple[np.ndarray, int]]:
  """[(image, steps), ...] from a `planning.GoalSchedule` or a sequence of pairs."""
  if isinstance(schedule, np.ndarray):
    raise ValueError("got one image where a goal schedule was expected: pass "
                     "[(image, steps), ...] or a planning.GoalSchedule")
  entries = getattr(schedule, "goals", schedule)
  try:
    pairs = [(np.asarray(image), int(steps)) for image, steps in entries]
  except (TypeError, ValueError) as e:
    raise ValueError("a goal schedule must be a planning.GoalSchedule or a sequence of "
                     f"(image uint8 [H, W, 3], steps) pairs ({e})") from e
  if not pairs:
    raise ValueError("a goal schedule needs at least one (image, steps) entry")
  return pairs


class PlannerClient:
  """Talks to `python -m vjepa_jax.serve`; one instance is one session.

  Args:
    host, port: the server.
    token: the server's shared token, if it has one.
    timeout: seconds to wait for each answer (None: as long as it takes). On a timeout the
      connection is dropped (its late answer would otherwise be taken for the next one).
    connect_timeout: seconds to wait for the connection handshake.

  Attributes:
    last_result: the `PlanReply` of the latest `plan`.
  """

  def __init__(self, host: str = "127.0.0.1", port: int = 8000, token: str | None = None, *,
               timeout: float | None = None, connect_timeout: float = 10.0):
    self.url = f"ws://{host}:{port}"
    self.token = token
    self.timeout = timeout
    self.connect_timeout = connect_timeout
    self.last_result: PlanReply | None = None
    self.max_message_bytes: int | None = None
    self._ws: ClientConnection | None = None
    self._goal: dict | None = None
    self._next_step = 0
    self._connect()

  @classmethod
  def from_url(cls, url: str, token: str | None = None, **kwargs: Any) -> "PlannerClient":
    """`PlannerClient.from_url("ws://127.0.0.1:8000")`."""
    parsed = urlparse(url)
    if parsed.scheme != "ws" or not parsed.hostname or parsed.port is None:
      raise ValueError(f"server URL must look like ws://HOST:PORT, got {url!r}")
    return cls(parsed.hostname, parsed.port, token, **kwargs)

  # --- connection ------------------------------------------------------------------------------

  def _connect(self) -> None:
    headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
    try:
      ws = connect(self.url, compression=None, max_size=None, additional_headers=headers,
                   open_timeout=self.connect_timeout, proxy=None)
    except InvalidStatus as e:
      body = e.response.body.decode(errors="replace").strip()
      if e.response.status_code == 401:
        raise PermissionError(f"{self.url} refused the connection (HTTP 401): {body}") from e
      raise ConnectionError(f"{self.url} refused the connection: HTTP "
                            f"{e.response.status_code} {body}") from e
    except (OSError, TimeoutError, InvalidHandshake) as e:
      raise ConnectionError(f"cannot reach the planner server at {self.url} "
                            f"({type(e).__name__}: {e}); is `python -m vjepa_jax.serve` running "
                            "there, on that host and port?") from e
    limit = ws.response.headers.get(protocol.MAX_MESSAGE_HEADER)
    self.max_message_bytes = int(limit) if limit else None
    self._ws = ws

  def _drop(self) -> None:
    if self._ws is not None:
      self._ws.close()
      self._ws = None

  def close(self) -> None:
    """Closes the connection (the server frees the session)."""
    self._drop()

  def __enter__(self) -> "PlannerClient":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _request(self, message: dict) -> dict:
    if self._ws is None:
      self._connect()
      if self._goal is not None and message.get("type") != "set_goal":
        self._request(self._goal_message(self._next_step))
    data = protocol.pack(message)
    if self.max_message_bytes is not None and len(data) > self.max_message_bytes:
      raise ValueError(f"{message.get('type')} message is {len(data) / 2**20:.1f} MiB, over the "
                       f"server's limit of {self.max_message_bytes / 2**20:.1f} MiB: send smaller "
                       "images or start the server with a larger --max-message-mb")
    try:
      self._ws.send(data)
      raw = self._ws.recv(timeout=self.timeout)
    except TimeoutError as e:
      self._drop()
      raise TimeoutError(f"{self.url} gave no answer to {message.get('type')} within "
                         f"{self.timeout} s; the connection was dropped") from e
    except ConnectionClosed as e:
      self._drop()
      why = (e.rcvd.reason or f"code {e.rcvd.code}") if e.rcvd else "no close frame"
      raise ConnectionError(f"lost the connection to {self.url} ({why}); the next call "
                            "reconnects and re-sends the goal") from e
    except OSError as e:
      self._drop()
      raise ConnectionError(f"lost the connection to {self.url} ({e}); the next call "
                            "reconnects and re-sends the goal") from e
    reply = protocol.unpack(raw)
    if reply.get("type") == "error":
      cls = ServerBusy if reply.get("code") == "busy" else ServerError
      raise cls(reply.get("code", "internal"), reply.get("message", ""))
    return reply

  # --- requests --------------------------------------------------------------------------------

  def metadata(self) -> dict:
    """Model, planner config, image size, action and pose layouts, latency statistics."""
    return self._request({"type": "metadata"})

  def _goal_message(self, start_step: int) -> dict:
    if "goal" in self._goal:
      return {"type": "set_goal", "goal": self._goal["goal"]}
    return {"type": "set_goal", "schedule": [[image, steps] for image, steps in
                                             self._goal["schedule"]], "start_step": start_step}

  def set_goal(self, goal: Any) -> dict:
    """Sets this session's goal: one image uint8 `[H, W, 3]` (held until changed), or a
    sub-goal schedule (`planning.GoalSchedule` or [(image, steps), ...]) that `plan` walks
    through one step per call. The server encodes the goals once, here."""
    if isinstance(goal, np.ndarray):
      spec = {"goal": goal}
    else:
      spec = {"schedule": _schedule_entries(goal)}
    previous, self._goal = self._goal, spec
    try:
      reply = self._request(self._goal_message(0))
    except BaseException:
      self._goal = previous
      raise
    self._next_step = 0
    return reply

  def plan(self, frame: np.ndarray, pose: Sequence[float] | np.ndarray) -> np.ndarray:
    """The next action `[A]` from the current frame uint8 `[H, W, 3]` and pose `[A]`."""
    start = time.perf_counter()
    reply = self._request({"type": "plan", "frame": np.asarray(frame),
                           "pose": np.asarray(pose, np.float32)})
    self._next_step = reply["step"] + 1
    # Copies: arrays decoded from a message are read-only views of it.
    self.last_result = PlanReply(
        action=np.array(reply["action"]), actions=np.array(reply["actions"]),
        energy=reply["energy"], energies=np.array(reply["energies"]),
        plan_ms=reply["plan_ms"], queue_ms=reply["queue_ms"],
        decode_ms=reply["decode_ms"], roundtrip_ms=(time.perf_counter() - start) * 1e3,
        step=reply["step"], goal_index=reply["goal_index"], steps_left=reply["steps_left"])
    return self.last_result.action

  def reset(self) -> None:
    """Forgets the goal and restarts the session's random stream."""
    self._request({"type": "reset"})
    self._goal, self._next_step = None, 0

  def follow(self, schedule: Any, observe: Callable[[], tuple[np.ndarray, np.ndarray]],
             execute: Callable[[np.ndarray], None]) -> list[np.ndarray]:
    """Closed-loop control through a sub-goal schedule, as `planning.Planner.follow`.

    Each step calls `observe() -> (frame uint8 [H, W, 3], pose [A])`, plans towards the active
    sub-goal on the server and calls `execute(action [A])`.

    Returns:
      The executed actions.
    """
    reply = self.set_goal(_schedule_entries(schedule))
    actions = []
    for _ in range(reply["steps"]):
      frame, pose = observe()
      action = self.plan(frame, pose)
      execute(action)
      actions.append(action)
    return actions
