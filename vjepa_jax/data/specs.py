"""Dataset specs: which keys of a robot dataset hold the frames, the state and the actions.

A spec is a plain dict (or a small `.py` file defining `SPEC = {...}` or `get_spec()`):

  {
    "name": "my_robot",
    "format": "lerobot",                         # "rlds" | "lerobot"
    "cameras": ["observation.images.front"],     # one drawn per clip; [] = the first camera
    "state": {                                   # an end-effector pose ...
      "position": "observation.state[0:3]",
      "orientation": "observation.state[3:7]",
      "orientation_format": "quat_xyzw",         # euler_xyz | quat_xyzw | quat_wxyz | matrix
      "gripper": "observation.state[7]",         # optional
      "gripper_range": [0.04, 0.0],              # raw value when open, when closed
    },
    # ... or a plain vector: {"keys": ["observation.state"], "names": ["j0", ..., "grip"]}
    "actions": {"source": "states"},             # or {"source": "stored", "keys": ["action"],
                                                 #     "aggregate": "sum" | "last"}
    "episode_id": "",                            # key of an episode id; "" = its position
    "success": {"key": "next.success"},          # optional; "regex" matches a text key
    "language": "task",                          # optional
    "control_hz": 30.0,                          # null: the dataset's own rate (LeRobot fps)
    "controllable": [0, 1, 2, 6],                # action dimensions a planner searches
    "action_low": [...], "action_high": [...],   # per-dimension bounds (one clip step)
  }

Keys name features: for RLDS relative to `steps/` (`"observation/state"`), or episode-level as
`"episode_metadata/file_path"`; for LeRobot the parquet column / feature name. A key may take one
slice of its last axis: `"key[3:7]"` or one element `"key[7]"`. RLDS camera names are relative to
`steps/observation/`, LeRobot cameras are video feature names.

States the model sees (`[T, A]` float32):
- pose layout: `[x, y, z, roll, pitch, yaw]` (+ `[gripper]` closedness, 0 open .. 1 closed, mapped
  linearly from `gripper_range`). Quaternions and rotation matrices are converted to extrinsic-xyz
  Euler angles. Actions between sampled frames are pose deltas (xyz difference, Euler angles of
  `R_{t+1} R_t^T`, gripper difference): `integration = "pose"`, as the V-JEPA 2-AC recipe does on
  DROID; a planner integrates an action by pose composition.
- vector layout: the listed keys concatenated; actions are `s_{t+1} - s_t`: `integration =
  "additive"`.
Stored actions (`"source": "stored"`) are summed (`"sum"`, per-step deltas) or taken at the last
raw step before the next sampled frame (`"last"`, absolute targets) and must be as wide as the
state: the predictor takes one width for both.
"""
import dataclasses
import importlib.util
import json
import math
import os
import re
from collections.abc import Mapping, Sequence

FORMATS = ("rlds", "lerobot")
ORIENTATIONS = ("euler_xyz", "quat_xyzw", "quat_wxyz", "matrix")
ORIENTATION_WIDTH = {"euler_xyz": 3, "quat_xyzw": 4, "quat_wxyz": 4, "matrix": 9}
INTEGRATIONS = ("pose", "additive")
ACTION_SOURCES = ("states", "stored")
AGGREGATES = ("sum", "last")
POSE_NAMES = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
# Planner defaults for pose layouts, per clip step: the official CEM's 0.075 m ball per axis, the
# rotation bound of its rotation search and its gripper-delta bound.
POSE_BOUNDS = (0.075, 0.075, 0.075, 0.1, 0.1, 0.1, 0.75)
_KEY = re.compile(r"^(?P<name>[^\[\]]+?)(\[(?P<a>-?\d*)(?P<colon>:)?(?P<b>-?\d*)\])?$")
_FIELDS = ("name", "format", "cameras", "state", "actions", "episode_id", "success", "language",
           "control_hz", "controllable", "action_low", "action_high", "match")


