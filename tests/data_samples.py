"""Small writer episodes whose frames identify themselves, for the data tests.

Frame t of episode e is flat: red = `level(t)`, green = `40 * (e % 6)`, blue = 128, so a decoded
frame (lossy codecs keep flat colours within a few levels) tells which row it is.
"""
import numpy as np

HW = (32, 48)


def level(t: int) -> int:
  return 12 + 6 * (t % 40)


def identify(frame: np.ndarray) -> tuple[int, int]:
  """(row t mod 40, episode e mod 6) of a decoded flat frame."""
  red, green = float(frame[..., 0].mean()), float(frame[..., 1].mean())
  return int(round((red - 12) / 6)), int(round(green / 40))


def pose_states(n: int, rng: np.random.Generator) -> np.ndarray:
  steps = rng.normal(0, 0.02, (n, 6)).cumsum(0)
  xyz = np.array([0.5, 0.0, 0.3]) + steps[:, :3]
  euler = np.stack([np.pi - 0.05 + steps[:, 3], steps[:, 4], steps[:, 5]], 1)
  euler[:, 0] = (euler[:, 0] + np.pi) % (2 * np.pi) - np.pi
  grip = np.clip(0.5 + rng.normal(0, 0.1, (n, 1)).cumsum(0), 0, 1)
  return np.concatenate([xyz, euler, grip], 1).astype(np.float32)


def episode(e: int, n: int, rng: np.random.Generator, cameras=("front",), hw=HW) -> dict:
  frames = np.empty((n, *hw, 3), np.uint8)
  for t in range(n):
    frames[t] = (level(t), 40 * (e % 6), 128)
  return {"frames": {c: frames.copy() for c in cameras}, "states": pose_states(n, rng),
          "language": f"task {e % 2}", "success": e % 3 != 2}


def episodes(lengths, seed: int = 0, cameras=("front",), hw=HW) -> list[dict]:
  rng = np.random.default_rng(seed)
  return [episode(e, n, rng, cameras, hw) for e, n in enumerate(lengths)]
