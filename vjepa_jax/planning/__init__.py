"""Planning robot actions with the V-JEPA 2-AC world model (compiled CEM, MPPI or gradient
search, on-device state integration)."""
from vjepa_jax.planning.config import config_for_spec
from vjepa_jax.planning.config import default_config
from vjepa_jax.planning.flops import plan_flops
from vjepa_jax.planning.planner import GoalSchedule
from vjepa_jax.planning.planner import Planner
from vjepa_jax.planning.poses import integrate_pose
from vjepa_jax.planning.poses import poses_to_diffs
from vjepa_jax.planning.plan_function import PlanFunction
from vjepa_jax.planning.plan_function import search
from vjepa_jax.planning.space import PlanResult