@dataclasses.dataclass(frozen=True)
class KeyRef:
  """A feature name and an optional `[start:stop]` slice of its last axis."""
  name: str
  start: int | None = None
  stop: int | None = None

  @classmethod
  def parse(cls, text: str) -> "KeyRef":
    m = _KEY.match(str(text).strip())
    if not m:
      raise ValueError(f"bad key {text!r}; expected 'name', 'name[a:b]' or 'name[i]'")
    a, b = m.group("a"), m.group("b")
    if m.group("colon"):
      return cls(m.group("name"), int(a) if a else None, int(b) if b else None)
    if a:
      i = int(a)
      return cls(m.group("name"), i, i + 1 if i != -1 else None)
    return cls(m.group("name"))

  @property
  def sliced(self) -> bool:
    return self.start is not None or self.stop is not None

  def width(self, full: int | None) -> int | None:
    """Elements selected from a last axis of size `full` (None if unknown)."""
    if not self.sliced:
      return full
    if full is None and ((self.start or 0) < 0 or self.stop is None or (self.stop or 0) < 0):
      return None
    return len(range(full if full is not None else self.stop)[slice(self.start, self.stop)])

  def __str__(self) -> str:
    if not self.sliced:
      return self.name
    return f"{self.name}[{'' if self.start is None else self.start}:" \
           f"{'' if self.stop is None else self.stop}]"


@dataclasses.dataclass(frozen=True)
class Spec:
  """A validated dataset spec (see the module docstring); `to_dict()` gives the dict form."""
  name: str
  format: str
  cameras: tuple[str, ...]
  state: Mapping
  actions: Mapping
  episode_id: str = ""
  success: Mapping | None = None
  language: str = ""
  control_hz: float | None = None
  controllable: tuple[int, ...] | None = None
  action_low: tuple[float, ...] | None = None
  action_high: tuple[float, ...] | None = None
  match: Mapping | None = None

  # -- state layout ---------------------------------------------------------------------------
  @property
  def is_pose(self) -> bool:
    return "position" in self.state

  @property
  def integration(self) -> str:
    """"pose" (xyz + euler-xyz [+ gripper], pose composition) or "additive" (s + a)."""
    return "pose" if self.is_pose else "additive"

  @property
  def orientation_format(self) -> str | None:
    return self.state.get("orientation_format") if self.is_pose else None

  @property
  def gripper_range(self) -> tuple[float, float]:
    return tuple(self.state.get("gripper_range", (0.0, 1.0)))

  def state_parts(self) -> list[tuple[str, KeyRef]]:
    """(role, key) of every state input: roles position, orientation, gripper or vector."""
    if self.is_pose:
      parts = [("position", KeyRef.parse(self.state["position"])),
               ("orientation", KeyRef.parse(self.state["orientation"]))]
      if self.state.get("gripper"):
        parts.append(("gripper", KeyRef.parse(self.state["gripper"])))
      return parts
    return [("vector", KeyRef.parse(k)) for k in self.state["keys"]]

  def action_keys(self) -> list[KeyRef]:
    if self.actions.get("source", "states") != "stored":
      return []
    return [KeyRef.parse(k) for k in self.actions["keys"]]

  @property
  def stored_actions(self) -> bool:
    return self.actions.get("source", "states") == "stored"

  @property
  def aggregate(self) -> str:
    return self.actions.get("aggregate", "sum")

  def referenced_keys(self) -> list[str]:
    """Every feature name the spec reads (cameras excluded)."""
    keys = [k.name for _, k in self.state_parts()] + [k.name for k in self.action_keys()]
    for extra in (self.episode_id, (self.success or {}).get("key", ""), self.language):
      if extra:
        keys.append(extra)
    return list(dict.fromkeys(keys))

  # -- widths (need the dataset's feature widths for unsliced keys) ---------------------------
  def state_width(self, widths: Mapping[str, int] | None = None) -> int:
    """State width A; `widths` maps feature names to their last-axis size."""
    if self.is_pose:
      return 6 + (1 if self.state.get("gripper") else 0)
    total = 0
    for _, key in self.state_parts():
      w = key.width((widths or {}).get(key.name))
      if w is None:
        raise ValueError(f"width of state key {key} unknown: slice it ('{key.name}[0:N]') or "
                         "resolve the spec against the dataset (data.config_for)")
      total += w
    return total

  @property
  def action_dim(self) -> int:
    """Width of states and actions (the predictor's `action_dim`); needs a resolved spec."""
    if self.is_pose:
      return self.state_width()
    names = self.state.get("names")
    if names:
      return len(names)
    return self.state_width()

  @property
  def dim_names(self) -> tuple[str, ...]:
    if self.is_pose:
      return POSE_NAMES[:self.action_dim]
    names = self.state.get("names")
    return tuple(names) if names else tuple(f"s{i}" for i in range(self.action_dim))

  def to_dict(self) -> dict:
    out = {}
    for f in _FIELDS:
      v = getattr(self, f)
      out[f] = _plain(v)
    return out

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)


