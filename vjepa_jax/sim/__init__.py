"""Closed-loop evaluation on a simulated Franka Panda (panda-gym on pybullet; `.[sim]` extra).

  python -m vjepa_jax.sim.collect --task reach --episodes 60 --out DATA
  python -m vjepa_jax.main --config configs/sim_franka.py --workdir RUN --config.data.path=DATA
  python -m vjepa_jax.sim.evaluate --task reach --episodes 50 --planner cem --workdir RUN --out EVAL

Modules: `env` (the simulator with V-JEPA 2-AC states and actions, goal images), `render` (the
fixed exterior camera), `expert` (scripted policies with exploration noise), `collect` (episodes
to a dataset the trainer reads), `evaluate` (receding-horizon planning, success rates, plots),
`plots`, `models` (loading a world model to plan with).
"""
