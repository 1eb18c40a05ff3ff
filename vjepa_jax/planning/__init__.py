"""Planning robot actions with the V-JEPA 2-AC world model (compiled CEM, on-device poses)."""
from vjepa_jax.planning.cem import PlanFunction
from vjepa_jax.planning.cem import PlanResult
from vjepa_jax.planning.cem import default_config
from vjepa_jax.planning.planner import GoalSchedule
from vjepa_jax.planning.planner import Planner
from vjepa_jax.planning.poses import integrate_pose
from vjepa_jax.planning.poses import poses_to_diffs