def _plain(v):
  if isinstance(v, Mapping):
    return {k: _plain(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_plain(x) for x in v]
  return v


def _seq(v, what: str) -> tuple:
  if isinstance(v, str):
    return tuple(x.strip() for x in v.split(",") if x.strip())
  if not isinstance(v, Sequence):
    raise ValueError(f"spec {what} must be a list, got {v!r}")
  return tuple(v)


def from_dict(d: Mapping) -> Spec:
  """Validates a spec dict; ValueError naming the bad field, its value and what is expected."""
  if not isinstance(d, Mapping):
    raise ValueError(f"a spec is a dict, got {type(d).__name__}")
  unknown = sorted(set(d) - set(_FIELDS))
  if unknown:
    raise ValueError(f"unknown spec field(s) {unknown}; known fields: {list(_FIELDS)}")
  name = str(d.get("name", "custom"))
  fmt = d.get("format")
  if fmt not in FORMATS:
    raise ValueError(f"spec {name!r}: format must be one of {FORMATS}, got {fmt!r}")
  state = dict(d.get("state") or {})
  if not state:
    raise ValueError(f"spec {name!r} has no 'state' (a pose layout with 'position' and "
                     "'orientation', or a vector layout with 'keys')")
  if "position" in state:
    allowed = {"position", "orientation", "orientation_format", "gripper", "gripper_range"}
    missing = [k for k in ("orientation", "orientation_format") if k not in state]
    if missing:
      raise ValueError(f"spec {name!r}: a pose state needs {missing} (orientation_format one of "
                       f"{ORIENTATIONS}); for a state without orientation use a vector layout "
                       "{'keys': [...]}")
    if state["orientation_format"] not in ORIENTATIONS:
      raise ValueError(f"spec {name!r}: orientation_format must be one of {ORIENTATIONS}, got "
                       f"{state['orientation_format']!r}")
    for role, width in (("position", 3),
                        ("orientation", ORIENTATION_WIDTH[state["orientation_format"]]),
                        ("gripper", 1)):
      if not state.get(role):
        continue
      w = KeyRef.parse(state[role]).width(None)
      if w is not None and w != width:
        raise ValueError(f"spec {name!r}: state {role} {state[role]!r} selects {w} values, "
                         f"expected {width}")
    if "gripper_range" in state:
      rng = tuple(float(x) for x in state["gripper_range"])
      if len(rng) != 2 or rng[0] == rng[1]:
        raise ValueError(f"spec {name!r}: gripper_range must be [open, closed] with open != "
                         f"closed, got {state['gripper_range']!r}")
      state["gripper_range"] = rng
  elif "keys" in state:
    allowed = {"keys", "names"}
    state["keys"] = _seq(state["keys"], "state.keys")
    if not state["keys"]:
      raise ValueError(f"spec {name!r}: state.keys is empty")
    if state.get("names") is not None:
      state["names"] = tuple(str(n) for n in state["names"])
  else:
    raise ValueError(f"spec {name!r}: state needs 'position'+'orientation' (pose) or 'keys' "
                     f"(vector), got fields {sorted(state)}")
  extra = sorted(set(state) - allowed)
  if extra:
    raise ValueError(f"spec {name!r}: unknown state field(s) {extra}; allowed: {sorted(allowed)}")
  for key in [state[r] for r in ("position", "orientation", "gripper") if state.get(r)] + list(
      state.get("keys", ())):
    KeyRef.parse(key)
  actions = dict(d.get("actions") or {"source": "states"})
  source = actions.get("source", "states")
  if source not in ACTION_SOURCES:
    raise ValueError(f"spec {name!r}: actions.source must be one of {ACTION_SOURCES}, got "
                     f"{source!r}")
  if source == "stored":
    actions["keys"] = _seq(actions.get("keys", ()), "actions.keys")
    if not actions["keys"]:
      raise ValueError(f"spec {name!r}: stored actions need 'keys'")
    for k in actions["keys"]:
      KeyRef.parse(k)
    if actions.get("aggregate", "sum") not in AGGREGATES:
      raise ValueError(f"spec {name!r}: actions.aggregate must be one of {AGGREGATES}, got "
                       f"{actions.get('aggregate')!r}")
    actions.setdefault("aggregate", "sum")
  success = d.get("success")
  if success is not None:
    success = dict(success)
    if not success.get("key"):
      raise ValueError(f"spec {name!r}: success needs a 'key' (and optionally a 'regex')")
  hz = d.get("control_hz")
  if hz is not None and not (isinstance(hz, (int, float)) and math.isfinite(hz) and hz > 0):
    raise ValueError(f"spec {name!r}: control_hz must be a positive number or null, got {hz!r}")
  spec = Spec(
      name=name, format=fmt, cameras=_seq(d.get("cameras", ()), "cameras"), state=state,
      actions=actions, episode_id=str(d.get("episode_id") or ""), success=success,
      language=str(d.get("language") or ""),
      control_hz=None if hz is None else float(hz),
      controllable=None if d.get("controllable") is None else tuple(
          int(i) for i in d["controllable"]),
      action_low=None if d.get("action_low") is None else tuple(
          float(x) for x in d["action_low"]),
      action_high=None if d.get("action_high") is None else tuple(
          float(x) for x in d["action_high"]),
      match=None if d.get("match") is None else dict(d["match"]))
  _check_planner_fields(spec)
  return spec


def _check_planner_fields(spec: Spec) -> None:
  try:
    width = spec.action_dim
  except ValueError:
    width = None  # Known once the spec is resolved against a dataset.
  if spec.is_pose:
    names = None
  else:
    names = spec.state.get("names")
  if names is not None and width is not None and len(names) != width:
    raise ValueError(f"spec {spec.name!r}: state.names has {len(names)} names for a state of "
                     f"width {width}")
  for field in ("action_low", "action_high"):
    v = getattr(spec, field)
    if v is not None and width is not None and len(v) != width:
      raise ValueError(f"spec {spec.name!r}: {field} has {len(v)} values, expected {width} (the "
                       "state width)")
  if spec.action_low is not None and spec.action_high is not None and any(
      lo > hi for lo, hi in zip(spec.action_low, spec.action_high)):
    raise ValueError(f"spec {spec.name!r}: action_low > action_high in some dimension")
  if spec.controllable is not None and width is not None:
    bad = [i for i in spec.controllable if not 0 <= i < width]
    if bad:
      raise ValueError(f"spec {spec.name!r}: controllable dimensions {bad} outside [0, {width})")


def drop_absent_language(spec: Spec, keys) -> Spec:
  """The spec without its language key when the dataset has none: language is kept for later
  and never required."""
  if spec.language and spec.language not in keys and spec.language != "task":
    return dataclasses.replace(spec, language="")
  return spec


def with_defaults(spec: Spec, widths: Mapping[str, int] | None = None) -> Spec:
  """The spec with names, controllable dimensions and bounds filled in (a "resolved" spec).

  Pose layouts get the DROID planner's defaults (search x, y, z and the gripper; bounds
  `POSE_BOUNDS`); vector layouts search every dimension and keep bounds they state (None = the
  planner's own defaults; `python -m vjepa_jax.data.inspect` prints the data's ranges).
  """
  state = dict(spec.state)
  if not spec.is_pose and not state.get("names"):
    state["names"] = tuple(f"s{i}" for i in range(spec.state_width(widths)))
  resolved = dataclasses.replace(spec, state=state)
  width = resolved.action_dim
  controllable = resolved.controllable
  low, high = resolved.action_low, resolved.action_high
  if resolved.is_pose:
    if controllable is None:
      controllable = (0, 1, 2, 6) if width == 7 else (0, 1, 2)
    if low is None:
      low = tuple(-b for b in POSE_BOUNDS[:width])
    if high is None:
      high = tuple(POSE_BOUNDS[:width])
  elif controllable is None:
    controllable = tuple(range(width))
  resolved = dataclasses.replace(resolved, controllable=controllable, action_low=low,
                                 action_high=high)
  _check_planner_fields(resolved)
  return resolved


# -- Presets ------------------------------------------------------------------------------------

PRESETS = {
    # DROID RLDS (droid_100, droid 1.0.0 / 1.0.1): 15 Hz, observed pose in the robot base frame,
    # extrinsic-xyz Euler angles, gripper closedness; success only in the episode's file path.
    "droid": {
        "name": "droid", "format": "rlds",
        "cameras": ["exterior_image_1_left"],
        "state": {"position": "observation/cartesian_position[0:3]",
                  "orientation": "observation/cartesian_position[3:6]",
                  "orientation_format": "euler_xyz",
                  "gripper": "observation/gripper_position", "gripper_range": [0.0, 1.0]},
        "actions": {"source": "states"},
        "episode_id": "episode_metadata/file_path",
        "success": {"key": "episode_metadata/file_path", "regex": ".*/success/.*"},
        "language": "language_instruction",
        "control_hz": 15.0,
        "match": {"keys": ["observation/cartesian_position", "observation/gripper_position",
                           "episode_metadata/file_path"]},
    },
    # Open X-Embodiment fractal20220817_data (RT-1, gs://gresearch/robotics/fractal20220817_data/
    # 0.1.0): 3 Hz; base_pose_tool_reached = xyz + quaternion (x, y, z, w) of the tool in the
    # robot base frame; gripper_closed 0 open .. 1 closed; no episode id.
    "fractal": {
        "name": "fractal", "format": "rlds",
        "cameras": ["image"],
        "state": {"position": "observation/base_pose_tool_reached[0:3]",
                  "orientation": "observation/base_pose_tool_reached[3:7]",
                  "orientation_format": "quat_xyzw",
                  "gripper": "observation/gripper_closed", "gripper_range": [0.0, 1.0]},
        "actions": {"source": "states"},
        "language": "observation/natural_language_instruction",
        "control_hz": 3.0,
        "match": {"keys": ["observation/base_pose_tool_reached", "observation/gripper_closed"]},
    },
    # Open X-Embodiment bridge (WidowX, gs://gresearch/robotics/bridge/0.1.0): 5 Hz; state =
    # end-effector xyz + roll/pitch/yaw + gripper (octo's EEF_state = state[:6], gripper_state =
    # state[6:], opening: 1 open .. 0 closed). The same keys exist in datasets whose state holds
    # joint angles (toto), so the preset also needs the builder name.
    "bridge": {
        "name": "bridge", "format": "rlds",
        "cameras": ["image"],
        "state": {"position": "observation/state[0:3]",
                  "orientation": "observation/state[3:6]",
                  "orientation_format": "euler_xyz",
                  "gripper": "observation/state[6]", "gripper_range": [1.0, 0.0]},
        "actions": {"source": "states"},
        "language": "observation/natural_language_instruction",
        "control_hz": 5.0,
        "match": {"keys": ["observation/state"], "builder_names": ["bridge"]},
    },
    # LeRobot datasets whose observation.state is an end-effector pose with the names
    # x, y, z, roll, pitch, yaw[, gripper] (as vjepa_jax.data.writers writes them).
    "lerobot_pose": {
        "name": "lerobot_pose", "format": "lerobot",
        "cameras": [],
        "state": {"position": "observation.state[0:3]",
                  "orientation": "observation.state[3:6]",
                  "orientation_format": "euler_xyz",
                  "gripper": "observation.state[6]", "gripper_range": [0.0, 1.0]},
        "actions": {"source": "states"},
        "language": "task",
        "match": {"keys": ["observation.state"], "state_names": list(POSE_NAMES)},
    },
    # Any other LeRobot dataset with an observation.state vector (joint angles, ...): additive
    # actions s_{t+1} - s_t on the whole vector.
    "lerobot_vector": {
        "name": "lerobot_vector", "format": "lerobot",
        "cameras": [],
        "state": {"keys": ["observation.state"]},
        "actions": {"source": "states"},
        "language": "task",
        "match": {"keys": ["observation.state"], "not_state_names": list(POSE_NAMES)},
    },
}


def preset(name: str) -> Spec:
  if name not in PRESETS:
    raise ValueError(f"unknown spec preset {name!r}; presets: {sorted(PRESETS)}")
  return from_dict(PRESETS[name])


def load(spec) -> Spec:
  """A `Spec` from a Spec, dict, preset name, JSON text or path to a `.py` file.

  A `.py` file defines `SPEC = {...}` or `get_spec() -> dict`.
  """
  if isinstance(spec, Spec):
    return spec
  if isinstance(spec, Mapping):
    return from_dict(spec)
  if not isinstance(spec, str) or not spec.strip():
    raise ValueError(f"spec must be a dict, a preset name, JSON or a .py path, got {spec!r}")
  text = spec.strip()
  if text.startswith("{"):
    try:
      return from_dict(json.loads(text))
    except json.JSONDecodeError as e:
      raise ValueError(f"spec JSON does not parse: {e}") from e
  if text.endswith(".py"):
    return from_dict(_load_py(text))
  return preset(text)


def _load_py(path: str) -> dict:
  if not os.path.isfile(path):
    raise ValueError(f"spec file {path} does not exist")
  module_spec = importlib.util.spec_from_file_location("vjepa_jax_user_spec", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if hasattr(module, "get_spec"):
    return module.get_spec()
  if hasattr(module, "SPEC"):
    return module.SPEC
  raise ValueError(f"spec file {path} defines neither SPEC nor get_spec()")


def matches(spec: Spec, keys: Sequence[str], builder_name: str = "",
            state_names: Sequence[str] | None = None) -> bool:
  """Whether a dataset with these feature names fits the preset's `match` rule."""
  rule = spec.match or {}
  if not rule:
    return False
  if not set(rule.get("keys", ())) <= set(keys):
    return False
  if rule.get("builder_names") and builder_name not in rule["builder_names"]:
    return False
  names = [n.lower() for n in (state_names or ())]
  if rule.get("state_names") is not None:
    wanted = [n.lower() for n in rule["state_names"]]
    if names not in (wanted, wanted[:6]):
      return False
  if rule.get("not_state_names") is not None:
    unwanted = [n.lower() for n in rule["not_state_names"]]
    if names in (unwanted, unwanted[:6]):
      return False
  return True


def guess(fmt: str, keys: Sequence[str], builder_name: str = "",
          state_names: Sequence[str] | None = None, where: str = "") -> Spec:
  """The one preset of format `fmt` whose match rule the dataset fits; else ValueError listing
  the presets and the dataset's keys."""
  found = [preset(n) for n, d in PRESETS.items() if d["format"] == fmt
           and matches(preset(n), keys, builder_name, state_names)]
  if len(found) == 1:
    return found[0]
  listing = ", ".join(f"{n} ({d['format']})" for n, d in PRESETS.items())
  what = "no preset fits" if not found else \
      f"several presets fit ({', '.join(s.name for s in found)})"
  raise ValueError(
      f"cannot guess the dataset spec of {where or 'the dataset'}: {what}. Presets: {listing}. "
      f"Dataset keys: {sorted(keys)}. Pass a spec: data.config_for(path, spec='<preset>' or a "
      "dict), or --config.data.spec=<preset | path/to/spec.py>.")
